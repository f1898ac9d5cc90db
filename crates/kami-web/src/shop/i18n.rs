//! Storefront strings in Simplified Chinese (the default) and English.
//!
//! Templates call `{{ tr("key") }}`; the handler binds `tr` to the request's language.

/// Declares every key once with both translations, so a key can never exist in one
/// language only, and `KEYS` can never drift from the `match`.
macro_rules! translations {
    ($($key:literal => $zh:literal, $en:literal;)*) => {
        /// Every key `tr` knows; only the tests need the list.
        #[cfg(test)]
        pub const KEYS: &[&str] = &[$($key),*];

        fn lookup(key: &str) -> Option<(&'static str, &'static str)> {
            match key {
                $($key => Some(($zh, $en)),)*
                _ => None,
            }
        }
    };
}

/// The admin panel declares its strings with the same macro.
pub(crate) use translations;

translations! {
    // Layout
    "nav_home" => "首页", "Home";
    "nav_lookup" => "订单查询", "Order lookup";
    "lang_switch_label" => "语言", "Language";
    "lang_zh" => "中文", "中文";
    "lang_en" => "English", "English";
    "sandbox_banner" => "沙盒支付模式：不会产生任何真实扣款", "Sandbox payments: no real money moves";
    "footer_note" => "付款后自动发货，卡密即时可见", "Codes are delivered automatically the moment you pay";

    // Product list
    "products_heading" => "全部商品", "All products";
    "products_empty" => "暂时没有在售的商品，请稍后再来。", "Nothing is on sale right now. Please check back later.";
    "category_other" => "其他", "Other";
    "in_stock" => "库存", "In stock";
    "sold_out" => "已售罄", "Sold out";
    "stock_plenty" => "库存充足", "Plenty in stock";
    "stock_few" => "仅剩少量", "Only a few left";
    "view_product" => "购买", "Buy";

    // Product page
    "back_to_products" => "返回商品列表", "Back to products";
    "unit_price" => "单价", "Price";
    "tiers_heading" => "批发价", "Bulk prices";
    "tier_line" => "买 {n} 件及以上：每件 {price}", "{n} or more: {price} each";
    "coupon" => "优惠码", "Coupon code";
    "coupon_apply" => "使用", "Apply";
    "coupon_applied" => "已使用优惠码", "Coupon applied";
    "quote_subtotal" => "小计", "Subtotal";
    "quote_discount" => "优惠", "Discount";
    "quote_total" => "应付金额", "Total";
    "coupon_unknown" => "优惠码无效。", "This coupon code is not valid.";
    "coupon_expired" => "优惠码已过期。", "This coupon has expired.";
    "coupon_used_up" => "优惠码已被用完。", "This coupon has been used up.";
    "coupon_other_product" => "该优惠码不适用于此商品。", "This coupon does not apply to this product.";
    "coupon_other_currency" => "该优惠码不适用于此币种。", "This coupon is for another currency.";
    "description" => "商品说明", "Description";
    "sale_starts_at" => "开售时间", "Sale starts at";
    "countdown_starts_in" => "距开售", "Starts in";
    "countdown_left" => "剩余", "Time left";
    "sale_not_started" => "尚未开售", "Not on sale yet";
    "order_form_heading" => "填写订单", "Place your order";
    "quantity" => "购买数量", "Quantity";
    "quantity_range" => "每单可购", "Per order:";
    "email" => "邮箱", "Email";
    "email_hint" => "用于查询订单，请仔细核对。", "Used to find your order later. Please double-check it.";
    "query_password" => "查询密码", "Query password";
    "optional" => "（可选）", "(optional)";
    "query_password_hint" => "设置后，可凭邮箱和此密码在“订单查询”中随时找回订单和卡密。不设置时，只能在本浏览器或用订单页上的订单链接查看。", "Set one to look up your orders and codes later with your email and this password. Without one, the order opens only in this browser or from the order link its page shows.";
    "payment_method" => "支付方式", "Payment method";
    "no_channels" => "暂无可用的支付方式，请稍后再试。", "No payment method is available right now. Please try again later.";
    "buy_now" => "立即购买", "Buy now";

    // Order page
    "order_heading" => "订单详情", "Order details";
    "order_no" => "订单号", "Order number";
    "product" => "商品", "Product";
    "status" => "状态", "Status";
    "status_pending" => "待支付", "Awaiting payment";
    "status_delivered" => "已发货", "Delivered";
    "status_expired" => "已过期", "Expired";
    "status_paid_unfulfilled" => "已支付，待发货", "Paid, awaiting stock";
    "status_refunded" => "已退款", "Refunded";
    "amount" => "金额", "Amount";
    "created_at" => "下单时间", "Ordered at";
    "paid_at" => "支付时间", "Paid at";
    "pay_now" => "立即支付", "Pay now";
    "pay_before" => "支付截止", "Pay before";
    "pending_hint" => "付款完成后，本页面会自动刷新并显示卡密。", "Once you have paid, this page refreshes by itself and shows your codes.";
    "pending_refresh" => "已付款？刷新页面", "Paid already? Refresh";
    "your_codes" => "您的卡密", "Your codes";
    "codes_keep_safe" => "请妥善保存卡密，不要分享给他人。", "Keep your codes safe and do not share them.";
    "order_link_heading" => "订单链接", "Your order link";
    "order_link_hint" => "保存此链接：在任何浏览器或设备上打开它都能查看本订单和卡密。请勿分享给他人。", "Keep this link: it opens this order and its codes in any browser or on any device. Do not share it.";
    "copy" => "复制", "Copy";
    "copied" => "已复制", "Copied";
    "copy_all" => "复制全部", "Copy all";
    "download_txt" => "下载 .txt", "Download .txt";
    "paid_unfulfilled_hint" => "我们已收到您的付款。商品暂时缺货，补货后将第一时间为您发货。", "We have received your payment. The product is temporarily out of stock; your codes will be delivered as soon as stock arrives.";
    "expired_hint" => "该订单未在规定时间内支付，已自动关闭。如需购买，请重新下单。", "This order was not paid in time and has been closed. Please place a new order if you still want to buy.";
    "refunded_hint" => "该订单已退款。", "This order has been refunded.";

    // Sandbox payment page
    "sandbox_pay_heading" => "模拟支付", "Simulated payment";
    "sandbox_pay_explain" => "这是沙盒模式下的模拟支付，不会产生任何真实扣款。点击下方按钮即视为支付成功。", "This is a simulated payment in sandbox mode: no real money moves. Pressing the button below marks the order as paid.";
    // API.md names the button "Pay (sandbox)": the words stay on it in
    // every language, for buyers and for scripts that press it.
    "sandbox_pay_button" => "支付 · Pay (sandbox)", "Pay (sandbox)";
    "sandbox_not_pending" => "该订单当前无需支付。", "This order does not need a payment right now.";
    "view_order" => "查看订单", "View order";
    "qr_pay_heading" => "扫码支付", "Scan to pay";
    "qr_pay_alt" => "支付二维码", "Payment QR code";
    "qr_pay_explain" => "请用手机打开对应的 App 扫描二维码完成支付。付款成功后本页会自动跳转到订单。", "Open the app on your phone and scan the code to pay. This page moves to your order as soon as the payment lands.";

    // Order lookup
    "lookup_heading" => "订单查询", "Order lookup";
    "lookup_intro" => "输入下单时填写的邮箱和查询密码，即可查看订单和卡密。", "Enter the email and query password you used when ordering to see your orders and codes.";
    "lookup_no_password_note" => "下单时未设置查询密码的订单无法在此查询。", "Orders placed without a query password cannot be found here.";
    "lookup_submit" => "查询", "Look up";
    "lookup_results" => "查询结果", "Your orders";
    "no_orders_found" => "没有找到订单，请检查邮箱和查询密码是否正确。", "No orders found. Please check your email and query password.";

    // Payment channels, as `channel_<name>`
    "channel_sandbox" => "沙盒支付", "Sandbox";
    "channel_epay" => "易支付", "EPay";
    "channel_alipay" => "支付宝", "Alipay";
    "channel_wechatpay" => "微信支付", "WeChat Pay";
    "channel_stripe" => "银行卡（Stripe）", "Card (Stripe)";
    "channel_epusdt" => "USDT", "USDT";

    // Error page, and error messages as `error_<code>` (codes from the API error shape)
    "error_title" => "出错了", "Something went wrong";
    "invalid_email" => "请填写有效的邮箱地址，卡密和订单查询都要用到它。", "Please enter a valid email address: your codes and order lookup depend on it.";
    "invalid_query_password" => "查询密码过长，请换一个短一些的。", "The query password is too long. Please choose a shorter one.";
    "invalid_quantity" => "每单可购 {min} 至 {max} 件，请调整购买数量。", "Each order takes {min} to {max}. Please change the quantity.";
    "error_invalid_request" => "提交的信息有误，请检查后重试。", "Some of the information you entered is not valid. Please check it and try again.";
    "error_not_found" => "您要找的页面或订单不存在。", "We could not find that page or order.";
    "error_unauthorized" => "页面已过期，请刷新后重试。", "This page has expired. Please reload it and try again.";
    "error_sold_out" => "抱歉，该商品已售罄。", "Sorry, this product is sold out.";
    "error_insufficient_stock" => "库存不足，请减少购买数量。", "Not enough stock left. Please choose a smaller quantity.";
    "error_limit_exceeded" => "已超过该商品的限购数量。", "You have reached the purchase limit for this product.";
    "error_sale_not_started" => "该商品尚未开售。", "This product is not on sale yet.";
    "error_sale_ended" => "该商品已停止销售。", "This product is no longer on sale.";
    "error_idempotency_conflict" => "该请求已提交过，请返回后重试。", "This request was already submitted. Please go back and try again.";
    "error_rate_limited" => "操作过于频繁，请稍后再试。", "Too many attempts. Please wait a moment and try again.";
    "error_payload_too_large" => "提交的内容过大。", "What you submitted is too large.";
    "error_unavailable" => "服务暂时不可用，请稍后再试。", "The shop is temporarily unavailable. Please try again shortly.";
    "error_overloaded" => "当前下单人数过多，请稍等一秒后重试。", "Too many orders at this moment. Please try again in a second.";
    "error_form_expired" => "页面已过期，请刷新后重新提交。", "This form has expired. Please reload the page and submit it again.";
    "error_method_not_allowed" => "无法以这种方式打开此页面，请从店铺页面进入。", "This page cannot be opened that way. Please go through the shop's pages.";
    "error_internal_error" => "系统繁忙，请稍后再试。", "Something went wrong on our side. Please try again later.";
    "error_fallback_message" => "请求暂时无法完成，请稍后再试。", "We could not complete your request. Please try again later.";
    "error_go_home" => "返回首页", "Back to the shop";

    // Back from a gateway, in a browser without the order's cookie
    "returned_heading" => "已从支付页面返回", "Back from the payment page";
    "returned_order" => "订单号", "Order";
    "returned_note" => "付款以支付平台发来的通知为准，确认后立即发货。打开下单时的订单链接即可查看卡密，也可以凭邮箱和查询密码查询订单。", "Your payment counts once the payment service itself confirms it, and the codes are delivered at once. Open the order link you were given when ordering to see them, or look up your orders with your email and query password.";
}

