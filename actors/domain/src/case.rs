//! The confirmed case and the centre's daily quota: the two fences of issuing a number.
//!
//! Issuing touches three streams, each appended at the version its decision was made on
//! (the log refuses an append whose expected version is stale, on every node):
//!
//! 1. `quota.<centre>-<day>` takes one of the centre's numbers for the day
//!    ([`QuotaState`]): its version is the count, so the quota holds across nodes;
//! 2. `number.<digest>` issues the number (`crate::number`), unique among live numbers;
//! 3. `case.<id>` records the number assigned to it ([`CaseState`]), at the version read
//!    before step 1: of two nodes issuing for one case, one appends and the other is
//!    refused, and its number is never shown.
//!
//! A number is redeemable only while its case names it ([`CaseState::admits`]): a number
//! drawn by the loser of a race, or left behind by a crash between steps 2 and 3, cannot be
//! redeemed once the case names another (and the case named none before step 3, which is
//! how cases confirmed before this record existed still redeem theirs). A crash or a lost
//! race after step 1 costs the centre one of its numbers for that day: the quota errs on
//! the side of issuing fewer, never more. A slot is the case's: the case's retries and the
//! losers of a race for it take no second one.

use hotaru_events::domain::{
    CaseBasis, CaseConfirmation, CaseConfirmed, CaseId, CentreId, Day, NumberAssigned, QuotaTaken,
};
use hotaru_events::{DomainEvent, NumberDigest, StreamId, StreamKind};

use crate::Aggregate;

/// The stream of a case: `case.<32 hex digits>`.
pub fn case_stream(id: CaseId) -> StreamId {
    StreamId::new(StreamKind::Case, hex::encode(id.0)).expect("hex is a valid id")
}

/// The stream of a centre's numbers on one day: `quota.<centre>-<day>`.
pub fn quota_stream(centre: CentreId, day: Day) -> StreamId {
    StreamId::new(StreamKind::Quota, format!("{}-{}", centre.0, day.0))
        .expect("digits and a dash are a valid id")
}

