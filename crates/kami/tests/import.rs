//! Card import: hostile files, encodings, deduplication, the CLI.

#[macro_use]
mod common;

use std::collections::HashSet;

use common::*;
use rand::RngCore;
use reqwest::StatusCode;
use serde_json::{json, Value};

both_backends!(
    bad_import_files_are_refused_or_rejected_per_line,
    gbk_bom_and_crlf_files_import_the_right_text,
    duplicates_within_an_upload_and_against_stock_and_sold_codes_are_counted,
    cli_import_prints_the_counts_and_the_codes_sell,
    an_import_cut_off_by_a_crash_can_be_uploaded_again_at_once,
    an_import_whose_client_went_away_can_be_uploaded_again_at_once,
    a_cli_import_killed_beside_the_server_can_be_uploaded_again_at_once,
    a_cli_import_killed_in_its_commit_is_finished_not_thrown_away,
);

/// A server killed half-way through an upload leaves that import's codes
/// staged, never sellable; the operator's re-upload right after imports
/// every code, instead of counting the staged ones as duplicates and
/// leaving them out until a reaper's wait was over (ten minutes, then two,
/// before). On SQLite the restarted server has the database to itself and
/// lets them go; on PostgreSQL the dead import's lock is gone with its
/// process, and the re-upload aborts it before it begins.
async fn an_import_cut_off_by_a_crash_can_be_uploaded_again_at_once(backend: Backend) {
    cut_off_import(backend, true).await
}

/// The same when the client goes away half-way: the import aborts itself.
async fn an_import_whose_client_went_away_can_be_uploaded_again_at_once(backend: Backend) {
    cut_off_import(backend, false).await
}

/// `kami cards import` killed beside a running server: its import's lock
/// (a file lock on SQLite, an advisory lock on PostgreSQL) dies with it, so
/// an upload right after imports every code. Before, the CLI's staged codes
/// counted as duplicates for minutes.
async fn a_cli_import_killed_beside_the_server_can_be_uploaded_again_at_once(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("CLI cut off", json!({})).await;
    let codes = make_codes("KILL", 200_000);
    let file = kami.data_dir().join("big.txt");
    std::fs::write(&file, codes.join("\n")).unwrap();
    let mut cli = kami.spawn_cli_import(pid, &file);
    // Until the CLI has staged some of them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(
            cli.try_wait().unwrap().is_none(),
            "the CLI finished 200,000 codes before it could be killed"
        );
        if staged(&kami).await > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the CLI staged nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    cli.kill().unwrap();
    cli.wait().unwrap();
    assert_eq!(kami.stock3(pid).await.0, 0, "a cut-off import sold nothing");

    let few = &codes[..5_000];
    let report = kami.import(pid, few.join("\n")).await;
    assert_eq!(
        (report["imported"].as_i64(), report["duplicates"].as_i64()),
        (Some(5_000), Some(0)),
        "{report}"
    );
    assert_eq!(kami.stock3(pid).await.0, 5_000);
}

/// `kami cards import` killed after it claimed its batch for the commit,
/// while it makes the codes sellable (on SQLite a chunk per transaction, so
/// that orders commit between them): the batch is whole, so the next import
/// finishes it rather than throwing away what is left, and not one code is
/// lost or counted twice.
async fn a_cli_import_killed_in_its_commit_is_finished_not_thrown_away(backend: Backend) {
    use sqlx::Connection;
    let kami = spawn_kami(backend).await;
    let pid = kami.product("CLI killed committing", json!({})).await;
    let codes = make_codes("FLIP", 200_000);
    let file = kami.data_dir().join("big.txt");
    std::fs::write(&file, codes.join("\n")).unwrap();
    sqlx::any::install_default_drivers();
    let mut db = match backend {
        Backend::Sqlite => sqlx::AnyConnection::connect(&format!("{}?mode=ro", kami.database_url)),
        Backend::Postgres => sqlx::AnyConnection::connect(&kami.database_url),
    }
    .await
    .unwrap();
    let mut cli = kami.spawn_cli_import(pid, &file);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(
            cli.try_wait().unwrap().is_none(),
            "the CLI committed 200,000 codes before it could be killed in its commit"
        );
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM card_batches WHERE product_id = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(pid)
        .fetch_optional(&mut db)
        .await
        .unwrap();
        if status.as_deref() == Some("committing") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the CLI never began its commit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    cli.kill().unwrap();
    cli.wait().unwrap();
    if backend == Backend::Postgres {
        // The killed CLI's session ends when PostgreSQL notices, once its
        // statement is done; until then its import's lock is held. (Not
        // counted: the shared lock every Kami process holds while it runs,
        // 0x006b616d_69726f74, `kami keys rotate`'s.)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let held: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND NOT (classid = 7037293 AND objid = 1769107316 AND objsubid = 1)",
            )
            .fetch_one(&mut db)
            .await
            .unwrap();
            if held == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the killed CLI's lock stayed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    // The next import (into another product) ends the dead one before it
    // begins, and the stock gate counts what it finished at once.
    let other = kami.product("Another", json!({})).await;
    let more = make_codes("MORE", 10);
    let report = kami.import(other, more.join("\n")).await;
    assert_eq!(report["imported"].as_i64(), Some(10), "{report}");
    assert_eq!(kami.stock3(pid).await.0, 200_000);
    assert_eq!(kami.shown_stock(pid).await, json!(200_000));
    assert_eq!(staged(&kami).await, 0);
    let status: String = sqlx::query_scalar(
        "SELECT status FROM card_batches WHERE product_id = $1 ORDER BY id LIMIT 1",
    )
    .bind(pid)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(status, "committed");
    // Every code of the killed import is in stock once: a re-upload adds none.
    let report = kami.import(pid, codes[..20_000].join("\n")).await;
    assert_eq!(
        (report["imported"].as_i64(), report["duplicates"].as_i64()),
        (Some(0), Some(20_000)),
        "{report}"
    );
}

