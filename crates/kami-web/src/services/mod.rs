//! What the routes do, written once: the JSON API and the storefront forms
//! call the same functions, so both obey the same rules.

pub mod admins;
pub mod cards;
pub mod catalog;
pub mod channels;
pub mod gate;
mod gate_marks;
pub mod gate_redis;
pub mod import;
pub mod notify;
pub mod orders;
pub mod payments;
pub mod recent;
pub mod settings;
