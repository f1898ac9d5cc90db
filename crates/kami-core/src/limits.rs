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

#[cfg(test)]
mod tests {
    use super::*;

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
