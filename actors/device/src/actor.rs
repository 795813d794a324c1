//! The agent as an actix actor: a thin shell that owns one [`Agent`] and its radio, and
//! handles one message at a time (a check and a registration never interleave).

use std::sync::Arc;

use actix::prelude::*;
use hotaru_events::device::{GuidanceAnswer, GuidanceShown, RegistrationOutcome};
use hotaru_events::domain::{Day, LogId};
use hotaru_log::{EventLog, SideStore};
use tokio::sync::Mutex;

use crate::agent::{Agent, AgentError, CheckReport, Status};
use crate::client::GatewayClient;
use crate::radio::Radio;

/// One device agent and its radio. The mutex is the actor's own (held across the
/// handler's await so that messages are handled one after the other); nothing else
/// reaches the agent.
pub struct DeviceActor<L, S> {
    agent: Arc<Mutex<Agent<L, S>>>,
    radio: Arc<Mutex<Box<dyn Radio>>>,
    client: GatewayClient,
}

impl<L: EventLog, S: SideStore> DeviceActor<L, S> {
    pub fn new(agent: Agent<L, S>, radio: Box<dyn Radio>, client: GatewayClient) -> Self {
        Self {
            agent: Arc::new(Mutex::new(agent)),
            radio: Arc::new(Mutex::new(radio)),
            client,
        }
    }
}

impl<L: EventLog + Unpin, S: SideStore + Unpin> Actor for DeviceActor<L, S> {
    type Context = Context<Self>;
}

macro_rules! handle {
    ($msg:ty, $out:ty, |$m:ident, $agent:ident, $radio:ident, $client:ident| $body:expr) => {
        impl<L: EventLog + Unpin, S: SideStore + Unpin> Handler<$msg> for DeviceActor<L, S> {
            type Result = AtomicResponse<Self, Result<$out, AgentError>>;

            fn handle(&mut self, $m: $msg, _: &mut Self::Context) -> Self::Result {
                let agent = self.agent.clone();
                let radio = self.radio.clone();
                let $client = self.client.clone();
                AtomicResponse::new(Box::pin(
                    async move {
                        #[allow(unused_mut)]
                        let mut $agent = agent.lock().await;
                        let mut $radio = radio.lock().await;
                        let _ = &mut $radio;
                        $body
                    }
                    .into_actor(self),
                ))
            }
        }
    };
}

/// First start with the user's consent, as model `0`.
#[derive(Message)]
#[rtype(result = "Result<hotaru_events::domain::DeviceId, AgentError>")]
pub struct Consent(pub u16);

/// The OS's switches.
#[derive(Message)]
#[rtype(result = "Result<(), AgentError>")]
pub struct SetRadio {
    pub bluetooth_on: bool,
    pub exposure_logging_on: bool,
}

/// A tick of the radio: advertise what is due, record the scans the radio took.
#[derive(Message)]
#[rtype(result = "Result<usize, AgentError>")]
pub struct RadioTick;

/// The daily exposure check.
#[derive(Message)]
#[rtype(result = "Result<CheckReport, AgentError>")]
pub struct Check;

/// Registration with a processing number and onset date.
#[derive(Message)]
#[rtype(result = "Result<RegistrationOutcome, AgentError>")]
pub struct Register {
    pub number: String,
    pub onset: Day,
}

#[derive(Message)]
#[rtype(result = "Result<Vec<GuidanceShown>, AgentError>")]
pub struct Guidance {
    pub answers: Vec<GuidanceAnswer>,
    pub prefecture: Option<u8>,
}

#[derive(Message)]
#[rtype(result = "Result<Status, AgentError>")]
pub struct GetStatus;

/// The operation log, for the user to review.
#[derive(Message)]
#[rtype(result = "Result<String, AgentError>")]
pub struct ReviewLog;

/// Send the reviewed log (the user pressed "send").
#[derive(Message)]
#[rtype(result = "Result<LogId, AgentError>")]
pub struct SendLog(pub String);

#[derive(Message)]
#[rtype(result = "Result<(), AgentError>")]
pub struct Withdraw;

handle!(
    Consent,
    hotaru_events::domain::DeviceId,
    |m, agent, radio, _c| agent.consent(m.0).await
);
handle!(SetRadio, (), |m, agent, radio, _c| {
    agent
        .set_radio(m.bluetooth_on, m.exposure_logging_on)
        .await?;
    let adv = agent.advertisement().await?;
    radio.advertise(adv);
    Ok(())
});
handle!(RadioTick, usize, |_m, agent, radio, _c| {
    let adv = agent.advertisement().await?;
    radio.advertise(adv);
    let scans = radio.scans();
    agent.record_scans(&scans, None).await
});
handle!(Check, CheckReport, |_m, agent, radio, client| agent
    .check(&client)
    .await);
handle!(Register, RegistrationOutcome, |m, agent, radio, client| {
    agent.register(&client, &m.number, m.onset).await
});
handle!(Guidance, Vec<GuidanceShown>, |m, agent, radio, _c| agent
    .guidance(&m.answers, m.prefecture)
    .await);
handle!(GetStatus, Status, |_m, agent, radio, _c| Ok(agent.status()));
handle!(ReviewLog, String, |_m, agent, radio, _c| agent
    .operation_log()
    .await);
handle!(SendLog, LogId, |m, agent, radio, client| agent
    .send_log(&client, &m.0)
    .await);
handle!(Withdraw, (), |_m, agent, radio, _c| {
    agent.withdraw().await?;
    radio.advertise(None);
    Ok(())
});
