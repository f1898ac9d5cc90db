//! What an admin API key may do. A key holds one or more scopes, stored
//! space-separated in `api_keys.scopes`; `admin` (the default, and what every
//! key made before scopes existed holds) allows everything. Each admin API
//! handler names the scope it needs in its `AdminKey<…>` extractor, so the
//! policy is read off the handler's signature.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Everything, including scopes added later.
    Admin,
    /// List products.
    ProductsRead,
    /// Create and edit products (and read them back).
    ProductsWrite,
    /// Import codes. Never reads them: no API scope reveals a code.
    CardsWrite,
    /// Stock counts of a product.
    StockRead,
    /// Orders and their timelines (never their codes).
    OrdersRead,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Admin,
        Scope::ProductsRead,
        Scope::ProductsWrite,
        Scope::CardsWrite,
        Scope::StockRead,
        Scope::OrdersRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::ProductsRead => "products:read",
            Self::ProductsWrite => "products:write",
            Self::CardsWrite => "cards:write",
            Self::StockRead => "stock:read",
            Self::OrdersRead => "orders:read",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s.trim())
    }

    /// Whether holding `self` allows what `needed` allows.
    pub fn grants(self, needed: Scope) -> bool {
        self == needed
            || self == Self::Admin
            || (self == Self::ProductsWrite && needed == Self::ProductsRead)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn known() -> String {
    let names: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    names.join(", ")
}

/// A key's scopes: never empty, sorted, without repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error("unknown scope {0:?}; known: {known}", known = known())]
    Unknown(String),
    #[error("choose at least one scope")]
    Empty,
}

impl Scopes {
    /// Scopes an operator asked for (CLI flags, panel checkboxes): an unknown
    /// name is an error, not silently dropped.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, ScopeError> {
        let mut scopes = Vec::new();
        for name in names.into_iter().flat_map(str::split_whitespace) {
            scopes.push(Scope::parse(name).ok_or_else(|| ScopeError::Unknown(name.into()))?);
        }
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            return Err(ScopeError::Empty);
        }
        Ok(Self(scopes))
    }

    /// Scopes as stored. A name this build does not know grants nothing
    /// (fail closed), rather than failing the whole key.
    pub fn from_stored(s: &str) -> Self {
        let mut scopes: Vec<Scope> = s.split_whitespace().filter_map(Scope::parse).collect();
        scopes.sort();
        scopes.dedup();
        Self(scopes)
    }

    pub fn allows(&self, needed: Scope) -> bool {
        self.0.iter().any(|s| s.grants(needed))
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|s| s.as_str()).collect();
        f.write_str(&names.join(" "))
    }
}

/// The scope an admin API handler needs, as a type for `AdminKey<…>`.
pub trait Needs {
    const SCOPE: Scope;
}

/// Marker types naming each scope in a handler's signature.
pub mod need {
    use super::{Needs, Scope};

    macro_rules! markers {
        ($($name:ident => $scope:ident),* $(,)?) => {$(
            #[derive(Debug, Clone, Copy)]
            pub struct $name;
            impl Needs for $name {
                const SCOPE: Scope = Scope::$scope;
            }
        )*};
    }

    markers! {
        Admin => Admin,
        ProductsRead => ProductsRead,
        ProductsWrite => ProductsWrite,
        CardsWrite => CardsWrite,
        StockRead => StockRead,
        OrdersRead => OrdersRead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_grants_everything_and_write_grants_read() {
        for s in Scope::ALL {
            assert!(Scope::Admin.grants(s));
        }
        assert!(Scope::ProductsWrite.grants(Scope::ProductsRead));
        assert!(!Scope::ProductsRead.grants(Scope::ProductsWrite));
        assert!(!Scope::OrdersRead.grants(Scope::ProductsWrite));
        assert!(!Scope::CardsWrite.grants(Scope::Admin));
    }

    #[test]
    fn requested_scopes_are_checked_and_normalised() {
        let s = Scopes::parse(["orders:read", "stock:read orders:read"]).unwrap();
        assert_eq!(s.to_string(), "stock:read orders:read");
        assert_eq!(
            Scopes::parse(["orders:write"]),
            Err(ScopeError::Unknown("orders:write".into()))
        );
        assert_eq!(Scopes::parse([""]), Err(ScopeError::Empty));
    }

    #[test]
    fn stored_unknown_scopes_grant_nothing() {
        let s = Scopes::from_stored("future:thing");
        assert!(!Scope::ALL.into_iter().any(|n| s.allows(n)));
        assert!(Scopes::from_stored("admin").allows(Scope::CardsWrite));
    }
}
