//! The pay page of a real gateway: `GET /pay/{channel}/{order_no}` starts
//! (or resumes) the order's payment and sends the buyer to the gateway, or,
//! for scan-to-pay channels, shows the payment as a QR code and reloads
//! until the order is paid.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use kami_core::{now_millis, OrderStatus};
use serde_json::json;

use super::{order_access, order_view, product_name, Page, PageQuery};
use crate::error::ApiError;
use crate::extract::ClientIp;
use crate::services::payments::start_payment;
use crate::state::Shared;

pub async fn gateway_page(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Path((channel, order_no)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Response {
    let mut page = Page::new(&state, &headers, &q);
    if let Err(e) = state
        .limits
        .check_ip(crate::rate_limit::Class::Reads, ip)
        .await
    {
        return page.error(&state, &e);
    }
    let Some(ch) = state.enabled_channel(&channel) else {
        return page.error(&state, &ApiError::not_found("page"));
    };
    let (order, _token) = match order_access(&state, &mut page, &headers, &order_no, &q).await {
        Ok(a) => a,
        Err(e) => return page.error(&state, &e),
    };
    // Another channel's order, or one no longer awaiting payment: the order
    // page says what there is to say.
    let pending = order.status.0.as_seen_at(order.expires_at, now_millis()) == OrderStatus::Pending;
    if order.channel != channel || !pending {
        let mut res = Redirect::to(&format!("/orders/{order_no}")).into_response();
        page.finish(&mut res);
        return res;
    }
    let subject = format!(
        "{} × {}",
        product_name(&state, order.product_id).await,
        order.quantity
    );
    let url = match start_payment(&state, ch.as_ref(), &order, &subject).await {
        Ok(url) => url,
        Err(e) => return page.error(&state, &e),
    };
    if !ch.scan_to_pay() {
        let mut res = Redirect::to(&url).into_response();
        page.finish(&mut res);
        return res;
    }
    let Some(qr) = crate::qr::svg_data_uri(&url, 240) else {
        return page.error(
            &state,
            &ApiError::internal("payment URL too long for a QR code"),
        );
    };
    let name = product_name(&state, order.product_id).await;
    page.render(
        &state,
        StatusCode::OK,
        "pay_qr.html",
        json!({"order": order_view(&order, &name), "channel": channel, "qr": qr}),
    )
}
