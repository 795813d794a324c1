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
        // Japanese numbers (0X0-XXXX-XXXX, 03-XXXX-XXXX, 0120-XXX-XXX, (03) XXXX-XXXX, and
        // mobile and landline numbers written without separators) and international ones.
        (
            PersonalKind::Phone,
            r(
                r"(^|[^0-9.:])(\+[1-9][0-9]{0,2}[ -]?[0-9]{1,4}[ -]?[0-9]{2,4}[ -]?[0-9]{3,4}|0[0-9]{1,4}[- ][0-9]{1,4}[- ][0-9]{3,4}|0[5-9]0[0-9]{8}|0[1-9][0-9]{8}|\(0[0-9]{1,4}\) ?[0-9]{1,4}[- ]?[0-9]{3,4})($|[^0-9])",
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

/// The detectors for scanning stored binary data (the audit): random bytes (ciphertext,
/// hashes, ids) make up much of a store, and in gigabytes of them the loose forms above
/// occur by chance (`7::b` is a compressed IPv6 address; `a@b.cd` an e-mail address). Here
/// an e-mail address needs two characters before the `@`, a label of two or more, and a
/// common top-level domain; a compressed IPv6 address a full group of four before `::`.
/// The other kinds need long digit runs and separators, which random bytes do not make.
static STRICT: LazyLock<Vec<(PersonalKind, Regex)>> = LazyLock::new(|| {
    let r = |p: &str| Regex::new(p).expect("valid pattern");
    DETECTORS
        .iter()
        .map(|(k, re)| {
            let re = match k {
                PersonalKind::Email => r(
                    r"(?i)[a-z0-9._%+-]{2,64}@[a-z0-9-]{2,63}(\.[a-z0-9-]{1,63})*\.(com|net|org|info|biz|io|edu|gov|jp|us|uk|de|fr|kr|cn|tw|au|ca|eu|me|app|dev|co)([^a-z0-9]|$)",
                ),
                PersonalKind::Ipv6 => r(
                    r"(^|[^0-9A-Fa-f:])([0-9A-Fa-f]{1,4}:){3,7}[0-9A-Fa-f]{1,4}($|[^0-9A-Fa-f:])|(^|[^0-9A-Fa-f:])[0-9A-Fa-f]{4}::[0-9A-Fa-f]{1,4}($|[^0-9A-Fa-f:])",
                ),
                _ => re.clone(),
            };
            (*k, re)
        })
        .collect()
});

/// A hyphenated UUID, as JetStream stores every message id (an event id): its groups of
/// digits make phone-shaped runs by chance (`-0580-7123-8123-` in `01a23745-0580-7123-…`
/// matches 0X0-XXXX-XXXX forms), in about one id in thirty made in the first 2.4 s of
/// every 65.5 s of the clock.
static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
        .expect("valid pattern")
});

/// Every match of the strict detectors in `bytes` (see [`STRICT`]), in order of kind; a
/// phone-shaped run inside a UUID is not a phone number.
pub fn scan_binary(bytes: &[u8]) -> Vec<(PersonalKind, usize)> {
    let uuids: Vec<std::ops::Range<usize>> = UUID.find_iter(bytes).map(|m| m.range()).collect();
    let in_uuid = |r: std::ops::Range<usize>| {
        // The match may take one separator byte on either side of the digits.
        uuids
            .iter()
            .any(|u| u.start <= r.start + 1 && r.end <= u.end + 1)
    };
    STRICT
        .iter()
        .flat_map(|(k, re)| re.find_iter(bytes).map(move |m| (*k, m.range())))
        .filter(|(k, r)| !(*k == PersonalKind::Phone && in_uuid(r.clone())))
        .map(|(k, r)| (k, r.start))
        .collect()
}

