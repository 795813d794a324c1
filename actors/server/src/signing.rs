//! Export signing keys: the private halves in the side store (`signing/<region>-v<n>`), the
//! public halves in the log (SigningKeyRotated on `signingkey.<region>`), so that devices
//! and auditors can verify every batch from the events alone.

use hotaru_actors::IdSource;
use hotaru_domain::export::export_info;
use hotaru_events::domain::{SignatureInfo, SigningKeyRotated};
use hotaru_events::{DomainEvent, NewEvent, StreamId, StreamKind, UnixMillis};
use hotaru_log::{EventLog, ExpectedVersion, LogError, SideStore};
use hotaru_protocol::export::{self, PublicKey, Signer};

const NS: &str = "signing";

/// The stream of a region's signing keys.
pub fn signing_stream(region: &str) -> StreamId {
    StreamId::new(StreamKind::SigningKey, region).expect("a region code is a valid id")
}

/// One key as the log records it.
#[derive(Clone, Debug)]
pub struct PublishedKey {
    pub info: SignatureInfo,
    pub public_key: PublicKey,
    pub valid_from: UnixMillis,
}

/// The region's keys, oldest first, from the log.
pub async fn published_keys<L: EventLog>(
    log: &L,
    region: &str,
) -> Result<Vec<PublishedKey>, LogError> {
    let mut out = Vec::new();
    for c in log.read_stream(&signing_stream(region)).await? {
        for env in c.commit.envelopes().flatten() {
            if let DomainEvent::SigningKeyRotated(e) = env.event {
                let public_key = PublicKey::from_spki_der(&e.public_key_spki)
                    .map_err(|err| LogError::Backend(err.to_string()))?;
                out.push(PublishedKey {
                    info: e.info,
                    public_key,
                    valid_from: e.valid_from,
                });
            }
        }
    }
    Ok(out)
}

/// The region's keys as a phone or an auditor holds them, to verify exports with.
pub async fn verification_keys<L: EventLog>(
    log: &L,
    region: &str,
) -> Result<Vec<export::VerificationKey>, LogError> {
    Ok(published_keys(log, region)
        .await?
        .into_iter()
        .map(|k| {
            let i = export_info(&k.info);
            export::VerificationKey {
                key_id: i.verification_key_id,
                key_version: i.verification_key_version,
                public_key: k.public_key,
            }
        })
        .collect())
}

/// Adds a new signing key for `region`, valid from `now` (`hotaru keys generate` and
/// `rotate`). Returns its public key.
pub async fn add_signing_key<L: EventLog + SideStore>(
    log: &L,
    region: &str,
    region_id: u32,
    now: UnixMillis,
    ids: &dyn IdSource,
) -> Result<PublicKey, LogError> {
    let event_id = ids.next_id(now);
    let existing = published_keys(log, region).await?;
    let version = existing.last().map_or(1, |k| k.info.key_version + 1);
    let pkcs8 = Signer::generate_pkcs8(&mut &*ids.random());
    let info = SignatureInfo {
        key_version: version,
        key_id: region_id,
    };
    let signer = Signer::from_pkcs8(export_info(&info), &pkcs8)
        .map_err(|e| LogError::Backend(e.to_string()))?;
    // The private half first: a key in the log is always usable.
    log.side_put(NS, &format!("{region}-v{version}"), &pkcs8)
        .await?;
    let ev = NewEvent::new(
        event_id,
        now,
        DomainEvent::SigningKeyRotated(SigningKeyRotated {
            info,
            public_key_spki: signer.public_key().to_spki_der(),
            valid_from: now,
        }),
    );
    log.append(
        signing_stream(region),
        ExpectedVersion::Exact(existing.len() as u64),
        vec![ev],
    )
    .await?;
    Ok(signer.public_key())
}

/// The keys that sign at `now`: the newest key valid by then, and the one before it until
/// `overlap_ms` after the newer one became valid (phones that have not yet learned the new
/// key keep verifying).
pub async fn active_signers<L: EventLog + SideStore>(
    log: &L,
    region: &str,
    now: UnixMillis,
    overlap_ms: u64,
) -> Result<Vec<(SignatureInfo, Signer)>, LogError> {
    let keys = published_keys(log, region).await?;
    let valid: Vec<&PublishedKey> = keys.iter().filter(|k| k.valid_from <= now).collect();
    let mut active = Vec::new();
    for (i, k) in valid.iter().enumerate() {
        let superseded_at = valid
            .get(i + 1)
            .map(|n| n.valid_from.plus_millis(overlap_ms));
        if superseded_at.is_none_or(|t| now < t) {
            let pkcs8 = log
                .side_get(NS, &format!("{region}-v{}", k.info.key_version))
                .await?
                .ok_or_else(|| {
                    LogError::Backend(format!(
                        "the private key of {region} v{} is missing",
                        k.info.key_version
                    ))
                })?;
            let signer = Signer::from_pkcs8(export_info(&k.info), &pkcs8)
                .map_err(|e| LogError::Backend(e.to_string()))?;
            active.push((k.info.clone(), signer));
        }
    }
    Ok(active)
}
