//! `kami keys rotate`: every value sealed or hashed under the old master key
//! rewritten under the new one, in one transaction (DESIGN.md, "Secrets").
//!
//! One transaction, so a database is never half under one key and half
//! under the other: a rotation cut off leaves it as it was, and the new
//! master key check is written with the last row. The shop must be stopped
//! (a process still holding the old keys would seal new codes no one can
//! open): on SQLite the caller holds the database's lock file exclusively;
//! on PostgreSQL every Kami process holds a shared advisory lock for its
//! lifetime (`hold_instance_lock`) and the rotation takes it exclusively in
//! its transaction. A process starting meanwhile waits for the lock, then
//! reads the new check and refuses to run with the old key.

use kami_core::secrets::{context, Rotation, Sealed};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::orders::{values_rows, Tx};
use super::SqlStore;
use crate::types::IDEMPOTENCY_IN_FLIGHT;
use crate::{Backend, Result, StoreError};

/// Rows per read: the transaction walks each table by id.
const PAGE: i64 = 1_000;

/// What a rotation rewrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub codes: u64,
    pub channels: u64,
    pub totp_secrets: u64,
    pub idempotent_responses: u64,
    pub query_passwords: u64,
}

/// The command's summary and the audit log's detail alike.
impl std::fmt::Display for Rotated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} codes, {} payment channels, {} TOTP keys, {} stored answers, {} query passwords",
            self.codes,
            self.channels,
            self.totp_secrets,
            self.idempotent_responses,
            self.query_passwords
        )
    }
}

