//! A product's codes: import (paste or upload, through the shared import
//! service), a paged list masked by default, reveal one code at a time and
//! export unsold codes (owner only, both audited first), void unsold ones.

use axum::extract::{Form, Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use kami_core::import::RejectReason;
use kami_core::secrets::ct_eq;
use kami_store::Product;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{CsrfForm, Operator, Owner};
use super::msg::Msg;
use super::page::{time, time_opt, PanelError, PanelResult};
use crate::services::cards::open_card;
use crate::services::import::{import_into_shop, ImportError, ImportReport, RejectedLine};
use crate::state::Shared;

const PAGE: i64 = 50;
const STATUSES: &[&str] = &["available", "reserved", "sold", "void"];

/// Most rejected lines an import's report carries to the page after it.
const REPORT_LINES: usize = 100;

#[derive(Deserialize, Default)]
pub struct CodesQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    before: Option<i64>,
    /// The report of the import that redirected here, and its signature.
    #[serde(default)]
    report: Option<String>,
    #[serde(default)]
    sig: Option<String>,
}

/// The product without its stock: the page counts its codes by status.
async fn product(state: &Shared, id: i64) -> PanelResult<Product> {
    state
        .store
        .get_product_uncounted(id)
        .await?
        .ok_or(PanelError::NotFound)
}

/// The codes page, optionally with an import report or one revealed code.
async fn page(
    state: &Shared,
    op: &Operator,
    id: i64,
    q: &CodesQuery,
    report: Option<&ImportReport>,
    revealed: Option<(i64, String)>,
) -> PanelResult {
    let p = product(state, id).await?;
    let stock = state.store.stock(id).await?;
    let status = q.status.as_deref().filter(|s| STATUSES.contains(s));
    let mut cards = state
        .store
        .list_cards(id, status, PAGE + 1, q.before)
        .await?;
    let has_more = cards.len() as i64 > PAGE;
    cards.truncate(PAGE as usize);
    let rows: Vec<Value> = cards
        .iter()
        .map(|c| {
            let code = revealed
                .as_ref()
                .filter(|(rid, _)| *rid == c.id)
                .map(|(_, code)| code);
            json!({"id": c.id, "status": c.status, "batch_id": c.batch_id,
                   "created_at": time(c.created_at), "sold_at": time_opt(c.sold_at),
                   "code": code})
        })
        .collect();
    Ok(op.render(
        "admin/codes.html",
        json!({
            "nav": "products",
            "product": {"id": p.id, "name": p.name},
            "stock": stock,
            "cards": rows,
            "status": status,
            "statuses": STATUSES,
            "next": if has_more { cards.last().map(|c| c.id) } else { None },
            "report": report.map(|r| report_view(op.lang, r)),
        }),
    ))
}

/// The import report as the page shows it: each rejected line's reason in
/// the operator's language (the API's report keeps the English).
fn report_view(lang: &str, r: &ImportReport) -> Value {
    let rejected: Vec<Value> = r
        .rejected
        .iter()
        .map(|l| {
            let key = match l.reason {
                RejectReason::TooLong => "reject_too_long",
                RejectReason::InvalidEncoding => "reject_invalid_encoding",
                RejectReason::ControlCharacters => "reject_control_characters",
            };
            json!({"line": l.line, "reason": super::i18n::tr(lang, key)})
        })
        .collect();
    let unlisted = r.rejected_total.saturating_sub(rejected.len() as u64);
    json!({"imported": r.imported, "duplicates": r.duplicates,
           "rejected_total": r.rejected_total, "rejected": rejected, "unlisted": unlisted})
}

pub async fn list(
    State(state): State<Shared>,
    op: Operator,
    Path(id): Path<i64>,
    Query(q): Query<CodesQuery>,
) -> PanelResult {
    let report = match (&q.report, &q.sig) {
        (Some(report), Some(sig)) => opened_report(&state, &op, id, report, sig),
        _ => None,
    };
    page(&state, &op, id, &q, report.as_ref(), None).await
}

/// An import's report written into the URL the import redirects to, so the
/// page after it is a GET: a refresh shows the report again instead of
/// posting the codes a second time. `imported.duplicates.rejected_total`,
/// then `.` and each listed rejected line's number and reason letter.
fn report_param(r: &ImportReport) -> String {
    let mut out = format!("{}.{}.{}", r.imported, r.duplicates, r.rejected_total);
    for l in r.rejected.iter().take(REPORT_LINES) {
        out.push_str(&format!(".{}{}", l.line, reason_letter(l.reason)));
    }
    out
}

