//! Invariant 5: no code in plaintext in the database files, a dump, or the logs.

#[macro_use]
mod common;

use std::process::Command;

use common::*;
use serde_json::json;

both_backends!(codes_never_appear_in_plaintext_on_disk_in_dumps_or_logs);

/// Which of `needles` occur in `hay`.
fn found_in(hay: &[u8], needles: &[String]) -> Vec<String> {
    needles
        .iter()
        .filter(|n| contains_bytes(hay, n.as_bytes()))
        .cloned()
        .collect()
}

fn sqlite_bytes(kami: &Kami) -> Vec<(String, Vec<u8>)> {
    files_under(kami.data_dir())
        .into_iter()
        .filter_map(|p| Some((p.display().to_string(), std::fs::read(&p).ok()?)))
        .collect()
}

fn pg_dump(kami: &Kami) -> Vec<u8> {
    let out = Command::new("pg_dump")
        .arg("--data-only")
        .arg("--no-owner")
        .arg(&kami.database_url)
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

async fn codes_never_appear_in_plaintext_on_disk_in_dumps_or_logs(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let marker = format!("PlainProductMarker{}", random_token(10));
    let pid = kami.product(&marker, json!({})).await;
    let codes: Vec<String> = (0..12)
        .map(|i| format!("ZQXSECRET{}{i:03}", random_token(20)))
        .collect();
    kami.import_codes(pid, &codes).await;

    // Deliver some, through every path that shows codes.
    let a = kami.buy(pid, 3, "secret@example.com").await;
    kami.pay_ok(&a).await;
    let delivered = kami.codes(&a).await;
    assert_eq!(delivered.len(), 3);
    assert_distinct_from(&delivered, &codes);
    let (s, b) = kami
        .order(
            json!({"product_id": pid, "quantity": 2, "email": "secret2@example.com",
                       "query_password": "pw", "channel": "sandbox"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{b}");
    kami.pay_ok(&b).await;
    let (s, found) = kami
        .send(
            kami.http
                .post(kami.url("/api/v1/orders/lookup"))
                .json(&json!({"email": "secret2@example.com", "query_password": "pw"})),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::OK);
    assert_eq!(cards_of(&found["data"][0]).len(), 2, "{found}");
    // A reserved (pending) one too.
    kami.buy(pid, 1, "secret3@example.com").await;
    assert_eq!(kami.stock3(pid).await, (6, 1, 5));

    match backend {
        Backend::Sqlite => {
            let files = sqlite_bytes(&kami);
            let names: Vec<&String> = files.iter().map(|(n, _)| n).collect();
            assert!(
                names.iter().any(|n| n.ends_with("kami.db")),
                "no kami.db in {names:?}"
            );
            // Positive control: the product name is stored in clear, so the scan works.
            assert!(
                files
                    .iter()
                    .any(|(_, b)| contains_bytes(b, marker.as_bytes())),
                "the scan did not find the product name in {names:?}; is the database elsewhere?"
            );
            for (name, bytes) in &files {
                let leaked = found_in(bytes, &codes);
                assert!(
                    leaked.is_empty(),
                    "{name} holds codes in plaintext: {leaked:?}"
                );
            }
            // And after a clean shutdown (WAL checkpointed into kami.db).
            kami.stop(Stop::Term);
            for (name, bytes) in sqlite_bytes(&kami) {
                let leaked = found_in(&bytes, &codes);
                assert!(
                    leaked.is_empty(),
                    "{name} holds codes in plaintext after shutdown: {leaked:?}"
                );
            }
        }
        Backend::Postgres => {
            let dump = pg_dump(&kami);
            assert!(
                contains_bytes(&dump, marker.as_bytes()),
                "pg_dump did not contain the product name: wrong database?"
            );
            let leaked = found_in(&dump, &codes);
            assert!(
                leaked.is_empty(),
                "pg_dump --data-only shows codes in plaintext: {leaked:?}"
            );
            kami.stop(Stop::Term);
        }
    }

    let logs = kami.logs_bytes();
    assert!(!logs.is_empty(), "no server output was captured");
    let leaked = found_in(&logs, &codes);
    assert!(leaked.is_empty(), "the logs hold codes: {leaked:?}");
    // The codes' random part alone must not leak either (e.g. a truncated or prefixed log).
    let cores: Vec<String> = codes
        .iter()
        .map(|c| c["ZQXSECRET".len()..].to_string())
        .collect();
    assert!(
        found_in(&logs, &cores).is_empty(),
        "the logs hold parts of codes"
    );
}
