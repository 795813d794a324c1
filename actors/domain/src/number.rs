//! The processing number: issued for a confirmed case, redeemed once with the case's keys.
//!
//! This is the backbone's skeleton of the aggregate; the server-domain issue adds the
//! quota, attempt limits and key validation around it.

use std::fmt;

use hotaru_events::domain::{
    CaseId, CentreId, DiagnosisKey, DiagnosisKeysUploaded, ProcessingNumberIssued,
    ProcessingNumberRedeemed, RejectionReason,
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

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The stream of the number with this digest: `number.<64 hex digits>`.
pub fn number_stream(digest: &NumberDigest) -> StreamId {
    StreamId::new(StreamKind::ProcessingNumber, hex_digest(digest))
        .expect("64 hex digits are a valid id")
}

fn hex_digest(d: &NumberDigest) -> String {
    d.0.iter().map(|b| format!("{b:02x}")).collect()
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
    },
}

/// Commands on a processing number.
#[derive(Clone, Debug)]
pub enum NumberCommand {
    Issue {
        case_id: CaseId,
        centre_id: CentreId,
        digest: NumberDigest,
        expires_at: UnixMillis,
    },
    /// Redemption and key upload are one step: the number is consumed only with its keys.
    Redeem {
        digest: NumberDigest,
        now: UnixMillis,
        keys: Vec<DiagnosisKey>,
    },
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// The redemption is refused; the reason maps to the app's error A, B or G.
    #[error("redemption refused ({})", .0.letter())]
    Rejected(RejectionReason),
    /// A live or used number already has this digest: draw another number.
    #[error("number already issued")]
    AlreadyIssued,
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
                expires_at,
            } => match self {
                NumberState::Unissued => Ok(vec![DomainEvent::ProcessingNumberIssued(
                    ProcessingNumberIssued {
                        case_id: *case_id,
                        centre_id: *centre_id,
                        digest: *digest,
                        expires_at: *expires_at,
                    },
                )]),
                NumberState::Issued { .. } | NumberState::Redeemed { .. } => {
                    Err(NumberError::AlreadyIssued)
                }
            },
            NumberCommand::Redeem { digest, now, keys } => {
                if keys.is_empty() {
                    return Err(NumberError::Rejected(RejectionReason::NothingToSubmit));
                }
                match self {
                    NumberState::Unissued => Err(NumberError::Rejected(RejectionReason::Unknown)),
                    NumberState::Redeemed { .. } => {
                        Err(NumberError::Rejected(RejectionReason::AlreadyUsed))
                    }
                    NumberState::Issued { expires_at, .. } if now >= expires_at => {
                        Err(NumberError::Rejected(RejectionReason::Expired))
                    }
                    NumberState::Issued { case_id, .. } => Ok(vec![
                        DomainEvent::ProcessingNumberRedeemed(ProcessingNumberRedeemed {
                            case_id: *case_id,
                            digest: *digest,
                        }),
                        DomainEvent::DiagnosisKeysUploaded(DiagnosisKeysUploaded {
                            case_id: *case_id,
                            digest: *digest,
                            keys: keys.clone(),
                        }),
                    ]),
                }
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
                *self = NumberState::Redeemed { case_id: e.case_id }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;

    const CASE: CaseId = CaseId([1; 16]);
    const CENTRE: CentreId = CentreId(3);
    const DIGEST: NumberDigest = NumberDigest([9; 32]);
    const EXPIRES: UnixMillis = UnixMillis(1_000_000);

    fn key() -> DiagnosisKey {
        DiagnosisKey {
            key_data: [4; 16],
            rolling_start_interval: 2_650_000,
            rolling_period: 144,
            transmission_risk: 4,
            report_type: 1,
            days_since_onset: 0,
        }
    }

    fn issue() -> NumberCommand {
        NumberCommand::Issue {
            case_id: CASE,
            centre_id: CENTRE,
            digest: DIGEST,
            expires_at: EXPIRES,
        }
    }

    fn issued() -> DomainEvent {
        NumberState::default().decide(&issue()).unwrap().remove(0)
    }

    fn redeem(now: u64, keys: Vec<DiagnosisKey>) -> NumberCommand {
        NumberCommand::Redeem {
            digest: DIGEST,
            now: UnixMillis(now),
            keys,
        }
    }

    #[test]
    fn a_number_is_issued_once() {
        given::<NumberState>(&[]).when(&issue()).then(&[issued()]);
        given::<NumberState>(&[issued()])
            .when(&issue())
            .then_error(NumberError::AlreadyIssued);
    }

    #[test]
    fn redeeming_a_live_number_consumes_it_together_with_the_keys() {
        given::<NumberState>(&[issued()])
            .when(&redeem(999_999, vec![key()]))
            .then(&[
                DomainEvent::ProcessingNumberRedeemed(ProcessingNumberRedeemed {
                    case_id: CASE,
                    digest: DIGEST,
                }),
                DomainEvent::DiagnosisKeysUploaded(DiagnosisKeysUploaded {
                    case_id: CASE,
                    digest: DIGEST,
                    keys: vec![key()],
                }),
            ]);
    }

    #[test]
    fn cocoa_1_1_1_any_number_was_accepted_here_unknown_numbers_are_refused() {
        given::<NumberState>(&[])
            .when(&redeem(0, vec![key()]))
            .then_error(NumberError::Rejected(RejectionReason::Unknown));
    }

    #[test]
    fn a_used_number_cannot_be_used_again() {
        let events = NumberState::replay(&[issued()])
            .decide(&redeem(5, vec![key()]))
            .unwrap();
        let history: Vec<_> = std::iter::once(issued()).chain(events).collect();
        given::<NumberState>(&history)
            .when(&redeem(6, vec![key()]))
            .then_error(NumberError::Rejected(RejectionReason::AlreadyUsed));
    }

    #[test]
    fn an_expired_number_is_refused_at_the_instant_it_expires() {
        given::<NumberState>(&[issued()])
            .when(&redeem(EXPIRES.0, vec![key()]))
            .then_error(NumberError::Rejected(RejectionReason::Expired));
    }

    #[test]
    fn an_upload_without_keys_consumes_nothing() {
        given::<NumberState>(&[issued()])
            .when(&redeem(5, vec![]))
            .then_error(NumberError::Rejected(RejectionReason::NothingToSubmit));
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
}
