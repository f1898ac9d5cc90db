//! What a crowd of connections may hold, each within its own time limits
//! (slow_clients.rs): a request head fills at most `HEAD_MAX` of buffer, the
//! bodies still arriving share one budget of bytes, and one address holds a
//! capped number of connections (unless rate limits are off, or it is a
//! trusted proxy). Real sockets against the real binary.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(kami: &Kami) -> TcpStream {
    TcpStream::connect(("127.0.0.1", kami.port)).await.unwrap()
}

/// One answer read off `conn`: its head (lower-cased names) and its body,
/// by its `Content-Length`. Panics if none comes within 30 s.
async fn read_answer(conn: &mut TcpStream) -> (String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |n| n.trim().parse::<usize>().unwrap());
            if got.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]).into_owned();
                return (head, body);
            }
        }
        match tokio::time::timeout_at(until.into(), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                panic!(
                    "closed without a whole answer: {}",
                    String::from_utf8_lossy(&got)
                )
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no answer in 30 s: {}", String::from_utf8_lossy(&got)),
        }
    }
}

/// `GET /healthz` on a connection kept open; the answer's head.
async fn healthz(conn: &mut TcpStream) -> String {
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    read_answer(conn).await.0
}

/// Whether the server closes `conn` (EOF or reset) within 30 s.
async fn closed(conn: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut rest))
        .await
        .is_ok()
}

/// A metric without labels, from `/metrics` (0 before its first sample).
async fn unlabelled(kami: &Kami, name: &str) -> f64 {
    kami.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
        .unwrap_or(0.0)
}

