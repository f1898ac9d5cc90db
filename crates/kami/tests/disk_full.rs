//! SQLite on a disk that fills up: orders are refused with 503 and
//! `Retry-After` (the client comes back), nothing half-written stays, and
//! once space is freed the shop sells again at once. Before, the first
//! refusal left sqlx's one write connection counting a transaction SQLite
//! had already rolled back, and every order after it was a 500 ("begin_with
//! at non-zero transaction depth") until the connection happened to be
//! replaced, well after the space came back.
//!
//! The disk is a small tmpfs, so this test mounts one: it needs root, which
//! CI has.

#[macro_use]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::json;

struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(at: &Path, size: &str) -> Self {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "this test mounts a small tmpfs to fill, which needs root (CI runs as root)"
        );
        Self(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with a file of its own; returns it.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // The last partial block too.
    while f.write_all(&chunk[..512]).is_ok() {}
    let _ = f.sync_all();
    path
}

async fn order(kami: &Kami, pid: i64, n: usize) -> (StatusCode, Option<String>, String) {
    let res = kami
        .http
        .post(kami.url("/api/v1/orders"))
        .json(&json!({"product_id": pid, "quantity": 1,
                      "email": format!("full{n}@example.com"), "channel": "sandbox"}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_is_a_503_and_selling_resumes_once_space_is_freed() {
    let disk = tempfile::tempdir().unwrap();
    let _mounted = Mounted::tmpfs(disk.path(), "6m");
    let kami = spawn_kami_with(
        Backend::Sqlite,
        Options {
            env: vec![(
                "KAMI_DATABASE_URL".into(),
                format!("sqlite://{}/kami.db", disk.path().display()),
            )],
            ..Options::default()
        },
    )
    .await;
    let pid = kami.product("Full", json!({})).await;
    let codes: Vec<String> = (0..3000).map(|i| format!("FULL-{i:05}")).collect();
    kami.import_codes(pid, &codes).await;

    let filler = fill(disk.path());
    let mut made = 0i64;
    let mut refused = 0;
    let mut n = 0;
    while refused < 20 && n < 3000 {
        n += 1;
        let (status, retry, body) = order(&kami, pid, n).await;
        match status {
            StatusCode::CREATED => made += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(
                    retry.as_deref(),
                    Some("1"),
                    "a 503 without Retry-After: {body}"
                );
                refused += 1;
            }
            other => panic!(
                "order {n} on a full disk: {other} {body}\n{}",
                kami.logs_tail(40)
            ),
        }
    }
    assert!(refused >= 20, "the disk never filled: {made} orders made");

    // Space comes back: the next orders are taken at once, with no 500 on
    // the way.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let mut in_a_row = 0;
    while in_a_row < 20 {
        n += 1;
        let (status, _, body) = order(&kami, pid, n).await;
        match status {
            StatusCode::CREATED => {
                made += 1;
                in_a_row += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => in_a_row = 0,
            other => panic!(
                "order {n} after space was freed: {other} {body}\n{}",
                kami.logs_tail(40)
            ),
        }
        assert!(
            freed.elapsed() < Duration::from_secs(10),
            "orders were still refused {:?} after space was freed",
            freed.elapsed()
        );
    }

    // Every order answered 201 holds its code, and nothing else does.
    let (available, reserved, sold) = kami.stock3(pid).await;
    assert_eq!((reserved, sold), (made, 0), "orders made: {made}");
    assert_eq!(available + reserved, 3000);
}
