//! Operator block and allow lists: IP addresses, CIDR networks and domain names.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::FirewallError;

/// A list of destinations. A domain entry covers the name and every name below it
/// (`example.com` covers `cdn.example.com`); a leading `*.` is accepted and means the same.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestList {
    /// Addresses and networks.
    pub nets: Vec<IpNet>,
    /// Domain names, lower case, without trailing dot.
    pub domains: Vec<String>,
}

/// Lower-case `name` and drop one trailing dot; `None` unless it is a DNS name (labels of
/// letters, digits, `-` and `_`, 1..=63 bytes each, 253 bytes in all).
pub fn normalize_domain(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(name)
}

impl DestList {
    /// Parse list entries; each must be an address, a network or a domain name.
    pub fn parse(entries: &[String]) -> Result<DestList, FirewallError> {
        let mut list = DestList::default();
        for e in entries {
            let e = e.trim();
            if let Ok(a) = e.parse::<IpAddr>() {
                list.nets.push(IpNet::from(a));
            } else if let Ok(n) = e.parse::<IpNet>() {
                list.nets.push(n.trunc());
            } else if let Some(d) = normalize_domain(e.strip_prefix("*.").unwrap_or(e)) {
                list.domains.push(d);
            } else {
                return Err(FirewallError::Destination(e.to_string()));
            }
        }
        Ok(list)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && self.domains.is_empty()
    }

    /// Whether `addr`, known by `names` (learned from DNS), is on the list.
    pub fn contains<'a>(&self, addr: IpAddr, names: impl IntoIterator<Item = &'a str>) -> bool {
        if self.nets.iter().any(|n| n.contains(&addr)) {
            return true;
        }
        if self.domains.is_empty() {
            return false;
        }
        names.into_iter().any(|name| {
            self.domains.iter().any(|d| {
                name == d
                    || (name.len() > d.len()
                        && name.ends_with(d.as_str())
                        && name.as_bytes()[name.len() - d.len() - 1] == b'.')
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_match() {
        let l = DestList::parse(&[
            "10.1.2.3".into(),
            "192.168.0.0/16".into(),
            "2001:db8::/32".into(),
            "*.Tracker.example.".into(),
        ])
        .unwrap();
        assert!(l.contains("10.1.2.3".parse().unwrap(), []));
        assert!(!l.contains("10.1.2.4".parse().unwrap(), []));
        assert!(l.contains("192.168.9.9".parse().unwrap(), []));
        assert!(l.contains("2001:db8::1".parse().unwrap(), []));
        let a = "8.8.8.8".parse().unwrap();
        assert!(l.contains(a, ["tracker.example"]));
        assert!(l.contains(a, ["x.tracker.example"]));
        assert!(!l.contains(a, ["nottracker.example"]));
        assert!(!l.contains(a, ["example"]));
        for bad in ["", "a b", "10.0.0.0/40", "-", "a..b", "ex!ample.com"] {
            assert!(DestList::parse(&[bad.into()]).is_err(), "{bad:?} accepted");
        }
    }
}