fn order_head(length: usize) -> String {
    format!(
        "POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

/// An order's JSON padded with spaces to `length` bytes.
fn padded_order(pid: i64, email: &str, length: usize) -> Vec<u8> {
    let mut body = json!({"product_id": pid, "quantity": 1, "email": email, "channel": "sandbox"})
        .to_string()
        .into_bytes();
    body.resize(length, b' ');
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_the_buffer_is_refused_with_431_and_a_big_honest_one_is_served() {
    let kami = spawn_kami(Backend::Sqlite).await;

    // 90 headers of 600 bytes: 54 KB, more than any browser sends.
    let mut conn = connect(&kami).await;
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 0..90 {
        head.push_str(&format!("X-Big-{i}: {}\r\n", "a".repeat(600)));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let (answer, _) = read_answer(&mut conn).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");

    // More than 100 headers, however short: 431, as before.
    let mut conn = connect(&kami).await;
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 0..120 {
        head.push_str(&format!("X-{i}: 1\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let (answer, _) = read_answer(&mut conn).await;
    assert!(answer.starts_with("http/1.1 431"), "{answer}");

    // A head that fills the whole buffer without ending: refused at once
    // with 431 and closed, not held for the head's 20 s. Exactly the
    // buffer's size, so the server has read all of it when it closes.
    let mut conn = connect(&kami).await;
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: ".to_vec();
    head.resize(kami_web::listen::HEAD_MAX, b'a');
    let started = Instant::now();
    conn.write_all(&head).await.unwrap();
    let (answer, _) = read_answer(&mut conn).await;
    assert!(answer.starts_with("http/1.1 431"), "{answer}");
    assert!(closed(&mut conn).await, "the connection stayed open");
    assert!(
        started.elapsed() < kami_web::listen::HEAD_TIME,
        "refused only after {:?}",
        started.elapsed()
    );

    // A complete head a little past the limit, sent at once: 431 too. The
    // buffer's own limit let one through up to about twice its size (hyper
    // checks it only before reading more, and one read may fill it past).
    let mut conn = connect(&kami).await;
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    head.push_str(&format!(
        "X-Long: {}\r\n\r\n",
        "a".repeat(kami_web::listen::HEAD_MAX + 4096)
    ));
    conn.write_all(head.as_bytes()).await.unwrap();
    let (answer, _) = read_answer(&mut conn).await;
    assert!(answer.starts_with("http/1.1 431"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_the_budget_is_refused_while_orders_go_on() {
    let kami = spawn_kami_with(
        Backend::Sqlite,
        Options {
            env: vec![("KAMI_BODY_BUDGET".into(), "100000".into())],
            ..Options::default()
        },
    )
    .await;
    let pid = kami.product("Budget", json!({})).await;
    kami.import(pid, "G-1\nG-2\nG-3\nG-4\n").await;

    // A body of 80 KB that has begun and waits: it holds 80 KB of the 100.
    let held_body = padded_order(pid, "held@example.com", 80_000);
    let mut held = connect(&kami).await;
    held.write_all(order_head(held_body.len()).as_bytes())
        .await
        .unwrap();
    held.write_all(&held_body[..1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Another 40 KB would take it over: 503 at once, in the API's shape,
    // before its body is sent.
    let refused_before = unlabelled(&kami, "kami_body_budget_refusals_total").await;
    let mut next = connect(&kami).await;
    next.write_all(order_head(40_000).as_bytes()).await.unwrap();
    let (head, body) = read_answer(&mut next).await;
    assert!(head.starts_with("http/1.1 503"), "{head}\n{body}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(head.contains("x-request-id: "), "{head}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error_code(&v), "overloaded", "{v}");
    assert_eq!(v["error"]["param"], Value::Null, "{v}");
    assert!(
        unlabelled(&kami, "kami_body_budget_refusals_total").await > refused_before,
        "the refusal was not counted"
    );

    // An ordinary order fits beside the held body.
    kami.buy(pid, 1, "ordinary@example.com").await;

    // The held body, once whole, is an order like any other: nothing
    // accepted was lost.
    held.write_all(&held_body[1000..]).await.unwrap();
    let (head, body) = read_answer(&mut held).await;
    assert!(head.starts_with("http/1.1 201"), "{head}\n{body}");

    // And its room is back: the 40 KB body is taken now.
    let mut again = connect(&kami).await;
    again
        .write_all(order_head(40_000).as_bytes())
        .await
        .unwrap();
    again
        .write_all(&padded_order(pid, "again@example.com", 40_000))
        .await
        .unwrap();
    let (head, body) = read_answer(&mut again).await;
    assert!(head.starts_with("http/1.1 201"), "{head}\n{body}");
    let (_, reserved, _) = kami.stock3(pid).await;
    assert_eq!(reserved, 3, "the three orders taken");
    assert!(
        kami.logs().contains("body budget"),
        "the refusal was not logged"
    );
}

/// A server whose rate limits are on, with a cap of `cap` connections per
/// address (and `extra` settings).
async fn capped(cap: u32, extra: &[(&str, &str)]) -> Kami {
    let mut env = vec![
        ("KAMI_RATE_LIMITS".to_string(), "on".to_string()),
        ("KAMI_CONNECTIONS_PER_ADDRESS".into(), cap.to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    spawn_kami_with(
        Backend::Sqlite,
        Options {
            env,
            ..Options::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_over_its_connection_cap_is_refused_until_one_closes() {
    let kami = capped(4, &[]).await;

    let mut open = Vec::new();
    for _ in 0..4 {
        let mut conn = connect(&kami).await;
        let answer = healthz(&mut conn).await;
        assert!(answer.starts_with("http/1.1 200"), "{answer}");
        open.push(conn);
    }
    // The fifth is answered at once, before it sends anything, and closed.
    let mut fifth = connect(&kami).await;
    let (head, body) = read_answer(&mut fifth).await;
    assert!(head.starts_with("http/1.1 429"), "{head}\n{body}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(head.contains("x-request-id: "), "{head}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error_code(&v), "rate_limited", "{v}");
    assert_eq!(v["error"]["param"], Value::Null, "{v}");
    assert!(
        closed(&mut fifth).await,
        "the refused connection stayed open"
    );

    // The four still work, and once one closes a new one is taken.
    for conn in &mut open {
        assert!(healthz(conn).await.starts_with("http/1.1 200"));
    }
    drop(open.pop());
    let until = Instant::now() + Duration::from_secs(20);
    let mut replacement = loop {
        let mut conn = connect(&kami).await;
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let (head, _) = read_answer(&mut conn).await;
        if head.starts_with("http/1.1 200") {
            break conn;
        }
        assert!(
            Instant::now() < until,
            "no connection was taken after one closed: {head}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(healthz(&mut replacement).await.starts_with("http/1.1 200"));

    // Counted, once the address has room for the scrape.
    drop(open);
    drop(replacement);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        kami.counter("kami_connections_refused_total", "per_address")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_connection_cap_without_rate_limits_nor_for_a_trusted_proxy() {
    // Rate limits off (what benchmarks run with): a cap of 2 is not applied.
    let off = spawn_kami_with(
        Backend::Sqlite,
        Options {
            env: vec![("KAMI_CONNECTIONS_PER_ADDRESS".into(), "2".into())],
            ..Options::default()
        },
    )
    .await;
    // Limits on, but 127.0.0.1 is the shop's trusted proxy: it carries
    // many clients, and is not capped either.
    let proxied = capped(2, &[("KAMI_TRUSTED_PROXIES", "127.0.0.1")]).await;
    for kami in [&off, &proxied] {
        let mut open = Vec::new();
        for _ in 0..10 {
            let mut conn = connect(kami).await;
            let answer = healthz(&mut conn).await;
            assert!(answer.starts_with("http/1.1 200"), "{answer}");
            open.push(conn);
        }
    }
}
