//! A version on every stored or sent encoding that is not an event (ADR 0005): the bytes
//! inside a sealed payload, an operation log's content, the command wire over NATS, a
//! projection's checkpoint state.
//!
//! A versioned value is `0xFF ‖ version ‖ body`. No bincode value written before versions
//! existed can begin with 0xFF: in bincode's `standard()` configuration every such value
//! begins with a varint (a length, an enum variant or a number), whose first byte is at most
//! 0xFE. So bytes without the marker are version 0, the encoding of before, and still read:
//! nothing stored is lost, and a node of before is understood during a rolling upgrade.

/// The first byte of a versioned value.
pub const MARKER: u8 = 0xFF;

/// `MARKER ‖ version ‖ body`.
pub fn wrap(version: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 2);
    out.extend_from_slice(&[MARKER, version]);
    out.extend_from_slice(body);
    out
}

/// Prepends `MARKER ‖ version` to a body already in a vector.
pub fn wrap_vec(version: u8, mut body: Vec<u8>) -> Vec<u8> {
    body.splice(0..0, [MARKER, version]);
    body
}

/// The version and the body; bytes without the marker are version 0 and all body.
/// A marker without a version byte is version 0 with nothing left to read as one.
pub fn split(bytes: &[u8]) -> (u8, &[u8]) {
    match bytes {
        [MARKER, version, body @ ..] => (*version, body),
        _ => (0, bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_value_splits_back_and_old_bytes_are_version_0() {
        assert_eq!(split(&wrap(1, b"abc")), (1, &b"abc"[..]));
        assert_eq!(split(&wrap_vec(2, b"xy".to_vec())), (2, &b"xy"[..]));
        assert_eq!(split(&wrap(1, b"")), (1, &b""[..]));
        assert_eq!(split(b"\x03abc"), (0, &b"\x03abc"[..]));
        assert_eq!(split(b""), (0, &b""[..]));
    }

    #[test]
    fn no_bincode_value_of_before_begins_with_the_marker() {
        let cfg = bincode::config::standard();
        // Lengths, enum variants and integers of every width bincode's varint gives.
        for n in [
            0u64,
            1,
            250,
            251,
            65_535,
            65_536,
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ] {
            let b = bincode::serde::encode_to_vec(n, cfg).unwrap();
            assert_ne!(b[0], MARKER, "{n}");
            let v = bincode::serde::encode_to_vec(vec![0u8; (n % 300) as usize], cfg).unwrap();
            assert_ne!(v[0], MARKER);
        }
        let neg = bincode::serde::encode_to_vec(i64::MIN, cfg).unwrap();
        assert_ne!(neg[0], MARKER);
    }
}
