//! Panel strings in Simplified Chinese (the default) and English, declared
//! with the storefront's macro; keys the storefront already has (order
//! statuses, "email", "amount" …) fall through to its table.

use crate::shop::i18n::translations;

translations! {
    // Layout and navigation
    "panel_title" => "Kami 管理后台", "Kami admin";
    "nav_dashboard" => "概览", "Dashboard";
    "nav_products" => "商品", "Products";
    "nav_orders" => "订单", "Orders";
    "nav_audit" => "审计日志", "Audit log";
    "nav_staff" => "员工", "Staff";
    "nav_sessions" => "会话", "Sessions";
    "nav_keys" => "API 密钥", "API keys";
    "nav_security" => "账户安全", "Security";
    "nav_shop" => "查看店铺", "View shop";
    "nav_settings" => "店铺设置", "Settings";
    "nav_channels" => "支付通道", "Payment channels";

    // Settings and payment channels
    "settings_precedence" => "此处保存的值优先于 kami.toml 与环境变量（它们只是初始值），保存后立即生效。", "Values saved here win over kami.toml and the environment (which only give the first values), and apply at once.";
    "settings_shop_name" => "店铺名称", "Shop name";
    "settings_notice" => "公告横幅", "Notice banner";
    "settings_order_ttl" => "订单有效期（秒）", "Order TTL (seconds)";
    "settings_stock_display" => "默认库存显示方式", "Default stock display";
    "stock_display" => "库存显示方式", "Stock display";
    "stock_display_inherit" => "跟随店铺默认", "Shop default";
    "stock_display_exact" => "显示数量", "Exact count";
    "stock_display_level" => "充足 / 少量 / 售罄", "Plenty / few / sold out";
    "stock_display_hidden" => "不显示", "Hidden";
    "channels_intro" => "凭据使用主密钥加密保存，密钥类字段不会再显示。kami.toml 中配置的通道以其为准，此处只读。停用的通道不再接受新订单，但已创建订单的支付通知仍会被验证并入账。", "Credentials are stored sealed with the master key; secret fields are never shown again. Channels configured in kami.toml follow it and are read-only here. A disabled channel takes no new orders, but notifications for orders already created on it are still verified and accepted.";
    "channel_managed" => "由 kami.toml 管理", "managed by kami.toml";
    "channel_managed_hint" => "此通道由配置文件（kami.toml 或环境变量）设置，请在那里修改。", "This channel is set by the configuration (kami.toml or the environment); change it there.";
    "channel_enabled" => "已启用", "Enabled";
    "channel_disabled" => "已停用", "Disabled";
    "channel_not_configured" => "未配置", "Not configured";
    "channel_enable" => "启用", "Enable";
    "channel_disable" => "停用", "Disable";
    "channel_test" => "测试连接", "Test";
    "secret_set_keep" => "已设置 — 留空则保持不变", "set — leave blank to keep";
    "logout" => "退出登录", "Log out";
    "signed_in_as" => "当前账户", "Signed in as";
    "role_owner" => "店主", "Owner";
    "role_staff" => "员工", "Staff";
    "saved" => "已保存。", "Saved.";
    "none" => "无", "None";
    "actions" => "操作", "Actions";
    "next_page" => "下一页", "Next page";
    "search" => "搜索", "Search";
    "all" => "全部", "All";
    "yes" => "是", "Yes";
    "no" => "否", "No";
    "time" => "时间", "Time";
    "name" => "名称", "Name";

    // Login
    "login_heading" => "登录管理后台", "Sign in to the admin panel";
    "password" => "密码", "Password";
    "totp_code" => "动态验证码", "Authenticator code";
    "totp_code_hint" => "仅在已开启两步验证时需要；也可以填写一个恢复码。", "Only needed when two-step verification is on; a recovery code works too.";
    "login_submit" => "登录", "Sign in";
    "login_failed" => "邮箱、密码或验证码错误；多次失败后账户会被暂时锁定。", "Wrong email, password or code. After several failures the account is locked for a while.";

    // Dashboard
    "today" => "今天", "Today";
    "last_7_days" => "近 7 天", "Last 7 days";
    "last_30_days" => "近 30 天", "Last 30 days";
    "orders_created" => "下单", "Orders";
    "orders_paid" => "已支付", "Paid";
    "sales" => "销售额", "Sales";
    "conversion" => "转化率", "Conversion";
    "chart_title" => "近 30 天每日支付订单", "Paid orders per day, last 30 days";
    "alerts" => "提醒", "Alerts";
    "alert_unfulfilled" => "笔已支付订单等待补货发货", "paid orders are waiting for stock";
    "alert_dead_jobs" => "个后台任务多次失败已停止重试", "background jobs failed too often and stopped";
    "no_alerts" => "一切正常。", "All clear.";
    "low_stock" => "库存不足的商品", "Low stock";
    "recent_orders" => "最新订单", "Recent orders";
    "times_utc" => "时间均为 UTC。", "Times are UTC.";

    // Products
    "new_product" => "新建商品", "New product";
    "edit_product" => "编辑商品", "Edit product";
    "price" => "价格", "Price";
    "currency" => "币种", "Currency";
    "category" => "分类", "Category";
    "min_quantity" => "每单最少", "Min per order";
    "max_quantity" => "每单最多", "Max per order";
    "per_buyer_limit" => "每位买家限购", "Per-buyer limit";
    "per_buyer_limit_hint" => "留空表示不限。", "Leave empty for no limit.";
    "discount_included" => "已含优惠", "coupon discount";
    "nav_coupons" => "优惠券", "Coupons";
    "coupons_empty" => "还没有优惠券。", "No coupons yet.";
    "coupon_create" => "创建优惠券", "Create coupon";
    "coupon_code" => "优惠码", "Code";
    "coupon_code_hint" => "字母、数字、- 或 _，不区分大小写。", "Letters, digits, - or _; not case-sensitive.";
    "coupon_kind" => "类型", "Kind";
    "coupon_percent" => "按比例（%）", "Percent off";
    "coupon_fixed" => "固定金额", "Fixed amount off";
    "coupon_value" => "优惠", "Value";
    "coupon_value_hint" => "比例填 1–100；固定金额填金额，例如 5.00。订单至少支付一个最小货币单位。", "Percent: 1-100; fixed: an amount such as 5.00. An order always costs at least one minor unit.";
    "coupon_scope" => "适用商品", "Applies to";
    "coupon_shop_wide" => "全店通用", "Whole shop";
    "coupon_used" => "已用", "Used";
    "coupon_max_uses" => "使用次数上限", "Usage cap";
    "coupon_expires" => "到期时间", "Expires";
    "coupon_disabled" => "已停用", "Disabled";
    "coupon_disable" => "停用", "Disable";
    "coupon_enable" => "启用", "Enable";
    "per_ip_limit" => "每个 IP 限购", "Per-IP limit";
    "per_ip_limit_hint" => "同一网络地址（IPv6 按 /64）最多可持有的数量；留空表示不限。", "Most codes one network address (IPv6: its /64) may hold; empty for no limit.";
    "wholesale_tiers" => "批发价", "Wholesale tiers";
    "wholesale_tiers_hint" => "每行一档：数量 = 单价，例如 10 = 8.50；数量递增、单价递减。", "One tier per line: quantity = unit price, e.g. 10 = 8.50; quantities rising, prices falling.";
    "visible" => "在店铺中显示", "Visible in the shop";
    "sale_window" => "销售时间（UTC，可留空）", "Sale window (UTC, optional)";
    "sale_starts" => "开始", "Starts";
    "sale_ends" => "结束", "Ends";
    "low_stock_threshold" => "低库存提醒阈值", "Low-stock alert below";
    "save" => "保存", "Save";
    "codes" => "卡密", "Codes";
    "no_products" => "还没有商品。", "No products yet.";
    "hidden" => "隐藏", "Hidden";
    "position" => "排序", "Order";
    "move_up" => "上移", "Move up";
    "move_down" => "下移", "Move down";
    "categories" => "分类", "Categories";
    "order_hint" => "店铺按此顺序展示分类和商品；商品在所属分类内移动。", "The shop lists categories and products in this order; a product moves within its category.";

    // Codes
    "stock_available" => "可售", "Available";
    "stock_reserved" => "已预留", "Reserved";
    "stock_sold" => "已售", "Sold";
    "import_heading" => "导入卡密", "Import codes";
    "import_hint" => "每行一个卡密；可粘贴，或上传 UTF-8 / GBK 文本文件。重复的卡密会被跳过。", "One code per line; paste them or upload a UTF-8 / GBK text file. Duplicates are skipped.";
    "import_paste" => "粘贴卡密", "Paste codes";
    "import_file" => "或上传文件", "Or upload a file";
    "import_submit" => "导入", "Import";
    "import_report" => "导入结果", "Import report";
    "imported" => "已导入", "Imported";
    "duplicates" => "重复", "Duplicates";
    "rejected" => "被拒绝的行", "Rejected lines";
    "line" => "行", "Line";
    "reason" => "原因", "Reason";
    "code_masked" => "已隐藏", "hidden";
    "reveal" => "显示", "Reveal";
    "reveal_hint" => "每次显示卡密都会记入审计日志。", "Every reveal is written to the audit log.";
    "void" => "作废", "Void";
    "export_unsold" => "导出未售卡密 (.txt)", "Export unsold codes (.txt)";
    "export_hint" => "导出会记入审计日志。", "Exports are written to the audit log.";
    "card_status_available" => "可售", "available";
    "card_status_reserved" => "已预留", "reserved";
    "card_status_sold" => "已售", "sold";
    "card_status_void" => "已作废", "void";
    "batch" => "批次", "Batch";
    "no_codes" => "没有卡密。", "No codes.";

    // Orders
    "search_orders" => "订单号或邮箱", "Order number or email";
    "no_orders" => "没有找到订单。", "No orders found.";
    "buyer_ip" => "买家 IP", "Buyer IP";
    "channel" => "支付方式", "Channel";
    "timeline" => "订单时间线", "Timeline";
    "fulfil" => "立即发货", "Fulfil now";
    "fulfil_hint" => "按付款先后为该商品所有待发货订单发货。", "Delivers this product's waiting paid orders, oldest first.";
    "refund" => "标记为已退款", "Mark refunded";
    "refund_hint" => "请先在支付平台完成退款。", "Refund the money at the payment provider first.";
    "delivered_at" => "发货时间", "Delivered at";
    "status_stored" => "数据库状态", "Stored status";
    "date_from" => "起始日期（UTC）", "From (UTC)";
    "date_to" => "截止日期（UTC，含当天）", "To (UTC, inclusive)";
    "export_csv" => "导出 CSV", "Export CSV";
    "export_csv_hint" => "导出使用当前的搜索条件，不含卡密，并记入审计日志。", "The export uses the current search, never contains codes, and is written to the audit log.";

    // Audit
    "action" => "操作", "Action";
    "target" => "对象", "Target";
    "detail" => "详情", "Detail";
    "operator" => "操作人", "Operator";

    // Staff, sessions, keys
    "add_staff" => "添加员工", "Add staff";
    "role" => "角色", "Role";
    "created_at_admin" => "创建时间", "Created";
    "disable" => "停用", "Disable";
    "disabled" => "已停用", "Disabled";
    "locked" => "已锁定", "Locked";
    "new_password_once" => "新账户的密码只显示这一次，请立即交给对方：", "The new account's password is shown only this once; hand it over now:";
    "session_current" => "当前会话", "This session";
    "last_seen" => "最近活动", "Last seen";
    "user_agent" => "浏览器", "Browser";
    "revoke" => "注销", "Revoke";
    "key_prefix" => "前缀", "Prefix";
    "last_used" => "最近使用", "Last used";
    "revoked" => "已注销", "Revoked";
    "create_key" => "创建密钥", "Create key";
    "new_key_once" => "新密钥只显示这一次，请立即保存：", "The new key is shown only this once; store it now:";
    "key_scopes" => "权限范围", "Scopes";
    "scope_admin" => "全部权限", "everything";
    "scope_products:read" => "查看商品", "list products";
    "scope_products:write" => "创建、修改商品", "create and edit products";
    "scope_cards:write" => "导入卡密（不能读取）", "import codes (never read them)";
    "scope_stock:read" => "查看库存数量", "read stock counts";
    "scope_orders:read" => "查看订单（不含卡密）", "read orders (without codes)";

    // Security (TOTP)
    "totp_heading" => "两步验证（TOTP）", "Two-step verification (TOTP)";
    "totp_on" => "已开启。登录时需要输入验证器 App 中的动态码。", "On. Signing in asks for the code from your authenticator app.";
    "totp_setup" => "用验证器 App（如 Google Authenticator）扫描二维码，或手动输入密钥，然后填写显示的 6 位验证码。密钥只显示这一次。", "Scan the QR code with an authenticator app (or type the key), then enter the 6-digit code it shows. The key is shown only this once.";
    "totp_secret" => "密钥", "Key";
    "totp_enable" => "开启两步验证", "Turn on";
    "totp_disable" => "关闭两步验证", "Turn off";
    "totp_wrong" => "验证码不正确，请重试。", "That code is not right; try again.";
    "recovery_codes" => "恢复码", "Recovery codes";
    "recovery_codes_once" => "请立即抄写或打印这些恢复码，它们只显示这一次。手机丢失时，可在登录时用其中一个代替动态验证码，每个只能使用一次。", "Write these recovery codes down or print them now; they are shown only this once. If you lose your phone, sign in with one of them instead of the authenticator code. Each works once.";
    "recovery_left" => "剩余可用恢复码", "Recovery codes left";
    "recovery_regenerate" => "重新生成恢复码", "Regenerate recovery codes";
    "recovery_regenerate_hint" => "生成 10 个新的恢复码，旧的恢复码全部作废。需要输入当前的动态验证码。", "Issues 10 new recovery codes; all the old ones stop working. Needs a current authenticator code.";

    // Errors
    "error_forbidden" => "只有店主可以访问此页面。", "Only the shop owner can open this page.";
    "error_csrf" => "表单已过期或并非来自本后台，请刷新后重试。", "The form expired or did not come from this panel. Reload and try again.";
}

