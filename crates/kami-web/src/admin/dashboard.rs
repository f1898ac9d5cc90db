//! The dashboard: sales for today / 7 / 30 days, a server-rendered SVG bar
//! chart, low-stock products, and what needs the operator (paid orders
//! without codes, dead jobs).

use axum::extract::State;
use kami_core::{now_millis, OrderStatus};
use kami_store::{DaySales, OrderFilter};
use serde_json::{json, Value};

use super::auth::Operator;
use super::page::{time, PanelResult};
use crate::present::money;
use crate::state::Shared;

const DAY_MS: i64 = 86_400_000;
const DAYS: i64 = 30;
/// Chart geometry (SVG user units); the SVG scales to the page width.
const BAR_STEP: i64 = 20;
const CHART_HEIGHT: i64 = 120;

pub async fn show(State(state): State<Shared>, op: Operator) -> PanelResult {
    let now = now_millis();
    let today = now - now.rem_euclid(DAY_MS);
    let since = today - (DAYS - 1) * DAY_MS;
    let days = state.store.sales_by_day(since, DAY_MS).await?;
    let windows: Vec<Value> = [("today", 1), ("last_7_days", 7), ("last_30_days", DAYS)]
        .iter()
        .map(|(label, n)| window(label, &days, DAYS - n))
        .collect();

    let by_status = state.store.count_orders_by_status().await?;
    let unfulfilled = by_status
        .iter()
        .find(|(s, _)| s == OrderStatus::PaidUnfulfilled.as_str())
        .map_or(0, |(_, n)| *n);
    let jobs = state.store.job_counts().await?;
    // Low stock by the gate's counts (the product list's, not a count of
    // every product's codes per view).
    let products = crate::services::catalog::load(state.store.as_ref(), &state.gate).await?;
    let low: Vec<Value> = products
        .iter()
        .filter(|p| {
            (p.low_stock_threshold > 0 && p.stock <= p.low_stock_threshold)
                || (p.visible && p.stock == 0)
        })
        .map(|p| json!({"id": p.id, "name": p.name, "stock": p.stock}))
        .collect();
    let recent = state
        .store
        .list_orders(&OrderFilter {
            limit: 10,
            ..OrderFilter::default()
        })
        .await?;
    let names = super::orders::product_names(&products);
    let recent: Vec<Value> = recent
        .iter()
        .map(|o| super::orders::row(o, &names, now))
        .collect();
    Ok(op.render(
        "admin/dashboard.html",
        json!({
            "nav": "dashboard",
            "windows": windows,
            "chart": chart(&days, since),
            "unfulfilled": unfulfilled,
            "dead_jobs": jobs.dead,
            "low_stock": low,
            "recent": recent,
        }),
    ))
}

/// Totals of the days from `first_day` (index into the 30-day window) on.
fn window(label: &str, days: &[DaySales], first_day: i64) -> Value {
    let mut created = 0;
    let mut paid = 0;
    let mut amounts: Vec<(String, i64)> = Vec::new();
    for d in days.iter().filter(|d| d.day >= first_day) {
        created += d.created;
        paid += d.paid;
        for (cur, amount) in &d.amounts {
            match amounts.iter_mut().find(|(c, _)| c == cur) {
                Some((_, total)) => *total += amount,
                None => amounts.push((cur.clone(), *amount)),
            }
        }
    }
    let sales: Vec<String> = amounts.iter().map(|(c, a)| money(*a, c)).collect();
    // Paid over created in the same window: payments of older orders can
    // push it past 100 %, which is capped rather than shown.
    let conversion = if created > 0 {
        format!("{:.0}%", (paid as f64 * 100.0 / created as f64).min(100.0))
    } else {
        "–".into()
    };
    json!({"label": label, "created": created, "paid": paid,
           "sales": if sales.is_empty() { "0".to_string() } else { sales.join(" + ") },
           "conversion": conversion})
}

/// Bars with their geometry precomputed, so the template only prints numbers.
fn chart(days: &[DaySales], since: i64) -> Value {
    let max = days.iter().map(|d| d.paid).max().unwrap_or(0).max(1);
    let bars: Vec<Value> = (0..DAYS)
        .map(|i| {
            let paid = days.iter().find(|d| d.day == i).map_or(0, |d| d.paid);
            let height = if paid > 0 {
                (paid * CHART_HEIGHT / max).max(2)
            } else {
                0
            };
            json!({
                "x": i * BAR_STEP + 3,
                "y": CHART_HEIGHT - height,
                "height": height,
                "paid": paid,
                "date": time(since + i * DAY_MS)[..10].to_string(),
            })
        })
        .collect();
    json!({"bars": bars, "width": DAYS * BAR_STEP, "height": CHART_HEIGHT, "max": max,
           "bar_width": BAR_STEP - 6})
}
