//! Which IP addresses the bridge may fetch from: public unicast addresses
//! only. Loopback, private (RFC 1918, unique local), shared (CGNAT),
//! link-local (cloud metadata at `169.254.169.254` included), multicast,
//! documentation, benchmarking and reserved ranges are refused, and an
//! IPv6 address that embeds an IPv4 one (IPv4-mapped) is judged by it.
//! For IPv6 only global unicast (`2000::/3`) counts, less its special
//! ranges; NAT64, 6to4 and Teredo are refused outright, since they can
//! lead back to any IPv4 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where fetches may go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reach {
    /// Public addresses only: what the bridge does.
    #[default]
    Public,
    /// Public addresses and loopback: for local tests only, never deployed.
    PublicAndLoopback,
}

impl Reach {
    /// Whether an address may be fetched from.
    pub fn allows(self, ip: IpAddr) -> bool {
        is_public(ip) || (self == Self::PublicAndLoopback && is_loopback(ip))
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Whether an address is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

/// `addr` is in `net/len`.
fn in_v4(addr: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(addr) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

/// IPv4 ranges that are not public (RFC 6890 and its updates).
const NOT_PUBLIC_V4: &[([u8; 4], u32)] = &[
    ([0, 0, 0, 0], 8),       // "this network"
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local, cloud metadata
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 88, 99, 0], 24),  // 6to4 relay anycast
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, broadcast
];

fn is_public_v4(addr: Ipv4Addr) -> bool {
    !NOT_PUBLIC_V4
        .iter()
        .any(|(net, len)| in_v4(addr, *net, *len))
}

fn is_public_v6(addr: Ipv6Addr) -> bool {
    if let Some(v4) = addr.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = addr.segments();
    // Global unicast is 2000::/3; everything else (unspecified, loopback,
    // IPv4-compatible, NAT64 64:ff9b::/96, discard 100::/64, unique local
    // fc00::/7, link-local fe80::/10, site-local, multicast) is not public.
    if s[0] & 0xe000 != 0x2000 {
        return false;
    }
    let ietf = s[0] == 0x2001 && s[1] < 0x0200; // 2001::/23, Teredo included
    let documentation = (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] == 0x3fff && s[1] < 0x1000);
    let six_to_four = s[0] == 0x2002; // 2002::/16 embeds any IPv4 address
    !(ietf || documentation || six_to_four)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn public_addresses_are_allowed() {
        for text in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.3.1",
            "192.169.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip(text)), "{text} is public");
            assert!(Reach::Public.allows(ip(text)), "{text}");
        }
    }

    #[test]
    fn loopback_private_and_link_local_addresses_are_not() {
        for text in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "169.254.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.9",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_public(ip(text)), "{text} is not public");
        }
    }

    #[test]
    fn special_ipv6_ranges_are_not_public() {
        for text in [
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:db8::1",
            "2002:a9fe:a9fe::1",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fd12:3456:789a::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip(text)), "{text} is not public");
        }
    }

    #[test]
    fn loopback_is_reached_only_when_tests_ask() {
        for text in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(!Reach::Public.allows(ip(text)), "{text}");
            assert!(Reach::PublicAndLoopback.allows(ip(text)), "{text}");
        }
        for text in ["10.0.0.1", "169.254.169.254", "fe80::1", "192.168.0.1"] {
            assert!(!Reach::PublicAndLoopback.allows(ip(text)), "{text}");
        }
    }

    #[test]
    fn range_edges_are_exact() {
        assert!(in_v4(Ipv4Addr::new(172, 31, 255, 255), [172, 16, 0, 0], 12));
        assert!(!in_v4(Ipv4Addr::new(172, 32, 0, 0), [172, 16, 0, 0], 12));
        assert!(in_v4(Ipv4Addr::new(1, 2, 3, 4), [0, 0, 0, 0], 0));
    }
}
