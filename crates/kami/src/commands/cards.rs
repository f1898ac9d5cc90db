use std::path::Path;

use anyhow::{bail, Context};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use kami_core::secrets::Keys;
use kami_store::Store;
use kami_web::services::import::{import_cards, ImportError};
use tokio_util::io::ReaderStream;

use super::{closing, init_logging, open_store};
use crate::config::Config;
use crate::master_key;

/// `kami cards import --product ID FILE`: streams the file through the same
/// importer as the admin API; prints the same counts as JSON on stdout.
pub async fn import(cfg: Config, product_id: i64, file: &Path) -> anyhow::Result<()> {
    init_logging("warn", false);
    // Opened, and the product looked up, before a master key can be made: a
    // mistyped path or product id leaves no new key behind.
    let f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let store = open_store(&cfg).await?;
    closing(&store, async {
        // The product's row only: `get_product` would count its codes too.
        if store.sale_terms(product_id).await?.is_none() {
            bail!("product {product_id} does not exist");
        }
        let keys = master_key::keys_for(&cfg, store.as_ref()).await?;
        store.guard_master_check(keys.check_value());
        import_file(&cfg, store.as_ref(), &keys, product_id, f).await
    })
    .await
}

async fn import_file(
    cfg: &Config,
    store: &dyn Store,
    keys: &Keys,
    product_id: i64,
    f: tokio::fs::File,
) -> anyhow::Result<()> {
    let size = f.metadata().await?.len();
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} importing [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    let chunks = ReaderStream::with_capacity(f, 256 * 1024).boxed();
    let result = import_cards(store, keys, product_id, chunks, |n| bar.set_position(n)).await;
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            if report.imported > 0 {
                share_the_count(cfg, store, product_id).await;
                // A server running beside this reads a count that would turn
                // buyers away again when it is older than this: by the time
                // the import returns, every answer stands on the new codes.
                tokio::time::sleep(kami_web::services::gate::CONFIRM_WITHIN).await;
            }
            eprintln!(
                "imported {}, duplicates {}, rejected {}",
                report.imported, report.duplicates, report.rejected_total
            );
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Err(ImportError::Binary(e)) => bail!("{e}; nothing was imported"),
        Err(e @ ImportError::Interrupted(_)) => bail!("{e}"),
        Err(e) => Err(e).context("import failed; nothing was imported"),
    }
}

/// With the stock gate in Redis, sets the product's shared count from the
/// database, as an import through the API does: the servers sell the new
/// codes the moment this returns (the count's raise is published to them),
/// not at their next re-sync up to a second later, which at the start of a
/// timed drop turned its first buyers away. Redis not answering only
/// leaves that to the re-sync.
async fn share_the_count(cfg: &Config, store: &dyn Store, product_id: i64) {
    let Some(url) = &cfg.redis_url else { return };
    let settings = kami_web::redis_conn::RedisSettings {
        url: url.clone(),
        prefix: cfg.redis_prefix.clone(),
    };
    let gate = match kami_web::redis_conn::Redis::open(&settings) {
        Ok(redis) => kami_web::services::gate::StockGate::shared(std::sync::Arc::new(redis)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot open Redis; the servers see the new codes at their next re-sync");
            return;
        }
    };
    if let Err(e) = gate.refresh_exact(store, product_id).await {
        tracing::warn!(error = %e, "cannot re-read the stock for the shared gate; the servers see the new codes at their next re-sync");
    }
}
