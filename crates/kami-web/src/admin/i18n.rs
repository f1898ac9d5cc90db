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
    "settings_precedence" => "此处保存的值立即生效，重启后仍然有效。在 kami.toml 或 KAMI_* 环境变量中设置的项由配置固定，此处只读。", "Values saved here apply at once and are kept across restarts. A setting given in kami.toml or a KAMI_* variable is fixed by that configuration and read-only here.";
    "settings_fixed_by_config" => "由配置固定，请在配置中修改并重启：", "Fixed by configuration; change it there and restart:";
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
    "sale_ends_at" => "停售时间", "Sale ends at";
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
    "rejected_unlisted" => "未列出的其余被拒绝行", "Further rejected lines not listed";
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

    // Form errors (msg.rs): `{name}` placeholders take the values, which are
    // shown as typed.
    "err_whole_number" => "“{field}”必须是整数。", "{field} must be a whole number.";
    "err_date" => "“{field}”必须是日期，例如 2026-11-29。", "{field} must be a date like 2026-11-29.";
    "err_time_format" => "“{field}”不是有效的时间。", "{field} is not a valid time.";
    "err_move_dir" => "移动方向只能是上移或下移。", "The direction must be up or down.";
    "err_tier_line_shape" => "批发价第 {n} 行“{line}”格式不对，请写成 数量 = 单价，例如 10 = 8.50。", "Wholesale tier line {n} (“{line}”): write it as quantity = price, e.g. 10 = 8.50.";
    "err_tier_line_quantity" => "批发价第 {n} 行“{line}”：数量必须是整数。", "Wholesale tier line {n} (“{line}”): the quantity must be a whole number.";
    "err_tier_line_price" => "批发价第 {n} 行“{line}”：单价不是有效的金额。", "Wholesale tier line {n} (“{line}”): the price is not a valid amount.";
    "err_tiers_shape" => "批发价最多设置 {max} 档。", "At most {max} wholesale tiers.";
    "err_tiers_order" => "批发价的数量须从 2 起，并逐档递增。", "Wholesale tier quantities must be at least 2 and rise from tier to tier.";
    "err_tiers_price" => "批发价的单价须大于 0，低于商品价格，并逐档递减。", "Each wholesale tier's price must be above zero, below the product's price and below the previous tier's.";
    "err_price_negative" => "价格不能为负数。", "The price cannot be negative.";
    "err_price_decimals" => "价格必须是数字，最多 {decimals} 位小数。", "The price must be a number with at most {decimals} decimals.";
    "err_price_range" => "价格必须大于 0，且不超过 10000000000 个最小货币单位（如分）。", "The price must be above zero and at most 10000000000 minor units (cents).";
    "err_currency_shape" => "币种须为三个字母的 ISO 4217 代码，例如 CNY。", "The currency must be a three-letter ISO 4217 code, such as CNY.";
    "err_currency_unknown" => "{code} 不是 ISO 4217 币种，请使用 CNY、USD 等代码。", "{code} is not an ISO 4217 currency; use a code such as CNY or USD.";
    "err_name_length" => "商品名称须为 1 至 200 个字符。", "The name must be 1 to 200 characters.";
    "err_quantities" => "每单数量须满足：1 ≤ 每单最少 ≤ 每单最多 ≤ 10000。", "Per-order quantities must satisfy 1 ≤ min ≤ max ≤ 10000.";
    "err_per_buyer_limit" => "每位买家限购须至少为 1，留空表示不限。", "The per-buyer limit must be at least 1, or empty for no limit.";
    "err_per_ip_limit" => "每个 IP 限购须至少为 1，留空表示不限。", "The per-IP limit must be at least 1, or empty for no limit.";
    "err_sale_window" => "停售时间须晚于开售时间。", "The sale must end after it starts.";
    "err_description_length" => "商品说明不能超过 64 KiB。", "The description must be at most 64 KiB.";
    "err_category_length" => "分类名称最多 100 个字符。", "The category must be at most 100 characters.";
    "err_stock_display" => "库存显示方式无效。", "The stock display must be exact, level, hidden or the shop default.";
    "err_coupon_value_amount" => "优惠金额不是有效的金额。", "The value is not a valid amount.";
    "err_coupon_value_percent" => "优惠比例必须是整数。", "The value must be a whole percent.";
    "err_coupon_code" => "优惠码须为 1 至 {max} 个字母、数字、- 或 _。", "The code must be 1 to {max} letters, digits, - or _.";
    "err_coupon_kind" => "请选择优惠类型：按比例或固定金额。", "The kind must be percent or fixed.";
    "err_coupon_no_product" => "所选商品不存在。", "No such product.";
    "err_coupon_percent_range" => "按比例优惠须在 1 至 100 之间。", "A percent coupon takes 1 to 100 percent off.";
    "err_coupon_fixed_range" => "固定金额优惠必须大于 0，且不超过上限。", "A fixed coupon must take a positive amount off, within range.";
    "err_coupon_needs_currency" => "固定金额优惠需要选择币种。", "A fixed coupon needs a currency.";
    "err_coupon_currency_differs" => "优惠券的币种与商品的币种不一致。", "The coupon's currency differs from the product's.";
    "err_coupon_max_uses" => "使用次数上限须至少为 1，留空表示不限。", "The usage cap must be at least 1, or empty for no cap.";
    "err_coupon_code_taken" => "已存在相同的优惠码。", "A coupon with this code already exists.";
    "err_shop_name_length" => "店铺名称须为 1 至 {max} 个字符。", "The shop name must be 1 to {max} characters.";
    "err_notice_length" => "公告横幅最多 {max} 个字符。", "The notice must be at most {max} characters.";
    "err_order_ttl" => "订单有效期须为 1 至 {max} 之间的整数秒。", "The order TTL must be whole seconds from 1 to {max}.";
    "err_shop_stock_display" => "默认库存显示方式无效。", "The stock display must be exact, level or hidden.";
    "err_email_required" => "请填写邮箱。", "The email is required.";
    "err_email_text" => "邮箱包含无法识别的字符。", "The email is not valid text.";
    "err_email_long" => "邮箱过长。", "The email is too long.";
    "err_email_at" => "邮箱必须包含 @。", "The email must contain @.";
    "err_email_local" => "邮箱 @ 前面的部分无效。", "The part of the email before @ is not valid.";
    "err_email_domain" => "邮箱的域名无效。", "The email's domain is not valid.";
    "err_email_taken" => "该邮箱已有账户。", "An account with this email already exists.";
    "err_disable_self" => "不能停用自己的账户。", "You cannot disable your own account.";
    "err_key_name" => "密钥名称须为 1 至 100 个字符。", "The name must be 1 to 100 characters.";
    "err_scope_unknown" => "未知的权限范围“{scope}”。", "Unknown scope “{scope}”.";
    "err_scope_empty" => "请至少选择一个权限范围。", "Choose at least one scope.";
    "err_totp_already_on" => "两步验证已经开启；如需更换，请先关闭（关闭时需要输入当前的动态验证码）。", "Two-step verification is already on; turn it off first (that asks for a current code).";
    "err_totp_key_malformed" => "密钥格式不正确。", "The key is malformed.";
    "err_fulfil_state" => "只有已支付、等待补货的订单才能发货。", "Only a paid order waiting for stock can be fulfilled.";
    "err_refund_state" => "只有已支付的订单才能标记为已退款。", "Only a paid order can be marked refunded.";
    "err_refund_changed" => "页面打开后订单已变化（现为：{status}），请查看后再决定是否退款。", "The order changed after this page was shown (it is now: {status}); look at it again before refunding.";
    "err_void_state" => "只有可售的卡密才能作废。", "Only an available code can be voided.";
    "err_import_both" => "请上传文件或粘贴卡密，二者只能选一个：本次没有导入任何卡密。", "Choose a file or paste codes, not both: nothing was imported.";
    "err_import_binary" => "文件看起来是二进制文件（含有 NUL 字节），请另存为 UTF-8 或 GBK 文本，每行一个卡密。", "The file looks binary (it contains NUL bytes); save it as UTF-8 or GBK text, one code per line.";
    "err_import_interrupted" => "导入在卡密上架时被中断；其余卡密会在下次导入时或一分钟内上架，请不要重新上传。", "The import was cut off while its codes were being made sellable; the rest become sellable at the next import or within a minute: do not upload it again.";
    "err_upload_read" => "读取上传内容失败：{detail}", "Reading the upload failed: {detail}";
    "reject_too_long" => "行过长（卡密最多 1024 个字符）", "line is too long (a code has at most 1024 characters)";
    "reject_invalid_encoding" => "该行既不是 UTF-8 也不是 GBK/GB18030 编码", "line is neither UTF-8 nor GBK/GB18030";
    "reject_control_characters" => "该行含有控制字符", "line contains control characters";

    // Payment channel refusals and the Test button (`{channel}` is its name)
    "err_channel_secret_empty" => "密钥不能为空。", "The secret cannot be empty.";
    "err_channel_disabled" => "{channel}未启用。", "{channel} is disabled.";
    "err_channel_config" => "配置有误：{detail}", "The settings are not valid: {detail}";
    "err_channel_managed" => "{channel}由 kami.toml 管理，请在那里修改。", "{channel} is managed by kami.toml; change it there.";
    "err_channel_sealed" => "{channel}已保存的凭据无法用当前主密钥解密。", "The stored credentials of {channel} do not open with this master key.";
    "err_channel_no_credentials" => "{channel}还没有保存凭据。", "{channel} has no stored credentials yet.";
    "channel_test_accepted" => "连接成功，凭据有效。", "Reachable, credentials accepted.";
    "channel_test_built_in" => "内置通道，无需连接；其密钥用于签名支付按钮发出的通知。", "Built in: nothing to reach; its secret signs the pay button's notifications.";
    "channel_test_not_configured" => "{channel}尚未配置。", "{channel} is not configured.";
    "channel_test_cannot_check" => "{channel}没有无需付款即可校验凭据的接口，凭据会在第一笔真实支付时校验。", "{channel} has no call that can check credentials without a payment; the first real one checks them.";
    "channel_test_unreachable" => "无法连接：{detail}", "Unreachable: {detail}";
    "channel_test_refused" => "被拒绝：{detail}", "Refused: {detail}";
    "channel_test_failed" => "测试失败：{detail}", "The test failed: {detail}";

    // Payment channel fields, as `channel_field_<config key>`
    "channel_field_secret" => "签名密钥", "Signing secret";
    "channel_field_gateway" => "网关地址", "Gateway URL";
    "channel_field_pid" => "商户 ID", "Merchant ID";
    "channel_field_key" => "商户密钥", "Merchant key";
    "channel_field_app_id" => "应用 ID", "App ID";
    "channel_field_seller_id" => "卖家 ID", "Seller ID";
    "channel_field_app_private_key" => "应用私钥", "App private key";
    "channel_field_alipay_public_key" => "支付宝公钥", "Alipay public key";
    "channel_field_mchid" => "商户号", "Merchant ID";
    "channel_field_appid" => "应用 ID", "App ID";
    "channel_field_apiv3_key" => "APIv3 密钥", "APIv3 key";
    "channel_field_merchant_serial" => "商户证书序列号", "Merchant certificate serial";
    "channel_field_merchant_private_key" => "商户私钥", "Merchant private key";
    "channel_field_platform_serial" => "平台证书序列号", "Platform certificate serial";
    "channel_field_platform_public_key" => "平台公钥", "Platform public key";
    "channel_field_secret_key" => "密钥（Secret key）", "Secret key";
    "channel_field_webhook_secret" => "Webhook 签名密钥", "Webhook signing secret";
    "channel_field_token" => "API 令牌", "API token";

    // Order timeline, as `event_<kind>` (the stored kind is shown beside it)
    "event_created" => "下单", "Order placed";
    "event_payment_started" => "发起支付", "Payment started";
    "event_paid" => "支付成功", "Paid";
    "event_delivered" => "已发货", "Delivered";
    "event_expired" => "超时关闭", "Expired";
    "event_paid_unfulfilled" => "已支付，等待补货", "Paid, waiting for stock";
    "event_payment_for_paid_order" => "订单已支付后又收到付款", "Payment for an order already paid";
    "event_refunded" => "标记为已退款", "Marked refunded";
    "event_notify_ignored" => "支付通知已忽略", "Notification ignored";
    "event_notify_unpaid" => "支付通知：尚未付款", "Notification: not paid";
    "event_notify_rejected" => "支付通知被拒绝", "Notification rejected";

    // Audit log actions, as `audit_<action>` (the stored action is shown beside it)
    "audit_login" => "登录", "Signed in";
    "audit_logout" => "退出登录", "Signed out";
    "audit_login_failed" => "登录失败", "Sign-in refused";
    "audit_recovery_code_used" => "使用恢复码登录", "Recovery code used";
    "audit_product_created" => "新建商品", "Product created";
    "audit_product_updated" => "修改商品", "Product updated";
    "audit_product_moved" => "调整商品顺序", "Product moved";
    "audit_category_moved" => "调整分类顺序", "Category moved";
    "audit_codes_imported" => "导入卡密", "Codes imported";
    "audit_code_revealed" => "查看卡密", "Code revealed";
    "audit_code_voided" => "作废卡密", "Code voided";
    "audit_codes_exported" => "导出未售卡密", "Unsold codes exported";
    "audit_coupon_created" => "创建优惠券", "Coupon created";
    "audit_coupon_disabled" => "停用优惠券", "Coupon disabled";
    "audit_coupon_enabled" => "启用优惠券", "Coupon enabled";
    "audit_order_fulfilled" => "手动发货", "Order fulfilled";
    "audit_order_refunded" => "标记订单已退款", "Order marked refunded";
    "audit_orders_exported" => "导出订单", "Orders exported";
    "audit_staff_created" => "添加员工", "Staff added";
    "audit_staff_disabled" => "停用员工", "Staff disabled";
    "audit_session_revoked" => "注销会话", "Session revoked";
    "audit_api_key_created" => "创建 API 密钥", "API key created";
    "audit_api_key_revoked" => "注销 API 密钥", "API key revoked";
    "audit_totp_enabled" => "开启两步验证", "Two-step verification on";
    "audit_totp_disabled" => "关闭两步验证", "Two-step verification off";
    "audit_recovery_codes_regenerated" => "重新生成恢复码", "Recovery codes regenerated";
    "audit_settings_updated" => "修改店铺设置", "Settings changed";
    "audit_channel_saved" => "保存支付通道", "Channel saved";
    "audit_channel_save_refused" => "支付通道保存被拒", "Channel save refused";
    "audit_channel_enabled" => "启用支付通道", "Channel enabled";
    "audit_channel_disabled" => "停用支付通道", "Channel disabled";
    "audit_channel_toggle_refused" => "支付通道启停被拒", "Channel switch refused";
    "audit_channel_tested" => "测试支付通道", "Channel tested";
    "audit_master_key_rotated" => "轮换主密钥", "Master key rotated";
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

