//! Streaming card import, shared by the admin API and `kami cards import`.
//!
//! Bytes flow through the core's line parser in chunks; codes are sealed and
//! staged in bounded batches, and made sellable at the end (on SQLite in
//! chunks, orders committing between them: `Store::commit_import`).
//! Whatever stops an import half-way (a binary file, a broken connection, a
//! database error) aborts the batch, so nothing half-imported is ever sold.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use kami_core::import::{BinaryFile, CardFileParser, ParsedLine, RejectReason};
use kami_core::secrets::Keys;
use kami_store::{ImportCounts, NewCard, Store, StoreError};
use serde::Serialize;

use super::cards::seal_context;
use crate::state::AppState;

/// Codes sealed and staged per database round trip.
const BATCH: usize = 2000;
/// Rejected lines listed in the report; the total is always counted.
const MAX_LISTED_REJECTIONS: usize = 1000;
/// An import cut off by a crash is known at once by its lock (a file lock
/// on SQLite, an advisory lock on PostgreSQL: `Store::begin_import`), and
/// aborted by the next import, which reaps before it begins, or by the
/// `reap_imports` job within a minute: its staged codes, never sellable,
/// would count as duplicates in a re-upload until then. On SQLite a batch
/// without a lock file to ask (begun by an older build, which beat as it
/// staged) is taken for dead once its last beat is this old.
pub const STALE_IMPORT_MS: i64 = 15_000;

#[derive(Debug, Clone, Serialize)]
pub struct RejectedLine {
    pub line: u64,
    /// Written as its English sentence (API.md's report); the panel
    /// translates the variant.
    #[serde(serialize_with = "reason_text")]
    pub reason: RejectReason,
}

fn reason_text<S: serde::Serializer>(reason: &RejectReason, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(reason.as_str())
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub imported: u64,
    pub duplicates: u64,
    pub rejected: Vec<RejectedLine>,
    /// All rejected lines, when more than the listed ones.
    pub rejected_total: u64,
    /// Products of earlier imports cut off while their codes were made
    /// sellable, which this one finished before it began (their stock
    /// changed too).
    #[serde(skip)]
    pub finished_elsewhere: Vec<i64>,
}

/// Says what a reaper ended, for the operator.
pub fn log_reaped(reaped: &kami_store::Reaped) {
    if reaped.aborted > 0 {
        tracing::warn!(
            batches = reaped.aborted,
            "aborted card imports cut off while staging; nothing from them was sellable"
        );
    }
    if !reaped.finished.is_empty() {
        tracing::warn!(products = ?reaped.finished, "finished card imports cut off while their codes were being made sellable");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Binary(#[from] BinaryFile),
    #[error("reading the upload failed: {0}")]
    Body(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The batch was claimed for its commit, and making its codes sellable
    /// was cut off: some are on sale, and the next import or the reaper
    /// (within a minute) makes the rest so. Uploading it again would only
    /// count duplicates.
    #[error(
        "the import was cut off while its codes were being made sellable; the rest of them \
         become sellable at the next import or within a minute: do not upload it again"
    )]
    Interrupted(StoreError),
}

struct Importer<'a> {
    store: &'a dyn Store,
    keys: &'a Keys,
    product_id: i64,
    batch: i64,
    pending: Vec<NewCard>,
    report: ImportReport,
    staged: u64,
}

