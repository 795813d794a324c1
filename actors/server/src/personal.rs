//! Detectors of text shaped like personal data: what an operation log must not contain
//! (DOMAIN.md: never name, phone, e-mail, location, IP or MAC address, host name) and what
//! the committee's audit scans every stored byte for.

use std::sync::LazyLock;

use regex::bytes::Regex;

/// The kinds of personal data Hotaru refuses to store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PersonalKind {
    Email,
    Phone,
    Ipv4,
    Ipv6,
    Mac,
    Coordinates,
}

impl PersonalKind {
    pub fn name(self) -> &'static str {
        match self {
            PersonalKind::Email => "an e-mail address",
            PersonalKind::Phone => "a phone number",
            PersonalKind::Ipv4 => "an IPv4 address",
            PersonalKind::Ipv6 => "an IPv6 address",
            PersonalKind::Mac => "a MAC address",
            PersonalKind::Coordinates => "coordinates",
        }
    }
}

static DETECTORS: LazyLock<Vec<(PersonalKind, Regex)>> = LazyLock::new(|| {
    let r = |p: &str| Regex::new(p).expect("valid pattern");
    vec![
        (
            PersonalKind::Email,
            r(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}"),
        ),
        // Japanese numbers (0X0-XXXX-XXXX, 03-XXXX-XXXX, 0120-XXX-XXX) and international ones.
        (
            PersonalKind::Phone,
            r(
                r"(^|[^0-9.:])(\+[1-9][0-9]{0,2}[ -]?[0-9]{1,4}[ -]?[0-9]{2,4}[ -]?[0-9]{3,4}|0[0-9]{1,4}[- ][0-9]{1,4}[- ][0-9]{3,4}|0[5-9]0[0-9]{8})($|[^0-9])",
            ),
        ),
        (
            PersonalKind::Ipv4,
            r(
                r"(^|[^0-9.])(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}($|[^0-9.])",
            ),
        ),
        (
            PersonalKind::Mac,
            r(r"([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}"),
        ),
        (
            PersonalKind::Ipv6,
            r(
                r"(^|[^0-9A-Fa-f:])([0-9A-Fa-f]{1,4}:){3,7}[0-9A-Fa-f]{1,4}($|[^0-9A-Fa-f:])|[0-9A-Fa-f]{1,4}::[0-9A-Fa-f]{1,4}",
            ),
        ),
        (
            PersonalKind::Coordinates,
            r(r"-?[0-9]{1,3}\.[0-9]{4,}\s*,\s*-?[0-9]{1,3}\.[0-9]{4,}"),
        ),
    ]
});

/// Personal data found in `bytes`: the first kind that matches, in the order above (a MAC
/// address is also shaped like an IPv6 one, and is reported as a MAC), and about where.
pub fn find_personal_data(bytes: &[u8]) -> Option<(PersonalKind, usize)> {
    DETECTORS
        .iter()
        .find_map(|(k, re)| re.find(bytes).map(|m| (*k, m.start())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<PersonalKind> {
        find_personal_data(s.as_bytes()).map(|(k, _)| k)
    }

    #[test]
    fn finds_what_must_not_be_stored() {
        assert_eq!(
            kind("contact taro.yamada@example.co.jp please"),
            Some(PersonalKind::Email)
        );
        assert_eq!(kind("call 090-1234-5678"), Some(PersonalKind::Phone));
        assert_eq!(kind("tel 03-1234-5678."), Some(PersonalKind::Phone));
        assert_eq!(kind("tel 09012345678"), Some(PersonalKind::Phone));
        assert_eq!(kind("+81 90 1234 5678"), Some(PersonalKind::Phone));
        assert_eq!(kind("from 192.168.1.20 ok"), Some(PersonalKind::Ipv4));
        assert_eq!(
            kind("addr 2001:db8:85a3:0:0:8a2e:370:7334"),
            Some(PersonalKind::Ipv6)
        );
        assert_eq!(kind("fe80::1"), Some(PersonalKind::Ipv6));
        assert_eq!(kind("bt 00:1A:2B:3C:4D:5E"), Some(PersonalKind::Mac));
        assert_eq!(
            kind("at 35.6812, 139.7671"),
            Some(PersonalKind::Coordinates)
        );
    }

    #[test]
    fn ordinary_log_lines_pass() {
        for ok in [
            "2026-11-22T12:05:33.123Z exposure check ok, 1200 keys, 0 matches",
            "app 1.4.2 Android 13 Pixel 7; download failed (timeout 30 s)",
            "version 2.0.1 build 4521; batch 00000012-00001.zip; 1350 >= 900",
            "rolling start 2900016 period 144; attenuation 55 dB",
        ] {
            assert_eq!(kind(ok), None, "{ok}");
        }
    }
}
