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

    // Into an empty file that is already there (what `mktemp` makes).
    let backup = kami.data_dir().join("shop-backup.db");
    std::fs::write(&backup, b"").unwrap();
    let backup_arg = backup.to_str().unwrap();
    assert_ok(&kami.cli(&["backup", backup_arg]), "kami backup");
    // Never over a file with something in it.
    assert_refused(
        &kami.cli(&["backup", backup_arg]),
        "backup over a backup",
        "not an empty file",
    );

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
    let started = std::time::Instant::now();
    assert_refused(
        &kami.cli(&["restore", garbage.to_str().unwrap()]),
        "restore of garbage",
        "not a SQLite database",
    );
    // At once, by its first bytes: SQLite itself waited out its busy timeout.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "refusing garbage took {:?}",
        started.elapsed()
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
    // Nothing of the check's copy is left beside the database.
    let strays: Vec<_> = files_under(kami.data_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".restoring"))
        .collect();
    assert!(strays.is_empty(), "left behind: {strays:?}");
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

/// A SQLite database is never migrated under another Kami process: one of
/// an earlier version still serving would go on writing that version's way
/// (after migration 0012, pending orders without the deadline rows that make
/// them expire). A command with a migration to apply refuses while another
/// process holds the database open, applies it once that one has stopped,
/// and the shop then sells and expires as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_migration_is_applied_under_another_kami_process() {
    use sqlx::Connection;
    let kami = spawn_kami(Backend::Sqlite).await;
    let pid = kami.product("Upgraded", json!({})).await;
    kami.import_codes(pid, &make_codes("UPG", 2)).await;
    kami.stop(Stop::Term);

    // The shop as the version before 0012 left it.
    let db = kami.data_dir().join("kami.db");
    let url = format!("sqlite://{}", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "DROP TABLE order_deadlines; \
         CREATE INDEX orders_pending_expiry ON orders (expires_at) WHERE status = 'pending'; \
         DELETE FROM _sqlx_migrations WHERE version = 12",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    // An earlier version's server holds it open (its shared lock).
    let mut lock_name = db.clone().into_os_string();
    lock_name.push(".lock");
    let old_server = std::fs::File::open(&lock_name).unwrap();
    old_server.lock_shared().unwrap();
    for args in [
        &["migrate"][..],
        &["api-key", "create", "--name", "upgrade"][..],
    ] {
        let out = kami.cli(args);
        assert_refused(&out, &format!("kami {args:?}"), "stop it");
    }
    assert!(
        !has_deadlines(&mut conn).await,
        "migrated under another process"
    );

    drop(old_server);
    assert_ok(&kami.cli(&["migrate"]), "kami migrate once alone");
    assert!(has_deadlines(&mut conn).await);
    conn.close().await.unwrap();
    kami.start().await.expect("start after the upgrade");
    let order = kami.buy(pid, 1, "after@example.com").await;
    kami.pay_ok(&order).await;
    assert_eq!(kami.codes(&order).await.len(), 1);
}

/// Whether the database has SQLite's `order_deadlines` (migration 0012).
async fn has_deadlines(conn: &mut sqlx::SqliteConnection) -> bool {
    sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'order_deadlines'",
    )
    .fetch_one(conn)
    .await
    .unwrap()
        == 1
}

/// A shop whose key file went missing refuses to start without writing a
/// fresh key where the original must be put back, and starts again once it is.
#[tokio::test]
async fn a_missing_master_key_is_not_replaced_by_a_new_one() {
    let kami = spawn_kami(Backend::Sqlite).await;
    let pid = kami.product("Keyed", json!({})).await;
    let key = kami.data_dir().join("master.key");
    let aside = kami.data_dir().join("master.key.aside");
    std::fs::rename(&key, &aside).unwrap();
    let codes = kami.data_dir().join("codes.txt");
    std::fs::write(&codes, "KEYED-1\n").unwrap();
    let pid_arg = pid.to_string();
    let args = [
        "cards",
        "import",
        "--product",
        pid_arg.as_str(),
        codes.to_str().unwrap(),
    ];
    let out = kami.cli(&args);
    assert_refused(&out, "a missing key", "none was given (no KAMI_MASTER_KEY");
    assert!(!key.exists(), "a new key file was written");
    std::fs::rename(&aside, &key).unwrap();
    assert_ok(&kami.cli(&args), "import with the key back");
    assert_eq!(kami.stock3(pid).await, (1, 0, 0));
}

