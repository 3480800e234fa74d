//! `ip("…")` matching for line filters and label filters: a single address, a CIDR
//! prefix or an `a-b` range (IPv4 or IPv6), tested against whole IP-shaped tokens found
//! by the same scan Loki does (so `ip("3.180.71.3")` does not match `93.180.71.3`).

use std::net::IpAddr;

/// A compiled `ip("…")` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IpMatcher {
    Single(IpAddr),
    Prefix { net: IpAddr, bits: u8 },
    Range(IpAddr, IpAddr),
}

const IPV4_CHARSET: &[u8] = b"0123456789.";
const IPV6_CHARSET: &[u8] = b"0123456789abcdefABCDEF:.";

impl IpMatcher {
    /// Parse a pattern; the error reads like Loki's (`ip: invalid pattern: "x"`).
    pub(crate) fn new(pattern: &str) -> Result<IpMatcher, String> {
        if let Some(a) = parse_addr(pattern) {
            return Ok(IpMatcher::Single(a));
        }
        if let Some((addr, bits)) = pattern.split_once('/') {
            if let (Some(net), Ok(bits)) = (parse_addr(addr), bits.parse::<u8>()) {
                let max = if net.is_ipv4() { 32 } else { 128 };
                // Go's ParsePrefix rejects signs and leading zeros in the length.
                let canonical = bits.to_string() == *pattern.rsplit('/').next().unwrap_or("");
                if bits <= max && canonical {
                    return Ok(IpMatcher::Prefix { net, bits });
                }
            }
        }
        if let Some((from, to)) = pattern.split_once('-') {
            if let (Some(a), Some(b)) = (parse_addr(from), parse_addr(to)) {
                if a.is_ipv4() == b.is_ipv4() && a <= b {
                    return Ok(IpMatcher::Range(a, b));
                }
            }
        }
        Err(format!(
            "ip: invalid pattern: {}",
            super::convert::go_quote(pattern)
        ))
    }

    /// True when `ip` is matched by the pattern.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match *self {
            IpMatcher::Single(a) => a == ip,
            IpMatcher::Range(a, b) => a.is_ipv4() == ip.is_ipv4() && a <= ip && ip <= b,
            IpMatcher::Prefix { net, bits } => match (net, ip) {
                (IpAddr::V4(n), IpAddr::V4(i)) => {
                    let mask = if bits == 0 {
                        0
                    } else {
                        u32::MAX << (32 - u32::from(bits))
                    };
                    u32::from(n) & mask == u32::from(i) & mask
                }
                (IpAddr::V6(n), IpAddr::V6(i)) => {
                    let mask = if bits == 0 {
                        0
                    } else {
                        u128::MAX << (128 - u32::from(bits))
                    };
                    u128::from(n) & mask == u128::from(i) & mask
                }
                _ => false,
            },
        }
    }

    /// Scan `line` for IP-shaped tokens and report whether any is matched.
    pub(crate) fn matches_line(&self, line: &[u8]) -> bool {
        let n = line.len();
        let at = |i: usize| -> u8 {
            if i < n {
                line[i]
            } else {
                0
            }
        };
        let mut i = 0;
        while i < n {
            let charset = if i + 3 < n
                && line[i].is_ascii_digit()
                && (line[i + 1] == b'.' || line[i + 2] == b'.' || line[i + 3] == b'.')
            {
                Some(IPV4_CHARSET)
            } else if ipv6_hint([at(i), at(i + 1), at(i + 2), at(i + 3), at(i + 4)]) {
                Some(IPV6_CHARSET)
            } else {
                None
            };
            if let Some(cs) = charset {
                let len = line[i..].iter().take_while(|c| cs.contains(c)).count();
                if let Some(ip) = std::str::from_utf8(&line[i..i + len])
                    .ok()
                    .and_then(parse_addr)
                {
                    if self.contains(ip) {
                        return true;
                    }
                }
                // Skip the token (the loop's own increment skips one more byte, as Loki).
                i += len;
            }
            i += 1;
        }
        false
    }
}

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

fn ipv6_hint(p: [u8; 5]) -> bool {
    (p[0] == b':' && p[1] == b':' && is_hex(p[2]))
        || (is_hex(p[0]) && p[1] == b':')
        || (is_hex(p[0]) && is_hex(p[1]) && p[2] == b':')
        || (is_hex(p[0]) && is_hex(p[1]) && is_hex(p[2]) && p[3] == b':')
        || (is_hex(p[0]) && is_hex(p[1]) && is_hex(p[2]) && is_hex(p[3]) && p[4] == b':')
}

/// Go's `netip.ParseAddr` for the forms that matter (dotted IPv4 without leading zeros,
/// IPv6 including embedded IPv4). Zones are not supported.
fn parse_addr(s: &str) -> Option<IpAddr> {
    // Rust's std parser matches Go's rules: it rejects leading zeros in IPv4 octets.
    s.parse::<IpAddr>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_address_matches_whole_tokens_only() -> Result<(), String> {
        let m = IpMatcher::new("3.180.71.3")?;
        assert!(!m.matches_line(b"from 93.180.71.3 x"));
        assert!(m.matches_line(b"from 3.180.71.3 x"));
        assert!(m.matches_line(b"3.180.71.3"));
        Ok(())
    }

    #[test]
    fn cidr_and_range() -> Result<(), String> {
        let m = IpMatcher::new("192.168.0.0/16")?;
        assert!(m.matches_line(b"client=192.168.4.2 ok"));
        assert!(!m.matches_line(b"client=10.0.0.1 ok"));
        let r = IpMatcher::new("10.0.0.1-10.0.0.9")?;
        assert!(r.matches_line(b"x 10.0.0.5"));
        assert!(!r.matches_line(b"x 10.0.0.10"));
        let v6 = IpMatcher::new("2001:db8::/32")?;
        assert!(v6.matches_line(b"addr 2001:db8::1 done"));
        assert!(!v6.matches_line(b"addr 2001:db9::1 done"));
        assert!(IpMatcher::new("nope").is_err());
        assert!(IpMatcher::new("10.0.0.0/33").is_err());
        Ok(())
    }
}
