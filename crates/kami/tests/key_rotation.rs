//! `kami keys rotate` (DESIGN.md, "Secrets"): on both backends, everything
//! sealed or keyed under the old master key works under the new one (codes
//! delivered and in stock, query passwords, stored `Idempotency-Key`
//! answers, duplicate detection, payment channel keys, operators' TOTP keys),
//! the old key no longer opens the shop, a running shop refuses the
//! rotation, and a rotation cut off is finished by running it again.

#[macro_use]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use common::panel::{create_admin, text_after, Panel};
use common::*;
use reqwest::StatusCode;
use serde_json::json;

both_backends!(
    a_rotated_key_opens_everything_the_old_one_sealed,
    rotation_refuses_a_running_shop_and_finishes_when_cut_off,
    a_code_that_does_not_open_stops_the_rotation_and_changes_nothing
);

fn key_file(kami: &Kami) -> PathBuf {
    kami.data_dir().join("master.key")
}

fn read_key(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .trim()
        .to_string()
}

fn retired_keys(kami: &Kami) -> Vec<String> {
    std::fs::read_dir(kami.data_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.starts_with("master.key.retired-")
                .then(|| read_key(&kami.data_dir().join(name)))
        })
        .collect()
}

/// `kami keys rotate` with the server's environment and `env` over it.
fn rotate(kami: &Kami, env: &[(&str, &str)]) -> (bool, String, String) {
    let out = kami
        .command()
        .envs(env.iter().copied())
        .args(["keys", "rotate"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run kami keys rotate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn exec(kami: &Kami, sql: &str) {
    sqlx::query(sql)
        .execute(&mut connect(kami).await)
        .await
        .unwrap();
}

async fn connect(kami: &Kami) -> sqlx::AnyConnection {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&kami.database_url)
        .await
        .unwrap()
}

async fn scalar(kami: &Kami, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&mut connect(kami).await)
        .await
        .unwrap()
}

async fn setting(kami: &Kami, key: &str) -> String {
    sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_one(&mut connect(kami).await)
        .await
        .unwrap()
}

async fn start(kami: &Kami) {
    if let Err(e) = kami.start().await {
        panic!("kami did not start: {e}\n{}", kami.logs_tail(60));
    }
}

async fn a_rotated_key_opens_everything_the_old_one_sealed(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("rotation", json!({})).await;
    // More than one page (1,000 rows) of codes and of query passwords.
    let stock = make_codes("ROT", 2_500);
    kami.import_codes(pid, &stock).await;

    // A delivered order found by its query password.
    let (s, a) = kami
        .order(
            json!({"product_id": pid, "quantity": 3, "email": "rot@example.com",
                      "query_password": "pw-rot", "channel": "sandbox"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    kami.pay_ok(&a).await;
    let delivered = kami.codes(&a).await;
    assert_eq!(delivered.len(), 3);
    let bulk: Vec<String> = (0..1_100).map(|i| format!("bulk{i}@example.com")).collect();
    for batch in bulk.chunks(50) {
        let placed = futures::future::join_all(batch.iter().map(|email| {
            kami.order(json!({"product_id": pid, "quantity": 1, "email": email,
                              "query_password": "pw-bulk", "channel": "sandbox"}))
        }))
        .await;
        for (s, v) in placed {
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
    }
    // An answer stored under an Idempotency-Key.
    let body = json!({"product_id": pid, "quantity": 1, "email": "idem@example.com",
                      "channel": "sandbox"});
    let (s, first) = kami.order_idem(&body, "rotation-key-1").await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    // An operator with TOTP, and a payment channel's keys.
    let email = "owner@rotation.example";
    let password = create_admin(&kami, email, "owner");
    let p = Panel::new(&kami);
    p.login(email, &password).await;
    let secret = text_after(&p.get("/admin/security").await.body, "id=\"totp-secret\">")
        .expect("the TOTP secret is shown");
    let csrf = p.csrf().await;
    let code = common::panel::totp_now(&secret);
    let on = p
        .post(
            "/admin/security/totp",
            &[("csrf", &csrf), ("secret", &secret), ("code", &code)],
        )
        .await;
    assert_eq!(on.status, StatusCode::OK, "{}", on.body);
    let csrf = p.get("/admin/channels").await.csrf();
    let saved = p
        .post(
            "/admin/channels/epay",
            &[
                ("csrf", &csrf),
                ("gateway", "http://127.0.0.1:9/epay/"),
                ("pid", "rotation-pid-7731"),
                ("key", "rotation-epay-key"),
                ("enabled", "1"),
            ],
        )
        .await;
    assert!(
        saved.status.is_success() || saved.status.is_redirection(),
        "{}",
        saved.body
    );
    assert!(p
        .get("/admin/channels")
        .await
        .body
        .contains("rotation-pid-7731"));

    kami.stop(Stop::Term);
    let old = read_key(&key_file(&kami));
    let (ok, out, err) = rotate(&kami, &[]);
    assert!(ok, "rotate failed:\n{out}\n{err}");
    assert!(
        out.contains("rotated to key id 2: 2500 codes, 1 payment channels, 1 TOTP keys"),
        "{out}"
    );
    assert!(out.contains("1101 query passwords"), "{out}");
    assert_eq!(
        scalar(&kami, "SELECT COUNT(*) FROM cards WHERE key_id <> 2").await,
        0,
        "every code is under the new key id"
    );
    assert!(err.contains("BACK UP THE NEW KEY"), "{err}");
    let new = read_key(&key_file(&kami));
    assert_ne!(new, old);
    assert_eq!(
        retired_keys(&kami),
        vec![old.clone()],
        "the old key is kept aside"
    );
    let mode = std::fs::metadata(key_file(&kami))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the new key file is the owner's only: {mode:o}"
    );
    assert!(!kami.data_dir().join("master.key.new").exists());

    // The old key no longer opens the database.
    let refused = kami
        .command()
        .env("KAMI_MASTER_KEY", &old)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not match"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    start(&kami).await;
    assert_eq!(kami.codes(&a).await, delivered, "delivered codes open");
    let found = kami.lookup("rot@example.com", "pw-rot").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(cards_of(&found[0]), delivered, "{found:?}");
    assert!(kami.lookup("rot@example.com", "pw-wrong").await.is_empty());
    for email in [&bulk[0], &bulk[bulk.len() - 1]] {
        let found = kami.lookup(email, "pw-bulk").await;
        assert_eq!(found.len(), 1, "{email}: {found:?}");
    }
    // The stored answer is replayed for the same request, refused for another.
    let (s, again) = kami.order_idem(&body, "rotation-key-1").await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    assert_eq!(again["order_no"], first["order_no"], "{again}");
    let mut other = body.clone();
    other["quantity"] = json!(2);
    let (s, v) = kami.order_idem(&other, "rotation-key-1").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(error_code(&v), "idempotency_conflict");
    // Codes already in stock are still known as duplicates; new ones seal
    // under the new key and are sold.
    let report = kami.import(pid, stock[..5].join("\n")).await;
    assert_eq!(report["imported"], json!(0), "{report}");
    assert_eq!(report["duplicates"], json!(5), "{report}");
    let fresh = make_codes("ROT-NEW", 30);
    kami.import_codes(pid, &fresh).await;
    let mut bought = Vec::new();
    for _ in 0..3 {
        let b = kami.buy(pid, 10, "after@example.com").await;
        kami.pay_ok(&b).await;
        bought.extend(kami.codes(&b).await);
    }
    assert_eq!(bought.len(), 30);
    let all: Vec<&String> = stock.iter().chain(&fresh).collect();
    assert!(bought.iter().all(|c| all.contains(&c)), "{bought:?}");
    // The operator signs in with a TOTP code, and the channel's keys open.
    let q = Panel::new(&kami);
    let code = common::panel::totp_next(&secret);
    assert_eq!(
        q.try_login(email, &password, &code).await.status,
        StatusCode::SEE_OTHER
    );
    let audit = q.get("/admin/audit?lang=en").await.body;
    assert!(
        audit.contains("Master key rotated") && audit.contains("key id 2"),
        "the rotation is in the audit log: {audit}"
    );
    assert!(q
        .get("/admin/channels")
        .await
        .body
        .contains("rotation-pid-7731"));
    let logs = kami.logs() + &out + &err;
    assert!(
        !logs.contains(&new) && !logs.contains(&old),
        "a master key in the logs or the command's output"
    );

    // A rotated database read without its key history (a release before
    // rotation, a settings row lost) is refused, not sealed under key id 1.
    kami.stop(Stop::Term);
    exec(&kami, "DELETE FROM settings WHERE key = 'key_history'").await;
    let refused = kami.cli(&["migrate"]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("key history"), "{said}");
}

async fn rotation_refuses_a_running_shop_and_finishes_when_cut_off(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("rotation-resume", json!({})).await;
    kami.import_codes(pid, &make_codes("RES", 12)).await;
    let a = kami.buy(pid, 2, "resume@example.com").await;
    kami.pay_ok(&a).await;
    let delivered = kami.codes(&a).await;
    let old = read_key(&key_file(&kami));
    let pending = kami.data_dir().join("master.key.new");

    // A running shop holds the old keys: refused, nothing changed.
    let (ok, out, err) = rotate(&kami, &[]);
    assert!(!ok, "rotated under a running shop:\n{out}\n{err}");
    assert!(err.contains("stop the shop"), "{err}");
    assert_eq!(read_key(&key_file(&kami)), old);
    assert!(!pending.exists());
    assert_eq!(kami.codes(&a).await, delivered);
    kami.stop(Stop::Term);

    // A key given in KAMI_MASTER_KEY: the new one is left in a file for the
    // operator, and the old no longer starts the shop.
    let (ok, out, err) = rotate(&kami, &[("KAMI_MASTER_KEY", &old)]);
    assert!(ok, "rotate failed:\n{out}\n{err}");
    assert!(out.contains("rotated to key id 2"), "{out}");
    assert!(out.contains("set KAMI_MASTER_KEY"), "{out}");
    let second = read_key(&pending);
    assert_eq!(
        read_key(&key_file(&kami)),
        old,
        "the key file is not the env key's"
    );
    let refused = kami.cli(&["migrate"]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("master.key.new"), "{said}");

    // The operator sets KAMI_MASTER_KEY and leaves the file: the next
    // rotation is a rotation, not a no-op finishing the last one.
    let (ok, out, err) = rotate(&kami, &[("KAMI_MASTER_KEY", &second)]);
    assert!(ok, "rotate failed:\n{out}\n{err}");
    assert!(out.contains("rotated to key id 3"), "{out}");
    let third = read_key(&pending);
    assert_ne!(third, second);

    // Run again with no key but the stale file gone: the database is
    // already under the pending key, so only the files are swapped.
    std::fs::remove_file(key_file(&kami)).unwrap();
    let (ok, out, err) = rotate(&kami, &[]);
    assert!(ok, "finishing failed:\n{out}\n{err}");
    assert!(!out.contains("rotated to key id"), "rotated again: {out}");
    assert_eq!(read_key(&key_file(&kami)), third);
    assert!(!pending.exists());
    start(&kami).await;
    assert_eq!(kami.codes(&a).await, delivered);
    kami.stop(Stop::Term);

    // Cut off before the database took it: the key written for it is the
    // one used when run again, and the old file is kept.
    let written = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    std::fs::write(&pending, format!("{written}\n")).unwrap();
    let (ok, out, err) = rotate(&kami, &[]);
    assert!(ok, "rotate failed:\n{out}\n{err}");
    assert!(err.contains("going on with"), "{err}");
    assert!(out.contains("rotated to key id 4"), "{out}");
    assert_eq!(read_key(&key_file(&kami)), written);
    assert_eq!(retired_keys(&kami), vec![third.clone()]);
    // Straight away again: a second retired key, none overwritten.
    let (ok, out, err) = rotate(&kami, &[]);
    assert!(ok, "rotate failed:\n{out}\n{err}");
    let mut retired = retired_keys(&kami);
    retired.sort();
    let mut expected = vec![third, written];
    expected.sort();
    assert_eq!(retired, expected);
    start(&kami).await;
    assert_eq!(kami.codes(&a).await, delivered);
    let b = kami.buy(pid, 4, "resume2@example.com").await;
    kami.pay_ok(&b).await;
    assert_eq!(kami.codes(&b).await.len(), 4);
}

async fn a_code_that_does_not_open_stops_the_rotation_and_changes_nothing(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("rotation-broken", json!({})).await;
    kami.import_codes(pid, &make_codes("BRK", 1_500)).await;
    let a = kami.buy(pid, 2, "broken@example.com").await;
    kami.pay_ok(&a).await;
    let delivered = kami.codes(&a).await;
    kami.stop(Stop::Term);
    // One code in the second page no longer opens (a byte of its
    // ciphertext changed on disk, or sealed under another key).
    let id = scalar(&kami, "SELECT MAX(id) FROM cards").await;
    exec(
        &kami,
        &format!("UPDATE cards SET nonce = ciphertext WHERE id = {id}"),
    )
    .await;
    let old = read_key(&key_file(&kami));
    let before = setting(&kami, "master_key_check").await;
    let (ok, out, err) = rotate(&kami, &[]);
    assert!(!ok, "rotated over a code that does not open:\n{out}\n{err}");
    assert!(
        err.contains(&format!("code {id}")),
        "the code is named: {err}"
    );
    assert!(err.contains("run `kami keys rotate` again"), "{err}");
    assert_eq!(setting(&kami, "master_key_check").await, before);
    assert_eq!(
        scalar(&kami, "SELECT COUNT(*) FROM cards WHERE key_id <> 1").await,
        0,
        "no code was sealed again"
    );
    assert_eq!(read_key(&key_file(&kami)), old);
    assert!(kami.data_dir().join("master.key.new").exists());
    start(&kami).await;
    assert_eq!(
        kami.codes(&a).await,
        delivered,
        "the shop runs on the old key"
    );
}

/// Every running Kami process's shared lock (`rotate.rs`, `INSTANCES`).
const INSTANCE_LOCKS: &str = "FROM pg_locks WHERE locktype = 'advisory' \
     AND classid = 7037293 AND objid = 1769107316 AND objsubid = 1 \
     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";

/// A PostgreSQL restart ends a shop's lock with its connection: the shop
/// takes it again, and should the database have been rotated meanwhile it
/// stops instead of sealing under its old key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shop_takes_its_lock_again_and_stops_if_rotated_meanwhile_postgres() {
    let kami = spawn_kami(Backend::Postgres).await;
    let pid = kami.product("rotation-lock", json!({})).await;
    kami.import_codes(pid, &make_codes("LCK", 3)).await;
    let count = format!("SELECT COUNT(*) {INSTANCE_LOCKS}");
    let kill = format!("SELECT pg_terminate_backend(pid) {INSTANCE_LOCKS}");
    assert_eq!(scalar(&kami, &count).await, 1, "the shop holds its lock");

    exec(&kami, &kill).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while scalar(&kami, &count).await != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was not taken again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let a = kami.buy(pid, 1, "lock@example.com").await;
    kami.pay_ok(&a).await;
    assert_eq!(kami.codes(&a).await.len(), 1, "the shop serves on");

    // As if a rotation ran while the lock was gone.
    exec(
        &kami,
        "UPDATE settings SET value = value || ':9' WHERE key = 'master_key_check'",
    )
    .await;
    exec(&kami, &kill).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while kami.http.get(kami.url("/healthz")).send().await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the shop went on under a database rotated away from its key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        kami.logs().contains("master key changed"),
        "{}",
        kami.logs_tail(20)
    );
}
