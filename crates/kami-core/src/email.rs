use std::fmt;

/// A buyer's email address, trimmed and lower-cased, so that per-buyer limits
/// and order lookup treat `A@x.com` and `a@x.com ` as one buyer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct EmailError(&'static str);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let s = raw.trim().to_lowercase();
        if s.is_empty() {
            return Err(EmailError("email is required"));
        }
        // What a form decoder put in place of bytes that were not UTF-8: the
        // address typed was something else, and no lookup would find it.
        if s.contains('\u{FFFD}') {
            return Err(EmailError("email is not valid text"));
        }
        if s.len() > 254 {
            return Err(EmailError("email is too long"));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(EmailError("email must contain @"));
        };
        if local.is_empty() || local.len() > 64 {
            return Err(EmailError("email has an invalid local part"));
        }
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        if !domain_ok {
            return Err(EmailError("email has an invalid domain"));
        }
        let local_ok = local
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !"<>()[]\\,;:\"@".contains(c));
        if !local_ok {
            return Err(EmailError("email has an invalid local part"));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_whitespace() {
        assert_eq!(
            Email::parse(" Buyer@Example.COM ").unwrap().as_str(),
            "buyer@example.com"
        );
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            "no-at",
            "@x.com",
            "a@",
            "a@nodot",
            "a b@x.com",
            "a@x..com",
            "<a>@x.com",
            "a@.x.com",
            "a\u{FFFD}\u{FFFD}@b.co",
            "a@b\u{FFFD}.co",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
