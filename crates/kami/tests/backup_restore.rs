//! `kami backup` and `kami restore` on SQLite: a restore brings back exactly
//! the backed-up shop, refuses while Kami runs, and refuses damaged backups
//! and backups sealed with another master key, leaving the database as it was.

mod common;

use base64::Engine;
use common::*;
use reqwest::StatusCode;
use serde_json::json;

fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_refused(out: &std::process::Output, what: &str, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{what} should have been refused");
    assert!(
        stderr.contains(needle),
        "{what}: expected {needle:?} in:\n{stderr}"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_brings_back_the_backed_up_shop_and_refuses_what_would_lose_data() {
    let kami = spawn_kami(Backend::Sqlite).await;
    let pid = kami.product("Backed up", json!({})).await;
    kami.import_codes(pid, &make_codes("BAK", 3)).await;
    let paid = kami.buy(pid, 1, "before@example.com").await;
    kami.pay_ok(&paid).await;
    let delivered = kami.codes(&paid).await;

    let backup = kami.data_dir().join("shop-backup.db");
    let backup_arg = backup.to_str().unwrap();
    assert_ok(&kami.cli(&["backup", backup_arg]), "kami backup");

    // Changes after the backup, which a restore must undo.
    let later = kami.buy(pid, 1, "after@example.com").await;
    kami.import_codes(pid, &make_codes("LATER", 2)).await;
    assert_eq!(kami.stock3(pid).await, (3, 1, 1));

    // Never under a running shop.
    assert_refused(
        &kami.cli(&["restore", backup_arg]),
        "restore while serving",
        "stop it before restoring",
    );

    kami.stop(Stop::Term);

    // A damaged file is refused and leaves the database alone.
    let garbage = kami.data_dir().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
    assert_refused(
        &kami.cli(&["restore", garbage.to_str().unwrap()]),
        "restore of garbage",
        "was not restored",
    );

    // A backup sealed under another master key is refused too.
    let other_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let out = kami
        .command()
        .env("KAMI_MASTER_KEY", other_key)
        .args(["restore", backup_arg])
        .output()
        .unwrap();
    assert_refused(&out, "restore with another key", "another master key");

    kami.start().await.expect("restart after refused restores");
    assert_eq!(
        kami.stock3(pid).await,
        (3, 1, 1),
        "refused restores changed the database"
    );
    kami.stop(Stop::Term);

    let out = kami.cli(&["restore", backup_arg]);
    assert_ok(&out, "kami restore");
    assert!(String::from_utf8_lossy(&out.stdout).contains("previous database is kept"));
    kami.start().await.expect("start after restore");

    assert_eq!(kami.stock3(pid).await, (2, 0, 1));
    assert_eq!(kami.codes(&paid).await, delivered);
    let later_no = later["order_no"].as_str().unwrap();
    let (status, _) = kami
        .get_order(later_no, later["access_token"].as_str())
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an order placed after the backup survived"
    );
    // The replaced database is kept, not deleted.
    let kept = files_under(kami.data_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".before-restore-"))
        .count();
    assert!(kept >= 1, "the replaced database was not kept");
}
