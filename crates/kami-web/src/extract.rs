//! Request extractors that parse at the edge: the client's address, the
//! admin API key, and JSON bodies whose errors come out in API.md's shape.

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use kami_core::now_millis;
use kami_core::secrets::token_hash;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::rate_limit::Class;
use crate::scopes::{need, Needs, Scopes};
use crate::state::Shared;

/// The client's address: the TCP peer, or — only when the peer is one of
/// the configured trusted proxies (`KAMI_TRUSTED_PROXIES`) — the nearest
/// untrusted address in `X-Forwarded-For`. Anyone else's forwarded header
/// is ignored, so a scalper cannot pick a fresh IP per request to dodge
/// the per-IP limits.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<Shared> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ci| ci.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(Self(client_ip(
            peer,
            &state.settings.trusted_proxies,
            parts.headers.get_all("x-forwarded-for"),
        )))
    }
}

/// A request that draws on the client's general per-IP limit (`Class::Reads`,
/// API.md: limits apply to loopback clients too) before its handler runs:
/// for routes that need nothing else of the client's address (the channel
/// list, the OpenAPI document, the pay return page, the sign-in page).
/// Refused with `429 rate_limited` and `Retry-After`; a page route's answer
/// becomes the error page, `Retry-After` kept (`html_errors`).
#[derive(Debug, Clone, Copy)]
pub struct ReadLimited;

impl FromRequestParts<Shared> for ReadLimited {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared,
    ) -> Result<Self, Self::Rejection> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        state.limits.check_ip(Class::Reads, ip).await?;
        Ok(Self)
    }
}

/// Walks `X-Forwarded-For` from the nearest hop back while the hop is a
/// trusted proxy; the first address that is not is the client. Addresses
/// are compared in their canonical form: on a dual-stack listener (`[::]`)
/// a proxy at 127.0.0.1 connects as `::ffff:127.0.0.1`, which compared as
/// written matched no trusted proxy, so every buyer behind it shared the
/// proxy's rate limits (a security review).
pub fn client_ip<'a>(
    peer: IpAddr,
    trusted: &[IpAddr],
    forwarded: impl IntoIterator<Item = &'a header::HeaderValue>,
) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.to_canonical() == ip);
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // From the nearest hop back, past our own proxies. The first other hop
    // is the client; if it cannot be read as an address (with or without
    // a port), the last trusted hop is the best we know.
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        match parse_hop(hop).map(|ip| ip.to_canonical()) {
            Some(ip) if is_trusted(ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, `1.2.3.4:port` or `[::1]:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

/// An authenticated admin API key holding the scope `S` names (`admin` when
/// the handler names none). Checked before the body is read, so an
/// unauthenticated request is 401 and one without the scope 403, whatever
/// it carries.
#[derive(Debug, Clone)]
pub struct AdminKey<S: Needs = need::Admin> {
    pub id: i64,
    pub name: String,
    scope: PhantomData<S>,
}

impl<S: Needs> FromRequestParts<Shared> for AdminKey<S> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared,
    ) -> Result<Self, Self::Rejection> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        state.limits.check_ip(Class::Admin, ip).await?;
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        let key = state
            .store
            .api_key_by_hash(&token_hash(token), now_millis())
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        if !Scopes::from_stored(&key.scopes).allows(S::SCOPE) {
            return Err(ApiError::forbidden(S::SCOPE.as_str()));
        }
        Ok(Self {
            id: key.id,
            name: key.name,
            scope: PhantomData,
        })
    }
}

/// The token of `Authorization: Bearer <token>`; the scheme's name is
/// case-insensitive (RFC 9110, 11.1).
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 256)
        .then_some(token)
}

/// Every field of the API's JSON bodies (orders, the lookup, products,
/// coupons), so that a value of the wrong type is refused naming its field
/// in `param`, as a value out of range is. `param` is a fixed word, never
/// text from the request.
const BODY_FIELDS: [&str; 29] = [
    "product_id",
    "quantity",
    "email",
    "query_password",
    "coupon",
    "channel",
    "limit",
    "starting_after",
    "name",
    "price",
    "currency",
    "description",
    "category",
    "min_quantity",
    "max_quantity",
    "per_buyer_limit",
    "visible",
    "sale_starts_at",
    "sale_ends_at",
    "low_stock_threshold",
    "wholesale_tiers",
    "per_ip_limit",
    "stock_display",
    "code",
    "kind",
    "value",
    "max_uses",
    "expires_at",
    "disabled",
];

/// The top-level field a deserialization error happened in, if it is one
/// of `BODY_FIELDS`.
/// A body that did not read as `T`: 422, naming the field where it can.
fn body_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> ApiError {
    let inner = e.inner().to_string();
    let message = format!("invalid JSON body: {inner}");
    match named_field(e.path()).or_else(|| field_in_message(&inner)) {
        Some(field) => ApiError::invalid_param(field, message),
        None => ApiError::invalid(message),
    }
}

/// serde's "missing field `x`" and "duplicate field `x`" come with an
/// empty path (the error is the object's, not the field's): the field is
/// in the message. Query strings' parameters are among `BODY_FIELDS` too.
pub(crate) fn field_in_message(message: &str) -> Option<&'static str> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("duplicate field `"))?;
    let name = &rest[..rest.find('`')?];
    BODY_FIELDS.iter().copied().find(|f| *f == name)
}

/// Reads a body already parsed as JSON (and perhaps amended) as `T`, with
/// the errors `JsonBody` gives.
pub fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(body_error)
}

