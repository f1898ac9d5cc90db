//! One module per benchmark scenario.

pub mod core;
