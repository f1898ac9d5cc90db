//! The storefront: server-rendered pages (minijinja, auto-escaped) that buy
//! through the same services as the JSON API. Forms carry a CSRF token.

pub(crate) mod cookies;
mod gateway;
pub mod i18n;
mod markdown;

pub use gateway::gateway_page;

use std::net::IpAddr;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use kami_core::now_millis;
use kami_core::order::rfc3339;
use kami_core::pricing::CouponRefusal;
use kami_core::secrets::random_token;
use kami_core::stock_display::StockLevel;
use kami_core::StockDisplay;
use kami_pay::sandbox;
use kami_pay::Notification;
use kami_store::{Order, Product};
use minijinja::Value;
use serde::Deserialize;
use serde_json::json;

use crate::api::public::{authorised_order, lookup, LOOKUP_PAGE};
use crate::error::ApiError;
use crate::extract::ClientIp;
use crate::present::money;
use crate::rate_limit::Class;
use crate::services::cards::delivered_codes;
use crate::services::notify::handle_notification;
use crate::services::orders::{place_order, quote, OrderRequest};
use crate::state::Shared;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("index.html", include_str!("../../templates/index.html")),
    ("product.html", include_str!("../../templates/product.html")),
    ("order.html", include_str!("../../templates/order.html")),
    (
        "pay_sandbox.html",
        include_str!("../../templates/pay_sandbox.html"),
    ),
    ("pay_qr.html", include_str!("../../templates/pay_qr.html")),
    ("_quote.html", include_str!("../../templates/_quote.html")),
    ("lookup.html", include_str!("../../templates/lookup.html")),
    ("error.html", include_str!("../../templates/error.html")),
    (
        "returned.html",
        include_str!("../../templates/returned.html"),
    ),
];

pub const CSS: &str = include_str!("../../static/kami.css");
/// Kept in a file rather than inline so the CSP can forbid inline scripts.
pub const JS: &str = include_str!("../../static/kami.js");

pub fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    for (name, src) in TEMPLATES {
        env.add_template(name, src)
            .expect("templates are checked by the test suite");
    }
    env.add_filter("when", when);
    env
}

/// An RFC 3339 time as a page shows it: `2026-12-03 15:31:57 UTC`, to the
/// second (the API's milliseconds are for programs). `kami.js` then shows
/// it in the browser's own time zone, keeping this as the title.
fn when(rfc3339: &str) -> String {
    let (date, time) = rfc3339.split_once('T').unwrap_or((rfc3339, ""));
    let time = time.trim_end_matches('Z');
    let time = time.split('.').next().unwrap_or(time);
    if time.is_empty() {
        return date.to_string();
    }
    format!("{date} {time} UTC")
}

/// What every page needs: language, CSRF token, and cookies to set.
struct Page {
    lang: &'static str,
    csrf: String,
    set_cookies: Vec<String>,
    secure: bool,
}

#[derive(Deserialize, Default)]
pub struct PageQuery {
    lang: Option<String>,
    token: Option<String>,
    /// A product page opened with a coupon (a shared link) prices with it.
    coupon: Option<String>,
    quantity: Option<String>,
}

impl Page {
    fn new(state: &Shared, headers: &HeaderMap, q: &PageQuery) -> Self {
        let secure = state.settings.served_over_https();
        let mut set_cookies = Vec::new();
        let lang = match q.lang.as_deref() {
            Some(l @ ("en" | "zh")) => {
                set_cookies.push(cookies::set(cookies::LANG, l, 365 * 86400, "Lax", secure));
                if l == "en" {
                    "en"
                } else {
                    "zh"
                }
            }
            _ => match cookies::get(headers, cookies::LANG) {
                Some("en") => "en",
                Some("zh") => "zh",
                _ => accept_language(headers),
            },
        };
        let csrf = match cookies::form_token(headers, cookies::csrf(secure)) {
            Some(t) => t.to_string(),
            None => {
                let t = random_token("");
                set_cookies.push(cookies::set(
                    cookies::csrf(secure),
                    &t,
                    86400,
                    "Strict",
                    secure,
                ));
                t
            }
        };
        Self {
            lang,
            csrf,
            set_cookies,
            secure,
        }
    }