/// Codes staged by imports still running (or cut off), read from the
/// database itself.
async fn staged(kami: &Kami) -> i64 {
    use sqlx::Connection;
    let sql = "SELECT COUNT(*) FROM cards WHERE status = 'staged'";
    match kami.backend {
        Backend::Sqlite => {
            let url = format!("{}?mode=ro", kami.database_url);
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&kami.database_url)
                .await
                .unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        }
    }
}

async fn cut_off_import(backend: Backend, crash: bool) {
    use tokio::io::AsyncWriteExt;
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Cut off", json!({})).await;
    let codes = make_codes("CUT", 30_000);
    let file = codes.join("\n") + "\n";

    // Headers for the whole file, then two thirds of it, then nothing.
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", kami.port))
        .await
        .unwrap();
    let head = format!(
        "POST /api/v1/admin/products/{pid}/cards HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        kami.api_key,
        file.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&file.as_bytes()[..file.len() * 2 / 3])
        .await
        .unwrap();
    conn.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    if crash {
        kami.restart(Stop::Kill).await;
        drop(conn);
    } else {
        drop(conn);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(kami.stock3(pid).await.0, 0, "a cut-off import sold nothing");

    let report = kami.import(pid, codes.join("\n")).await;
    assert_eq!(
        (report["imported"].as_i64(), report["duplicates"].as_i64()),
        (Some(30_000), Some(0)),
        "{report}"
    );
    assert_eq!(kami.stock3(pid).await.0, 30_000);
}

fn rejected_lines(report: &Value) -> Vec<i64> {
    report["rejected"]
        .as_array()
        .unwrap_or_else(|| panic!("no rejected list: {report}"))
        .iter()
        .map(|r| {
            assert!(
                r["reason"].as_str().is_some_and(|s| !s.is_empty()),
                "rejection without a reason: {r}"
            );
            r["line"]
                .as_i64()
                .unwrap_or_else(|| panic!("line is not an integer: {r}"))
        })
        .collect()
}

async fn bad_import_files_are_refused_or_rejected_per_line(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Hostile imports", json!({})).await;
    kami.import_codes(pid, &make_codes("BASE", 2)).await;
    let base = kami.stock3(pid).await;
    assert_eq!(base, (2, 0, 0));

    // Binary garbage with NULs: refused whole.
    let mut garbage = vec![0u8; 4096];
    rand::thread_rng().fill_bytes(&mut garbage);
    garbage[10] = 0;
    garbage[2000] = 0;
    garbage[4095] = b'\n';
    let (s, v) = kami.import_raw(pid, garbage).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        "{v}"
    );
    assert_eq!(
        kami.stock3(pid).await,
        base,
        "nothing imported from a binary file"
    );

    // Good lines around a single NUL: still refused whole.
    let (s, v) = kami
        .import_raw(pid, b"fine-1\nfine-2\nfi\0ne-3\nfine-4\n".to_vec())
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        "{v}"
    );
    assert_eq!(
        kami.stock3(pid).await,
        base,
        "a file with a NUL imports nothing"
    );

    // A 10 MB line between good ones.
    let good = make_codes("LONGOK", 3);
    let mut body = Vec::with_capacity(10_100_000);
    body.extend_from_slice(format!("{}\n", good[0]).as_bytes());
    body.extend(std::iter::repeat_n(b'x', 10_000_000));
    body.extend_from_slice(format!("\n{}\n{}\n", good[1], good[2]).as_bytes());
    let v = kami.import(pid, body).await;
    assert_eq!(v["imported"], json!(3), "{v}");
    assert_eq!(rejected_lines(&v), vec![2], "{v}");
    assert_eq!(kami.stock3(pid).await, (5, 0, 0));

    // A line just at and just over 1024 characters.
    let at = "y".repeat(1024);
    let over = "z".repeat(1025);
    let v = kami.import(pid, format!("{at}\n{over}\n")).await;
    assert_eq!(
        v["imported"],
        json!(1),
        "a 1024-character line is fine: {v}"
    );
    assert_eq!(rejected_lines(&v), vec![2], "{v}");

    // Bytes that are neither UTF-8 nor GBK, and control characters: per line.
    let utf8_ok = make_codes("U8OK", 2);
    let mut body = Vec::new();
    body.extend_from_slice(format!("{}\n", utf8_ok[0]).as_bytes());
    body.extend_from_slice(b"\xff\xfe\xfd\n");
    body.extend_from_slice(format!("{}\n", utf8_ok[1]).as_bytes());
    body.extend_from_slice(b"abc\xff\xffdef\n");
    body.extend_from_slice(b"bell\x07code\n");
    body.extend_from_slice(b"esc\x1b[31mred\n");
    let v = kami.import(pid, body).await;
    assert_eq!(v["imported"], json!(2), "{v}");
    assert_eq!(rejected_lines(&v), vec![2, 4, 5, 6], "{v}");
    assert_eq!(kami.stock3(pid).await, (8, 0, 0));

    // Over 16 MiB: 413, nothing imported.
    let mut huge = Vec::with_capacity(17 * 1024 * 1024);
    let mut i = 0u64;
    while huge.len() < 17 * 1024 * 1024 {
        huge.extend_from_slice(format!("huge-code-{i:012}-{}\n", "p".repeat(40)).as_bytes());
        i += 1;
    }
    let res = kami
        .http
        .post(kami.url(&format!("/api/v1/admin/products/{pid}/cards")))
        .bearer_auth(&kami.api_key)
        .header("content-type", "text/plain")
        .body(huge)
        .send()
        .await;
    let res = res.expect("the 413 reaches the client");
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        kami.stock3(pid).await,
        (8, 0, 0),
        "an oversized upload imports nothing"
    );

    // Unknown product.
    let (s, v) = kami.import_raw(999_999, "x1\nx2\n").await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{v}"
    );
}

