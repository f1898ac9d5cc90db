//! The pay page of a real gateway: `GET /pay/{channel}/{order_no}` starts
//! (or resumes) the order's payment and sends the buyer to the gateway.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use kami_core::{now_millis, OrderStatus};

use super::{order_access, product_name, Access, Page, PageQuery};
use crate::error::ApiError;
use crate::services::payments::start_payment;
use crate::state::Shared;

pub async fn gateway_page(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((channel, order_no)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Response {
    let page = Page::new(&state, &headers, &q);
    let Some(ch) = state.channel(&channel).cloned() else {
        return page.error(&state, &ApiError::not_found("page"));
    };
    let path = format!("/pay/{channel}/{order_no}");
    let order = match order_access(&state, &page, &headers, &order_no, &q, &path).await {
        Ok(Access::Granted(o)) => o,
        Ok(Access::Redirect(mut res)) => {
            page.finish(&mut res);
            return res;
        }
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
    match start_payment(&state, ch.as_ref(), &order, &subject).await {
        Ok(url) => {
            let mut res = Redirect::to(&url).into_response();
            page.finish(&mut res);
            res
        }
        Err(e) => page.error(&state, &e),
    }
}