    fn render(
        self,
        state: &Shared,
        status: StatusCode,
        name: &str,
        mut ctx: serde_json::Value,
    ) -> Response {
        let lang = self.lang;
        ctx["lang"] = json!(lang);
        let shop = state.shop();
        ctx["shop_name"] = json!(shop.shop_name);
        ctx["sandbox"] = json!(state.enabled_channel(sandbox::NAME).is_some());
        ctx["csrf"] = json!(self.csrf);
        // The language links go to `lang_path` (this page's own path when
        // empty); a page answered to a POST names the page to go back to,
        // which the route of its form is not.
        if ctx.get("lang_path").is_none() {
            ctx["lang_path"] = json!("");
        }
        ctx["notice"] = json!(shop.notice);
        let ctx = minijinja::context! {
            tr => Value::from_function(move |key: &str| i18n::tr(lang, key)),
            ..Value::from_serialize(&ctx)
        };
        let html = match state
            .templates
            .get_template(name)
            .and_then(|t| t.render(ctx))
        {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(template = name, error = %e, "template failed");
                return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
            }
        };
        let mut res = (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                // The page's language follows the request's.
                (header::VARY, "Accept-Language"),
            ],
            html,
        )
            .into_response();
        self.finish(&mut res);
        res
    }

    fn finish(self, res: &mut Response) {
        for c in self.set_cookies {
            if let Ok(v) = HeaderValue::from_str(&c) {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
        }
    }

    fn error(self, state: &Shared, e: &ApiError) -> Response {
        let message = friendly(self.lang, e);
        let title = i18n::tr(self.lang, "error_title");
        let res = self.render(
            state,
            e.status,
            "error.html",
            json!({"status": e.status.as_u16(), "title": title, "message": message}),
        );
        with_retry_after(res, Some(e))
    }

    fn check_csrf(&self, headers: &HeaderMap, submitted: &str) -> Result<(), ApiError> {
        match cookies::form_token_ok(headers, cookies::csrf(self.secure), submitted) {
            true => Ok(()),
            false => Err(ApiError {
                status: StatusCode::FORBIDDEN,
                code: "form_expired",
                message: "the form expired; reload the page and try again".into(),
                param: None,
                retry_after: None,
            }),
        }
    }
}

/// The storefront's error page for a bare status (crate::html_errors), in
/// the visitor's language.
pub fn error_page(state: &Shared, headers: &HeaderMap, status: StatusCode) -> Response {
    let page = Page::new(state, headers, &PageQuery::default());
    let code = crate::html_errors::status_code_name(status);
    let message = i18n::tr(page.lang, &format!("error_{code}"));
    let title = i18n::tr(page.lang, "error_title");
    page.render(
        state,
        status,
        "error.html",
        json!({"status": status.as_u16(), "title": title, "message": message}),
    )
}

/// The buyer-facing text for an API error, in the page's language. The
/// fields a buyer types are named in it; for other invalid input the API's
/// detail follows, since it says what to fix.
fn friendly(lang: &str, e: &ApiError) -> String {
    // The fields a buyer types, said wholly in the page's language: the
    // API's English rule used to be appended to a Chinese sentence.
    if e.code == "invalid_request" {
        match e.param {
            Some(field @ ("email" | "query_password")) => {
                return i18n::tr(lang, &format!("invalid_{field}")).to_string()
            }
            Some("quantity") => {
                let bounds: Vec<&str> = e
                    .message
                    .split(|c: char| !c.is_ascii_digit())
                    .filter(|s| !s.is_empty())
                    .collect();
                if let [min, max] = bounds[..] {
                    return i18n::tr(lang, "invalid_quantity")
                        .replace("{min}", min)
                        .replace("{max}", max);
                }
            }
            _ => {}
        }
    }
    if e.param == Some("coupon") {
        if let Some(r) = CouponRefusal::ALL
            .iter()
            .find(|r| r.to_string() == e.message)
        {
            return i18n::tr(lang, &format!("coupon_{}", r.key())).to_string();
        }
    }
    match i18n::tr(lang, &format!("error_{}", e.code)) {
        "?" => e.message.clone(),
        m if e.code == "invalid_request" => format!("{m} ({})", e.message),
        m => m.to_string(),
    }
}

