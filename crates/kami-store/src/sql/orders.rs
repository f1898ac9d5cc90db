//! The order lifecycle in SQL: every function that changes state runs in one
//! write transaction, and every status change is a conditional update, so two
//! racing processes can never both move the same order or card.

use kami_core::limits::{email_limit_key, ip_limit_key};
use kami_core::{Millis, OrderStatus};
use sqlx::{Any, Row, Transaction};

use super::{rows, SqlStore};
use crate::types::*;
use crate::{Backend, Result};

pub(super) type Tx = Transaction<'static, Any>;

/// The claim statement of DESIGN.md ("Allocation under a flash sale"), with
/// the given expressions (parameters, or integer literals) for the order id,
/// the reservation end, the product and the quantity. `floor`, when known,
/// is an id below which no code is available: the index scan starts there
/// instead of stepping over every code claimed since the last VACUUM (perf:
/// PostgreSQL's buffer lookups on top during a drop). It only narrows the
/// search; a claim that comes back short is handled as any short claim.
fn claim_sql(
    backend: Backend,
    order: &str,
    until: &str,
    product: &str,
    qty: &str,
    floor: Option<i64>,
) -> String {
    let floor = floor.map_or(String::new(), |f| format!("AND id >= {f} "));
    let (available, order_by) = available_in_order(backend, product);
    format!(
        "UPDATE cards SET status = 'reserved', order_id = {order}, reserved_until = {until} \
         WHERE id IN (SELECT id FROM cards WHERE {available} \
         {floor}{order_by} LIMIT {qty} {})",
        backend.skip_locked()
    )
}

/// The condition that a code of `product` is available, as the backend's
/// index of available codes serves it: on PostgreSQL the stored column that
/// holds an available code's product (migration 0011, which made a sale a
/// HOT update), on SQLite the partial index on the status.
pub(super) fn available(backend: Backend, product: &str) -> String {
    match backend {
        Backend::Postgres => format!("stock_product = {product}"),
        Backend::Sqlite => format!("product_id = {product} AND status = 'available'"),
    }
}

/// The condition that a code is staged in import `batch` (see `available`).
pub(super) fn staged(backend: Backend, batch: &str) -> String {
    match backend {
        Backend::Postgres => format!("staged_batch = {batch}"),
        Backend::Sqlite => format!("batch_id = {batch} AND status = 'staged'"),
    }
}

/// `available`, and the `ORDER BY` of a search for a product's available
/// codes, lowest id first. On PostgreSQL the product is matched as a range
/// and the order names it, so that only `cards_available` (the product of
/// available codes, then the id) serves the order: with fresh statistics
/// and most codes available, the planner otherwise walked the primary key
/// from the first code, stepping over every code sold or reserved so far, a
/// longer walk with every order of a drop (`kami-bench flash-sale
/// --analyze`).
pub(super) fn available_in_order(backend: Backend, product: &str) -> (String, &'static str) {
    match backend {
        Backend::Postgres => (
            format!("stock_product BETWEEN {product} AND {product}"),
            "ORDER BY stock_product, id",
        ),
        Backend::Sqlite => (available(backend, product), "ORDER BY id"),
    }
}

/// PostgreSQL: plans for index lookups, for the rest of this write
/// transaction, whatever the statistics say. Statistics lag a big import
/// until autovacuum analyzes `cards`, and are fresh after it; both misled
/// the planner on the claims:
/// - stale (a million codes, 30 expected): the stock count of a batch and a
///   claim's `ORDER BY id LIMIT n` ran as a bitmap scan and a sort of every
///   code (300-430 ms per batch, in PostgreSQL's log: the drop's p99)
///   instead of an index scan that stops at the cap;
/// - fresh (`kami-bench flash-sale --analyze`, a million codes): the
///   set-based claim hash-joined a sequential scan of every code (360 ms)
///   and, its estimated cost being past `jit_above_cost`, JIT-compiled
///   itself first (510 ms): order p99 2.5 s.
///
/// No statement of these transactions is better off with a bitmap, a hash
/// or merge join or JIT: they touch a few hundred rows by index. One
/// statement, one round trip; JIT is off for every session since stop 21
/// (`connect.rs`, `POSTGRES_SESSION`).
pub(super) async fn claim_plans(backend: Backend, tx: &mut Tx) -> Result<()> {
    if backend == Backend::Postgres {
        sqlx::query(CLAIM_PLANS).execute(&mut **tx).await?;
    }
    Ok(())
}

/// `claim_plans`' settings, local to the transaction.
pub(super) const CLAIM_PLANS: &str = "SELECT set_config('enable_bitmapscan', 'off', true), \
     set_config('enable_hashjoin', 'off', true), \
     set_config('enable_mergejoin', 'off', true)";

/// Claims up to `quantity` available codes of the product for the order in
/// one statement; returns how many it got. The caller decides what a short
/// count means.
pub(super) async fn claim_cards(
    backend: Backend,
    tx: &mut Tx,
    order_id: i64,
    product_id: i64,
    quantity: i64,
    reserved_until: Option<Millis>,
) -> Result<i64> {
    claim_plans(backend, tx).await?;
    let sql = claim_sql(backend, "$1", "$2", "$3", "$4", None);
    let claimed = sqlx::query(&sql)
        .bind(order_id)
        .bind(reserved_until)
        .bind(product_id)
        .bind(quantity)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    Ok(claimed as i64)
}

/// One order's claim in a group commit.
pub(super) struct Claim {
    pub order_id: i64,
    pub product_id: i64,
    pub quantity: i64,
    pub until: Millis,
    pub floor: Option<i64>,
}

/// One claim statement per order, all sent in one round trip: the values
/// are integers written into the text, so nothing from a buyer reaches the
/// SQL. Returns each claim's count, in order.
pub(super) async fn claim_cards_many(
    backend: Backend,
    tx: &mut Tx,
    claims: &[Claim],
) -> Result<Vec<i64>> {
    use futures::TryStreamExt;
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    if backend == Backend::Postgres {
        return claim_cards_set(tx, claims).await;
    }
    let sql: String = claims
        .iter()
        .map(|c| {
            claim_sql(
                backend,
                &c.order_id.to_string(),
                &c.until.to_string(),
                &c.product_id.to_string(),
                &c.quantity.to_string(),
                c.floor,
            ) + ";\n"
        })
        .collect();
    let results: Vec<_> = sqlx::raw_sql(&sql)
        .execute_many(&mut **tx)
        .try_collect()
        .await?;
    if results.len() != claims.len() {
        return Err(crate::StoreError::Corrupt(format!(
            "{} claim statements answered {} results",
            claims.len(),
            results.len()
        )));
    }
    Ok(results.iter().map(|r| r.rows_affected() as i64).collect())
}

