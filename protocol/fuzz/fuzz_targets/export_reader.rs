//! The export reader takes untrusted downloads: whatever the bytes, it returns a value
//! or a typed error, never panics, and never allocates beyond its limits.

#![no_main]

use hotaru_protocol::export::{self, ExportFile, ReadLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = ReadLimits {
        max_zip_bytes: 1 << 20,
        max_bin_bytes: 1 << 20,
        max_sig_bytes: 64 << 10,
        max_keys: 10_000,
    };
    if let Ok(e) = export::read_zip(data, limits) {
        // What was read re-encodes and reads back the same.
        let again = ExportFile::decode(&e.file.encode()).expect("re-encoded file decodes");
        assert_eq!(again.keys.len(), e.file.keys.len());
    }
    let _ = ExportFile::decode(data);
    let _ = export::decode_signatures(data);
});
