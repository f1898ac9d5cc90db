//! A cap on the connections one client address holds open at once.
//!
//! Every open connection costs a task, buffers and a file descriptor, and
//! the rate limits count requests, not connections: without a cap one
//! address could open connections until the process has no descriptor or
//! memory left for anybody else. Addresses are counted as the rate limits
//! count them (IPv6 by its /64). The default (256) is far above what a
//! browser opens (six per site) so that a carrier-grade NAT, with a city
//! block of buyers behind one address, does not meet it during a drop.
//! A trusted proxy (`trusted_proxies`) carries many clients and is not
//! capped; with `KAMI_RATE_LIMITS=off` nothing is.
//!
//! A connection over the cap is answered at once, without reading its
//! request, with `429 rate_limited`, `Retry-After` and API.md's error body,
//! then closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::ApiError;
use crate::rarely::Rarely;

/// The default cap per address.
pub const DEFAULT_CONNECTIONS_PER_ADDRESS: u32 = 256;

/// How long a refused connection is read from (and what it sends thrown
/// away) after the answer, so that closing it with its request unread does
/// not reset the connection before the client has read the answer.
const LINGER: Duration = Duration::from_secs(1);

pub struct ConnectionCap {
    max: u32,
    trusted: Vec<IpAddr>,
    open: Mutex<HashMap<IpAddr, u32>>,
    warning: Rarely,
}

pub enum Admission {
    /// Counted against its address until the slot is dropped.
    Counted(Slot),
    /// From a trusted proxy: not counted.
    Uncounted,
    /// Over the cap: to be refused.
    Refused,
}

impl ConnectionCap {
    /// `max` connections per address, trusted proxies aside.
    pub fn new(max: u32, trusted: Vec<IpAddr>) -> Arc<Self> {
        Arc::new(Self {
            max,
            trusted,
            open: Mutex::new(HashMap::new()),
            warning: Rarely::new(),
        })
    }

    /// Takes a slot for a new connection from `peer`, if its address has
    /// one left.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Admission {
        if self.trusted.contains(&peer) {
            return Admission::Uncounted;
        }
        let key = crate::rate_limit::client_key(peer);
        let mut open = self.open.lock().expect("never poisoned: no panics inside");
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            drop(open);
            metrics::counter!("kami_connections_refused_total", "reason" => "per_address")
                .increment(1);
            if self.warning.due() {
                tracing::warn!(
                    client = %key,
                    cap = self.max,
                    "connections refused with 429: an address holds as many open connections \
                     as it may (connections_per_address); counted in \
                     kami_connections_refused_total"
                );
            }
            return Admission::Refused;
        }
        *n += 1;
        Admission::Counted(Slot {
            cap: self.clone(),
            key,
        })
    }
}

/// One open connection of an address; its place is given back when dropped.
pub struct Slot {
    cap: Arc<ConnectionCap>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .cap
            .open
            .lock()
            .expect("never poisoned: no panics inside");
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The whole answer to a connection over the cap: written before its
/// request is read, so it cannot depend on it.
fn refusal(request_id: &str) -> Vec<u8> {
    let error = ApiError {
        message: "too many open connections from your address; close some, or retry in a second"
            .into(),
        ..ApiError::rate_limited(1)
    };
    let body = serde_json::to_vec(&error.body()).expect("the error body serializes");
    let mut answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nx-request-id: {request_id}\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

/// Answers a connection over the cap and closes it.
pub async fn refuse(mut stream: TcpStream, request_id: String) {
    let _ = tokio::time::timeout(LINGER, async {
        stream.write_all(&refusal(&request_id)).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_cap_and_a_slot_back_when_one_closes() {
        let cap = ConnectionCap::new(2, vec!["10.0.0.1".parse().unwrap()]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = cap.admit(ip);
        let _b = cap.admit(ip);
        assert!(matches!(cap.admit(ip), Admission::Refused));
        assert!(matches!(
            cap.admit("192.0.2.2".parse().unwrap()),
            Admission::Counted(_)
        ));
        drop(a);
        assert!(matches!(cap.admit(ip), Admission::Counted(_)));
        for _ in 0..10 {
            assert!(matches!(
                cap.admit("10.0.0.1".parse().unwrap()),
                Admission::Uncounted
            ));
        }
    }

    #[test]
    fn an_ipv6_client_is_capped_by_its_64() {
        let cap = ConnectionCap::new(1, Vec::new());
        let _held = cap.admit("2001:db8:1:2::1".parse().unwrap());
        assert!(matches!(
            cap.admit("2001:db8:1:2:ffff::9".parse().unwrap()),
            Admission::Refused
        ));
        assert!(matches!(
            cap.admit("2001:db8:1:3::1".parse().unwrap()),
            Admission::Counted(_)
        ));
    }

    #[test]
    fn the_refusal_is_a_whole_http_answer_in_the_api_shape() {
        let text = String::from_utf8(refusal("abc-1")).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 "), "{head}");
        assert!(head.contains("retry-after: 1") && head.contains("x-request-id: abc-1"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "rate_limited");
        assert_eq!(v["error"]["param"], serde_json::Value::Null);
    }
}
