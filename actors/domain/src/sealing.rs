//! Where the server keeps the keys that seal what its events hold, and how a day's sealed
//! bytes open: shared by the server (which writes them) and the committee's audit (which
//! reads an archive of them, without the digest secret). The key bytes themselves are
//! drawn by the server; nothing here is random.

use hotaru_events::domain::{Day, Sealed};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

/// The side-store namespace of the day keys (`daykeys/d<day>`: a 32-byte digest salt and a
/// 32-byte data key, docs/adr/0003-retention.md).
pub const DAY_KEYS: &str = "daykeys";

/// The side-store namespace of the operation logs' keys (one per log, by its id in hex).
pub const OPLOG_KEYS: &str = "oplogkeys";

/// The side-store key of a day's keys.
pub fn day_key_name(day: Day) -> String {
    format!("d{}", day.0)
}

/// Opens `sealed` with the day's data key; the day is bound as associated data.
pub fn open_sealed(key: &LessSafeKey, sealed: &Sealed) -> Option<Vec<u8>> {
    let mut buf = sealed.ciphertext.clone();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(sealed.nonce),
            Aad::from(sealed.day.0.to_be_bytes()),
            &mut buf,
        )
        .ok()?;
    Some(plain.to_vec())
}

/// Opens `sealed` with a day's stored key bytes (as the side store holds them): what an
/// auditor holding an archive does, without the digest secret.
pub fn open_with_stored(stored: &[u8], sealed: &Sealed) -> Option<Vec<u8>> {
    if stored.len() != 64 {
        return None;
    }
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &stored[32..]).ok()?);
    open_sealed(&key, sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(stored: &[u8; 64], day: Day, plain: &[u8]) -> Sealed {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &stored[32..]).unwrap());
        let nonce = [7u8; 12];
        let mut buf = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(day.0.to_be_bytes()),
            &mut buf,
        )
        .unwrap();
        Sealed {
            day,
            nonce,
            ciphertext: buf,
        }
    }

    #[test]
    fn stored_day_keys_open_their_days_sealed_bytes_only() {
        let stored = [3u8; 64];
        let sealed = seal(&stored, Day(20_000), b"keys");
        assert_eq!(
            open_with_stored(&stored, &sealed).as_deref(),
            Some(&b"keys"[..])
        );
        assert_eq!(
            open_with_stored(&stored[..63], &sealed),
            None,
            "not a day key"
        );
        assert_eq!(open_with_stored(&[4u8; 64], &sealed), None, "another key");
        let moved = Sealed {
            day: Day(20_001),
            ..sealed
        };
        assert_eq!(open_with_stored(&stored, &moved), None, "the day is bound");
        assert_eq!(day_key_name(Day(20_000)), "d20000");
    }
}