/// PostgreSQL: every claim of a batch in one statement. perf showed the
/// server parsing and planning the batch's claim statements one by one
/// (`base_yyparse`, `expression_tree_walker`, `copyObjectImpl`); here each
/// product's codes are locked once (`FOR UPDATE SKIP LOCKED`, lowest ids
/// first, as many as the batch asks for, into one array) and handed out to
/// its orders in arrival order, each order a slice of the array at its
/// running total (a range join of codes and orders compared every pair).
/// `k` is evaluated once (`MATERIALIZED`, as a CTE that locks rows is
/// anyway): built again per order, each array would skip the rows this
/// statement already took. Its search starts at the batch's `floor`, so
/// it does not need `available_in_order`'s range: as a range, it could not
/// start at the floor and stepped over every code claimed since the last
/// VACUUM (`flash-sale --analyze`: 2,680 orders/s against 7,722). The
/// lists travel as text (sqlx's `Any` driver binds no arrays); they are
/// integers we produced. Returns each claim's count, in order; a short one
/// is handled by the caller as any short claim.
async fn claim_cards_set(tx: &mut Tx, claims: &[Claim]) -> Result<Vec<i64>> {
    let list = |f: &dyn Fn(&Claim) -> i64| {
        super::pg_sets::id_list(&claims.iter().map(f).collect::<Vec<_>>())
    };
    let rows = sqlx::query(
        "WITH w AS ( \
           SELECT o.order_id, o.product_id, o.qty, o.until, o.floor, \
                  (SUM(o.qty) OVER (PARTITION BY o.product_id ORDER BY o.ord) - o.qty)::bigint AS first \
           FROM unnest(string_to_array($1, ',')::bigint[], string_to_array($2, ',')::bigint[], \
                       string_to_array($3, ',')::bigint[], string_to_array($4, ',')::bigint[], \
                       string_to_array($5, ',')::bigint[]) \
                WITH ORDINALITY AS o(order_id, product_id, qty, until, floor, ord)), \
         p AS (SELECT product_id, SUM(qty) AS total, MIN(floor) AS floor FROM w GROUP BY product_id), \
         k AS MATERIALIZED (SELECT p.product_id, ARRAY( \
                 SELECT id FROM cards WHERE stock_product = p.product_id \
                 AND id >= p.floor ORDER BY id LIMIT p.total FOR UPDATE SKIP LOCKED) AS ids FROM p), \
         a AS (SELECT unnest(k.ids[w.first + 1 : w.first + w.qty]) AS id, w.order_id, w.until \
               FROM w JOIN k ON k.product_id = w.product_id) \
         UPDATE cards SET status = 'reserved', order_id = a.order_id, reserved_until = a.until \
         FROM a WHERE cards.id = a.id RETURNING cards.order_id",
    )
    .bind(list(&|c| c.order_id))
    .bind(list(&|c| c.product_id))
    .bind(list(&|c| c.quantity))
    .bind(list(&|c| c.until))
    .bind(list(&|c| c.floor.unwrap_or(0)))
    .fetch_all(&mut **tx)
    .await?;
    let mut got: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
    for row in rows {
        *got.entry(row.try_get::<i64, _>(0)?).or_default() += 1;
    }
    Ok(claims
        .iter()
        .map(|c| got.get(&c.order_id).copied().unwrap_or(0))
        .collect())
}

pub(super) async fn release_cards(tx: &mut Tx, order_id: i64) -> Result<()> {
    sqlx::query(
        "UPDATE cards SET status = 'available', order_id = NULL, reserved_until = NULL \
         WHERE order_id = $1 AND status = 'reserved'",
    )
    .bind(order_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn sell_cards(tx: &mut Tx, order_id: i64, now: Millis) -> Result<i64> {
    let n = sqlx::query(
        "UPDATE cards SET status = 'sold', sold_at = $2, reserved_until = NULL \
         WHERE order_id = $1 AND status = 'reserved'",
    )
    .bind(order_id)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n as i64)
}

/// `sql` with an event's row bound as `$1`–`$6` (merchant, order id, order
/// number, kind, detail, time), the parameters of both inserts below.
fn bind_event<'q>(
    sql: &'q str,
    ev: &'q NewEvent,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(sql)
        .bind(DEFAULT_MERCHANT)
        .bind(ev.order_id)
        .bind(ev.order_no.as_deref())
        .bind(&ev.kind)
        .bind(&ev.detail)
        .bind(ev.at)
}

pub async fn insert_event(tx: &mut Tx, ev: &NewEvent) -> Result<()> {
    bind_event(
        "INSERT INTO order_events (merchant_id, order_id, order_no, kind, detail, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        ev,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `insert_event` unless the order has an event of this kind and detail.
/// The check and the insert are one statement; on PostgreSQL two racing
/// transactions would each miss the other's uncommitted row, so they first
/// take a lock of the order's events, held to the end of the transaction.
/// SQLite runs one write transaction at a time.
pub async fn insert_event_once(backend: Backend, tx: &mut Tx, ev: &NewEvent) -> Result<bool> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('order_events:' || $1, 0))")
            .bind(ev.order_id.unwrap_or(0).to_string())
            .execute(&mut **tx)
            .await?;
    }
    let stored = bind_event(
        "INSERT INTO order_events (merchant_id, order_id, order_no, kind, detail, created_at) \
         SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM order_events \
         WHERE order_id = $2 AND kind = $4 AND detail = $5)",
        ev,
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(stored == 1)
}

/// The `VALUES` list of a multi-row insert: `rows` copies of `shape`, each
/// `?` in it replaced by the next `$n` parameter.
pub(super) fn values_rows(rows: usize, shape: &str) -> String {
    let mut n = 0;
    let mut out = Vec::with_capacity(rows);
    for _ in 0..rows {
        let mut row = String::with_capacity(shape.len() + 32);
        for c in shape.chars() {
            if c == '?' {
                n += 1;
                row.push_str(&format!("${n}"));
            } else {
                row.push(c);
            }
        }
        out.push(row);
    }
    out.join(", ")
}

pub(super) async fn event(
    tx: &mut Tx,
    order_id: i64,
    order_no: &str,
    kind: &str,
    detail: String,
    at: Millis,
) -> Result<()> {
    insert_event(
        tx,
        &NewEvent {
            order_id: Some(order_id),
            order_no: Some(order_no.to_string()),
            kind: kind.to_string(),
            detail,
            at,
        },
    )
    .await
}

/// Statements the SQLite writer thread (`direct.rs`) runs too: their
/// parameters appear in order, so `$n` binds by position there as well.
pub(super) const INSERT_IDEMPOTENCY: &str =
    "INSERT INTO idempotency_keys (merchant_id, scope, key, request_hash, status_code, \
     response, response_nonce, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (scope, key) DO NOTHING";
pub(super) const DELETE_IDEMPOTENCY: &str =
    "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2";
/// One use of a coupon, unless it is disabled, used up or expired.
pub(super) const TAKE_COUPON_USE: &str =
    "UPDATE coupons SET used = used + 1 WHERE id = $1 AND disabled = 0 \
     AND (max_uses IS NULL OR used < max_uses) AND (expires_at IS NULL OR expires_at > $2)";

/// Adds a quantity to what a buyer (by email or by address) holds of a
/// product unless that would pass the limit (`$1` product, `$2` key, `$3`
/// quantity, `$4` limit); no row changed when it would.
pub(super) fn add_held_sql(table: &str, column: &str) -> String {
    format!(
        "INSERT INTO {table} (product_id, {column}, quantity) VALUES ($1, $2, $3) \
         ON CONFLICT (product_id, {column}) DO UPDATE \
         SET quantity = {table}.quantity + excluded.quantity \
         WHERE {table}.quantity + excluded.quantity <= $4"
    )
}

