//! Records of the admin panel: operators, sessions, audit entries, and the
//! operator's views of codes and sales.

use kami_core::Millis;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including staff, audit log, API keys and code reveal/export.
    Owner,
    /// Day-to-day work: products, imports, orders.
    Staff,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Staff => "staff",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(Self::Owner),
            "staff" => Some(Self::Staff),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewAdmin {
    pub email: String,
    pub password_hash: String,
    pub role: Role,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub id: i64,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    /// Sealed TOTP secret (ciphertext, nonce) when TOTP is on.
    pub totp: Option<(Vec<u8>, Vec<u8>)>,
    pub failed_attempts: i64,
    pub locked_until: Option<Millis>,
    pub disabled: bool,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    /// SHA-256 of the cookie token.
    pub id: Vec<u8>,
    pub admin_id: i64,
    pub csrf: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// A live session with the operator it belongs to.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: Vec<u8>,
    pub admin_id: i64,
    pub email: String,
    pub role: Role,
    pub csrf: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: Millis,
    pub last_seen_at: Millis,
    pub expires_at: Millis,
}

#[derive(Debug, Clone)]
pub struct NewAudit {
    pub admin_id: Option<i64>,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub ip: Option<String>,
    pub at: Millis,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub admin_id: Option<i64>,
    pub admin_email: Option<String>,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub ip: Option<String>,
    pub at: Millis,
}

/// A code as the operator lists it: never its plaintext.
#[derive(Debug, Clone, Serialize)]
pub struct CardRow {
    pub id: i64,
    pub status: String,
    pub batch_id: i64,
    pub order_id: Option<i64>,
    pub created_at: Millis,
    pub sold_at: Option<Millis>,
}

/// Orders created and paid on one day (`day` counts from the window's start).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DaySales {
    pub day: i64,
    pub created: i64,
    pub paid: i64,
    /// Paid amounts per currency, in minor units.
    pub amounts: Vec<(String, i64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyRow {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    /// Space-separated scope names (`admin`, `orders:read` …).
    pub scopes: String,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

/// An unused TOTP recovery code of an operator: only its SHA-256.
#[derive(Debug, Clone)]
pub struct RecoveryCode {
    pub id: i64,
    pub code_hash: Vec<u8>,
}