/// The label of a machine name (`event_paid`, `audit_login`), or the name
/// itself when the table has none (a kind a newer build writes).
pub fn name_label(lang: &str, prefix: &str, name: &str) -> String {
    let key = format!("{prefix}{name}");
    match lookup(&key) {
        Some(_) => tr(lang, &key).to_string(),
        None => name.to_string(),
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
        .chain(crate::scopes::Scope::ALL.map(|s| format!("scope_{s}")))
        .chain(
            kami_pay::registry::PANEL_CHANNELS
                .iter()
                .flat_map(|c| kami_pay::registry::panel_fields(c))
                .map(|f| format!("channel_field_{}", f.name)),
        );
        for key in built {
            assert_ne!(tr("en", &key), "?", "missing {key}");
        }
    }

    /// Every event kind the store writes or derives, and every action the
    /// panel audits, has a label; one without would show its raw name.
    #[test]
    fn events_and_audit_actions_have_labels() {
        let kinds = [
            "created",
            "payment_started",
            "paid",
            "delivered",
            "expired",
            "paid_unfulfilled",
            "payment_for_paid_order",
            "refunded",
            "notify_ignored",
            "notify_unpaid",
            "notify_rejected",
        ];
        for kind in kinds {
            assert!(lookup(&format!("event_{kind}")).is_some(), "{kind}");
        }
        assert_eq!(name_label("zh", "event_", "paid"), "支付成功");
        assert_eq!(name_label("en", "event_", "paid"), "Paid");
        assert_eq!(
            name_label("zh", "event_", "from_the_future"),
            "from_the_future"
        );
        // Every action the panel writes (grep `audit(` in this directory).
        let actions = [
            "login",
            "logout",
            "login_failed",
            "recovery_code_used",
            "product_created",
            "product_updated",
            "product_moved",
            "category_moved",
            "codes_imported",
            "code_revealed",
            "code_voided",
            "codes_exported",
            "coupon_created",
            "coupon_disabled",
            "coupon_enabled",
            "order_fulfilled",
            "order_refunded",
            "orders_exported",
            "staff_created",
            "staff_disabled",
            "session_revoked",
            "api_key_created",
            "api_key_revoked",
            "totp_enabled",
            "totp_disabled",
            "recovery_codes_regenerated",
            "settings_updated",
            "channel_saved",
            "channel_save_refused",
            "channel_enabled",
            "channel_disabled",
            "channel_toggle_refused",
            "channel_tested",
            // Written by `kami keys rotate` (kami-store's `rotate.rs`).
            "master_key_rotated",
        ];
        for action in actions {
            assert!(lookup(&format!("audit_{action}")).is_some(), "{action}");
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
