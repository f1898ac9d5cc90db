//! Request extractors that parse at the edge: the client's address, the
//! admin API key, and JSON bodies whose errors come out in API.md's shape.

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
use crate::state::Shared;

/// The TCP peer. Forwarded headers are not trusted here.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ci| ci.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(Self(ip))
    }
}

/// An authenticated admin API key. Checked before the body is read, so an
/// unauthenticated request is 401 whatever it carries.
#[derive(Debug, Clone)]
pub struct AdminKey {
    pub id: i64,
    pub name: String,
}

impl FromRequestParts<Shared> for AdminKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared,
    ) -> Result<Self, Self::Rejection> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        state.limits.check_ip(Class::Admin, ip)?;
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        let key = state
            .store
            .api_key_by_hash(&token_hash(token), now_millis())
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Self {
            id: key.id,
            name: key.name,
        })
    }
}

pub fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
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
        let raw = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large("1 MiB")
            } else {
                ApiError::bad_request(e.body_text())
            }
        })?;
        let value = serde_json::from_slice(&raw)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
        Ok(Self { value, raw })
    }
}
