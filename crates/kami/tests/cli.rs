//! The one-shot commands and the start, each in a fresh directory with no
//! `KAMI_*` variable but the test's: what they leave behind when they
//! succeed, and what they refuse before creating anything.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::KAMI;

/// `kami ARGS` in `dir` with only `env` among the `KAMI_*` variables.
fn kami_in(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(KAMI);
    for (k, _) in std::env::vars() {
        if k.starts_with("KAMI_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run kami")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// The command's writes are in `kami.db` itself once it ends: its WAL was
/// folded in and removed, as `serve` does at its stop.
#[test]
fn one_shot_commands_leave_no_wal_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_dir = data.to_str().unwrap();
    let env = [("KAMI_DATA_DIR", data_dir)];
    for args in [
        &["migrate"][..],
        &["api-key", "create", "--name", "ops"],
        &["admin", "create", "--email", "owner@example.com"],
        &["admin", "reset-password", "--email", "owner@example.com"],
    ] {
        let out = kami_in(dir.path(), &env, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(
            !data.join("kami.db-wal").exists(),
            "{args:?} left kami.db-wal behind"
        );
    }
    let backup = dir.path().join("b.db");
    let out = kami_in(dir.path(), &env, &["backup", backup.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!data.join("kami.db-wal").exists(), "backup left the WAL");
}

#[test]
fn an_invalid_email_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = kami_in(
        dir.path(),
        &[("KAMI_DATA_DIR", "data")],
        &["admin", "create", "--email", "notanemail"],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert_eq!(e.matches("email must contain @").count(), 1, "{e}");
}

/// Refused as configuration (exit 2) before a file is made.
#[test]
fn an_in_memory_database_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let out = kami_in(
        dir.path(),
        &[("KAMI_DATA_DIR", "data")],
        &["--database-url", "sqlite::memory:", "migrate"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("in-memory"), "{}", stderr(&out));
    assert_eq!(files_in(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn both_forms_of_a_secret_in_the_environment_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = kami_in(
        dir.path(),
        &[
            ("KAMI_DATA_DIR", "data"),
            (
                "KAMI_MASTER_KEY",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
            ("KAMI_MASTER_KEY_FILE", "master.key"),
        ],
        &["migrate"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("both KAMI_MASTER_KEY"),
        "{}",
        stderr(&out)
    );
}

/// `enabled = "false"` is a string, not false: the start stops instead of
/// turning on a channel its operator meant off.
#[test]
fn a_channel_section_with_a_non_boolean_enabled_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kami.toml"),
        "[channels.epay]\nenabled = \"false\"\ngateway = \"http://127.0.0.1:9/\"\npid = \"1\"\nkey = \"k\"\n",
    )
    .unwrap();
    // On a port in use, so that a start that wrongly went on stops there
    // rather than serving on.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let out = kami_in(
        dir.path(),
        &[("KAMI_DATA_DIR", "data"), ("KAMI_BIND", &bind)],
        &["serve"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("[channels.epay] enabled must be true or false"),
        "{}",
        stderr(&out)
    );
}

/// A port in use stops the start before the database is made or migrated
/// and before a master key is created.
#[test]
fn serve_on_a_port_in_use_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let out = kami_in(
        dir.path(),
        &[("KAMI_DATA_DIR", "data"), ("KAMI_BIND", &bind)],
        &["serve"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot listen on"),
        "{}",
        stderr(&out)
    );
    assert!(
        !dir.path().join("data").exists(),
        "left: {:?}",
        files_in(&dir.path().join("data"))
    );
}

/// A missing file or an unknown product is said before a master key is
/// made: a mistyped command leaves no new key to back up.
#[test]
fn cards_import_checks_its_file_and_product_before_making_a_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("KAMI_DATA_DIR", "data")];
    let out = kami_in(
        dir.path(),
        &env,
        &["cards", "import", "--product", "1", "missing.txt"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot open missing.txt"),
        "{}",
        stderr(&out)
    );
    std::fs::write(dir.path().join("codes.txt"), "A-1\nA-2\n").unwrap();
    let out = kami_in(
        dir.path(),
        &env,
        &["cards", "import", "--product", "7", "codes.txt"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("product 7 does not exist"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("data/master.key").exists());
}

/// `KAMI_SANDBOX_SECRET_FILE` is relative to the working directory, not to
/// kami.toml's, and replaces kami.toml's inline secret.
#[test]
fn a_secret_file_from_the_environment_is_read_from_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("kami.toml"), "sandbox_secret = \"from-toml\"\n").unwrap();
    std::fs::create_dir(dir.path().join("sec")).unwrap();
    // Refused as empty: proves which file was read, without starting a shop.
    std::fs::write(dir.path().join("sec/sb.txt"), " \n").unwrap();
    let out = kami_in(
        dir.path(),
        &[
            ("KAMI_DATA_DIR", "data"),
            ("KAMI_CONFIG", "conf/kami.toml"),
            ("KAMI_SANDBOX_SECRET_FILE", "sec/sb.txt"),
        ],
        &["migrate"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sandbox_secret is empty"),
        "{}",
        stderr(&out)
    );
}
