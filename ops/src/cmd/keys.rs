//! `hotaru keys`: export signing keys and the API keys of health centres and operators.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use hotaru_actors::{RandomIds, SystemClock};
use hotaru_events::Clock;
use hotaru_server::credentials::{self, Role};
use hotaru_server::signing::{add_signing_key, published_keys};

use crate::StoreArgs;

#[derive(Subcommand, Debug)]
pub(crate) enum KeysCommand {
    /// Create the region's first export signing key; prints its public key (PEM).
    Generate(SigningArgs),
    /// Add a new signing key; the previous one keeps signing for the configured overlap.
    Rotate(SigningArgs),
    /// List the region's signing keys (version, valid from, public key fingerprint).
    List(SigningArgs),
    /// API keys of health centres (for the health-centre API).
    #[command(subcommand)]
    Centre(AccountCommand),
    /// API keys of operators (for the operator API).
    #[command(subcommand)]
    Operator(AccountCommand),
}

#[derive(Args, Debug)]
pub(crate) struct SigningArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The export region (Japan's MCC by default).
    #[arg(long, default_value = "440")]
    region: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum AccountCommand {
    /// Create an account; its API key is the last word of the output (shown once).
    Add {
        /// The organisation's label, e.g. "Shinjuku health centre".
        label: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List accounts (never their keys).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke an account's key.
    Revoke {
        id: u32,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn region_id(region: &str) -> anyhow::Result<u32> {
    region
        .parse()
        .with_context(|| format!("region {region:?} must be numeric (an MCC such as 440)"))
}

pub(crate) async fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        KeysCommand::Generate(a) => {
            let log = a.store.open().await?;
            if !published_keys(&log, &a.region).await?.is_empty() {
                anyhow::bail!(
                    "region {} already has a signing key: use `hotaru keys rotate`",
                    a.region
                );
            }
            write!(out, "{}", new_key(&log, &a.region).await?)?;
        }
        KeysCommand::Rotate(a) => {
            let log = a.store.open().await?;
            write!(out, "{}", new_key(&log, &a.region).await?)?;
        }
        KeysCommand::List(a) => {
            let log = a.store.open().await?;
            for k in published_keys(&log, &a.region).await? {
                let fp = ring::digest::digest(&ring::digest::SHA256, &k.public_key.to_spki_der());
                writeln!(
                    out,
                    "v{}\tvalid from {}\tsha256:{}",
                    k.info.key_version,
                    k.valid_from.0,
                    hex::encode(&fp.as_ref()[..8])
                )?;
            }
        }
        KeysCommand::Centre(c) => account(&mut out, Role::Centre, c).await?,
        KeysCommand::Operator(c) => account(&mut out, Role::Operator, c).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Adds a signing key now; returns its public key as PEM.
async fn new_key(log: &hotaru_log::AnyLog, region: &str) -> anyhow::Result<String> {
    let now = SystemClock.now();
    let pk = add_signing_key(log, region, region_id(region)?, now, &RandomIds::default()).await?;
    Ok(pk.to_pem())
}

async fn account(out: &mut impl Write, role: Role, cmd: AccountCommand) -> anyhow::Result<()> {
    match cmd {
        AccountCommand::Add { label, store } => {
            let log = store.open().await?;
            let (a, key) = credentials::add(
                &log,
                role,
                &label,
                &hotaru_protocol::random::OsRandom::new(),
            )
            .await?;
            writeln!(
                out,
                "created account {} ({}); its API key, shown only now: {key}",
                a.id, a.label
            )?;
        }
        AccountCommand::List { store } => {
            let log = store.open().await?;
            for a in credentials::list(&log, role).await? {
                writeln!(
                    out,
                    "{}\t{}\t{}",
                    a.id,
                    if a.revoked { "revoked" } else { "active" },
                    a.label
                )?;
            }
        }
        AccountCommand::Revoke { id, store } => {
            let log = store.open().await?;
            if !credentials::revoke(&log, role, id).await? {
                anyhow::bail!("no account {id}");
            }
            writeln!(out, "revoked account {id}")?;
        }
    }
    Ok(())
}
