//! Kami's HTTP layer (axum): the JSON API, the storefront, payment
//! callbacks, middleware, metrics and the background workers. Handlers never
//! write SQL; they call `services`, which call the `Store`.

pub mod admin;
pub mod api;
mod app;
pub mod body_budget;
pub mod breaker;
mod drain;
pub mod error;
pub mod extract;
mod html_errors;
pub mod listen;
pub mod metrics;
pub mod pay;
pub mod peer_cap;
pub mod present;
mod qr;
mod rarely;
pub mod rate_limit;
mod rate_limit_redis;
mod readiness;
pub mod redis_conn;
pub mod scopes;
pub mod services;
pub mod shop;
pub mod state;
pub mod workers;

pub use app::{build_state, router, serve, writer_transactions};
pub use state::{AppState, Settings, Shared};
