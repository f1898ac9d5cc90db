//! Keys of the per-buyer purchase limits.

use std::net::IpAddr;

/// The client a per-IP purchase limit counts against: an IPv4 address as
/// is, an IPv6 client by its /64 (one subscriber's network gets a whole /64,
/// so counting single addresses would let a scalper rotate through them).
/// Anything that is not an address is counted as given.
pub fn ip_limit_key(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Err(_) => ip.to_string(),
    }
}

/// The buyer a per-email purchase limit counts against: the mailbox, not
/// the spelling. A `+tag` in the local part is dropped (`a+1@x` and `a+2@x`
/// reach one mailbox at every large provider, and are a scalper's cheapest
/// way to be many buyers), and at Gmail, which ignores dots, so are the
/// dots (`googlemail.com` is `gmail.com`). The order keeps the address as
/// typed; codes go to it. Only the limit's count is keyed by this, so the
/// worst a provider with other rules costs is two of its addresses sharing
/// one limit.
pub fn email_limit_key(email: &str) -> String {
    let email = email.trim().to_lowercase();
    let Some((local, domain)) = email.rsplit_once('@') else {
        return email;
    };
    let local = match local.split_once('+') {
        Some((base, _)) if !base.is_empty() => base,
        _ => local,
    };
    match domain {
        "gmail.com" | "googlemail.com" => format!("{}@gmail.com", local.replace('.', "")),
        _ => format!("{local}@{domain}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_tags_and_gmail_dots_are_one_buyer() {
        for (typed, key) in [
            ("buyer@example.com", "buyer@example.com"),
            ("Buyer+drop1@Example.com", "buyer@example.com"),
            ("buyer+a+b@example.com", "buyer@example.com"),
            ("b.u.yer@example.com", "b.u.yer@example.com"),
            ("b.u.yer+x@gmail.com", "buyer@gmail.com"),
            ("buyer@googlemail.com", "buyer@gmail.com"),
            // A local part that is only a tag keeps it: nothing else names it.
            ("+tag@example.com", "+tag@example.com"),
            ("12345+1@qq.com", "12345@qq.com"),
        ] {
            assert_eq!(email_limit_key(typed), key, "{typed}");
        }
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        assert_eq!(ip_limit_key("203.0.113.9"), "203.0.113.9");
        assert_eq!(ip_limit_key("::ffff:203.0.113.9"), "203.0.113.9");
        assert_eq!(
            ip_limit_key("2001:db8:1:2:aaaa::1"),
            ip_limit_key("2001:db8:1:2:bbbb::9")
        );
        assert_ne!(
            ip_limit_key("2001:db8:1:2::1"),
            ip_limit_key("2001:db8:1:3::1")
        );
    }
}