/// The language a browser asks for (`Accept-Language`), among the two the
/// shop speaks; Chinese when it asks for neither. The admin panel uses it too.
pub(crate) fn accept_language(headers: &HeaderMap) -> &'static str {
    let al = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    // The language of highest weight (`q`, 1 when left out; the first
    // listed among equals) that the shop speaks decides; Chinese otherwise.
    let mut best: Option<(f32, &'static str)> = None;
    for item in al.split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let lang = match tag.split('-').next().unwrap_or("") {
            "en" => "en",
            "zh" => "zh",
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, lang));
        }
    }
    best.map_or("zh", |(_, lang)| lang)
}

/// A product for the pages. Under `level` and `hidden` the count is left
/// out of the page entirely (the JSON API still gives it, as API.md says).
fn product_view(p: &Product, now: i64, shop_default: StockDisplay) -> serde_json::Value {
    let display = p.stock_display.unwrap_or(shop_default);
    let excerpt: String = markdown::to_text(&p.description)
        .chars()
        .take(120)
        .collect();
    json!({
        "id": p.id,
        "name": p.name,
        "category": p.category,
        "description": p.description,
        // Sanitised by markdown::to_html; the template marks only this safe.
        "description_html": markdown::to_html(&p.description),
        "description_excerpt": excerpt,
        "price_display": money(p.price, &p.currency),
        "stock": (display == StockDisplay::Exact).then_some(p.stock),
        "stock_display": display.as_str(),
        "stock_level": (display == StockDisplay::Level)
            .then(|| StockLevel::of(p.stock, p.low_stock_threshold).as_str()),
        "sold_out": p.stock == 0,
        "min_quantity": p.min_quantity,
        "max_quantity": p.max_quantity,
        "sale_not_started": p.sale_starts_at.is_some_and(|s| now < s),
        "sale_starts_at": p.sale_starts_at.map(rfc3339),
        "tiers": p.wholesale_tiers.iter().map(|t| json!({
            "min_quantity": t.min_quantity,
            "price": money(t.price, &p.currency),
        })).collect::<Vec<_>>(),
    })
}

fn order_view(o: &Order, product_name: &str) -> serde_json::Value {
    let status = o.status.0.as_seen_at(o.expires_at, now_millis());
    json!({
        "order_no": o.order_no,
        "status": status.as_str(),
        "amount_display": money(o.amount, &o.currency),
        "quantity": o.quantity,
        "product_name": product_name,
        "created_at": rfc3339(o.created_at),
        "expires_at": rfc3339(o.expires_at),
        "paid_at": o.paid_at.map(rfc3339),
    })
}

async fn product_name(state: &Shared, id: i64) -> String {
    match state
        .catalog
        .product(state.store.as_ref(), &state.gate, id)
        .await
    {
        Ok(Some(p)) => p.name,
        _ => String::new(),
    }
}

pub async fn index(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let page = Page::new(&state, &headers, &q);
    if let Err(e) = state.limits.check_ip(Class::Reads, ip).await {
        return page.error(&state, &e);
    }
    let products = match state
        .catalog
        .visible(state.store.as_ref(), &state.gate)
        .await
    {
        Ok(p) => p,
        Err(e) => return page.error(&state, &e.into()),
    };
    let now = now_millis();
    let mut categories: Vec<String> = Vec::new();
    for c in products.iter().filter_map(|p| p.category.clone()) {
        if !categories.contains(&c) {
            categories.push(c);
        }
    }
    let views: Vec<_> = products
        .iter()
        .map(|p| product_view(p, now, state.shop().stock_display))
        .collect();
    page.render(
        &state,
        StatusCode::OK,
        "index.html",
        json!({"products": views, "categories": categories}),
    )
}

