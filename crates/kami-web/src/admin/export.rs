//! The orders CSV: the orders page's search (number, email, status, date
//! range) as a download, streamed page by page so a year of orders never
//! sits in memory. UTF-8 with a BOM, which is what makes Excel read Chinese
//! product names correctly; cells a spreadsheet would take as a formula are
//! defused. Never a code: the store's order rows do not carry them.
//!
//! Staff may export as well as the owner: the orders page already shows
//! staff every order and email, so the file reveals nothing new, and every
//! export is audited with its filters.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::stream::{self, StreamExt};
use kami_core::order::rfc3339;
use kami_core::{now_millis, Currency};
use kami_store::{Order, OrderFilter};

use super::auth::Operator;
use super::orders::{product_names, OrdersQuery, Search};
use super::page::PanelResult;
use crate::state::Shared;

/// Orders read per query while streaming.
const CHUNK: i64 = 500;

const HEADER: &[&str] = &[
    "order_no",
    "status",
    "product_id",
    "product",
    "quantity",
    "amount",
    "currency",
    "email",
    "channel",
    "created_at",
    "paid_at",
    "delivered_at",
];

/// One CSV cell. A cell starting with `=`, `+`, `-`, `@`, a tab or a CR is
/// prefixed with `'` (OWASP's CSV-injection advice), so a buyer who typed
/// `=HYPERLINK(…)` as an email part or a product named `@SUM(…)` stays text;
/// then quoted when it holds a separator, a quote or a line break.
pub fn cell(s: &str) -> String {
    let defused = match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    };
    if defused.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

fn line(cells: &[String]) -> String {
    let mut l = cells.join(",");
    l.push_str("\r\n");
    l
}

fn order_line(o: &Order, names: &HashMap<i64, String>, now: i64) -> String {
    let amount = Currency::parse(&o.currency)
        .map(|c| c.format_decimal(o.amount))
        .unwrap_or_else(|_| o.amount.to_string());
    let t = |ms: Option<i64>| ms.map(rfc3339).unwrap_or_default();
    line(&[
        cell(&o.order_no),
        cell(o.status.0.as_seen_at(o.expires_at, now).as_str()),
        o.product_id.to_string(),
        cell(names.get(&o.product_id).map_or("", String::as_str)),
        o.quantity.to_string(),
        cell(&amount),
        cell(&o.currency),
        cell(&o.email),
        cell(&o.channel),
        t(Some(o.created_at)),
        t(o.paid_at),
        t(o.delivered_at),
    ])
}

/// What is left to stream: the next page's filter, or nothing.
enum Next {
    Page(OrderFilter),
    Done,
}

pub async fn orders_csv(
    State(state): State<Shared>,
    op: Operator,
    Query(q): Query<OrdersQuery>,
) -> PanelResult<Response> {
    let search = q.search(CHUNK)?;
    op.audit(&state, "orders_exported", "orders", &q.query_string())
        .await?;
    let names = Arc::new(product_names(&state.store.list_products_uncounted().await?));
    let now = now_millis();
    let mut head = String::from("\u{feff}");
    head.push_str(&line(
        &HEADER.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    ));
    let first = match search {
        Search::Number(no) => {
            if let Some(o) = state.store.get_order(&no).await? {
                head.push_str(&order_line(&o, &names, now));
            }
            Next::Done
        }
        Search::Filter(f) => Next::Page(f),
    };
    let pages = stream::unfold(first, move |next| {
        let state = state.clone();
        let names = names.clone();
        async move {
            let Next::Page(filter) = next else {
                return None;
            };
            match state.store.list_orders(&filter).await {
                Ok(orders) => {
                    let body: String = orders.iter().map(|o| order_line(o, &names, now)).collect();
                    let next = match orders.last() {
                        Some(last) if orders.len() as i64 == filter.limit => {
                            Next::Page(OrderFilter {
                                before_id: Some(last.id),
                                ..filter
                            })
                        }
                        _ => Next::Done,
                    };
                    Some((Ok::<_, std::io::Error>(Bytes::from(body)), next))
                }
                Err(e) => {
                    // The headers are sent; cutting the body short is the
                    // only way left to tell the client the file is incomplete.
                    tracing::error!(error = %e, "orders export failed mid-stream");
                    Some((Err(std::io::Error::other("export failed")), Next::Done))
                }
            }
        }
    });
    let body = stream::once(async move { Ok(Bytes::from(head)) }).chain(pages);
    let filename = format!("orders-{}.csv", &rfc3339(now)[..10]);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn formulas_are_defused_and_separators_quoted() {
        assert_eq!(cell("=1+1"), "'=1+1");
        assert_eq!(cell("+86 123"), "'+86 123");
        assert_eq!(cell("-5"), "'-5");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("\rx"), "\"'\rx\"");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(
            cell("=HYPERLINK(\"x\",\"y\")"),
            "\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\""
        );
        assert_eq!(cell("测试商品"), "测试商品");
    }
}