/// Personal data in text as a person types it (an operation log, which the app lets its
/// user edit): NFKC first, so full-width digits, letters and `＠` are the ASCII the
/// detectors know, and the dashes Japanese text writes numbers with (`－`, `ー`, `‐`, `−`)
/// are hyphens. The position is a byte offset in `text`, not in its normal form.
pub fn find_personal_text(text: &str) -> Option<(PersonalKind, usize)> {
    use unicode_normalization::UnicodeNormalization;
    let mut normal = String::with_capacity(text.len());
    // The offset in `text` of each byte of `normal`.
    let mut origin = Vec::with_capacity(text.len());
    for (at, c) in text.char_indices() {
        for n in std::iter::once(c).nfkc() {
            let n = match n {
                '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{30FC}' | '\u{FF70}' => '-',
                '\u{3000}' => ' ',
                other => other,
            };
            normal.push(n);
            origin.resize(normal.len(), at);
        }
    }
    find_personal_data(normal.as_bytes())
        .map(|(kind, i)| (kind, origin.get(i).copied().unwrap_or(0)))
}

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
    fn the_strict_scan_finds_real_data_but_not_chance_bytes() {
        let kinds = |b: &[u8]| {
            scan_binary(b)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(b"\x01\x1ataro.yamada@example.co.jp\x02"),
            vec![PersonalKind::Email]
        );
        assert_eq!(kinds(b"\x05090-1234-5678\x00"), vec![PersonalKind::Phone]);
        assert_eq!(kinds(b"\x00fe80::1\x00"), vec![PersonalKind::Ipv6]);
        assert_eq!(kinds(b"\x00192.168.1.20\x00"), vec![PersonalKind::Ipv4]);
        // What random bytes make by chance (both seen in a real store).
        assert!(kinds(b"(1\xeb\xc0j7::b\x90^a").is_empty());
        assert!(kinds(b"\x91a@b.cd\x00").is_empty());
        // A message id (an event id) whose groups happen to be digits; a real number
        // beside it is still found.
        assert!(kinds(b"Nats-Msg-Id:01a23745-0580-7123-8123-0123456789ab\r\n").is_empty());
        assert_eq!(
            kinds(b"\x0001a23745-0580-7123-8123-0123456789ab 090-1234-5678\x00"),
            vec![PersonalKind::Phone]
        );
        // A million random bytes: nothing.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..1_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(scan_binary(&noise), vec![]);
    }

    /// What a Japanese user types: full-width digits and at signs, the dashes of Japanese
    /// text, landline numbers without separators, an area code in brackets.
    #[test]
    fn finds_japanese_forms_after_normalising() {
        let text = |s: &str| find_personal_text(s).map(|(k, _)| k);
        for (s, want) in [
            (
                "連絡先 ０９０－１２３４－５６７８ まで",
                PersonalKind::Phone,
            ),
            ("電話 ０３ー１２３４ー５６７８", PersonalKind::Phone),
            ("自宅 0312345678 です", PersonalKind::Phone),
            ("自宅 ０４５２１２３４５６", PersonalKind::Phone),
            ("(03) 1234-5678", PersonalKind::Phone),
            ("携帯 ０９０１２３４５６７８", PersonalKind::Phone),
            ("メール taro＠example.jp", PersonalKind::Email),
            (
                "メール ｔａｒｏ．ｙａｍａｄａ＠ｅｘａｍｐｌｅ．ｃｏ．ｊｐ",
                PersonalKind::Email,
            ),
            ("IP １９２．１６８．１．２０ から", PersonalKind::Ipv4),
            (
                "位置 ３５．６８１２，　１３９．７６７１",
                PersonalKind::Coordinates,
            ),
        ] {
            assert_eq!(text(s), Some(want), "{s}");
        }
        // The position is where the number starts in the text as typed.
        let s = "連絡先 ０９０－１２３４－５６７８";
        let (_, at) = find_personal_text(s).unwrap();
        assert!(s[at..].trim_start().starts_with('０'), "{at}");
        // Ordinary Japanese log lines still pass.
        for ok in [
            "２０２６年１１月２２日 接触確認 ０件",
            "バージョン 2.0.1 ダウンロード失敗（タイムアウト 30 秒）",
            "rolling start 2900016 period 144; attenuation 55 dB",
        ] {
            assert_eq!(text(ok), None, "{ok}");
        }
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
