//! Clients that send slowly (slowloris): a request head that never ends and
//! a body trickled in are cut off, and the shop keeps serving everyone else.
//! The limits are kami-web `listen.rs`'s: 20 s for a head, and for a body
//! 20 s and then 500 bytes a second on average.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEAD_TIME: Duration = Duration::from_secs(20);

async fn connect(kami: &Kami) -> TcpStream {
    TcpStream::connect(("127.0.0.1", kami.port)).await.unwrap()
}

/// Writes `first`, then one of `drip` a second until the server answers or
/// closes; returns what it answered and after how long.
async fn trickle(mut conn: TcpStream, first: Vec<u8>, drip: &'static [u8]) -> (String, Duration) {
    let started = Instant::now();
    conn.write_all(&first).await.unwrap();
    let (mut read, mut write) = conn.into_split();
    let dripper = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if write.write_all(drip).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let until = started + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(until.into(), read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                    break;
                }
            }
            Err(_) => panic!("the server still held a trickling client after 60 s"),
        }
    }
    dripper.abort();
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trickling_clients_are_cut_off_and_buyers_are_served_meanwhile() {
    let kami = spawn_kami(Backend::Sqlite).await;
    let pid = kami.product("Steady", json!({})).await;
    kami.import(pid, "S-1\nS-2\nS-3\n").await;

    // Forty heads that never end, each growing by a header line a second:
    // a timeout that restarts with every byte would never fire.
    let mut heads = Vec::new();
    for _ in 0..40 {
        let conn = connect(&kami).await;
        heads.push(tokio::spawn(trickle(
            conn,
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec(),
            b"X-Slow: 1\r\n",
        )));
    }
    // Connections that send nothing at all, or the start of HTTP/2's
    // preface and no more, before the server can even tell the protocol.
    let mut silent = Vec::new();
    for first in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut conn = connect(&kami).await;
        conn.write_all(first).await.unwrap();
        silent.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut rest = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(60), conn.read_to_end(&mut rest)).await;
            assert!(read.is_ok(), "a silent connection was held for 60 s");
            (rest, started.elapsed())
        }));
    }
    // An order whose body comes a byte a second: it must not hold a code.
    let body = json!({"product_id": pid, "quantity": 1, "email": "slow@example.com",
                      "channel": "sandbox"})
    .to_string();
    let head = format!(
        "POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{}",
        body.len() + 4000,
        body
    );
    let slow_body = tokio::spawn(trickle(connect(&kami).await, head.into_bytes(), b" "));

    // Meanwhile buyers are served at once, and a body that comes in two
    // parts a second apart (an honest slow link) is taken.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let created = kami.buy(pid, 1, "quick@example.com").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a buyer waited {:?} beside slow clients",
        started.elapsed()
    );
    let body = json!({"product_id": pid, "quantity": 1, "email": "halves@example.com",
                      "channel": "sandbox"})
    .to_string();
    let mut conn = connect(&kami).await;
    conn.write_all(
        format!(
            "POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            &body[..10]
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    conn.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    for h in heads {
        let (answer, after) = h.await.unwrap();
        assert!(
            answer.is_empty(),
            "a head that never ended was answered: {answer}"
        );
        assert!(
            after >= HEAD_TIME - Duration::from_secs(1)
                && after < HEAD_TIME + Duration::from_secs(10),
            "a trickled head was closed after {after:?}"
        );
    }
    // Nothing sent: closed at the head's time, at most with a 400. HTTP/2's
    // preface (Kami speaks HTTP/1.1 only): the same, or refused at once.
    for (h, sends_nothing) in silent.into_iter().zip([true, false]) {
        let (answer, after) = h.await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "a silent connection was answered {answer}"
        );
        assert!(
            after < HEAD_TIME + Duration::from_secs(10)
                && (!sends_nothing || after >= HEAD_TIME - Duration::from_secs(1)),
            "a silent connection was closed after {after:?}: {answer}"
        );
    }
    let (answer, after) = slow_body.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(
        after >= Duration::from_secs(19) && after < Duration::from_secs(35),
        "a trickled body was cut off after {after:?}"
    );

    // Two orders were made, and the trickled one held nothing.
    let (status, view) = kami
        .get_order(
            created["order_no"].as_str().unwrap(),
            created["access_token"].as_str(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let (available, reserved, _) = kami.stock3(pid).await;
    assert_eq!(
        (available, reserved),
        (1, 2),
        "stock after the slow clients"
    );

    // And the server is still there for a new connection.
    let res = kami.http.get(kami.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// A body that comes mostly at once and then stops: under the average rate
/// alone its first 900 KB bought half an hour of silence, with the memory
/// held all along. Cut after `BODY_IDLE` (20 s) of nothing, with the 408 a
/// trickled body gets, and the order it carried holds no code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_after_a_burst_is_cut_off() {
    let kami = spawn_kami(Backend::Sqlite).await;
    let pid = kami.product("Burst", json!({})).await;
    kami.import(pid, "B-1\n").await;

    let body = json!({"product_id": pid, "quantity": 1, "email": "burst@example.com",
                      "channel": "sandbox"})
    .to_string();
    let declared = 1_000_000;
    let burst = 900_000;
    let mut first = format!(
        "POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {declared}\r\n\r\n{body}"
    )
    .into_bytes();
    first.resize(first.len() + burst - body.len(), b' ');
    let mut conn = connect(&kami).await;
    let started = Instant::now();
    conn.write_all(&first).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(90), conn.read_to_end(&mut answer)).await;
    let after = started.elapsed();
    assert!(
        read.is_ok(),
        "a body silent after its burst was still held after 90 s"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(
        after >= Duration::from_secs(15),
        "cut off after {after:?}, before its silence was long"
    );
    let (available, reserved, _) = kami.stock3(pid).await;
    assert_eq!(
        (available, reserved),
        (1, 0),
        "the stalled order held a code"
    );
}
