//! Payment callbacks: `/pay/{channel}/notify` in each gateway's own format,
//! and `/pay/{channel}/return`, which only shows the order.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use kami_pay::{Notification, Reply};
use serde::Deserialize;

use crate::extract::{ClientIp, ReadLimited};
use crate::services::notify::handle_notification;
use crate::state::Shared;

/// A gateway's answer; a 503 (Kami could not take the notification now)
/// says when to retry, as every 503 of Kami's does.
pub fn reply(r: Reply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut res = (status, [(header::CONTENT_TYPE, r.content_type)], r.body).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        res.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(1));
    }
    res
}

/// Never rate-limited (API.md): gateways send bursts during a drop, and a
/// signature check is cheaper than counting. The client's address bounds
/// how many forged ones are written down (`handle_notification`).
pub async fn notify(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    channel: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A name that is not even UTF-8 (`/pay/%FF/notify`) names no channel:
    // the same JSON 404 as an unknown one, not axum's plain-text 400.
    let Some(ch) = channel.ok().and_then(|Path(c)| state.channel(&c)) else {
        return crate::error::ApiError::not_found("payment channel").into_response();
    };
    let n = Notification {
        query: query.unwrap_or_default(),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: body.to_vec(),
    };
    reply(handle_notification(&state, ch.as_ref(), n, Some(ip)).await)
}

#[derive(Deserialize)]
pub struct ReturnQuery {
    order_no: Option<String>,
    out_trade_no: Option<String>,
}

/// Where gateways send the buyer back. It is never proof of payment: it only
/// leads to the order page, which shows what the database says
/// (`shop::returned`).
pub async fn return_page(
    State(state): State<Shared>,
    _: ReadLimited,
    headers: HeaderMap,
    Path(_channel): Path<String>,
    Query(q): Query<ReturnQuery>,
) -> Response {
    match q
        .order_no
        .or(q.out_trade_no)
        .and_then(|n| kami_core::OrderNo::parse(&n))
    {
        Some(no) => crate::shop::returned(&state, &headers, &no),
        None => Redirect::to("/lookup").into_response(),
    }
}