/// A rejected line's reason in the report's URL.
fn reason_letter(reason: RejectReason) -> char {
    match reason {
        RejectReason::TooLong => 't',
        RejectReason::InvalidEncoding => 'e',
        RejectReason::ControlCharacters => 'c',
    }
}

/// The signature of a report for one operator's session and one product:
/// a link cannot show anyone a report the shop did not write for them.
fn report_sig(state: &Shared, op: &Operator, product_id: i64, report: &str) -> String {
    let signed = format!("import:{product_id}:{report}");
    hex::encode(state.keys.panel_report_sig(&op.session.csrf, &signed))
}

/// The report of a redirect's URL, when its signature holds; nothing
/// otherwise (the page is then shown without one).
fn opened_report(
    state: &Shared,
    op: &Operator,
    product_id: i64,
    report: &str,
    sig: &str,
) -> Option<ImportReport> {
    let expected = report_sig(state, op, product_id, report);
    if !ct_eq(expected.as_bytes(), sig.as_bytes()) {
        return None;
    }
    parse_report(report)
}

/// The inverse of `report_param`.
fn parse_report(report: &str) -> Option<ImportReport> {
    let mut parts = report.split('.');
    let mut count = || parts.next()?.parse::<u64>().ok();
    let (imported, duplicates, rejected_total) = (count()?, count()?, count()?);
    let rejected = parts
        .map(|p| {
            let letter = p.chars().last()?;
            let reason = [
                RejectReason::TooLong,
                RejectReason::InvalidEncoding,
                RejectReason::ControlCharacters,
            ]
            .into_iter()
            .find(|r| reason_letter(*r) == letter)?;
            let line = &p[..p.len() - 1];
            Some(RejectedLine {
                line: line.parse().ok()?,
                reason,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(ImportReport {
        imported,
        duplicates,
        rejected,
        rejected_total,
        finished_elsewhere: Vec::new(),
    })
}

/// Multipart so that a file can be uploaded; the CSRF field comes first in
/// the form and is checked before a single code is read.
pub async fn import(
    State(state): State<Shared>,
    op: Operator,
    Path(id): Path<i64>,
    mut multipart: Multipart,
) -> PanelResult {
    // The product's row only: `product` would count its codes too, and the
    // page shown after the import counts them anyway.
    state
        .store
        .sale_terms(id)
        .await?
        .ok_or(PanelError::NotFound)?;
    let bad = |e: axum::extract::multipart::MultipartError| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => PanelError::TooLarge,
        _ => PanelError::Invalid(Msg::new("err_upload_read").with("detail", e.body_text())),
    };
    let mut csrf_ok = false;
    let mut pasted = Vec::new();
    let mut file = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_string();
        if name == "csrf" {
            op.check_csrf(&field.text().await.map_err(bad)?)?;
            csrf_ok = true;
            continue;
        }
        if !csrf_ok {
            return Err(PanelError::Csrf);
        }
        match name.as_str() {
            "codes" => pasted = field.bytes().await.map_err(bad)?.to_vec(),
            "file" => file = field.bytes().await.map_err(bad)?.to_vec(),
            _ => {}
        }
    }
    if !csrf_ok {
        return Err(PanelError::Csrf);
    }
    // Both filled: one of them would be dropped without a word, and the
    // operator would take the stock for loaded.
    if !file.is_empty() && pasted.iter().any(|b| !b.is_ascii_whitespace()) {
        return Err(PanelError::Invalid(Msg::new("err_import_both")));
    }
    let (source, body) = if file.is_empty() {
        ("paste", pasted)
    } else {
        ("file", file)
    };
    // In a task of its own, as the API's: a browser that goes away while
    // the codes are being made sellable (seconds, for a big file on SQLite)
    // drops the request, not the import half-way.
    let task_state = state.clone();
    let task = tokio::spawn(async move {
        let chunks =
            futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(body))]);
        import_into_shop(&task_state, id, chunks).await
    });
    let imported = task
        .await
        .map_err(|e| PanelError::from(kami_store::StoreError::Corrupt(e.to_string())))?;
    let report = match imported {
        Ok(r) => r,
        Err(ImportError::Binary(_)) => {
            return Err(PanelError::Invalid(Msg::new("err_import_binary")))
        }
        Err(ImportError::Body(e)) => {
            return Err(PanelError::Invalid(
                Msg::new("err_upload_read").with("detail", e),
            ))
        }
        Err(ImportError::Store(e)) => return Err(e.into()),
        Err(ImportError::Interrupted(_)) => {
            return Err(PanelError::Invalid(Msg::new("err_import_interrupted")))
        }
    };
    let detail = format!(
        "{source}: imported {}, duplicates {}, rejected {}",
        report.imported, report.duplicates, report.rejected_total
    );
    op.audit(&state, "codes_imported", &format!("product:{id}"), &detail)
        .await?;
    let param = report_param(&report);
    let sig = report_sig(&state, &op, id, &param);
    Ok(Redirect::to(&format!(
        "/admin/products/{id}/codes?report={param}&sig={sig}"
    ))
    .into_response())
}

