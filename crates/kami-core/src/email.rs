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
        // Labels of letters, digits and inner hyphens, at least two of
        // them, and a top level that is not a number (`x@1.2.3.4` names an
        // address, not a mail domain).
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
            && !labels[labels.len() - 1].chars().all(|c| c.is_ascii_digit());
        if !domain_ok {
            return Err(EmailError("email has an invalid domain"));
        }
        let local_ok = !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
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
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a@-ex.com",
            "x@example-.com",
            "x@1.2.3.4",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
        for good in [
            "a.b+tag@mail.example.com",
            "x@ex-ample.co",
            "a@b2.io",
            "名字@例子.中国",
        ] {
            assert!(Email::parse(good).is_ok(), "{good:?} was refused");
        }
    }
}
