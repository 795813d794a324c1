//! The processing number: issued for a confirmed case, redeemed once with the case's keys.
//!
//! Redemption and key upload are one step: the number is consumed only in the same commit
//! as its accepted keys. A retry with the same idempotency key gets the first answer and
//! consumes nothing more.

use std::fmt;

use hotaru_events::domain::{
    CaseId, CentreId, DiagnosisKeysUploaded, DroppedKey, ProcessingNumberIssued,
    ProcessingNumberRedeemed, RejectionReason, UploadedKeys,
};
use hotaru_events::{DomainEvent, NumberDigest, StreamId, StreamKind, UnixMillis};

use crate::Aggregate;

/// A processing number in the clear, as typed by the user. Never serialised, never
/// printed: only its [`NumberDigest`] is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ProcessingNumber(String);

impl fmt::Debug for ProcessingNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProcessingNumber(..)")
    }
}

impl ProcessingNumber {
    /// Error A: exactly `len` ASCII digits, nothing else (no full-width digits, no spaces).
    pub fn parse(input: &str, len: usize) -> Result<Self, NumberError> {
        if input.len() == len && input.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(input.to_owned()))
        } else {
            Err(NumberError::Rejected(RejectionReason::Format))
        }
    }

    /// A number drawn by the issuer (already `len` random digits).
    pub fn from_digits(digits: String) -> Self {
        Self(digits)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The stream of the number with this digest: `number.<64 hex digits>`.
pub fn number_stream(digest: &NumberDigest) -> StreamId {
    StreamId::new(StreamKind::ProcessingNumber, hex::encode(digest.0))
        .expect("64 hex digits are a valid id")
}

/// What a successful redemption answered; a retry gets it again.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RedemptionAnswer {
    pub case_id: CaseId,
    pub accepted: u16,
    pub dropped: Vec<DroppedKey>,
}

/// The number's state, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NumberState {
    /// Never issued (or unknown to this stream).
    #[default]
    Unissued,
    Issued {
        case_id: CaseId,
        expires_at: UnixMillis,
    },
    Redeemed {
        case_id: CaseId,
        /// The expiry of the life in which it was redeemed: after it, the digest may be
        /// issued again.
        expires_at: UnixMillis,
        idempotency: Option<[u8; 32]>,
        answer: Option<RedemptionAnswer>,
    },
}

/// Commands on a processing number.
#[derive(Clone, Debug)]
pub enum NumberCommand {
    Issue {
        case_id: CaseId,
        centre_id: CentreId,
        digest: NumberDigest,
        now: UnixMillis,
        expires_at: UnixMillis,
    },
    /// Redemption and key upload are one step: the number is consumed only with its keys.
    Redeem {
        digest: NumberDigest,
        now: UnixMillis,
        idempotency: Option<[u8; 32]>,
        /// How many keys the device sent (0: error G).
        submitted: usize,
        /// The keys that passed validation (sealed by the shell) ...
        keys: UploadedKeys,
        accepted: u16,
        /// ... and the ones that did not.
        dropped: Vec<DroppedKey>,
    },
    /// A device that uploaded with this number adds keys later (the revision token of
    /// Google's v1 publish API). The shell has checked the token; the aggregate checks
    /// that it names this number's case and that the revision window is open.
    Revise {
        digest: NumberDigest,
        /// The case the token was minted for.
        case_id: CaseId,
        now: UnixMillis,
        /// How long after the number's expiry revisions are accepted.
        window_ms: u64,
        /// Keys not uploaded before that passed validation (sealed), possibly none.
        keys: UploadedKeys,
        accepted: u16,
        dropped: Vec<DroppedKey>,
    },
}

/// Why a revision is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevisionRefusal {
    /// The token does not belong to this number's redemption.
    InvalidToken,
    /// The revision window is over.
    WindowClosed,
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// The redemption is refused; the reason maps to the app's error A, B, C or G.
    #[error("redemption refused ({})", .0.letter())]
    Rejected(RejectionReason),
    /// A live number already has this digest: draw another number.
    #[error("number already issued")]
    AlreadyIssued,
    #[error("revision refused: {0:?}")]
    Revision(RevisionRefusal),
}

impl NumberState {
    /// The first answer, when `idempotency` repeats the one the number was redeemed with.
    pub fn replayed_answer(&self, idempotency: Option<[u8; 32]>) -> Option<&RedemptionAnswer> {
        match self {
            NumberState::Redeemed {
                idempotency: Some(k),
                answer,
                ..
            } if idempotency == Some(*k) => answer.as_ref(),
            _ => None,
        }
    }
}