impl Importer<'_> {
    async fn take(&mut self, lines: &mut Vec<ParsedLine>) -> Result<(), StoreError> {
        let context = seal_context(self.product_id);
        for line in lines.drain(..) {
            match line {
                ParsedLine::Code { code, .. } => {
                    let sealed = self.keys.seal(&context, code.as_bytes());
                    self.pending.push(NewCard {
                        fingerprint: self.keys.card_fingerprint(self.product_id, &code),
                        ciphertext: sealed.ciphertext,
                        nonce: sealed.nonce,
                        key_id: sealed.key_id,
                    });
                }
                ParsedLine::Rejected { line, reason } => {
                    self.report.rejected_total += 1;
                    if self.report.rejected.len() < MAX_LISTED_REJECTIONS {
                        self.report.rejected.push(RejectedLine { line, reason });
                    }
                }
            }
        }
        if self.pending.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let inserted = self
            .store
            .stage_cards(self.batch, self.product_id, &self.pending)
            .await?;
        self.report.imported += inserted;
        self.report.duplicates += self.pending.len() as u64 - inserted;
        self.staged += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

/// An import into the running shop (the admin API and the panel): the stock
/// gate and the product cache follow the new stock at once, whatever the
/// import's outcome, instead of at their next re-sync.
pub async fn import_into_shop<S, E>(
    state: &AppState,
    product_id: i64,
    chunks: S,
) -> Result<ImportReport, ImportError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let report = import_cards(
        state.store.as_ref(),
        &state.keys,
        product_id,
        chunks,
        |_| {},
    )
    .await;
    state.stock_imported(product_id).await;
    if let Ok(r) = &report {
        for &other in r.finished_elsewhere.iter().filter(|&&p| p != product_id) {
            state.stock_imported(other).await;
        }
    }
    report
}

/// Imports the codes in `chunks` into the product. `progress` is called with
/// the running byte count after each chunk.
pub async fn import_cards<S, E>(
    store: &dyn Store,
    keys: &Keys,
    product_id: i64,
    mut chunks: S,
    mut progress: impl FnMut(u64),
) -> Result<ImportReport, ImportError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    // Held to the end of the import, commit or abort; waits for another
    // import into the product to end.
    let (batch, _lease) = store.begin_import(product_id).await?;
    // The codes of an import a crash cut off (the one waited for, perhaps)
    // would be taken for duplicates.
    let reaped = store
        .reap_stale_imports(kami_core::now_millis() - STALE_IMPORT_MS)
        .await?;
    log_reaped(&reaped);
    let finished_elsewhere = reaped.finished;
    let mut imp = Importer {
        store,
        keys,
        product_id,
        batch,
        pending: Vec::with_capacity(BATCH),
        report: ImportReport {
            imported: 0,
            duplicates: 0,
            rejected: Vec::new(),
            rejected_total: 0,
            finished_elsewhere,
        },
        staged: 0,
    };
    let result = run(&mut imp, &mut chunks, &mut progress).await;
    match result {
        Ok(()) => {
            let counts = ImportCounts {
                imported: imp.report.imported,
                duplicates: imp.report.duplicates,
                rejected: imp.report.rejected_total,
            };
            if let Err(e) = store.commit_import(batch, product_id, &counts).await {
                // Taken for dead by a reaper meanwhile (its lock lost), or the
                // database failed. Not claimed yet: nothing of it is sellable,
                // and what it staged goes. Claimed, and failed mid-flip: the
                // abort leaves it, and the next import or the `reap_imports`
                // job makes the rest of it sellable once the lease is gone.
                match store.abort_import(batch).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(product_id, batch, error = %e, "card import cut off while its codes were being made sellable; the reaper finishes it");
                        return Err(ImportError::Interrupted(e));
                    }
                    Err(abort) => {
                        tracing::error!(batch, error = %abort, "could not clean up an aborted import")
                    }
                }
                return Err(e.into());
            }
            tracing::info!(
                product_id,
                batch,
                imported = counts.imported,
                duplicates = counts.duplicates,
                rejected = counts.rejected,
                "cards imported"
            );
            Ok(imp.report)
        }
        Err(e) => {
            tracing::warn!(product_id, batch, error = %e, "card import aborted; nothing from it is sellable");
            if let Err(abort) = store.abort_import(batch).await {
                tracing::error!(batch, error = %abort, "could not clean up an aborted import; the reaper will");
            }
            Err(e)
        }
    }
}

async fn run<S, E>(
    imp: &mut Importer<'_>,
    chunks: &mut S,
    progress: &mut impl FnMut(u64),
) -> Result<(), ImportError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut parser = CardFileParser::new();
    let mut lines = Vec::new();
    let mut bytes = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| ImportError::Body(e.to_string()))?;
        bytes += chunk.len() as u64;
        parser.feed(&chunk, &mut lines)?;
        imp.take(&mut lines).await?;
        progress(bytes);
    }
    parser.finish(&mut lines);
    imp.take(&mut lines).await?;
    imp.flush().await?;
    Ok(())
}
