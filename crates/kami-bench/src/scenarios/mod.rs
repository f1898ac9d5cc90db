//! One module per benchmark scenario.

pub mod core;
pub mod flash_sale;