async fn gbk_bom_and_crlf_files_import_the_right_text(backend: Backend) {
    let kami = spawn_kami(backend).await;

    // GBK.
    let pid = kami.product("GBK", json!({})).await;
    let tag = random_token(6);
    let originals: Vec<String> = ["测试卡密", "点卡充值码", "会员兑换券"]
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{s}-{tag}-{i}"))
        .collect();
    let text = originals.join("\r\n") + "\r\n";
    let (gbk, _, unmappable) = encoding_rs::GBK.encode(&text);
    assert!(!unmappable);
    assert!(
        std::str::from_utf8(&gbk).is_err(),
        "the test file must not be valid UTF-8"
    );
    let v = kami.import(pid, gbk.into_owned()).await;
    assert_eq!(v["imported"], json!(3), "{v}");
    assert_eq!(rejected_lines(&v), Vec::<i64>::new());
    let o = kami.buy(pid, 3, "gbk@example.com").await;
    kami.pay_ok(&o).await;
    let got: HashSet<String> = kami.codes(&o).await.into_iter().collect();
    let want: HashSet<String> = originals.iter().cloned().collect();
    assert_eq!(
        got, want,
        "GBK lines must be delivered as the original text"
    );

    // UTF-8 with a BOM, CRLF, blank lines and surrounding whitespace.
    let pid = kami.product("BOM", json!({})).await;
    let codes = make_codes("BOM", 3);
    let body = format!(
        "\u{feff}{}\r\n\r\n   {}  \r\n\t{}\r\n\r\n",
        codes[0], codes[1], codes[2]
    );
    let v = kami.import(pid, body).await;
    assert_eq!(v["imported"], json!(3), "{v}");
    assert_eq!(v["duplicates"], json!(0), "{v}");
    assert_eq!(rejected_lines(&v), Vec::<i64>::new(), "{v}");
    let o = kami.buy(pid, 3, "bom@example.com").await;
    kami.pay_ok(&o).await;
    let got: HashSet<String> = kami.codes(&o).await.into_iter().collect();
    assert_eq!(
        got,
        codes.iter().cloned().collect::<HashSet<_>>(),
        "no BOM, CR or whitespace kept"
    );

    // Mixed: a UTF-8 line and a GBK line in one file.
    let pid = kami.product("Mixed", json!({})).await;
    let utf8_line = format!("卡密UTF8-{tag}");
    let gbk_text = format!("卡密GBK-{tag}");
    let mut body = format!("{utf8_line}\n").into_bytes();
    body.extend_from_slice(&encoding_rs::GBK.encode(&gbk_text).0);
    body.push(b'\n');
    let v = kami.import(pid, body).await;
    assert_eq!(v["imported"], json!(2), "{v}");
    let o = kami.buy(pid, 2, "mixed@example.com").await;
    kami.pay_ok(&o).await;
    let got: HashSet<String> = kami.codes(&o).await.into_iter().collect();
    assert_eq!(
        got,
        [utf8_line, gbk_text].into_iter().collect::<HashSet<_>>()
    );
}