/// A case, folded from its stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CaseState {
    #[default]
    Unconfirmed,
    Confirmed {
        centre_id: CentreId,
        basis: CaseBasis,
        /// The number assigned to the case, once one is.
        number: Option<NumberDigest>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaseCommand {
    Confirm {
        case_id: CaseId,
        centre_id: CentreId,
        basis: CaseBasis,
    },
    /// Records the number just issued for the case, on behalf of `centre_id`.
    AssignNumber {
        case_id: CaseId,
        centre_id: CentreId,
        digest: NumberDigest,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CaseError {
    #[error("the case is already confirmed")]
    AlreadyConfirmed,
    #[error("no such case")]
    Unknown,
    #[error("the case belongs to another centre")]
    NotYourCase,
    #[error("the case already has its processing number")]
    AlreadyIssued,
}

impl CaseState {
    /// Whether a number for this case may be issued by `centre` (the checks of
    /// [`CaseCommand::AssignNumber`], made before anything is drawn).
    pub fn may_issue(&self, centre: CentreId) -> Result<(), CaseError> {
        match self {
            CaseState::Unconfirmed => Err(CaseError::Unknown),
            CaseState::Confirmed { centre_id, .. } if *centre_id != centre => {
                Err(CaseError::NotYourCase)
            }
            CaseState::Confirmed {
                number: Some(_), ..
            } => Err(CaseError::AlreadyIssued),
            CaseState::Confirmed { .. } => Ok(()),
        }
    }

    /// Whether the number with `digest`, issued for this case, may be redeemed: the case
    /// names it, or names none (see the module's notes).
    pub fn admits(&self, digest: &NumberDigest) -> bool {
        match self {
            CaseState::Unconfirmed => false,
            CaseState::Confirmed { number, .. } => number.is_none_or(|n| n == *digest),
        }
    }

    /// The confirmation's centre and basis, as a number's assignment repeats them.
    fn confirmation(&self) -> Option<CaseConfirmation> {
        match self {
            CaseState::Unconfirmed => None,
            CaseState::Confirmed {
                centre_id, basis, ..
            } => Some(CaseConfirmation {
                centre_id: *centre_id,
                basis: *basis,
            }),
        }
    }

    pub fn basis(&self) -> Option<CaseBasis> {
        match self {
            CaseState::Unconfirmed => None,
            CaseState::Confirmed { basis, .. } => Some(*basis),
        }
    }
}

impl Aggregate for CaseState {
    type Command = CaseCommand;
    type Error = CaseError;

    fn decide(&self, command: &CaseCommand) -> Result<Vec<DomainEvent>, CaseError> {
        match command {
            CaseCommand::Confirm {
                case_id,
                centre_id,
                basis,
            } => match self {
                CaseState::Unconfirmed => Ok(vec![DomainEvent::CaseConfirmed(CaseConfirmed {
                    case_id: *case_id,
                    centre_id: *centre_id,
                    basis: *basis,
                })]),
                CaseState::Confirmed { .. } => Err(CaseError::AlreadyConfirmed),
            },
            CaseCommand::AssignNumber {
                case_id,
                centre_id,
                digest,
            } => {
                self.may_issue(*centre_id)?;
                Ok(vec![DomainEvent::NumberAssigned(NumberAssigned {
                    case_id: *case_id,
                    digest: *digest,
                    confirmed: self.confirmation(),
                })])
            }
        }
    }

    fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::CaseConfirmed(e) => {
                *self = CaseState::Confirmed {
                    centre_id: e.centre_id,
                    basis: e.basis,
                    number: None,
                };
            }
            DomainEvent::NumberAssigned(e) => {
                if let CaseState::Confirmed { number, .. } = self {
                    *number = Some(e.digest);
                }
            }
            _ => {}
        }
    }

    const RESTORES: bool = true;

    /// A case whose last event is its number's assignment (version 2, which repeats the
    /// confirmation) is that event alone.
    fn restore(last: &DomainEvent) -> Option<Self> {
        match last {
            DomainEvent::NumberAssigned(NumberAssigned {
                digest,
                confirmed: Some(c),
                ..
            }) => Some(CaseState::Confirmed {
                centre_id: c.centre_id,
                basis: c.basis,
                number: Some(*digest),
            }),
            _ => None,
        }
    }
}

/// A centre's numbers of one day, folded from its quota stream: the cases that took one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaState {
    pub taken: std::collections::BTreeSet<CaseId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakeQuota {
    pub centre_id: CentreId,
    pub day: Day,
    pub case_id: CaseId,
    /// The centre's daily quota.
    pub quota: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the daily quota of {0} processing numbers is used up")]
pub struct QuotaExceeded(pub u32);

impl Aggregate for QuotaState {
    type Command = TakeQuota;
    type Error = QuotaExceeded;

    fn decide(&self, c: &TakeQuota) -> Result<Vec<DomainEvent>, QuotaExceeded> {
        if self.taken.contains(&c.case_id) {
            return Ok(vec![]); // the case holds its slot already
        }
        if self.taken.len() >= c.quota as usize {
            return Err(QuotaExceeded(c.quota));
        }
        Ok(vec![DomainEvent::QuotaTaken(QuotaTaken {
            centre_id: c.centre_id,
            day: c.day,
            case_id: c.case_id,
        })])
    }

    fn apply(&mut self, event: &DomainEvent) {
        if let DomainEvent::QuotaTaken(e) = event {
            self.taken.insert(e.case_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;

    const CASE: CaseId = CaseId([1; 16]);
    const CENTRE: CentreId = CentreId(3);
    const OTHER: CentreId = CentreId(4);
    const D1: NumberDigest = NumberDigest([9; 32]);
    const D2: NumberDigest = NumberDigest([8; 32]);

    fn confirmed() -> DomainEvent {
        DomainEvent::CaseConfirmed(CaseConfirmed {
            case_id: CASE,
            centre_id: CENTRE,
            basis: CaseBasis::Sample(Day(100)),
        })
    }

    fn assign(centre: CentreId, digest: NumberDigest) -> CaseCommand {
        CaseCommand::AssignNumber {
            case_id: CASE,
            centre_id: centre,
            digest,
        }
    }

    fn assigned(digest: NumberDigest) -> DomainEvent {
        DomainEvent::NumberAssigned(NumberAssigned {
            case_id: CASE,
            digest,
            confirmed: Some(CaseConfirmation {
                centre_id: CENTRE,
                basis: CaseBasis::Sample(Day(100)),
            }),
        })
    }

    #[test]
    fn an_assignment_restores_the_whole_case_and_an_old_one_does_not() {
        let stream = [confirmed(), assigned(D1)];
        assert_eq!(
            CaseState::restore(&assigned(D1)),
            Some(CaseState::replay(&stream)),
            "the last event alone gives the fold of the stream"
        );
        let DomainEvent::NumberAssigned(v2) = assigned(D1) else {
            unreachable!()
        };
        let v1 = DomainEvent::NumberAssigned(NumberAssigned {
            confirmed: None,
            ..v2
        });
        assert_eq!(CaseState::restore(&v1), None, "upcast from version 1");
        assert_eq!(
            CaseState::replay(&[confirmed(), v1]),
            CaseState::replay(&stream),
            "folded, an old assignment gives the same state"
        );
        assert_eq!(CaseState::restore(&confirmed()), None);
        // So that a load looks at the last commit.
        const { assert!(CaseState::RESTORES) };
    }

    #[test]
    fn a_case_is_confirmed_once() {
        let confirm = CaseCommand::Confirm {
            case_id: CASE,
            centre_id: CENTRE,
            basis: CaseBasis::Sample(Day(100)),
        };
        given::<CaseState>(&[]).when(&confirm).then(&[confirmed()]);
        given::<CaseState>(&[confirmed()])
            .when(&confirm)
            .then_error(CaseError::AlreadyConfirmed);
    }

    #[test]
    fn one_number_per_case_and_only_its_centre_issues_it() {
        given::<CaseState>(&[])
            .when(&assign(CENTRE, D1))
            .then_error(CaseError::Unknown);
        given::<CaseState>(&[confirmed()])
            .when(&assign(OTHER, D1))
            .then_error(CaseError::NotYourCase);
        given::<CaseState>(&[confirmed()])
            .when(&assign(CENTRE, D1))
            .then(&[assigned(D1)]);
        given::<CaseState>(&[confirmed(), assigned(D1)])
            .when(&assign(CENTRE, D2))
            .then_error(CaseError::AlreadyIssued);
    }

    #[test]
    fn only_the_number_the_case_names_is_redeemable() {
        let none = CaseState::replay(&[confirmed()]);
        assert!(
            none.admits(&D1),
            "a case naming none (older logs) admits its number"
        );
        let named = CaseState::replay(&[confirmed(), assigned(D1)]);
        assert!(named.admits(&D1));
        assert!(
            !named.admits(&D2),
            "the loser of a race is never redeemable"
        );
        assert!(!CaseState::Unconfirmed.admits(&D1));
    }

    #[test]
    fn the_quota_counts_the_cases_that_took_a_slot() {
        let take = TakeQuota {
            centre_id: CENTRE,
            day: Day(100),
            case_id: CASE,
            quota: 2,
        };
        let taken = DomainEvent::QuotaTaken(QuotaTaken {
            centre_id: CENTRE,
            day: Day(100),
            case_id: CASE,
        });
        let taken_by = |case: CaseId| {
            DomainEvent::QuotaTaken(QuotaTaken {
                centre_id: CENTRE,
                day: Day(100),
                case_id: case,
            })
        };
        let other = CaseId([2; 16]);
        let third = CaseId([3; 16]);
        given::<QuotaState>(&[])
            .when(&take)
            .then(std::slice::from_ref(&taken));
        given::<QuotaState>(&[taken_by(other)])
            .when(&take)
            .then(std::slice::from_ref(&taken));
        // The case's own slot again (a retry, or the loser of a race for the case).
        given::<QuotaState>(&[taken_by(other), taken.clone()])
            .when(&take)
            .then(&[]);
        given::<QuotaState>(&[taken_by(other), taken_by(third)])
            .when(&take)
            .then_error(QuotaExceeded(2));
    }

    #[test]
    fn the_streams_are_named_by_case_and_by_centre_and_day() {
        assert_eq!(
            case_stream(CASE).to_string(),
            format!("case.{}", "01".repeat(16))
        );
        assert_eq!(quota_stream(CENTRE, Day(100)).to_string(), "quota.3-100");
    }
}