/// The database, its WAL and shared-memory files and a backup hold buyers'
/// emails and the order history: readable by the account that runs Kami
/// only, whatever the umask it was started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_and_its_backups_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let kami = spawn_kami(Backend::Sqlite).await;
    let pid = kami.product("Private", json!({})).await;
    kami.import_codes(pid, &make_codes("PRIV", 3)).await;
    let backup = kami.data_dir().join("fresh-backup.db");
    assert_ok(
        &kami.cli(&["backup", backup.to_str().unwrap()]),
        "kami backup",
    );
    // Into an empty file someone made readable by all: the backup is a
    // file of its own, owner-only, not that file filled.
    let planted = kami.data_dir().join("planted-backup.db");
    std::fs::write(&planted, b"").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_ok(
        &kami.cli(&["backup", planted.to_str().unwrap()]),
        "kami backup into a planted file",
    );
    let files: Vec<_> = files_under(kami.data_dir())
        .into_iter()
        .filter(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".db") || name.ends_with(".db-wal") || name.ends_with(".db-shm")
        })
        .collect();
    for suffix in [".db", ".db-wal", ".db-shm"] {
        assert!(
            files.iter().any(|p| p.to_string_lossy().ends_with(suffix)),
            "no {suffix} file among {files:?}"
        );
    }
    assert!(files.contains(&backup), "the backup is not among {files:?}");
    assert!(
        files.contains(&planted),
        "the second backup is not among {files:?}"
    );
    for f in &files {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", f.display());
    }
}

/// The commands that read no codes still refuse a master key that is given
/// and wrong (not base64, too short, a file that is not there, another
/// database's key), so a mistyped key shows while the operator sets up,
/// not at the shop's first start. They used to exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_command_refuses_a_wrong_master_key() {
    let kami = spawn_kami(Backend::Sqlite).await;
    kami.stop(Stop::Term);
    let other = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let short = base64::engine::general_purpose::STANDARD.encode([9u8; 16]);
    let backup = kami.data_dir().join("keyed-backup.db");
    let backup = backup.to_str().unwrap();
    let commands: [&[&str]; 4] = [
        &["migrate"],
        &["api-key", "create", "--name", "typo"],
        &["admin", "create", "--email", "typo@example.com"],
        &["backup", backup],
    ];
    let wrong = [
        ("KAMI_MASTER_KEY", "not base64!!", "invalid"),
        ("KAMI_MASTER_KEY", short.as_str(), "invalid"),
        ("KAMI_MASTER_KEY", other.as_str(), "does not match"),
        (
            "KAMI_MASTER_KEY_FILE",
            "/nonexistent/master.key",
            "cannot read",
        ),
    ];
    for args in commands {
        for (var, value, needle) in &wrong {
            let out = kami.command().env(var, value).args(args).output().unwrap();
            assert_refused(&out, &format!("{args:?} with {var}={value}"), needle);
        }
        // The right key (the data directory's) is taken.
        assert_ok(&kami.cli(args), &format!("{args:?}"));
    }
}

/// API.md: every subcommand works on a fresh data directory. A backup of
/// one, where no code was ever sealed and so no master key made, restores
/// there; it used to be refused for want of the key that sealed it.
#[tokio::test]
async fn a_backup_of_a_fresh_data_directory_restores_there() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(KAMI);
        for (k, _) in std::env::vars() {
            if k.starts_with("KAMI_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("KAMI_DATA_DIR", dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let backup = dir.path().join("fresh.db");
    assert_ok(&run(&["backup", backup.to_str().unwrap()]), "kami backup");
    assert!(!dir.path().join("master.key").exists(), "backup made a key");
    assert_ok(&run(&["restore", backup.to_str().unwrap()]), "kami restore");
    // A backup that holds sealed codes still wants its key.
    let kami = spawn_kami(Backend::Sqlite).await;
    let pid = kami.product("Sealed", json!({})).await;
    kami.import_codes(pid, &make_codes("SEAL", 2)).await;
    let sealed = kami.data_dir().join("sealed.db");
    assert_ok(
        &kami.cli(&["backup", sealed.to_str().unwrap()]),
        "kami backup",
    );
    let out = run(&["restore", sealed.to_str().unwrap()]);
    assert_refused(&out, "a sealed backup without its key", "no master key");
}