async fn duplicates_within_an_upload_and_against_stock_and_sold_codes_are_counted(
    backend: Backend,
) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("Dedupe", json!({})).await;
    let c = make_codes("DD", 5);

    // Within one upload (after trimming).
    let v = kami
        .import(
            pid,
            format!("{}\n{}\n{}\n  {}  \n{}\n", c[0], c[1], c[0], c[1], c[2]),
        )
        .await;
    assert_eq!(
        (v["imported"].clone(), v["duplicates"].clone()),
        (json!(3), json!(2)),
        "{v}"
    );
    assert_eq!(kami.stock3(pid).await, (3, 0, 0));

    // Sell one.
    let o = kami.buy(pid, 1, "dd@example.com").await;
    kami.pay_ok(&o).await;
    let sold = kami.codes(&o).await;
    assert_eq!(kami.stock3(pid).await, (2, 0, 1));
    // Reserve one.
    kami.buy(pid, 1, "dd2@example.com").await;
    assert_eq!(kami.stock3(pid).await, (1, 1, 1));

    // Re-import all of them (sold, reserved, available) plus two new ones.
    let v = kami
        .import(
            pid,
            format!(
                "{}\n{}\n{}\n{}\n{}\n{}\n",
                c[0], c[1], c[2], c[3], sold[0], c[4]
            ),
        )
        .await;
    assert_eq!(
        (v["imported"].clone(), v["duplicates"].clone()),
        (json!(2), json!(4)),
        "{v}"
    );
    assert_eq!(kami.stock3(pid).await, (3, 1, 1));

    // The same code in another product is not a duplicate there.
    let other = kami.product("Dedupe 2", json!({})).await;
    let v = kami.import(other, format!("{}\n", sold[0])).await;
    assert_eq!(
        (v["imported"].clone(), v["duplicates"].clone()),
        (json!(1), json!(0)),
        "{v}"
    );

    // No code was sold twice: buy the rest and compare.
    let rest = kami.buy(pid, 3, "dd3@example.com").await;
    kami.pay_ok(&rest).await;
    let mut all = sold.clone();
    all.extend(kami.codes(&rest).await);
    assert_distinct_from(&all, &c);
}

async fn cli_import_prints_the_counts_and_the_codes_sell(backend: Backend) {
    let kami = spawn_kami(backend).await;
    let pid = kami.product("CLI import", json!({})).await;

    // Learnt as sold out first, so a stock gate has seen zero.
    let (s, v) = kami
        .order(json!({"product_id": pid, "quantity": 1, "email": "cli@example.com", "channel": "sandbox"}))
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::CONFLICT, "sold_out"),
        "{v}"
    );

    let codes = make_codes("CLI", 4);
    let file = kami.data_dir().join("cards.txt");
    let mut bytes = codes.join("\n").into_bytes();
    bytes.extend_from_slice(format!("\n{}\n", codes[0]).as_bytes());
    bytes.extend_from_slice(b"\xff\xfe\xfd\n");
    std::fs::write(&file, &bytes).unwrap();

    let out = kami.cli_import(pid, &file);
    // At once, the running server shows and sells what the CLI imported
    // (its stock gate had seen zero: before, it said so for up to a second).
    let page = kami
        .http
        .get(kami.url(&format!("/products/{pid}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<strong>4</strong>"),
        "the product page shows the imported stock: {page}"
    );
    let (s, shown) = kami
        .send(kami.http.get(kami.url(&format!("/api/v1/products/{pid}"))))
        .await;
    assert_eq!(s, StatusCode::OK, "{shown}");
    assert_eq!(shown["stock"], json!(4), "{shown}");
    let (s, o) = kami
        .order(json!({"product_id": pid, "quantity": 4, "email": "cli@example.com", "channel": "sandbox"}))
        .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "codes imported by the CLI sell at once: {o}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kami cards import failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let report: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last:?}"));
    assert_eq!(report["imported"], json!(4), "{report}");
    assert_eq!(report["duplicates"], json!(1), "{report}");
    assert_eq!(rejected_lines(&report), vec![6], "{report}");
    assert_eq!(kami.stock3(pid).await, (0, 4, 0));
    kami.pay_ok(&o).await;
    let got = kami.codes(&o).await;
    assert_eq!(got.len(), 4);
    assert_distinct_from(&got, &codes);
}
