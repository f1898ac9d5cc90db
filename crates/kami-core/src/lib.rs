//! The Kami domain. No I/O lives here: no HTTP, no SQL, no files.
//!
//! Everything that crosses a boundary is parsed into a type from this crate
//! first (`Email`, `Currency`, `OrderStatus`, imported codes), so the layers
//! above never re-check a raw string.

pub mod email;
pub mod import;
pub mod limits;
pub mod money;
pub mod order;
pub mod password;
pub mod pricing;
pub mod recovery;
pub mod secrets;
pub mod stock_display;
pub mod totp;

pub use email::Email;
pub use money::Currency;
pub use order::{OrderNo, OrderStatus};
pub use stock_display::StockDisplay;

/// Milliseconds since the Unix epoch: the one clock unit stored everywhere.
pub type Millis = i64;

/// The current wall-clock time in milliseconds since the Unix epoch.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