impl Aggregate for NumberState {
    type Command = NumberCommand;
    type Error = NumberError;

    fn decide(&self, command: &NumberCommand) -> Result<Vec<DomainEvent>, NumberError> {
        match command {
            NumberCommand::Issue {
                case_id,
                centre_id,
                digest,
                now,
                expires_at,
            } => {
                let live = match self {
                    NumberState::Unissued => false,
                    NumberState::Issued { expires_at, .. } => now < expires_at,
                    // A redeemed number stays out of circulation until its life is over,
                    // so a late retry of its upload is never mistaken for another case.
                    NumberState::Redeemed { expires_at, .. } => now < expires_at,
                };
                if live {
                    return Err(NumberError::AlreadyIssued);
                }
                Ok(vec![DomainEvent::ProcessingNumberIssued(
                    ProcessingNumberIssued {
                        case_id: *case_id,
                        centre_id: *centre_id,
                        digest: *digest,
                        expires_at: *expires_at,
                    },
                )])
            }
            NumberCommand::Redeem {
                digest,
                now,
                idempotency,
                submitted,
                keys,
                accepted,
                dropped,
            } => {
                if self.replayed_answer(*idempotency).is_some() {
                    return Ok(vec![]); // the same request again: nothing new happens
                }
                if *submitted == 0 {
                    return Err(NumberError::Rejected(RejectionReason::NothingToSubmit));
                }
                let case_id = match self {
                    NumberState::Unissued => {
                        return Err(NumberError::Rejected(RejectionReason::Unknown));
                    }
                    NumberState::Redeemed { .. } => {
                        return Err(NumberError::Rejected(RejectionReason::AlreadyUsed));
                    }
                    NumberState::Issued { expires_at, .. } if now >= expires_at => {
                        return Err(NumberError::Rejected(RejectionReason::Expired));
                    }
                    NumberState::Issued { case_id, .. } => *case_id,
                };
                if *accepted == 0 {
                    return Err(NumberError::Rejected(RejectionReason::NoValidKeys));
                }
                Ok(vec![
                    DomainEvent::ProcessingNumberRedeemed(ProcessingNumberRedeemed {
                        case_id,
                        digest: *digest,
                    }),
                    DomainEvent::DiagnosisKeysUploaded(DiagnosisKeysUploaded {
                        case_id,
                        digest: *digest,
                        idempotency: *idempotency,
                        keys: keys.clone(),
                        accepted: *accepted,
                        dropped: dropped.clone(),
                    }),
                ])
            }
            NumberCommand::Revise {
                digest,
                case_id,
                now,
                window_ms,
                keys,
                accepted,
                dropped,
            } => {
                let NumberState::Redeemed {
                    case_id: redeemed,
                    expires_at,
                    ..
                } = self
                else {
                    return Err(NumberError::Revision(RevisionRefusal::InvalidToken));
                };
                if redeemed != case_id {
                    return Err(NumberError::Revision(RevisionRefusal::InvalidToken));
                }
                if now.0 >= expires_at.0.saturating_add(*window_ms) {
                    return Err(NumberError::Revision(RevisionRefusal::WindowClosed));
                }
                if *accepted == 0 {
                    return Ok(vec![]); // nothing new: the keys are already uploaded
                }
                Ok(vec![DomainEvent::DiagnosisKeysUploaded(
                    DiagnosisKeysUploaded {
                        case_id: *case_id,
                        digest: *digest,
                        idempotency: None,
                        keys: keys.clone(),
                        accepted: *accepted,
                        dropped: dropped.clone(),
                    },
                )])
            }
        }
    }

    fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::ProcessingNumberIssued(e) => {
                *self = NumberState::Issued {
                    case_id: e.case_id,
                    expires_at: e.expires_at,
                };
            }
            DomainEvent::ProcessingNumberRedeemed(e) => {
                let expires_at = match self {
                    NumberState::Issued { expires_at, .. } => *expires_at,
                    _ => UnixMillis(0),
                };
                *self = NumberState::Redeemed {
                    case_id: e.case_id,
                    expires_at,
                    idempotency: None,
                    answer: None,
                };
            }
            DomainEvent::DiagnosisKeysUploaded(e) => {
                // The first upload's answer is the one a retry gets; a revision's
                // uploads come later and do not replace it.
                if let NumberState::Redeemed {
                    idempotency,
                    answer: answer @ None,
                    ..
                } = self
                {
                    *idempotency = e.idempotency;
                    *answer = Some(RedemptionAnswer {
                        case_id: e.case_id,
                        accepted: e.accepted,
                        dropped: e.dropped.clone(),
                    });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use hotaru_events::domain::{DiagnosisKey, KeyRejection, UploadedKey};

    use super::*;
    use crate::testing::given;

    const CASE: CaseId = CaseId([1; 16]);
    const CENTRE: CentreId = CentreId(3);
    const DIGEST: NumberDigest = NumberDigest([9; 32]);
    const EXPIRES: UnixMillis = UnixMillis(1_000_000);
    const RETRY: Option<[u8; 32]> = Some([7; 32]);

    fn keys() -> UploadedKeys {
        UploadedKeys::Plain(vec![UploadedKey {
            key: DiagnosisKey {
                tek: hotaru_protocol::Tek::from_bytes([4; 16]),
                rolling_start: hotaru_protocol::EnIntervalNumber(2_650_000),
                rolling_period: 144,
                transmission_risk_level: 4,
                report_type: hotaru_protocol::ReportType::ConfirmedTest,
                days_since_onset: Some(0),
            },
            release_at: UnixMillis(5),
        }])
    }

    fn dropped() -> Vec<DroppedKey> {
        vec![DroppedKey {
            index: 1,
            reason: KeyRejection::TooOld,
        }]
    }

    fn issue(now: u64) -> NumberCommand {
        NumberCommand::Issue {
            case_id: CASE,
            centre_id: CENTRE,
            digest: DIGEST,
            now: UnixMillis(now),
            expires_at: EXPIRES,
        }
    }

    fn issued() -> DomainEvent {
        NumberState::default().decide(&issue(0)).unwrap().remove(0)
    }

    fn redeem(now: u64, submitted: usize, accepted: u16) -> NumberCommand {
        NumberCommand::Redeem {
            digest: DIGEST,
            now: UnixMillis(now),
            idempotency: RETRY,
            submitted,
            keys: keys(),
            accepted,
            dropped: dropped(),
        }
    }

    fn redeemed() -> Vec<DomainEvent> {
        vec![
            DomainEvent::ProcessingNumberRedeemed(ProcessingNumberRedeemed {
                case_id: CASE,
                digest: DIGEST,
            }),
            DomainEvent::DiagnosisKeysUploaded(DiagnosisKeysUploaded {
                case_id: CASE,
                digest: DIGEST,
                idempotency: RETRY,
                keys: keys(),
                accepted: 1,
                dropped: dropped(),
            }),
        ]
    }

    fn history() -> Vec<DomainEvent> {
        std::iter::once(issued()).chain(redeemed()).collect()
    }

    #[test]
    fn a_live_number_is_not_issued_twice() {
        given::<NumberState>(&[]).when(&issue(0)).then(&[issued()]);
        given::<NumberState>(&[issued()])
            .when(&issue(10))
            .then_error(NumberError::AlreadyIssued);
        given::<NumberState>(&history())
            .when(&issue(10))
            .then_error(NumberError::AlreadyIssued);
        // After its life is over, the digest may come round again.
        let mut again = issue(EXPIRES.0);
        if let NumberCommand::Issue { expires_at, .. } = &mut again {
            *expires_at = UnixMillis(EXPIRES.0 * 2);
        }
        assert!(NumberState::replay(&history()).decide(&again).is_ok());
    }

    #[test]
    fn redeeming_a_live_number_consumes_it_together_with_the_keys() {
        given::<NumberState>(&[issued()])
            .when(&redeem(999_999, 2, 1))
            .then(&redeemed());
    }

    #[test]
    fn cocoa_1_1_1_any_number_was_accepted_here_unknown_numbers_are_refused() {
        given::<NumberState>(&[])
            .when(&redeem(0, 1, 1))
            .then_error(NumberError::Rejected(RejectionReason::Unknown));
    }

    #[test]
    fn a_used_number_cannot_be_used_again_but_a_retry_gets_the_first_answer() {
        let mut other = redeem(6, 1, 1);
        if let NumberCommand::Redeem { idempotency, .. } = &mut other {
            *idempotency = Some([8; 32]);
        }
        given::<NumberState>(&history())
            .when(&other)
            .then_error(NumberError::Rejected(RejectionReason::AlreadyUsed));
        // The same idempotency key: no new events, and the first answer is there.
        given::<NumberState>(&history())
            .when(&redeem(7, 2, 1))
            .then(&[]);
        let state = NumberState::replay(&history());
        assert_eq!(
            state.replayed_answer(RETRY),
            Some(&RedemptionAnswer {
                case_id: CASE,
                accepted: 1,
                dropped: dropped()
            })
        );
        assert_eq!(state.replayed_answer(None), None);
    }

    #[test]
    fn an_expired_number_is_refused_at_the_instant_it_expires() {
        given::<NumberState>(&[issued()])
            .when(&redeem(EXPIRES.0, 1, 1))
            .then_error(NumberError::Rejected(RejectionReason::Expired));
        given::<NumberState>(&[issued()])
            .when(&redeem(EXPIRES.0 - 1, 1, 1))
            .then(&redeemed());
    }

    #[test]
    fn an_upload_without_keys_or_without_valid_keys_consumes_nothing() {
        given::<NumberState>(&[issued()])
            .when(&redeem(5, 0, 0))
            .then_error(NumberError::Rejected(RejectionReason::NothingToSubmit));
        given::<NumberState>(&[issued()])
            .when(&redeem(5, 3, 0))
            .then_error(NumberError::Rejected(RejectionReason::NoValidKeys));
    }

    #[test]
    fn only_exactly_eight_ascii_digits_are_well_formed() {
        assert!(ProcessingNumber::parse("12345678", 8).is_ok());
        for bad in [
            "1234567",
            "123456789",
            "1234 678",
            "１２３４５６７８",
            "abcdefgh",
            "",
            "12345678\n",
            " 12345678",
        ] {
            assert_eq!(
                ProcessingNumber::parse(bad, 8),
                Err(NumberError::Rejected(RejectionReason::Format)),
                "{bad:?}"
            );
        }
        assert!(!format!("{:?}", ProcessingNumber::parse("12345678", 8).unwrap()).contains("1234"));
    }

    #[test]
    fn the_number_stream_is_named_by_the_digest() {
        assert_eq!(
            number_stream(&DIGEST).to_string(),
            format!("number.{}", "09".repeat(32))
        );
    }

    fn revise(now: u64, case_id: CaseId, accepted: u16) -> NumberCommand {
        NumberCommand::Revise {
            digest: DIGEST,
            case_id,
            now: UnixMillis(now),
            window_ms: 1_000,
            keys: keys(),
            accepted,
            dropped: vec![],
        }
    }

    fn revised() -> DomainEvent {
        DomainEvent::DiagnosisKeysUploaded(DiagnosisKeysUploaded {
            case_id: CASE,
            digest: DIGEST,
            idempotency: None,
            keys: keys(),
            accepted: 1,
            dropped: vec![],
        })
    }

    #[test]
    fn a_revision_adds_keys_to_the_redeemed_case_within_the_window() {
        given::<NumberState>(&history())
            .when(&revise(10, CASE, 1))
            .then(&[revised()]);
        // Up to the number's expiry plus the window, not after.
        given::<NumberState>(&history())
            .when(&revise(EXPIRES.0 + 999, CASE, 1))
            .then(&[revised()]);
        given::<NumberState>(&history())
            .when(&revise(EXPIRES.0 + 1_000, CASE, 1))
            .then_error(NumberError::Revision(RevisionRefusal::WindowClosed));
        // Nothing new: nothing appended.
        given::<NumberState>(&history())
            .when(&revise(10, CASE, 0))
            .then(&[]);
    }

    #[test]
    fn a_revision_needs_the_redemption_of_the_same_case() {
        given::<NumberState>(&history())
            .when(&revise(10, CaseId([2; 16]), 1))
            .then_error(NumberError::Revision(RevisionRefusal::InvalidToken));
        given::<NumberState>(&[issued()])
            .when(&revise(10, CASE, 1))
            .then_error(NumberError::Revision(RevisionRefusal::InvalidToken));
        given::<NumberState>(&[])
            .when(&revise(10, CASE, 1))
            .then_error(NumberError::Revision(RevisionRefusal::InvalidToken));
    }

    #[test]
    fn a_retry_still_gets_the_first_answer_after_a_revision() {
        let mut h = history();
        h.push(revised());
        let mut state = NumberState::default();
        for e in &h {
            state.apply(e);
        }
        let answer = state.replayed_answer(RETRY).expect("first answer");
        assert_eq!(answer.dropped, dropped());
    }
}