pub async fn insert_idempotency(tx: &mut Tx, rec: &IdempotencyRecord) -> Result<bool> {
    let n = sqlx::query(INSERT_IDEMPOTENCY)
        .bind(DEFAULT_MERCHANT)
        .bind(&rec.scope)
        .bind(&rec.key)
        .bind(rec.request_hash.as_slice())
        .bind(rec.status_code)
        .bind(rec.response.as_slice())
        .bind(rec.response_nonce.as_slice())
        .bind(rec.created_at)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// The response of a key `owner` took while its request ran.
pub async fn settle_idempotency(
    tx: &mut Tx,
    rec: &IdempotencyRecord,
    owner: &[u8],
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE idempotency_keys SET status_code = $1, response = $2, response_nonce = $3 \
         WHERE scope = $4 AND key = $5 AND status_code = $6 AND response_nonce = $7",
    )
    .bind(rec.status_code)
    .bind(rec.response.as_slice())
    .bind(rec.response_nonce.as_slice())
    .bind(&rec.scope)
    .bind(&rec.key)
    .bind(IDEMPOTENCY_IN_FLIGHT)
    .bind(owner)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Forgets keys taken before `before`. They are found on the read pool
/// (a scan: no index orders them by age) and deleted by their primary key,
/// so the write lock is held only for the deletes, not for the scan.
pub async fn prune_idempotency(s: &SqlStore, before: Millis, limit: i64) -> Result<u64> {
    let old: Vec<(String, String)> =
        sqlx::query_as("SELECT scope, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2")
            .bind(before)
            .bind(limit)
            .fetch_all(&s.read)
            .await?;
    if old.is_empty() {
        return Ok(0);
    }
    let mut tx = s.begin().await?;
    let mut gone = 0;
    for (scope, key) in &old {
        gone += sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND created_at < $3",
        )
        .bind(scope)
        .bind(key)
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(gone)
}

/// Frees a key `owner` took while its request ran (its answer is not kept).
pub async fn release_idempotency(tx: &mut Tx, scope: &str, key: &str, owner: &[u8]) -> Result<()> {
    sqlx::query(
        "DELETE FROM idempotency_keys \
         WHERE scope = $1 AND key = $2 AND status_code = $3 AND response_nonce = $4",
    )
    .bind(scope)
    .bind(key)
    .bind(IDEMPOTENCY_IN_FLIGHT)
    .bind(owner)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Hands a key left running by `seen` to `owner`, in one statement: of two
/// requests that found it stale, one takes it.
pub async fn retake_idempotency(
    tx: &mut Tx,
    scope: &str,
    key: &str,
    seen: &[u8],
    owner: &[u8],
    now: Millis,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE idempotency_keys SET response_nonce = $1, created_at = $2 \
         WHERE scope = $3 AND key = $4 AND status_code = $5 AND response_nonce = $6",
    )
    .bind(owner)
    .bind(now)
    .bind(scope)
    .bind(key)
    .bind(IDEMPOTENCY_IN_FLIGHT)
    .bind(seen)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Takes back a key this transaction stored (a batch order it then refused).
pub async fn delete_idempotency(tx: &mut Tx, rec: &IdempotencyRecord) -> Result<()> {
    sqlx::query(DELETE_IDEMPOTENCY)
        .bind(&rec.scope)
        .bind(&rec.key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn get_idempotency(
    s: &SqlStore,
    scope: &str,
    key: &str,
) -> Result<Option<IdempotencyRecord>> {
    let row = sqlx::query(
        "SELECT scope, key, request_hash, status_code, response, response_nonce, created_at \
         FROM idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_optional(&s.write)
    .await?;
    row.map(|r| {
        Ok(IdempotencyRecord {
            scope: r.try_get("scope")?,
            key: r.try_get("key")?,
            request_hash: r.try_get("request_hash")?,
            status_code: r.try_get("status_code")?,
            response: r.try_get("response")?,
            response_nonce: r.try_get("response_nonce")?,
            created_at: r.try_get("created_at")?,
        })
    })
    .transpose()
}

/// Inserts the order and reserves its codes in one transaction: either the
/// buyer holds exactly `quantity` codes, or nothing was written.
pub async fn create_order(s: &SqlStore, o: &NewOrder) -> Result<Result<Order, CreateOrderError>> {
    let mut tx = s.begin().await?;
    lock_holds(s.backend, &mut tx, [&Holds::wanted(o)]).await?;
    // Refusals roll back at once: a dropped transaction keeps its locks
    // until the pool gets to it.
    if let Some(rec) = &o.idempotency {
        if !insert_idempotency(&mut tx, rec).await? {
            tx.rollback().await?;
            return Ok(Err(CreateOrderError::IdempotencyKeyTaken));
        }
    }
    if let Some(refused) = take_holds(&mut tx, o).await? {
        tx.rollback().await?;
        return Ok(Err(refused));
    }
    let order_id =
        super::batch::insert_orders(s.backend, &mut tx, &[o]).await?[o.order_no.as_str()];
    let claimed = claim_cards(
        s.backend,
        &mut tx,
        order_id,
        o.product_id,
        o.quantity,
        Some(o.expires_at),
    )
    .await?;
    if claimed < o.quantity {
        tx.rollback().await?;
        return Ok(Err(if claimed == 0 {
            CreateOrderError::SoldOut
        } else {
            CreateOrderError::InsufficientStock { available: claimed }
        }));
    }
    // Its `created` entry is the order's row (`order_events`).
    tx.commit().await?;
    Ok(Ok(pending_order(order_id, o)))
}

/// Takes what an order holds besides its codes: its quantity against the
/// per-buyer and per-IP limits, and one use of its coupon. Each is a
/// row-locked conditional write, so racing orders cannot both pass a check;
/// a refusal undoes what it took, so the transaction is left as it was and
/// a batch can go on with the next order.
pub(super) async fn take_holds(tx: &mut Tx, o: &NewOrder) -> Result<Option<CreateOrderError>> {
    if o.above_a_limit() {
        return Ok(Some(CreateOrderError::LimitExceeded));
    }
    // Exactly the limits `NewOrder::limit_holds` records on the order, so
    // expiry gives back what was taken and nothing else.
    let ip = o
        .per_ip_limit
        .zip(o.buyer_ip.as_deref())
        .map(|(limit, ip)| (limit, ip_limit_key(ip)));
    let mut undo = Holds {
        product_id: o.product_id,
        email: None,
        ip: None,
        quantity: o.quantity,
        coupon_id: None,
    };
    if let Some(limit) = o.per_buyer_limit {
        let key = email_limit_key(&o.email);
        if !add_held(tx, "buyer_purchases", "email", o, &key, limit).await? {
            return Ok(Some(CreateOrderError::LimitExceeded));
        }
        undo.email = Some(key);
    }
    if let Some((limit, key)) = &ip {
        if !add_held(tx, "buyer_ip_purchases", "ip", o, key, *limit).await? {
            release_holds(tx, &undo).await?;
            return Ok(Some(CreateOrderError::LimitExceeded));
        }
        undo.ip = Some(key.clone());
    }
    if let Some(coupon) = o.coupon_id {
        let taken = sqlx::query(TAKE_COUPON_USE)
            .bind(coupon)
            .bind(o.created_at)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if taken != 1 {
            release_holds(tx, &undo).await?;
            return Ok(Some(CreateOrderError::CouponUsedUp));
        }
    }
    Ok(None)
}

/// Adds the order's quantity to what its buyer (by email or by address)
/// holds of the product, unless that would pass `limit`; false, and nothing
/// written, when it would.
async fn add_held(
    tx: &mut Tx,
    table: &str,
    column: &str,
    o: &NewOrder,
    key: &str,
    limit: i64,
) -> Result<bool> {
    let n = sqlx::query(&add_held_sql(table, column))
        .bind(o.product_id)
        .bind(key)
        .bind(o.quantity)
        .bind(limit)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// What an order holds besides its codes (see `take_holds`).
pub(super) struct Holds {
    pub product_id: i64,
    /// The `email_limit_key` of the buyer's address.
    pub email: Option<String>,
    /// The `ip_limit_key` of the buyer's address.
    pub ip: Option<String>,
    pub quantity: i64,
    pub coupon_id: Option<i64>,
}

impl Holds {
    /// What a new order takes if it is granted (`take_holds`).
    pub fn wanted(o: &NewOrder) -> Self {
        Holds {
            product_id: o.product_id,
            email: o.per_buyer_limit.map(|_| email_limit_key(&o.email)),
            ip: o
                .per_ip_limit
                .zip(o.buyer_ip.as_deref())
                .map(|(_, ip)| ip_limit_key(ip)),
            quantity: o.quantity,
            coupon_id: o.coupon_id,
        }
    }

    /// The advisory lock names of the rows these holds write.
    fn lock_names(&self) -> impl Iterator<Item = String> + '_ {
        let p = self.product_id;
        let email = self
            .email
            .iter()
            .map(move |e| format!("kami:hold:email:{p}:{e}"));
        let ip = self.ip.iter().map(move |k| format!("kami:hold:ip:{p}:{k}"));
        let coupon = self.coupon_id.map(|c| format!("kami:hold:coupon:{c}"));
        email.chain(ip).chain(coupon)
    }

    /// What the order took when it was placed (not what its product's
    /// limits are now).
    pub fn of(order: &Order) -> Self {
        let held = |flag: i64| order.limit_holds & flag != 0;
        Holds {
            product_id: order.product_id,
            email: held(LIMIT_HOLD_EMAIL).then(|| {
                if held(LIMIT_HOLD_MAILBOX) {
                    email_limit_key(&order.email)
                } else {
                    order.email.clone()
                }
            }),
            ip: order
                .buyer_ip
                .as_deref()
                .filter(|_| held(LIMIT_HOLD_IP))
                .map(ip_limit_key),
            quantity: order.quantity,
            coupon_id: order.coupon_id,
        }
    }
}

/// PostgreSQL: takes, in one statement and in one order common to every
/// transaction, the advisory locks of every limit and coupon row the
/// transaction's holds will write, before it writes any. Without them a
/// batch takes its orders' rows in arrival order: one holding buyer A's row
/// and the launch coupon's while waiting for buyer B's, another holding B's
/// and waiting for the coupon, and PostgreSQL aborts one after its
/// `deadlock_timeout` with an error the buyer saw, even on the one-order
/// replay (`batches_naming_the_same_buyers_in_opposite_orders_do_not_deadlock`).
/// Every writer of those rows takes them first: order batches and single
/// orders, the expiry sweep, a late payment. The names are hashed by
/// PostgreSQL (`hashtextextended`, stable across versions and instances)
/// and locked in the order of their hashes; a collision only serialises two
/// buyers. SQLite needs none: its writers take turns.
pub(super) async fn lock_holds<'h>(
    backend: Backend,
    tx: &mut Tx,
    holds: impl IntoIterator<Item = &'h Holds>,
) -> Result<()> {
    if backend != Backend::Postgres {
        return Ok(());
    }
    let names: Vec<String> = holds.into_iter().flat_map(Holds::lock_names).collect();
    if names.is_empty() {
        return Ok(());
    }
    let names = serde_json::to_string(&names).expect("strings serialise");
    sqlx::query(LOCK_HOLDS)
        .bind(names)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The outer `ORDER BY`: PostgreSQL evaluates a query's output
/// expressions, here the lock calls, after sorting its rows.
const LOCK_HOLDS: &str = "SELECT pg_advisory_xact_lock(h) FROM \
     (SELECT DISTINCT hashtextextended(n, 0) AS h FROM json_array_elements_text($1::json) AS n) \
     AS names ORDER BY h";

/// Gives back what an expired (or refused) order held.
pub(super) async fn release_holds(tx: &mut Tx, h: &Holds) -> Result<()> {
    adjust_holds(tx, h, -1).await
}

/// Takes back what an expired order held when it is paid late: the buyer
/// paid, so limits and the coupon count it again even past their cap.
pub(super) async fn restore_holds(tx: &mut Tx, h: &Holds) -> Result<()> {
    adjust_holds(tx, h, 1).await
}

async fn adjust_holds(tx: &mut Tx, h: &Holds, sign: i64) -> Result<()> {
    let delta = sign * h.quantity;
    for (table, column, key) in [
        ("buyer_purchases", "email", &h.email),
        ("buyer_ip_purchases", "ip", &h.ip),
    ] {
        let Some(key) = key else { continue };
        let sql = format!(
            "UPDATE {table} SET quantity = CASE WHEN quantity + $3 > 0 THEN quantity + $3 ELSE 0 END \
             WHERE product_id = $1 AND {column} = $2"
        );
        sqlx::query(&sql)
            .bind(h.product_id)
            .bind(key)
            .bind(delta)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(coupon) = h.coupon_id {
        sqlx::query(
            "UPDATE coupons SET used = CASE WHEN used + $2 > 0 THEN used + $2 ELSE 0 END WHERE id = $1",
        )
        .bind(coupon)
        .bind(sign)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn created_detail(quantity: i64, channel: &str) -> String {
    format!("reserved {quantity} code(s) until expiry; channel {channel}")
}

/// The order `create_order` wrote, as a value, without reading it back.
pub(super) fn pending_order(id: i64, o: &NewOrder) -> Order {
    Order {
        id,
        order_no: o.order_no.clone(),
        product_id: o.product_id,
        quantity: o.quantity,
        unit_price: o.unit_price,
        discount: o.discount,
        amount: o.amount,
        currency: o.currency.clone(),
        email: o.email.clone(),
        access_token_hash: o.access_token_hash.clone(),
        has_query_password: o.query_password_hash.is_some(),
        buyer_ip: o.buyer_ip.clone(),
        channel: o.channel.clone(),
        status: OrderStatusField(OrderStatus::Pending),
        created_at: o.created_at,
        expires_at: o.expires_at,
        paid_at: None,
        delivered_at: None,
        coupon_id: o.coupon_id,
        limit_holds: o.limit_holds(),
    }
}

pub async fn get_order(s: &SqlStore, order_no: &str) -> Result<Option<Order>> {
    let sql = format!(
        "SELECT {} FROM orders WHERE order_no = $1",
        rows::ORDER_COLUMNS
    );
    let row = sqlx::query(&sql)
        .bind(order_no)
        .fetch_optional(&s.read)
        .await?;
    row.as_ref().map(rows::order).transpose()
}

pub async fn order_cards(s: &SqlStore, order_id: i64) -> Result<Vec<SealedCard>> {
    let rows = sqlx::query(
        "SELECT id, product_id, ciphertext, nonce, key_id FROM cards \
         WHERE order_id = $1 AND status = 'sold' ORDER BY id",
    )
    .bind(order_id)
    .fetch_all(&s.read)
    .await?;
    rows.iter().map(rows::sealed_card).collect()
}

pub async fn buyer_order_id(
    s: &SqlStore,
    email: &str,
    qp_hash: &[u8],
    order_no: &str,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM orders WHERE order_no = $1 AND merchant_id = $2 AND email = $3 \
         AND query_password_hash = $4",
    )
    .bind(order_no)
    .bind(DEFAULT_MERCHANT)
    .bind(email)
    .bind(qp_hash)
    .fetch_optional(&s.read)
    .await?)
}

pub async fn lookup_orders(
    s: &SqlStore,
    email: &str,
    qp_hash: &[u8],
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<Order>> {
    let sql = format!(
        "SELECT {} FROM orders WHERE merchant_id = $1 AND email = $2 AND query_password_hash = $3 \
         AND id < $4 ORDER BY id DESC LIMIT $5",
        rows::ORDER_COLUMNS
    );
    let rows = sqlx::query(&sql)
        .bind(DEFAULT_MERCHANT)
        .bind(email)
        .bind(qp_hash)
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&s.read)
        .await?;
    rows.iter().map(rows::order).collect()
}

pub async fn list_orders(s: &SqlStore, f: &OrderFilter) -> Result<Vec<Order>> {
    let sql = list_orders_sql(s.backend, f);
    let mut q = super::pg_status::housekeeping(sqlx::query(&sql)).bind(DEFAULT_MERCHANT);
    if let Some(e) = &f.email {
        q = q.bind(e.as_str());
    }
    if let Some(p) = f.product_id {
        q = q.bind(p);
    }
    if let Some(b) = f.before_id {
        q = q.bind(b);
    }
    for t in [f.created_from, f.created_before].into_iter().flatten() {
        q = q.bind(t);
    }
    let rows = q.fetch_all(&s.read).await?;
    rows.iter().map(rows::order).collect()
}

/// `list_orders`' statement; its parameters in the order they are bound there.
fn list_orders_sql(backend: Backend, f: &OrderFilter) -> String {
    // An e-mail narrows a page to a buyer's few orders by its own index on
    // either backend; the status is then checked on each.
    let by_status = f.email.is_none();
    let marks = match backend {
        Backend::Postgres if by_status => super::pg_status::list_from_marks(f.status),
        _ => None,
    };
    let mut sql = match &marks {
        Some((head, _)) => head.clone(),
        None => format!(
            "SELECT {} FROM orders {}",
            rows::ORDER_COLUMNS,
            sqlite_list_path(backend, f)
        ),
    };
    let mut n = 1;
    let mut next = |col: &str| {
        n += 1;
        (format!(" AND {col} ${n}"), n)
    };
    // Written into the statement, not bound, so that the partial index of
    // `sqlite_list_path` serves it. `as_str` is one of five fixed words.
    if let Some(st) = f.status {
        sql += &format!(" AND status = '{}'", st.as_str());
        if by_status && marks.is_none() {
            sql += &super::pg_status::marked(backend, st, "");
        }
    }
    if f.email.is_some() {
        sql += &next("email =").0;
    }
    if f.product_id.is_some() {
        sql += &next("product_id =").0;
    }
    let before = f.before_id.map(|_| {
        let (cond, n) = next("id <");
        sql += &cond;
        n
    });
    if f.created_from.is_some() {
        sql += &next("created_at >=").0;
    }
    if f.created_before.is_some() {
        sql += &next("created_at <").0;
    }
    let limit = f.limit.clamp(1, 1000);
    match &marks {
        Some((_, tail)) => {
            sql += tail;
            if let Some(n) = before {
                sql += &format!(" AND m.order_id < ${n}");
            }
            sql += &format!(" ORDER BY m.order_id DESC LIMIT {limit}");
        }
        None => sql += &format!(" ORDER BY id DESC LIMIT {limit}"),
    }
    sql
}

/// How SQLite finds a page of orders, newest first, and the `WHERE` that
/// begins the statement. Without statistics its planner takes
/// `merchant_id = ?` to `orders_by_email` and sorts every order of the shop
/// for each page. So, unless an email narrows it: a status with a partial
/// index of its own reads that (migration 0008; unfulfilled orders are few,
/// sorted in memory), pending orders are looked up from their deadline rows
/// (migration 0012), and otherwise the table is walked
/// from its newest row (`+merchant_id` keeps the index out), which for
/// `delivered`, what most orders are, finds a page at once. PostgreSQL
/// has no index naming the status since its migration 0010: a status's
/// orders are found through `order_deadlines` or `order_marks`
/// (`pg_status`), the rest from its statistics.
fn sqlite_list_path(backend: Backend, f: &OrderFilter) -> String {
    if backend != Backend::Sqlite || f.email.is_some() {
        return "WHERE merchant_id = $1".into();
    }
    let index = match f.status {
        Some(OrderStatus::PaidUnfulfilled) => "orders_unfulfilled",
        Some(OrderStatus::Expired) => "orders_expired",
        Some(OrderStatus::Refunded) => "orders_refunded",
        // Pending orders: their deadline rows name the candidates
        // (`pg_status::marked`), each looked up by id.
        Some(OrderStatus::Pending | OrderStatus::Delivered) | None => {
            return "WHERE +merchant_id = $1".into()
        }
    };
    format!("INDEXED BY {index} WHERE merchant_id = $1")
}

/// Each pending order's row of `order_deadlines` on SQLite (its migration
/// 0012), inserted with the order by every statement that inserts orders
/// (`batch::insert_orders`, `direct.rs`), in the same transaction.
pub(super) const INSERT_DEADLINE: &str =
    "INSERT INTO order_deadlines (order_id, expires_at) VALUES (?1, ?2)";

/// Due deadline rows one pass of SQLite's sweep reads.
const SQLITE_ROWS_PER_PASS: i64 = 256;

/// Passes per sweep at most on SQLite: a drop's paid orders fall due
/// together, and the rows the tidying has not reached yet are cleared 256 to
/// a transaction (32,768 a sweep), each pass taking its turn with the writer
/// thread's batches, so an unpaid order behind them expires on time.
const SQLITE_MAX_PASSES: usize = 128;

/// Deadline rows each SQLite sweep looks at for orders paid since.
const SQLITE_ROWS_PER_TIDY: i64 = 4096;

pub async fn expire_due_orders(s: &SqlStore, now: Millis, limit: i64) -> Result<Vec<Order>> {
    if s.backend == Backend::Postgres {
        return super::pg_status::expire_due_orders(s, now, limit).await;
    }
    // Tidying is housekeeping: a failure leaves rows that name orders no
    // longer pending, which every reader checks anyway.
    if let Err(e) = tidy_sqlite_deadlines(s).await {
        tracing::warn!(error = %e, "tidying the order deadlines failed");
    }
    // The sweep runs every second and mostly finds nothing (`any_due`).
    let due = "SELECT 1 FROM order_deadlines WHERE expires_at <= $1 LIMIT 1";
    if !s.any_due(due, now).await? {
        return Ok(Vec::new());
    }
    // The next due rows; the same rows each time within a pass's
    // transaction, since SQLite's one writer holds it.
    let window = format!(
        "SELECT order_id FROM order_deadlines WHERE expires_at <= $1 \
         ORDER BY expires_at LIMIT {SQLITE_ROWS_PER_PASS}"
    );
    let pending = format!(
        "SELECT {} FROM orders WHERE id IN ({window}) AND status = 'pending' \
         ORDER BY expires_at, id LIMIT $2",
        rows::ORDER_COLUMNS,
    );
    let settled = format!(
        "DELETE FROM order_deadlines WHERE order_id IN ({window}) AND NOT EXISTS \
         (SELECT 1 FROM orders o WHERE o.id = order_deadlines.order_id AND o.status = 'pending')"
    );
    sweep_passes(limit, SQLITE_MAX_PASSES, |left| {
        let (pending, settled) = (&pending, &settled);
        async move {
            let (moved, cleared) = sqlite_sweep_pass(s, now, left, pending, settled).await?;
            // A short pass: nothing due is left, or what is left stays
            // pending past `limit` (the next sweep).
            Ok((moved, cleared < SQLITE_ROWS_PER_PASS as u64))
        }
    })
    .await
}

/// An expiry sweep's passes, each its own transaction, until `limit` orders
/// expired, `max_passes` ran or a pass says to stop: `pass(left)` answers
/// the orders it expired (at most `left`) and whether to stop there.
pub(super) async fn sweep_passes<F, Fut>(
    limit: i64,
    max_passes: usize,
    mut pass: F,
) -> Result<Vec<Order>>
where
    F: FnMut(i64) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<Order>, bool)>>,
{
    let mut expired = Vec::new();
    for _ in 0..max_passes {
        let left = limit - expired.len() as i64;
        if left <= 0 {
            break;
        }
        match pass(left).await {
            Ok((mut moved, stop)) => {
                expired.append(&mut moved);
                if stop {
                    break;
                }
            }
            // The passes before this one committed: their orders are
            // reported, so the gate is given their codes back; the next
            // sweep retries the rest.
            Err(e) if !expired.is_empty() => {
                tracing::warn!(error = %e, expired = expired.len(), "an expiry sweep's pass failed");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(expired)
}

/// One pass of SQLite's sweep, in its own transaction: the orders it
/// expired and the deadline rows it cleared (those of the pass's rows whose
/// orders are no longer pending, these included).
async fn sqlite_sweep_pass(
    s: &SqlStore,
    now: Millis,
    limit: i64,
    pending: &str,
    settled: &str,
) -> Result<(Vec<Order>, u64)> {
    let mut tx = s.begin().await?;
    let due: Vec<Order> = sqlx::query(pending)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(rows::order)
        .collect::<Result<_>>()?;
    let expired = expire_orders(s.backend, &mut tx, due, now).await?;
    let cleared = sqlx::query(settled)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok((expired, cleared))
}

/// Clears the deadline rows of orders that are no longer pending among the
/// next `SQLITE_ROWS_PER_TIDY` rows (by order id, from where the last call
/// stopped, round and round). Until it falls due, a paid order's row stays,
/// and the pending list and count look each row's order up: after a drop,
/// every order of it for fifteen minutes. The rows are read without the
/// write lock, so a call that finds nothing to clear writes nothing. Safe at
/// any moment: an order never becomes pending again, and the delete checks
/// the status once more under the lock.
async fn tidy_sqlite_deadlines(s: &SqlStore) -> Result<()> {
    use std::sync::atomic::Ordering;
    let from = s.tidy_from.load(Ordering::Relaxed);
    let rows = sqlx::query(
        "SELECT d.order_id AS id, o.status AS status FROM order_deadlines d \
         LEFT JOIN orders o ON o.id = d.order_id \
         WHERE d.order_id > $1 ORDER BY d.order_id LIMIT $2",
    )
    .bind(from)
    .bind(SQLITE_ROWS_PER_TIDY)
    .fetch_all(&s.read)
    .await?;
    let mut settled = Vec::new();
    let mut last = 0;
    for row in &rows {
        last = row.try_get::<i64, _>("id")?;
        if row.try_get::<Option<String>, _>("status")?.as_deref() != Some("pending") {
            settled.push(last);
        }
    }
    if !settled.is_empty() {
        // In a transaction of its own, to take its turn with the writer
        // thread's batches (`SqlStore::begin`).
        let mut tx = s.begin().await?;
        sqlx::query(
            "DELETE FROM order_deadlines WHERE order_id IN (SELECT value FROM json_each($1)) \
             AND NOT EXISTS (SELECT 1 FROM orders o \
               WHERE o.id = order_deadlines.order_id AND o.status = 'pending')",
        )
        .bind(serde_json::to_string(&settled).expect("ids serialize"))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    // A short read reached the end: the next call starts over.
    let next = if rows.len() as i64 == SQLITE_ROWS_PER_TIDY {
        last
    } else {
        0
    };
    s.tidy_from.store(next, Ordering::Relaxed);
    Ok(())
}

/// Expires the due orders read (and, on PostgreSQL, locked) in `tx`: each
/// still pending gives back its codes and what it held, and the codes go to
/// paid orders waiting for them first. The orders it moved.
pub(super) async fn expire_orders(
    backend: Backend,
    tx: &mut Tx,
    due: Vec<Order>,
    now: Millis,
) -> Result<Vec<Order>> {
    // Restock locks before hold rows, in product order, as every
    // transaction takes them (`lock_restocks`).
    let mut products: Vec<i64> = due.iter().map(|o| o.product_id).collect();
    products.sort_unstable();
    products.dedup();
    for &product_id in &products {
        lock_restocks(backend, tx, product_id).await?;
    }
    let holds: Vec<Holds> = due.iter().map(Holds::of).collect();
    lock_holds(backend, tx, &holds).await?;
    let mut expired = Vec::with_capacity(due.len());
    let mut released = Vec::new();
    for (o, held) in due.into_iter().zip(&holds) {
        let moved = sqlx::query(
            "UPDATE orders SET status = 'expired' WHERE id = $1 AND status = 'pending'",
        )
        .bind(o.id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if moved == 0 {
            continue;
        }
        release_cards(tx, o.id).await?;
        release_holds(tx, held).await?;
        event(
            tx,
            o.id,
            &o.order_no,
            "expired",
            format!("released {} code(s)", o.quantity),
            now,
        )
        .await?;
        if !released.contains(&o.product_id) {
            released.push(o.product_id);
        }
        expired.push(Order {
            status: OrderStatusField(OrderStatus::Expired),
            ..o
        });
    }
    // Released codes go to buyers who already paid and wait, before anyone
    // new (their restock locks are held since the start).
    for product_id in released {
        fulfil_unfulfilled_in(backend, tx, product_id, now).await?;
    }
    Ok(expired)
}

/// Takes, until the end of `tx`, the product's restock lock (PostgreSQL;
/// SQLite's one writer already runs these one at a time). Taken again in
/// the same transaction it is held already. Lock order, in every
/// transaction that takes one: restock locks first, in product order,
/// then order and hold rows (`payments::lock_late_holds`, `expire_orders`;
/// an import's flip locks only its own staged codes before). Every transaction
/// that hands returned or new stock to waiting buyers (`fulfil_unfulfilled_in`)
/// and every late payment that parks its order for want of stock
/// (`payments::settle_in`) takes it before it looks, so each sees what the
/// one before it committed. Without it, two restocks side by side each
/// missed the other's codes and waiting orders (the first one's row locks
/// hid them from the second), and a restock and a parking each missed the
/// other: a code stayed on sale while a paid buyer waited for one, until a
/// new buyer took it (an audit: one code of six racing one-code imports,
/// beside seven waiting buyers).
pub(super) async fn lock_restocks(backend: Backend, tx: &mut Tx, product_id: i64) -> Result<()> {
    if backend == Backend::Postgres {
        sqlx::query(
            "SELECT pg_advisory_xact_lock(\
             hashtextextended('restock:' || current_database() || ':' || $1, 0))",
        )
        .bind(product_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Delivers waiting paid orders of a product strictly oldest first: it stops
/// at the first order the remaining stock cannot cover in full. The waiting
/// orders are locked without skipping any: another transaction holds one
/// only while it records an extra payment for it, and such a transaction
/// took this product's restock lock before that row (`lock_late_holds`), so
/// it is not waiting for this one.
pub async fn fulfil_unfulfilled_in(
    backend: Backend,
    tx: &mut Tx,
    product_id: i64,
    now: Millis,
) -> Result<Vec<String>> {
    lock_restocks(backend, tx, product_id).await?;
    let sql = format!(
        "SELECT id, order_no, quantity FROM orders WHERE product_id = $1 {} \
         AND status = 'paid_unfulfilled' ORDER BY id {}",
        super::pg_status::marked(backend, OrderStatus::PaidUnfulfilled, "AND product_id = $1"),
        backend.for_update()
    );
    let waiting = sqlx::query(&sql)
        .bind(product_id)
        .fetch_all(&mut **tx)
        .await?;
    let mut delivered = Vec::new();
    for row in waiting {
        let id: i64 = row.try_get("id")?;
        let order_no: String = row.try_get("order_no")?;
        let quantity: i64 = row.try_get("quantity")?;
        let claimed = claim_cards(backend, tx, id, product_id, quantity, None).await?;
        if claimed < quantity {
            release_cards(tx, id).await?;
            break;
        }
        sell_cards(tx, id, now).await?;
        sqlx::query(
            "UPDATE orders SET status = 'delivered', delivered_at = $2 \
             WHERE id = $1 AND status = 'paid_unfulfilled'",
        )
        .bind(id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        event(
            tx,
            id,
            &order_no,
            "delivered",
            "fulfilled from restocked codes".into(),
            now,
        )
        .await?;
        delivered.push(order_no);
    }
    Ok(delivered)
}

/// An order's timeline: its stored events, and the entries its own row
/// records (`lifecycle`). By number, also the rejected notifications that
/// named it when no such order existed.
/// `Store::events_without_order`. An operator's occasional page: the
/// primary key walked backwards, no index of its own.
pub async fn events_without_order(
    s: &SqlStore,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<OrderEvent>> {
    let rows = sqlx::query(
        "SELECT id, order_no, kind, detail, created_at FROM order_events \
         WHERE order_no IS NULL AND order_id IS NULL AND id < $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(&s.read)
    .await?;
    rows.iter().map(rows::event).collect()
}

pub async fn order_events(
    s: &SqlStore,
    order_id: Option<i64>,
    order_no: Option<&str>,
) -> Result<Vec<OrderEvent>> {
    // Read in this order, each statement on its own snapshot: the order,
    // its payments, its stored events. A payment committed after the
    // order's read changes nothing derived from it; one committed between
    // the payments' read and the events' may add an event naming it extra,
    // never make an extra payment look like the one that paid.
    let order = match (order_id, order_no) {
        (Some(id), _) => order_by_id(s, id).await?,
        (None, Some(no)) => get_order(s, no).await?,
        (None, None) => None,
    };
    let payments = match &order {
        Some(o) if o.paid_at.is_some() => order_payments(s, o.id).await?,
        _ => Vec::new(),
    };
    let rows = match (order_id, order_no) {
        (Some(id), _) => {
            sqlx::query(
                "SELECT id, order_no, kind, detail, created_at FROM order_events \
                 WHERE order_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&s.read)
            .await?
        }
        (None, Some(no)) => {
            sqlx::query(
                "SELECT id, order_no, kind, detail, created_at FROM order_events \
                 WHERE order_no = $1 ORDER BY id",
            )
            .bind(no)
            .fetch_all(&s.read)
            .await?
        }
        (None, None) => Vec::new(),
    };
    let stored = rows.iter().map(rows::event).collect::<Result<Vec<_>>>()?;
    let Some(order) = order else {
        return Ok(stored);
    };
    let paid = paying_payment(payments, &stored);
    Ok(lifecycle(stored, &order, paid))
}

async fn order_by_id(s: &SqlStore, id: i64) -> Result<Option<Order>> {
    let sql = format!("SELECT {} FROM orders WHERE id = $1", rows::ORDER_COLUMNS);
    let row = sqlx::query(&sql).bind(id).fetch_optional(&s.read).await?;
    row.as_ref().map(rows::order).transpose()
}

/// The order's payments, oldest first, as the `paid` entry tells them.
async fn order_payments(s: &SqlStore, order_id: i64) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT amount, currency, channel, trade_no FROM payments \
         WHERE order_id = $1 ORDER BY id",
    )
    .bind(order_id)
    .fetch_all(&s.read)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(super::payments::paid_detail_of(
                r.try_get("amount")?,
                &r.try_get::<String, _>("currency")?,
                &r.try_get::<String, _>("channel")?,
                &r.try_get::<String, _>("trade_no")?,
            ))
        })
        .collect()
}

/// What the `paid` entry says of the payment that paid the order: the first
/// of its payments that no `payment_for_paid_order` event names as extra.
/// (Not simply the first by id: PostgreSQL stores a batch's payments in
/// (channel, trade_no) order, and the first to arrive is the one that paid.)
fn paying_payment(payments: Vec<String>, stored: &[OrderEvent]) -> Option<String> {
    payments.into_iter().find(|paid| {
        let extra = super::payments::extra_payment(paid);
        !stored
            .iter()
            .any(|e| e.kind == "payment_for_paid_order" && e.detail.ends_with(&extra))
    })
}

/// The timeline with the entries the order's row records and no stored
/// event tells: `created` (always), `paid` and `delivered` (once stamped).
/// The writes of a drop and a storm store none of them (a third of the
/// rows PostgreSQL wrote per order, docs/PERFORMANCE.md stop 24): the row's
/// `created_at`, `paid_at` and `delivered_at`, its quantity and channel and
/// its first payment say the same. Late payments, fulfilment on restock and
/// every order written before stop 24 store theirs, with their own detail.
/// `created` goes first; `paid` and `delivered` before the stored events of
/// their moment (stored lifecycle rows aside) or after, and before any
/// `payment_for_paid_order` (a batch's orders share one `paid_at`, which may
/// be later than the extra payment's own time). Synthesised entries have
/// id 0.
pub(super) fn lifecycle(
    stored: Vec<OrderEvent>,
    o: &Order,
    paid_detail: Option<String>,
) -> Vec<OrderEvent> {
    let has = |kind: &str| stored.iter().any(|e| e.kind == kind);
    let entry = |kind: &str, detail: String, at: Millis| OrderEvent {
        id: 0,
        order_no: Some(o.order_no.clone()),
        kind: kind.into(),
        detail,
        created_at: at,
    };
    let mut out = Vec::with_capacity(stored.len() + 3);
    if !has("created") {
        out.push(entry(
            "created",
            created_detail(o.quantity, &o.channel),
            o.created_at,
        ));
    }
    let mut later = Vec::new();
    if let (Some(at), false) = (o.paid_at, has("paid")) {
        later.push(entry("paid", paid_detail.unwrap_or_default(), at));
    }
    if let (Some(at), false) = (o.delivered_at, has("delivered")) {
        later.push(entry("delivered", String::new(), at));
    }
    let mut later = later.into_iter().peekable();
    for e in stored {
        let after_payment = e.kind == "payment_for_paid_order";
        // A stored lifecycle row of the same moment (a late payment's
        // `paid`) stays ahead of a derived `delivered`.
        let same_moment_first = !matches!(e.kind.as_str(), "created" | "paid" | "delivered");
        while let Some(l) = later.next_if(|l| {
            after_payment
                || l.created_at < e.created_at
                || (l.created_at == e.created_at && same_moment_first)
        }) {
            out.push(l);
        }
        out.push(e);
    }
    out.extend(later);
    out
}

/// Orders by status, every status listed, zeros too (a gauge falls back to
/// 0 when the last pending order is paid). Neither backend has an index of
/// every order by status since their migrations 0008, so this counts each
/// status but `delivered` where it is kept (SQLite: its partial indexes, and
/// its deadline rows for pending orders; PostgreSQL: its marks or deadlines,
/// `pg_status`), and `delivered` is the
/// rest of the table: SQLite counts a table by its pages, not its rows. One
/// statement, so one snapshot: the parts add up to the total.
pub async fn count_orders_by_status(s: &SqlStore) -> Result<Vec<(String, i64)>> {
    let delivered = OrderStatus::Delivered.as_str();
    let others: Vec<OrderStatus> = OrderStatus::ALL
        .into_iter()
        .filter(|st| *st != OrderStatus::Delivered)
        .collect();
    let counts: Vec<String> = others
        .iter()
        .map(|st| {
            format!(
                "({}) AS {}",
                super::pg_status::count(s.backend, *st),
                st.as_str()
            )
        })
        .collect();
    let names: Vec<&str> = others.iter().map(OrderStatus::as_str).collect();
    // `MATERIALIZED`: PostgreSQL would otherwise inline each count into both
    // the output and `delivered`'s subtraction and run it twice.
    let sql = format!(
        "WITH c AS MATERIALIZED (SELECT (SELECT COUNT(*) FROM orders) AS total, {}) \
         SELECT *, total - {} AS {delivered} FROM c",
        counts.join(", "),
        names.join(" - ")
    );
    let row = super::pg_status::housekeeping(sqlx::query(&sql))
        .fetch_one(&s.read)
        .await?;
    OrderStatus::ALL
        .iter()
        .map(|st| Ok((st.as_str().to_string(), row.try_get(st.as_str())?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::any::AnyPoolOptions;

    fn delivered_order(created: Millis, paid: Millis) -> Order {
        Order {
            id: 7,
            order_no: "K1".into(),
            product_id: 1,
            quantity: 2,
            unit_price: 100,
            discount: 0,
            amount: 200,
            currency: "CNY".into(),
            email: "a@example.com".into(),
            access_token_hash: Vec::new(),
            has_query_password: false,
            buyer_ip: None,
            channel: "sandbox".into(),
            status: OrderStatusField(OrderStatus::Delivered),
            created_at: created,
            expires_at: created + 900_000,
            paid_at: Some(paid),
            delivered_at: Some(paid),
            coupon_id: None,
            limit_holds: 0,
        }
    }

    fn stored(id: i64, kind: &str, at: Millis) -> OrderEvent {
        OrderEvent {
            id,
            order_no: Some("K1".into()),
            kind: kind.into(),
            detail: format!("stored {kind}"),
            created_at: at,
        }
    }

    fn timeline(events: &[OrderEvent]) -> Vec<(&str, Millis)> {
        events
            .iter()
            .map(|e| (e.kind.as_str(), e.created_at))
            .collect()
    }

    /// The derived entries take their places among the stored ones:
    /// `created` first, `paid` and `delivered` at their moment (before
    /// stored events of the same millisecond), and always before an extra
    /// payment's event, even one stamped earlier than the batch's `paid_at`.
    #[test]
    fn derived_entries_fall_in_place_among_stored_ones() {
        let o = delivered_order(1_000, 5_000);
        let events = lifecycle(
            vec![
                stored(1, "payment_started", 2_000),
                stored(2, "payment_for_paid_order", 4_990),
                stored(3, "notify_rejected", 5_000),
                stored(4, "resent", 9_000),
            ],
            &o,
            Some("200 CNY via sandbox trade t".into()),
        );
        assert_eq!(
            timeline(&events),
            [
                ("created", 1_000),
                ("payment_started", 2_000),
                ("paid", 5_000),
                ("delivered", 5_000),
                ("payment_for_paid_order", 4_990),
                ("notify_rejected", 5_000),
                ("resent", 9_000),
            ]
        );
        assert_eq!(
            events[0].detail,
            "reserved 2 code(s) until expiry; channel sandbox"
        );
        assert_eq!(events[2].detail, "200 CNY via sandbox trade t");
        assert!(events.iter().filter(|e| e.id == 0).count() == 3);
        // Stored lifecycle rows (older orders, late payments) are not doubled.
        let events = lifecycle(
            vec![
                stored(1, "created", 1_000),
                stored(2, "expired", 3_000),
                stored(3, "paid", 5_000),
            ],
            &o,
            None,
        );
        assert_eq!(
            timeline(&events),
            [
                ("created", 1_000),
                ("expired", 3_000),
                ("paid", 5_000),
                ("delivered", 5_000),
            ]
        );
        assert_eq!(events[2].detail, "stored paid");
    }

    /// SQLite pages through orders without sorting the whole shop: every
    /// filter of the admin list either reads an index in id order or a
    /// partial index of a status that few orders hold (migration 0008 took
    /// away the index of every order by status). A plan that sorts all
    /// orders, or walks the table for a rare status, fails here.
    #[tokio::test]
    async fn sqlite_lists_orders_without_sorting_the_shop() {
        sqlx::any::install_default_drivers();
        let dir = std::env::temp_dir().join(format!("kami-plans-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/t.db", dir.display());
        let store = SqlStore::connect(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        let pool = AnyPoolOptions::new().connect(&url).await.unwrap();
        // The table in id order: from its end, or from the page's last id.
        let newest = [
            "SCAN orders",
            "SEARCH orders USING INTEGER PRIMARY KEY (rowid<?)",
        ];
        let cases = [
            (None, newest),
            (Some(OrderStatus::Delivered), newest),
            // Each deadline row's order by its id, newest first.
            (
                Some(OrderStatus::Pending),
                ["USING ROWID SEARCH ON TABLE order_deadlines FOR IN-OPERATOR"; 2],
            ),
            (
                Some(OrderStatus::PaidUnfulfilled),
                ["orders_unfulfilled"; 2],
            ),
            (
                Some(OrderStatus::Expired),
                ["SEARCH orders USING INDEX orders_expired"; 2],
            ),
            (
                Some(OrderStatus::Refunded),
                ["SEARCH orders USING INDEX orders_refunded"; 2],
            ),
        ];
        for (status, paths) in cases {
            for (before_id, path) in [None, Some(1_000)].into_iter().zip(paths) {
                let f = OrderFilter {
                    status,
                    limit: 50,
                    before_id,
                    product_id: Some(1),
                    ..OrderFilter::default()
                };
                let sql = format!(
                    "EXPLAIN QUERY PLAN {}",
                    list_orders_sql(Backend::Sqlite, &f)
                );
                let mut q = sqlx::query(&sql).bind(1_i64).bind(1_i64);
                if let Some(b) = before_id {
                    q = q.bind(b);
                }
                let plan = q
                    .fetch_all(&pool)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<String, _>("detail"))
                    .collect::<Vec<_>>()
                    .join("; ");
                assert!(plan.contains(path), "{status:?}, {before_id:?}: {plan}");
                assert!(!plan.contains("orders_by_email"), "{status:?}: {plan}");
                let few = matches!(
                    status,
                    Some(OrderStatus::Pending | OrderStatus::PaidUnfulfilled)
                );
                assert!(
                    few || !plan.contains("TEMP B-TREE"),
                    "{status:?} sorts every order: {plan}"
                );
            }
        }
        pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
