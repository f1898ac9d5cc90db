//! The JSON API of API.md: public (buyer) routes and the admin API.

pub mod admin;
pub mod coupons;
pub mod idempotent;
pub mod openapi;
pub mod public;