async fn render_product(
    state: &Shared,
    page: Page,
    id: i64,
    status: StatusCode,
    error: Option<String>,
    form: serde_json::Value,
    client: Option<IpAddr>,
) -> Response {
    state.gate.confirm_small(state.store.as_ref(), id).await;
    let product = match state
        .catalog
        .product(state.store.as_ref(), &state.gate, id)
        .await
    {
        Ok(Some(p)) if p.visible => p,
        Ok(_) => return page.error(state, &ApiError::not_found("product")),
        Err(e) => return page.error(state, &e.into()),
    };
    let (quote, throttled) = quote_view(state, &page, &product, &form, client).await;
    // A channel whose breaker is open is not offered; the others are.
    let channels: Vec<_> = state
        .offered_channels()
        .into_iter()
        .filter(|n| {
            state
                .channel(n)
                .is_some_and(|c| c.collects(&product.currency))
        })
        .map(|n| json!({"name": n, "label": i18n::tr(page.lang, &format!("channel_{n}"))}))
        .collect();
    let status = if throttled.is_some() && status.is_success() {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        status
    };
    let res = page.render(
        state,
        status,
        "product.html",
        json!({"product": product_view(&product, now_millis(), state.shop().stock_display),
               "channels": channels, "error": error, "form": form, "quote": quote,
               "lang_path": format!("/products/{id}")}),
    );
    with_retry_after(res, throttled.as_ref())
}