/// The string for `key` in `lang`; the storefront's table answers keys the
/// panel does not define.
pub fn tr(lang: &str, key: &str) -> &'static str {
    match lookup(key) {
        Some((_, en)) if lang == "en" => en,
        Some((zh, _)) => zh,
        None => crate::shop::i18n::tr(lang, key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `tr("…")` literal in the panel's templates, and every key the
    /// templates build (`"nav_" ~ key` …), has a translation here or in the
    /// storefront's table.
    #[test]
    fn every_key_the_templates_use_exists() {
        let mut used = 0;
        for (name, src) in super::super::page::TEMPLATES {
            for part in src.split("tr(\"").skip(1) {
                let end = part.find('"').unwrap();
                if !part[end..].starts_with("\")") {
                    continue; // a built key, checked below
                }
                let key = &part[..end];
                assert_ne!(tr("en", key), "?", "{name} uses unknown key {key:?}");
                used += 1;
            }
        }
        assert!(used > 100, "found only {used} tr() calls");
        let built = [
            "dashboard",
            "products",
            "orders",
            "staff",
            "sessions",
            "keys",
            "audit",
            "security",
            "settings",
            "channels",
        ]
        .map(|k| format!("nav_{k}"))
        .into_iter()
        .chain(["owner", "staff"].map(|r| format!("role_{r}")))
        .chain(["available", "reserved", "sold", "void"].map(|s| format!("card_status_{s}")))
        .chain(kami_core::OrderStatus::ALL.map(|s| format!("status_{}", s.as_str())))
        .chain(["today", "last_7_days", "last_30_days"].map(String::from))
        .chain(crate::scopes::Scope::ALL.map(|s| format!("scope_{s}")));
        for key in built {
            assert_ne!(tr("en", &key), "?", "missing {key}");
        }
    }

    #[test]
    fn every_key_has_both_languages_and_none_shadows_the_storefront() {
        for key in KEYS {
            assert!(!tr("zh", key).is_empty() && tr("en", key) != "?", "{key}");
            assert_eq!(
                crate::shop::i18n::tr("en", key),
                "?",
                "{key} duplicates a storefront key"
            );
        }
    }
}
