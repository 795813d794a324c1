//! Given/when/then for aggregates: `given(events).when(command).then(events)`.

use hotaru_events::DomainEvent;

use crate::Aggregate;

pub struct Given<A: Aggregate> {
    state: A,
}

pub struct When<A: Aggregate> {
    result: Result<Vec<DomainEvent>, A::Error>,
}

/// The aggregate after `history`.
pub fn given<A: Aggregate>(history: &[DomainEvent]) -> Given<A> {
    Given {
        state: A::replay(history),
    }
}

impl<A: Aggregate> Given<A> {
    pub fn when(self, command: &A::Command) -> When<A> {
        When {
            result: self.state.decide(command),
        }
    }
}

impl<A: Aggregate> When<A>
where
    A::Error: PartialEq + std::fmt::Debug,
{
    #[track_caller]
    pub fn then(self, expected: &[DomainEvent]) {
        match self.result {
            Ok(events) => assert_eq!(events, expected),
            Err(e) => panic!("expected events, got error {e:?}"),
        }
    }

    #[track_caller]
    pub fn then_error(self, expected: A::Error) {
        match self.result {
            Ok(events) => panic!("expected error {expected:?}, got events {events:?}"),
            Err(e) => assert_eq!(e, expected),
        }
    }
}
