//! The export rules the batch signer and the committee's audit share: which keys a batch
//! holds, its padding keys, its signature infos and the files it is cut into. Pure: the
//! same input gives the same bytes (the audit rebuilds every batch from the log and
//! compares).

use hotaru_events::UnixMillis;
use hotaru_events::domain::{DiagnosisKey, SignatureInfo, UploadedKey};
use hotaru_protocol::export::{self, ExportFile, split_batch};
use hotaru_protocol::{EnIntervalNumber, ReportType, Tek};

/// An uploaded key with the registration position of its upload.
#[derive(Clone, Copy, Debug)]
pub struct PositionedKey {
    pub position: u64,
    pub key: UploadedKey,
}

/// Whether batch (through, end) holds a key, given the previous batch's bounds.
pub fn in_batch(k: &PositionedKey, prev: (u64, UnixMillis), through: u64, end: UnixMillis) -> bool {
    let (prev_through, prev_end) = prev;
    let now_ok = k.position <= through && k.key.release_at <= end;
    let before = k.position <= prev_through && k.key.release_at <= prev_end;
    now_ok && !before
}

/// The padding keys of a batch: `count` keys derived from `seed`, with metadata drawn like
/// real keys' (a day within the last 14, whole day, the server's risk and report type).
pub fn padding_keys(seed: &[u8; 32], count: usize, end: UnixMillis, risk: u8) -> Vec<DiagnosisKey> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, seed);
    let today = end.day();
    (0..count as u64)
        .map(|i| {
            let t = ring::hmac::sign(&key, &i.to_be_bytes());
            let b = t.as_ref();
            let day = today - 1 - u32::from(b[16]) % 13;
            DiagnosisKey {
                tek: Tek::from_bytes(b[..16].try_into().expect("16 bytes")),
                rolling_start: EnIntervalNumber(day * 144),
                rolling_period: 144,
                transmission_risk_level: risk,
                report_type: ReportType::ConfirmedTest,
                days_since_onset: Some(i32::from(b[17] % 13) - 2),
            }
        })
        .collect()
}

/// Builds the export files of a batch (the same bytes every time for the same input).
pub fn build_files(
    region: &str,
    start: UnixMillis,
    end: UnixMillis,
    infos: &[export::SignatureInfo],
    keys: &[DiagnosisKey],
    max_per_file: usize,
) -> Vec<ExportFile> {
    split_batch(
        start.0 / 1000,
        end.0 / 1000,
        region,
        infos,
        keys.to_vec(),
        max_per_file,
    )
}

/// GAEN's signature info for a key: id = the region code, version = "v<n>".
pub fn export_info(info: &SignatureInfo) -> export::SignatureInfo {
    export::SignatureInfo::new(info.key_id.to_string(), format!("v{}", info.key_version))
}