/// A page answering a refusal that says when to retry (a 429: the error
/// page, a throttled coupon guess) carries its `Retry-After`, as the API's
/// does.
fn with_retry_after(mut res: Response, throttled: Option<&ApiError>) -> Response {
    if let Some(secs) = throttled.and_then(|e| e.retry_after) {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    res
}

/// The price box under the order form: subtotal, coupon discount and total
/// for the form's quantity and coupon, or why the coupon does not apply;
/// and the refusal when the coupon was not even looked at because this
/// client guessed too many (the page then answers 429: the box alone is no
/// signal to a script).
async fn quote_view(
    state: &Shared,
    page: &Page,
    product: &Product,
    form: &serde_json::Value,
    client: Option<IpAddr>,
) -> (serde_json::Value, Option<ApiError>) {
    let quantity = form["quantity"]
        .as_str()
        .and_then(|q| q.trim().parse::<i64>().ok())
        .unwrap_or(product.min_quantity)
        .clamp(product.min_quantity, product.max_quantity);
    let coupon = form["coupon"].as_str().filter(|c| !c.trim().is_empty());
    let terms = product.sale_terms();
    let now = now_millis();
    let (q, refusal) = match quote(state, &terms, quantity, coupon, client, now).await {
        Ok(q) => (q, None),
        // Show the price without the coupon, and why it was refused.
        Err(e) if e.param == Some("coupon") || e.code == "rate_limited" => {
            match quote(state, &terms, quantity, None, None, now).await {
                Ok(q) => (q, Some(e)),
                Err(_) => return (serde_json::Value::Null, None),
            }
        }
        Err(_) => return (serde_json::Value::Null, None),
    };
    let message = refusal.as_ref().map(|e| friendly(page.lang, e));
    let throttled = refusal.filter(|e| e.code == "rate_limited");
    let view = json!({
        "quantity": q.quantity,
        "unit_price": money(q.unit_price, &q.currency),
        "subtotal": money(q.subtotal, &q.currency),
        "discount": (q.discount > 0).then(|| money(q.discount, &q.currency)),
        "total": money(q.amount, &q.currency),
        "coupon": q.coupon.as_ref().map(|c| c.code.clone()),
        "coupon_error": message,
    });
    (view, throttled)
}

/// `GET /products/{id}/quote?quantity=&coupon=`: the price box alone, for
/// the product page's script to swap in as the buyer types.
pub async fn quote_fragment(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<PageQuery>,
) -> Response {
    let page = Page::new(&state, &headers, &PageQuery::default());
    if let Err(e) = state.limits.check_ip(Class::Reads, ip).await {
        return page.error(&state, &e);
    }
    let product = match state
        .catalog
        .product(state.store.as_ref(), &state.gate, id)
        .await
    {
        Ok(Some(p)) if p.visible => p,
        Ok(_) => return page.error(&state, &ApiError::not_found("product")),
        Err(e) => return page.error(&state, &e.into()),
    };
    let form =
        json!({"quantity": q.quantity.unwrap_or_default(), "coupon": q.coupon.unwrap_or_default()});
    let (quote, throttled) = quote_view(&state, &page, &product, &form, Some(ip)).await;
    let status = match throttled {
        Some(_) => StatusCode::TOO_MANY_REQUESTS,
        None => StatusCode::OK,
    };
    let res = page.render(&state, status, "_quote.html", json!({"quote": quote}));
    with_retry_after(res, throttled.as_ref())
}

pub async fn product(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<PageQuery>,
) -> Response {
    let page = Page::new(&state, &headers, &q);
    if let Err(e) = state.limits.check_ip(Class::Reads, ip).await {
        return page.error(&state, &e);
    }
    let form = json!({"email": "", "quantity": q.quantity.clone().unwrap_or_default(),
                      "coupon": q.coupon.clone().unwrap_or_default()});
    render_product(&state, page, id, StatusCode::OK, None, form, Some(ip)).await
}

#[derive(Deserialize)]
pub struct BuyForm {
    csrf: String,
    quantity: Option<String>,
    email: String,
    query_password: Option<String>,
    channel: Option<String>,
    coupon: Option<String>,
}

pub async fn buy(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<BuyForm>,
) -> Response {
    let page = Page::new(&state, &headers, &PageQuery::default());
    if let Err(e) = page.check_csrf(&headers, &form.csrf) {
        return page.error(&state, &e);
    }
    if let Err(e) = state.limits.check_ip(Class::Orders, ip).await {
        return page.error(&state, &e);
    }
    let req = OrderRequest {
        product_id: json!(id),
        quantity: Some(
            form.quantity
                .as_deref()
                .and_then(|q| q.trim().parse().ok())
                .unwrap_or(0),
        ),
        email: Some(form.email.clone()),
        query_password: form.query_password.clone(),
        coupon: form.coupon.clone(),
        channel: form.channel.clone(),
    };
    match place_order(&state, &req, Some(ip), None).await {
        Ok(placed) => {
            let no = placed.order.order_no.clone();
            let cookie = cookies::set(
                &cookies::order_cookie(&no),
                &placed.access_token,
                30 * 86400,
                "Lax",
                page.secure,
            );
            let mut res =
                Redirect::to(&format!("/pay/{}/{no}", placed.order.channel)).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
            page.finish(&mut res);
            res
        }
        Err(e) => {
            let message = friendly(page.lang, &e);
            let sticky = json!({"email": form.email, "quantity": form.quantity.unwrap_or_default(),
                                "coupon": form.coupon.unwrap_or_default()});
            render_product(&state, page, id, e.status, Some(message), sticky, Some(ip)).await
        }
    }
}

/// The order a page is about, authorised by `?token=` or by the order's
/// cookie, and the token. A token in the URL is also put in the cookie
/// (among the page's cookies to set), for the page's own forms and links;
/// the page is shown at once rather than by a redirect to the URL without
/// it, so a client that keeps no cookies (curl, a script checking an API
/// order's `pay_url`) sees the page too. `kami.js` takes the token out of
/// the address bar.
async fn order_access(
    state: &Shared,
    page: &mut Page,
    headers: &HeaderMap,
    order_no: &str,
    q: &PageQuery,
) -> Result<(Order, String), ApiError> {
    let (token, from_url) = match q.token.as_deref() {
        Some(token) => (token, true),
        None => (
            cookies::get(headers, &cookies::order_cookie(order_no)).unwrap_or_default(),
            false,
        ),
    };
    let order = authorised_order(state, order_no, token).await?;
    if from_url {
        page.set_cookies.push(cookies::set(
            &cookies::order_cookie(order_no),
            token,
            30 * 86400,
            "Lax",
            page.secure,
        ));
    }
    Ok((order, token.to_string()))
}

/// Where a gateway sends the buyer back (`/pay/{channel}/return`); never
/// proof of payment. A browser holding the order's cookie goes on to the
/// order page, which shows what the database says. Any other client (the
/// buyer back on another device, or an order placed through the API whose
/// pay page was never opened here) is shown the order's number and how to
/// reach it: its state and codes are only for its token.
pub fn returned(state: &Shared, headers: &HeaderMap, order_no: &kami_core::OrderNo) -> Response {
    let path = format!("/orders/{order_no}");
    if cookies::get(headers, &cookies::order_cookie(order_no.as_str())).is_some() {
        return Redirect::to(&path).into_response();
    }
    let page = Page::new(state, headers, &PageQuery::default());
    page.render(
        state,
        StatusCode::OK,
        "returned.html",
        json!({"order_no": order_no.as_str()}),
    )
}

pub async fn order_page(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path(order_no): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let mut page = Page::new(&state, &headers, &q);
    if let Err(e) = state.limits.check_ip(Class::Reads, ip).await {
        return page.error(&state, &e);
    }
    let (order, token) = match order_access(&state, &mut page, &headers, &order_no, &q).await {
        Ok(a) => a,
        Err(e) => return page.error(&state, &e),
    };
    let status = order.status.0.as_seen_at(order.expires_at, now_millis());
    let delivered = status == kami_core::OrderStatus::Delivered;
    let cards = if delivered {
        match delivered_codes(state.store.as_ref(), &state.keys, &order).await {
            Ok(c) => c,
            Err(e) => return page.error(&state, &e),
        }
    } else {
        Vec::new()
    };
    let pending = status == kami_core::OrderStatus::Pending;
    let name = product_name(&state, order.product_id).await;
    // The order's own link, token included: the buyer's way back from any
    // browser or device (the cookie stays in this one, and an order placed
    // without a query password cannot be looked up). Shown only to a
    // browser already holding the token; the page is never cached.
    let private_link = format!(
        "{}/orders/{}?token={}",
        state.settings.public_url, order.order_no, token
    );
    page.render(
        &state,
        StatusCode::OK,
        "order.html",
        json!({
            "order": order_view(&order, &name),
            "pending": pending,
            "delivered": delivered,
            "pay_url": pending.then(|| format!("/pay/{}/{}", order.channel, order.order_no)),
            "cards": cards,
            "private_link": private_link,
        }),
    )
}

pub async fn codes_txt(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path(order_no): Path<String>,
) -> Response {
    if let Err(e) = state.limits.check_ip(Class::Reads, ip).await {
        return e.into_response();
    }
    let token = cookies::get(&headers, &cookies::order_cookie(&order_no)).unwrap_or_default();
    let result = async {
        let order = authorised_order(&state, &order_no, token).await?;
        if order.status.0 != kami_core::OrderStatus::Delivered {
            return Err(ApiError::not_found("codes"));
        }
        delivered_codes(state.store.as_ref(), &state.keys, &order).await
    }
    .await;
    match result {
        Ok(codes) => {
            let mut body = codes.join("\r\n");
            body.push_str("\r\n");
            (
                [
                    (
                        header::CONTENT_TYPE,
                        "text/plain; charset=utf-8".to_string(),
                    ),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{order_no}.txt\""),
                    ),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                ],
                body,
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub async fn sandbox_page(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path(order_no): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let mut page = Page::new(&state, &headers, &q);
    if let Err(e) = state.limits.check_ip(Class::Reads, ip).await {
        return page.error(&state, &e);
    }
    if state.sandbox().is_none() {
        return page.error(&state, &ApiError::not_found("page"));
    }
    let (order, _token) = match order_access(&state, &mut page, &headers, &order_no, &q).await {
        Ok(a) => a,
        Err(e) => return page.error(&state, &e),
    };
    let pending = order.status.0.as_seen_at(order.expires_at, now_millis())
        == kami_core::OrderStatus::Pending;
    let name = product_name(&state, order.product_id).await;
    page.render(
        &state,
        StatusCode::OK,
        "pay_sandbox.html",
        json!({"order": order_view(&order, &name), "pending": pending}),
    )
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// The sandbox "Pay" button: the server signs a notification exactly as the
/// sandbox gateway would and feeds it through the real notification path.
pub async fn sandbox_pay(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path(order_no): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let page = Page::new(&state, &headers, &PageQuery::default());
    if let Err(e) = page.check_csrf(&headers, &form.csrf) {
        return page.error(&state, &e);
    }
    if let Err(e) = state.limits.check_ip(Class::Reads, ip).await {
        return page.error(&state, &e);
    }
    let (Some(sb), Some(channel)) = (state.sandbox(), state.channel(sandbox::NAME)) else {
        return page.error(&state, &ApiError::not_found("page"));
    };
    let token = cookies::get(&headers, &cookies::order_cookie(&order_no)).unwrap_or_default();
    let order = match authorised_order(&state, &order_no, token).await {
        Ok(o) => o,
        Err(e) => return page.error(&state, &e),
    };
    // A second press (or a page left open) on an order paid or expired
    // meanwhile pays nothing again: it would be an extra payment to refund.
    if order.status.0.as_seen_at(order.expires_at, now_millis()) != kami_core::OrderStatus::Pending
    {
        let mut res = Redirect::to(&format!("/orders/{}", order.order_no)).into_response();
        page.finish(&mut res);
        return res;
    }
    let body = json!({
        "order_no": order.order_no,
        "trade_no": format!("SBX{}", random_token("")),
        "amount": order.amount,
        "currency": order.currency,
        "status": "paid",
    })
    .to_string();
    let n = Notification {
        query: String::new(),
        headers: vec![(
            sandbox::SIGNATURE_HEADER.to_string(),
            sb.sign(now_millis() / 1000, body.as_bytes()),
        )],
        body: body.into_bytes(),
    };
    let reply = handle_notification(&state, channel.as_ref(), n, None).await;
    if reply.status != 200 {
        return page.error(
            &state,
            &ApiError::bad_request("the sandbox payment was not accepted"),
        );
    }
    let mut res = Redirect::to(&format!("/orders/{order_no}")).into_response();
    page.finish(&mut res);
    res
}

#[derive(Deserialize)]
pub struct LookupForm {
    csrf: String,
    email: String,
    query_password: String,
}

pub async fn lookup_page(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let page = Page::new(&state, &headers, &q);
    if let Err(e) = state.limits.check_ip(Class::Reads, ip).await {
        return page.error(&state, &e);
    }
    page.render(
        &state,
        StatusCode::OK,
        "lookup.html",
        json!({"searched": false, "results": []}),
    )
}

pub async fn lookup_submit(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<LookupForm>,
) -> Response {
    let page = Page::new(&state, &headers, &PageQuery::default());
    let result = async {
        page.check_csrf(&headers, &form.csrf)?;
        state.limits.check_ip(Class::Lookup, ip).await?;
        let email = kami_core::Email::parse(&form.email)
            .map_err(|e| ApiError::invalid_param("email", e.to_string()))?;
        state.limits.check_email(email.as_str()).await?;
        let (found, _) = lookup(&state, &email, &form.query_password, None, LOOKUP_PAGE).await?;
        Ok::<_, ApiError>(found)
    }
    .await;
    match result {
        Ok(found) => {
            let mut results = Vec::new();
            for o in found {
                let name = product_name(&state, o["product_id"].as_i64().unwrap_or(0)).await;
                results.push(json!({
                    "order_no": o["order_no"],
                    "status": o["status"],
                    "amount_display": money(o["amount"].as_i64().unwrap_or(0), o["currency"].as_str().unwrap_or("")),
                    "created_at": o["created_at"],
                    "product_name": name,
                    "cards": o.get("cards").cloned().unwrap_or(json!([])),
                }));
            }
            page.render(
                &state,
                StatusCode::OK,
                "lookup.html",
                json!({"searched": true, "results": results}),
            )
        }
        Err(e) => {
            let status = e.status;
            let message = friendly(page.lang, &e);
            page.render(
                &state,
                status,
                "lookup.html",
                json!({"searched": false, "results": [], "error": message}),
            )
        }
    }
}

pub async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

pub async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        JS,
    )
        .into_response()
}

#[cfg(test)]
mod language_tests {
    use super::*;

    fn lang(value: &str) -> &'static str {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_str(value).unwrap(),
        );
        accept_language(&h)
    }

    #[test]
    fn the_weightiest_language_the_shop_speaks_decides() {
        assert_eq!(accept_language(&HeaderMap::new()), "zh");
        assert_eq!(lang("en"), "en");
        assert_eq!(lang("en-US,en;q=0.9"), "en");
        assert_eq!(lang("zh-CN,zh;q=0.9,en;q=0.8"), "zh");
        assert_eq!(lang("en;q=0.1, zh;q=0.9"), "zh");
        assert_eq!(lang("zh;q=0.9, en"), "en");
        assert_eq!(lang("fr-FR,en;q=0.5"), "en");
        assert_eq!(lang("fr-FR,de;q=0.5"), "zh");
        assert_eq!(lang("en;q=0, zh;q=0.1"), "zh");
        assert_eq!(lang("EN-gb"), "en");
    }
}