fn named_field(path: &serde_path_to_error::Path) -> Option<&'static str> {
    match path.iter().next()? {
        serde_path_to_error::Segment::Map { key } => {
            BODY_FIELDS.iter().copied().find(|f| *f == key.as_str())
        }
        _ => None,
    }
}

/// A JSON string may spell a NUL character (`\u0000`), which no field of
/// Kami's means and PostgreSQL's text cannot hold: stored or looked up, it
/// failed as a database error (500). Refused as 422 naming the top-level
/// field it is in. Only a body that spells it is parsed again.
fn refuse_nul(raw: &[u8]) -> Result<(), ApiError> {
    if !raw.windows(6).any(|w| w == b"\\u0000") {
        return Ok(());
    }
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(raw) else {
        return Ok(());
    };
    fn holds_nul(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(a) => a.iter().any(holds_nul),
            serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
            _ => false,
        }
    }
    let message = "text in the body may not contain the NUL character (\\u0000)";
    for (key, v) in &fields {
        if key.contains('\0') || holds_nul(v) {
            return Err(match BODY_FIELDS.iter().copied().find(|f| f == key) {
                Some(field) => ApiError::invalid_param(field, message),
                None => ApiError::invalid(message),
            });
        }
    }
    Ok(())
}

/// `application/json` or `application/…+json`, parameters aside.
fn is_json_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A JSON body parsed into `T`; malformed JSON or wrong types are 422
/// `invalid_request`, an oversized body 413. The raw bytes are kept for
/// idempotency hashing.
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A browser sends a body to any site without asking it first (CORS's
        // simple requests) when its type is a form's or text/plain, or when
        // it has no type at all (`fetch` of a Blob in `no-cors` mode,
        // `navigator.sendBeacon`): JSON so sent from a browser is a web page
        // making its visitors call the API (placing orders that hold stock).
        // A browser must say `application/json`, which it sends cross-site
        // only after a preflight Kami never answers. Programs are told apart
        // by what only browsers send, `Origin` and `Sec-Fetch-Site`; curl's
        // `-d` (form type) and a body without a type stay JSON, as the
        // README uses.
        let h = req.headers();
        let from_browser = h.contains_key(header::ORIGIN) || h.contains_key("sec-fetch-site");
        let simple = from_browser
            && !h
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(is_json_type);
        if simple {
            return Err(ApiError {
                status: axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "invalid_request",
                message: "the body must be JSON, sent as Content-Type: application/json".into(),
                param: Some("Content-Type"),
                retry_after: None,
            });
        }
        let raw = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large("1 MiB")
            } else if crate::listen::too_slow(&e) {
                ApiError::body_too_slow()
            } else if crate::listen::over_budget(&e) {
                crate::body_budget::BodyOverBudget::answer()
            } else {
                ApiError::bad_request(e.body_text())
            }
        })?;
        // Every body of the API is an object; serde would also read a struct
        // from an array, so `[]` would be a PATCH that changes nothing.
        if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::invalid("the JSON body must be an object"));
        }
        // Read plainly first; only a body that fails is read again with
        // its path tracked, for the error's field (the tracking was a
        // sixteenth of a sold-out answer's instructions, callgrind).
        let value = match serde_json::from_slice(&raw) {
            Ok(value) => value,
            Err(_) => {
                let mut de = serde_json::Deserializer::from_slice(&raw);
                let value: T = serde_path_to_error::deserialize(&mut de).map_err(body_error)?;
                de.end()
                    .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
                value
            }
        };
        refuse_nul(&raw)?;
        Ok(Self { value, raw })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> header::HeaderValue {
        header::HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = [proxy];
        let xff = [hv("1.2.3.4, 5.6.7.8")];
        // A stranger's header is ignored.
        let stranger: IpAddr = "9.9.9.9".parse().unwrap();
        assert_eq!(client_ip(stranger, &trusted, &xff), stranger);
        // Behind the proxy, the nearest untrusted hop is the client; what it
        // claims further back is its own business.
        assert_eq!(
            client_ip(proxy, &trusted, &xff),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        // A malformed header falls back to the peer.
        assert_eq!(client_ip(proxy, &trusted, &[hv("nonsense")]), proxy);
        // An unreadable hop further back does not hide the nearest client,
        // and a hop with a port is its address.
        let client: IpAddr = "8.8.8.8".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &trusted, &[hv("garbage, 8.8.8.8")]),
            client
        );
        assert_eq!(client_ip(proxy, &trusted, &[hv("8.8.8.8:1234")]), client);
        assert_eq!(
            client_ip(proxy, &trusted, &[hv("[2001:db8::1]:443")]),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_ipv4_address() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let xff = [hv("203.0.113.9")];
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        // A proxy reaching a dual-stack listener is still the trusted one.
        assert_eq!(client_ip(mapped, &[proxy], &xff), client);
        // A trusted proxy written mapped matches the plain address too.
        assert_eq!(client_ip(proxy, &[mapped], &xff), client);
        // A stranger is counted by its plain address, and so is a mapped
        // hop behind the proxy.
        let stranger: IpAddr = "::ffff:198.51.100.4".parse().unwrap();
        assert_eq!(
            client_ip(stranger, &[proxy], &xff),
            "198.51.100.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(proxy, &[proxy], &[hv("::ffff:203.0.113.9")]),
            client
        );
    }
}