/// The string for `key` in `lang` (`"en"`, otherwise Chinese); `"?"` for an unknown key,
/// so a typo shows up on the page instead of failing the request.
pub fn tr(lang: &str, key: &str) -> &'static str {
    match lookup(key) {
        Some((_, en)) if lang == "en" => en,
        Some((zh, _)) => zh,
        None => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATES: &[(&str, &str)] = &[
        ("base.html", include_str!("../../templates/base.html")),
        ("index.html", include_str!("../../templates/index.html")),
        ("product.html", include_str!("../../templates/product.html")),
        ("order.html", include_str!("../../templates/order.html")),
        (
            "pay_sandbox.html",
            include_str!("../../templates/pay_sandbox.html"),
        ),
        ("lookup.html", include_str!("../../templates/lookup.html")),
        ("error.html", include_str!("../../templates/error.html")),
        (
            "returned.html",
            include_str!("../../templates/returned.html"),
        ),
    ];

    /// Keys built at run time (`tr("status_" ~ status)` in templates, `channel_<name>` and
    /// `error_<code>` in the handlers) must exist for every value the API defines.
    const CHANNELS: &[&str] = &["sandbox", "epay", "alipay", "wechatpay", "stripe", "epusdt"];
    const ERROR_CODES: &[&str] = &[
        "invalid_request",
        "not_found",
        "unauthorized",
        "sold_out",
        "insufficient_stock",
        "limit_exceeded",
        "sale_not_started",
        "sale_ended",
        "idempotency_conflict",
        "rate_limited",
        "payload_too_large",
        "unavailable",
        "internal_error",
        "overloaded",
        "form_expired",
        "method_not_allowed",
    ];
    const STATUSES: &[&str] = &[
        "pending",
        "delivered",
        "expired",
        "paid_unfulfilled",
        "refunded",
    ];

    /// The literal keys in `tr("…")` calls (either quote style).
    fn literal_keys(source: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for quote in ['"', '\''] {
            let opening = format!("tr({quote}");
            let closing = format!("{quote})");
            let mut rest = source;
            while let Some(start) = rest.find(&opening) {
                rest = &rest[start + opening.len()..];
                let Some(end) = rest.find(quote) else { break };
                if rest[end..].starts_with(&closing) {
                    keys.push(rest[..end].to_owned());
                }
            }
        }
        keys
    }

    #[test]
    fn every_key_is_translated_in_both_languages() {
        for key in KEYS {
            for lang in ["zh", "en"] {
                let text = tr(lang, key);
                assert!(!text.is_empty() && text != "?", "{key} has no {lang} text");
            }
        }
    }

    #[test]
    fn every_key_used_in_templates_exists() {
        let mut used = 0;
        for (name, source) in TEMPLATES {
            for key in literal_keys(source) {
                assert!(
                    KEYS.contains(&key.as_str()),
                    "{name} uses unknown key {key:?}"
                );
                used += 1;
            }
        }
        assert!(
            used > 50,
            "found only {used} tr() calls; is the scanner broken?"
        );
    }

    #[test]
    fn every_built_key_exists() {
        let built = STATUSES
            .iter()
            .map(|s| format!("status_{s}"))
            .chain(CHANNELS.iter().map(|c| format!("channel_{c}")))
            .chain(ERROR_CODES.iter().map(|c| format!("error_{c}")))
            .chain(
                kami_core::pricing::CouponRefusal::ALL
                    .iter()
                    .map(|r| format!("coupon_{}", r.key())),
            );
        for key in built {
            assert!(KEYS.contains(&key.as_str()), "missing {key}");
        }
    }

    #[test]
    fn keys_are_unique() {
        let mut sorted = KEYS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), KEYS.len());
    }

    #[test]
    fn unknown_key_and_language_fall_back() {
        assert_eq!(tr("en", "no_such_key"), "?");
        assert_eq!(tr("fr", "nav_home"), tr("zh", "nav_home"));
        assert_eq!(tr("en", "nav_home"), "Home");
    }
}