pub async fn reveal(
    State(state): State<Shared>,
    Owner(op): Owner,
    Path((id, card)): Path<(i64, i64)>,
    Form(form): Form<CsrfForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    let sealed = state
        .store
        .sealed_card(id, card)
        .await?
        .ok_or(PanelError::NotFound)?;
    // Audited before the code is opened: no record, no reveal.
    op.audit(
        &state,
        "code_revealed",
        &format!("card:{card}"),
        &format!("product:{id}"),
    )
    .await?;
    let code = open_card(&state.keys, &sealed)?;
    page(
        &state,
        &op,
        id,
        &CodesQuery::default(),
        None,
        Some((card, code)),
    )
    .await
}

pub async fn void(
    State(state): State<Shared>,
    op: Operator,
    Path((id, card)): Path<(i64, i64)>,
    Form(form): Form<CsrfForm>,
) -> PanelResult {
    op.check_csrf(&form.csrf)?;
    if !state.store.void_card(id, card).await? {
        return Err(PanelError::Invalid(Msg::new("err_void_state")));
    }
    state.codes_voided(id, 1).await;
    op.audit(
        &state,
        "code_voided",
        &format!("card:{card}"),
        &format!("product:{id}"),
    )
    .await?;
    Ok(Redirect::to(&format!("/admin/products/{id}/codes")).into_response())
}

pub async fn export(
    State(state): State<Shared>,
    Owner(op): Owner,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> PanelResult<Response> {
    op.check_csrf(&form.csrf)?;
    product(&state, id).await?;
    let sealed = state.store.unsold_cards(id).await?;
    op.audit(
        &state,
        "codes_exported",
        &format!("product:{id}"),
        &format!("{} unsold codes", sealed.len()),
    )
    .await?;
    let mut body = String::new();
    for c in &sealed {
        body.push_str(&open_card(&state.keys, c)?);
        body.push_str("\r\n");
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"product-{id}-unsold.txt\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_survives_its_url() {
        let report = ImportReport {
            imported: 12,
            duplicates: 3,
            rejected: vec![
                RejectedLine {
                    line: 4,
                    reason: RejectReason::TooLong,
                },
                RejectedLine {
                    line: 17,
                    reason: RejectReason::InvalidEncoding,
                },
                RejectedLine {
                    line: 18,
                    reason: RejectReason::ControlCharacters,
                },
            ],
            rejected_total: 5,
            finished_elsewhere: vec![9],
        };
        let param = report_param(&report);
        assert_eq!(param, "12.3.5.4t.17e.18c");
        let back = parse_report(&param).expect("parses");
        assert_eq!(
            (back.imported, back.duplicates, back.rejected_total),
            (12, 3, 5)
        );
        let lines: Vec<_> = back.rejected.iter().map(|l| (l.line, l.reason)).collect();
        assert_eq!(
            lines,
            [
                (4, RejectReason::TooLong),
                (17, RejectReason::InvalidEncoding),
                (18, RejectReason::ControlCharacters)
            ]
        );
        for bad in [
            "",
            "1.2",
            "1.2.x",
            "1.2.3.4",
            "1.2.3.t",
            "1.2.3.4q",
            "1.2.3.-4t",
            "1.2.3.4é",
        ] {
            assert!(parse_report(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn only_the_first_lines_travel() {
        let report = ImportReport {
            imported: 0,
            duplicates: 0,
            rejected: (1..=1000)
                .map(|line| RejectedLine {
                    line,
                    reason: RejectReason::TooLong,
                })
                .collect(),
            rejected_total: 5000,
            finished_elsewhere: Vec::new(),
        };
        let back = parse_report(&report_param(&report)).unwrap();
        assert_eq!(back.rejected.len(), REPORT_LINES);
        assert_eq!(back.rejected_total, 5000);
    }
}