impl SqlStore {
    /// Rewrites every sealed value and stored keyed hash of the database
    /// under `r.new`, and stores its check and history, if the database is
    /// still `r.old`'s. `progress` hears the codes done so far.
    pub async fn rotate_keys(
        &self,
        r: &Rotation,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Rotated> {
        let mut tx = self.begin().await?;
        if self.backend == Backend::Postgres {
            let alone: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(INSTANCES)
                .fetch_one(&mut *tx)
                .await?;
            if !alone {
                return Err(in_use());
            }
        }
        let check: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'master_key_check'")
                .fetch_optional(&mut *tx)
                .await?;
        if check.as_deref() != Some(r.old.check_value()) {
            return Err(StoreError::Corrupt(
                "the database's master key check is not the old key's".into(),
            ));
        }
        let mut done = Rotated {
            codes: codes(&mut tx, r, progress).await?,
            ..Rotated::default()
        };
        if self.backend == Backend::Postgres {
            rewrap_fingerprints(&mut tx, r).await?;
        }
        done.channels = channels(&mut tx, r).await?;
        done.totp_secrets = totp_secrets(&mut tx, r).await?;
        done.idempotent_responses = idempotency_keys(&mut tx, r).await?;
        done.query_passwords = query_passwords(&mut tx, r).await?;
        // In the operators' audit log, with the rotation itself.
        sqlx::query(
            "INSERT INTO audit_log (merchant_id, admin_id, action, target, detail, ip, at) \
             VALUES ($1, NULL, 'master_key_rotated', $2, $3, NULL, $4)",
        )
        .bind(crate::types::DEFAULT_MERCHANT)
        .bind(format!("key id {}", r.new.key_id()))
        .bind(format!("kami keys rotate: {done}"))
        .bind(kami_core::now_millis())
        .execute(&mut *tx)
        .await?;
        let history = r.new.history();
        let pairs = [
            ("master_key_check", r.new.check_value()),
            ("key_history", history.as_str()),
        ];
        super::keys::put_settings(&mut tx, &pairs).await?;
        tx.commit().await?;
        Ok(done)
    }
}

/// The advisory lock every Kami process on a PostgreSQL database holds
/// shared, and a rotation exclusively ("kamirot" in ASCII).
const INSTANCES: i64 = 0x006b_616d_6972_6f74;

/// This process's hold on the shared advisory lock (PostgreSQL), and the
/// master key check it runs under once known (`guard_master_check`).
#[derive(Default)]
pub(crate) struct InstanceLock {
    conn: tokio::sync::Mutex<Option<sqlx::AnyConnection>>,
    closed: std::sync::atomic::AtomicBool,
    check: std::sync::Mutex<Option<String>>,
}

impl InstanceLock {
    pub(crate) async fn close(&self) {
        use sqlx::Connection;
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(c) = self.conn.lock().await.take() {
            let _ = c.close().await;
        }
    }
}

/// A connection of its own holding the shared lock; waits while a rotation
/// holds it exclusively.
async fn take_shared_lock(pool: &sqlx::AnyPool) -> Result<sqlx::AnyConnection> {
    let mut conn = pool.acquire().await?.detach();
    sqlx::query("SELECT pg_advisory_lock_shared($1)")
        .bind(INSTANCES)
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// How often the lock's connection is looked at.
const LOCK_WATCH: std::time::Duration = std::time::Duration::from_secs(1);

impl SqlStore {
    /// PostgreSQL: marks the database as in use by this process until it
    /// closes the store (or exits), on a connection of its own: a
    /// `kami keys rotate` refuses to run meanwhile. Waits while a rotation
    /// runs. Nothing on SQLite, whose lock file does the same.
    ///
    /// A lock ends with its connection (a PostgreSQL restart): it is taken
    /// again within `LOCK_WATCH`, and should the database then be under
    /// another master key than the one this process runs with (a rotation
    /// got in between), the process stops rather than seal anything more
    /// under the old key.
    pub async fn hold_instance_lock(&self) -> Result<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        *self.instance_lock.conn.lock().await = Some(take_shared_lock(&self.write).await?);
        let held = self.instance_lock.clone();
        let pool = self.write.clone();
        tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            loop {
                tokio::time::sleep(LOCK_WATCH).await;
                if held.closed.load(Ordering::Relaxed) {
                    return;
                }
                let mut conn = held.conn.lock().await;
                let alive = match conn.as_mut() {
                    Some(c) => sqlx::query("SELECT 1").execute(&mut *c).await.is_ok(),
                    None => false,
                };
                if alive || held.closed.load(Ordering::Relaxed) {
                    continue;
                }
                *conn = None;
                let mut again = match take_shared_lock(&pool).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "the connection holding this process's database lock was lost and could not be made again; trying again");
                        continue;
                    }
                };
                let expected = held.check.lock().ok().and_then(|c| c.clone());
                if let Some(expected) = expected {
                    let now: Option<String> = sqlx::query_scalar(
                        "SELECT value FROM settings WHERE key = 'master_key_check'",
                    )
                    .fetch_optional(&mut again)
                    .await
                    .ok()
                    .flatten();
                    if now.as_deref() != Some(expected.as_str()) {
                        tracing::error!("the database was moved under another master key (kami keys rotate) while this process's lock was lost; stopping rather than seal anything under the old key");
                        eprintln!("kami: the database's master key changed under this process (kami keys rotate); stopping. Start it again with the new key.");
                        std::process::exit(78);
                    }
                }
                tracing::warn!("the connection holding this process's database lock was lost; the lock is held again");
                *conn = Some(again);
            }
        });
        Ok(())
    }

    /// The master key check this process runs under: should its lock be
    /// lost and the database be found under another key when it is taken
    /// again, the process stops (`hold_instance_lock`).
    pub fn guard_master_check(&self, check: &str) {
        if let Ok(mut c) = self.instance_lock.check.lock() {
            *c = Some(check.to_owned());
        }
    }

    /// PostgreSQL: refuses while another Kami process has the database
    /// open, after waiting up to `patience` for one just stopped to let go
    /// (SQLite: the caller holds the lock file).
    pub async fn refuse_rotation_while_in_use(&self, patience: std::time::Duration) -> Result<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let until = std::time::Instant::now() + patience;
        let mut conn = self.write.acquire().await?;
        loop {
            let alone: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(INSTANCES)
                .fetch_one(&mut *conn)
                .await?;
            if alone {
                sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(INSTANCES)
                    .execute(&mut *conn)
                    .await?;
                return Ok(());
            }
            if std::time::Instant::now() >= until {
                return Err(in_use());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl SqlStore {
    /// After a rotation: rewrites the tables it rewrote, so the row
    /// versions and pages holding what the old key sealed and hashed are no
    /// longer in the database's files (SQLite `VACUUM`, PostgreSQL
    /// `VACUUM FULL`). WAL archives, replicas' and backups' copies are the
    /// operator's.
    pub async fn compact_after_rotation(&self) -> Result<()> {
        let sql = match self.backend {
            // The copy VACUUM makes goes to a file, not memory (the shop's
            // `temp_store`): a million codes' copy held 180 MiB.
            Backend::Sqlite => "PRAGMA temp_store = FILE; VACUUM",
            Backend::Postgres => {
                "VACUUM FULL cards, card_fingerprints, orders, idempotency_keys, \
                 channel_configs, admins, settings"
            }
        };
        sqlx::raw_sql(sql).execute(&self.write).await?;
        Ok(())
    }
}

fn in_use() -> StoreError {
    StoreError::InUse("another Kami process has the database open".into())
}

fn resealed(r: &Rotation, context: &str, what: &str, sealed: &Sealed) -> Result<Sealed> {
    r.reseal(context, sealed)
        .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// `WITH v(columns) AS (VALUES …) update`: one statement writing a page of
/// rows, each bound as `columns` in order (PostgreSQL and SQLite alike).
fn with_values(columns: &str, rows: usize, update: &str) -> String {
    let width = columns.split(',').count();
    let shape = format!("({})", vec!["?"; width].join(", "));
    format!(
        "WITH v({columns}) AS (VALUES {}) {update}",
        values_rows(rows, &shape)
    )
}

/// Every row of a page must have been written: one missed would stay under
/// the old key, unreadable after the commit.
fn written(affected: u64, rows: usize) -> Result<u64> {
    if affected != rows as u64 {
        return Err(StoreError::Corrupt(format!(
            "{rows} rows to rewrite, {affected} written"
        )));
    }
    Ok(affected)
}

/// The page of `select` (`$1` the last id read, `$2` the page's size)
/// after `after`, which moves on to its last row.
async fn page_after(tx: &mut Tx, select: &str, after: &mut i64) -> Result<Vec<AnyRow>> {
    let rows = sqlx::query(select)
        .bind(*after)
        .bind(PAGE)
        .fetch_all(&mut **tx)
        .await?;
    if let Some(last) = rows.last() {
        *after = last.try_get("id")?;
    }
    Ok(rows)
}

/// Every code, whatever its state (a delivered code is read again by its
/// buyer), and its fingerprint, a page at a time.
async fn codes(tx: &mut Tx, r: &Rotation, progress: &(dyn Fn(u64) + Sync)) -> Result<u64> {
    let mut after = i64::MIN;
    let mut n = 0;
    loop {
        let rows = page_after(
            tx,
            "SELECT id, product_id, ciphertext, nonce, key_id, fingerprint FROM cards \
             WHERE id > $1 ORDER BY id LIMIT $2",
            &mut after,
        )
        .await?;
        if rows.is_empty() {
            return Ok(n);
        }
        let sql = with_values(
            "id, c, n, k, f",
            rows.len(),
            "UPDATE cards SET ciphertext = v.c, nonce = v.n, key_id = v.k, fingerprint = v.f \
             FROM v WHERE cards.id = v.id",
        );
        let mut q = sqlx::query(&sql);
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let product_id: i64 = row.try_get("product_id")?;
            let sealed = Sealed {
                ciphertext: row.try_get("ciphertext")?,
                nonce: row.try_get("nonce")?,
                key_id: row.try_get("key_id")?,
            };
            let fingerprint: Vec<u8> = row.try_get("fingerprint")?;
            let new = resealed(
                r,
                &context::card(product_id),
                &format!("code {id}"),
                &sealed,
            )?;
            q = q
                .bind(id)
                .bind(new.ciphertext)
                .bind(new.nonce)
                .bind(new.key_id)
                .bind(r.card_fingerprint(&fingerprint));
        }
        n += written(q.execute(&mut **tx).await?.rows_affected(), rows.len())?;
        progress(n);
    }
}

/// PostgreSQL's unique fingerprints (migration 0009), kept beside the
/// codes' own copy: every one wrapped, a code removed since included, as
/// its fingerprint still refuses the code's return. Read through a cursor,
/// which sees the table as it was when declared: a value already wrapped is
/// never read and wrapped again, as a walk by the key being rewritten could.
async fn rewrap_fingerprints(tx: &mut Tx, r: &Rotation) -> Result<()> {
    sqlx::query(
        "DECLARE rotation_fingerprints NO SCROLL CURSOR FOR \
         SELECT product_id, fingerprint FROM card_fingerprints",
    )
    .execute(&mut **tx)
    .await?;
    loop {
        let rows = sqlx::query(&format!("FETCH {PAGE} FROM rotation_fingerprints"))
            .fetch_all(&mut **tx)
            .await?;
        if rows.is_empty() {
            break;
        }
        let sql = with_values(
            "p, f, o",
            rows.len(),
            "UPDATE card_fingerprints SET fingerprint = v.f FROM v \
             WHERE card_fingerprints.product_id = v.p AND card_fingerprints.fingerprint = v.o",
        );
        let mut q = sqlx::query(&sql);
        for row in &rows {
            let old: Vec<u8> = row.try_get("fingerprint")?;
            q = q
                .bind(row.try_get::<i64, _>("product_id")?)
                .bind(r.card_fingerprint(&old))
                .bind(old);
        }
        written(q.execute(&mut **tx).await?.rows_affected(), rows.len())?;
    }
    sqlx::query("CLOSE rotation_fingerprints")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Payment channels' sealed settings (merchant keys, private keys).
async fn channels(tx: &mut Tx, r: &Rotation) -> Result<u64> {
    let rows =
        sqlx::query("SELECT merchant_id, name, ciphertext, nonce, key_id FROM channel_configs")
            .fetch_all(&mut **tx)
            .await?;
    let mut n = 0;
    for row in rows {
        let merchant: i64 = row.try_get("merchant_id")?;
        let name: String = row.try_get("name")?;
        let sealed = Sealed {
            ciphertext: row.try_get("ciphertext")?,
            nonce: row.try_get("nonce")?,
            key_id: row.try_get("key_id")?,
        };
        let new = resealed(
            r,
            &context::channel(&name),
            &format!("channel {name}"),
            &sealed,
        )?;
        let done = sqlx::query(
            "UPDATE channel_configs SET ciphertext = $1, nonce = $2, key_id = $3 \
             WHERE merchant_id = $4 AND name = $5",
        )
        .bind(new.ciphertext)
        .bind(new.nonce)
        .bind(new.key_id)
        .bind(merchant)
        .bind(name)
        .execute(&mut **tx)
        .await?;
        n += written(done.rows_affected(), 1)?;
    }
    Ok(n)
}

/// Operators' TOTP keys: sealed without a key id of their own, so under the
/// key id of the keys in use.
async fn totp_secrets(tx: &mut Tx, r: &Rotation) -> Result<u64> {
    let rows = sqlx::query(
        "SELECT id, totp_secret, totp_nonce FROM admins \
         WHERE totp_secret IS NOT NULL AND totp_nonce IS NOT NULL",
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut n = 0;
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let sealed = Sealed {
            ciphertext: row.try_get("totp_secret")?,
            nonce: row.try_get("totp_nonce")?,
            key_id: r.old.key_id(),
        };
        let new = resealed(
            r,
            &context::totp(id),
            &format!("operator {id}'s TOTP key"),
            &sealed,
        )?;
        let done = sqlx::query("UPDATE admins SET totp_secret = $1, totp_nonce = $2 WHERE id = $3")
            .bind(new.ciphertext)
            .bind(new.nonce)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        n += written(done.rows_affected(), 1)?;
    }
    Ok(n)
}

/// Stored answers to `Idempotency-Key` requests: the request's keyed hash
/// wrapped, the answer (it may hold an access token) sealed again. A key
/// whose request is still running holds no answer yet, only its owner's
/// mark, which stays as it is. A page at a time, by key.
async fn idempotency_keys(tx: &mut Tx, r: &Rotation) -> Result<u64> {
    let (mut scope, mut key) = (String::new(), String::new());
    let mut n = 0;
    loop {
        let rows = sqlx::query(
            "SELECT scope, key, request_hash, status_code, response, response_nonce \
             FROM idempotency_keys WHERE (scope, key) > ($1, $2) \
             ORDER BY scope, key LIMIT $3",
        )
        .bind(&scope)
        .bind(&key)
        .bind(PAGE)
        .fetch_all(&mut **tx)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(n);
        };
        (scope, key) = (last.try_get("scope")?, last.try_get("key")?);
        for row in rows {
            let scope: String = row.try_get("scope")?;
            let key: String = row.try_get("key")?;
            let hash: Vec<u8> = row.try_get("request_hash")?;
            let status: i64 = row.try_get("status_code")?;
            let (response, nonce): (Vec<u8>, Vec<u8>) =
                (row.try_get("response")?, row.try_get("response_nonce")?);
            let (response, nonce) = if status == IDEMPOTENCY_IN_FLIGHT {
                (response, nonce)
            } else {
                let sealed = Sealed {
                    ciphertext: response,
                    nonce,
                    key_id: r.old.key_id(),
                };
                let what = format!("the stored answer to Idempotency-Key {key}");
                let new = resealed(r, &context::idempotent(&scope, &key), &what, &sealed)?;
                n += 1;
                (new.ciphertext, new.nonce)
            };
            let affected = sqlx::query(
                "UPDATE idempotency_keys SET request_hash = $1, response = $2, \
                 response_nonce = $3 WHERE scope = $4 AND key = $5",
            )
            .bind(r.request_fingerprint(&hash))
            .bind(response)
            .bind(nonce)
            .bind(scope)
            .bind(key)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            written(affected, 1)?;
        }
    }
}

/// Buyers' query passwords: their hashes wrapped (the passwords are not
/// known), so each still finds its orders under the new keys.
async fn query_passwords(tx: &mut Tx, r: &Rotation) -> Result<u64> {
    let mut after = i64::MIN;
    let mut n = 0;
    loop {
        let rows = page_after(
            tx,
            "SELECT id, query_password_hash FROM orders \
             WHERE id > $1 AND query_password_hash IS NOT NULL ORDER BY id LIMIT $2",
            &mut after,
        )
        .await?;
        if rows.is_empty() {
            return Ok(n);
        }
        let sql = with_values(
            "id, h",
            rows.len(),
            "UPDATE orders SET query_password_hash = v.h FROM v WHERE orders.id = v.id",
        );
        let mut q = sqlx::query(&sql);
        for row in &rows {
            let hash: Vec<u8> = row.try_get("query_password_hash")?;
            q = q
                .bind(row.try_get::<i64, _>("id")?)
                .bind(r.query_password_hash(&hash));
        }
        n += written(q.execute(&mut **tx).await?.rows_affected(), rows.len())?;
    }
}
