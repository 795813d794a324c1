//! `hotaru gaen`: tools for people who debug GAEN: derive RPIs and AEMs from a TEK,
//! inspect and verify export files.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use hotaru_protocol::export::{self, PublicKey, ReadLimits, SignedExport};
use hotaru_protocol::{EnIntervalNumber, Metadata, Tek};

#[derive(Subcommand, Debug)]
pub(crate) enum GaenCommand {
    /// Print the RPI and AEM of a TEK for one or more intervals: interval, RPI, AEM.
    Rpi(RpiArgs),
    /// Inspect or verify export files (export.bin + export.sig in a zip).
    #[command(subcommand)]
    Export(ExportCommand),
}

#[derive(Args, Debug)]
pub(crate) struct RpiArgs {
    /// The Temporary Exposure Key, 32 hex digits.
    #[arg(long, value_name = "HEX", value_parser = parse_tek)]
    tek: Tek,
    /// The first ENIntervalNumber (unix seconds / 600).
    #[arg(long, value_name = "N")]
    interval: u32,
    /// How many consecutive intervals (1..=1008, a week).
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1008))]
    count: u32,
    /// The 4 metadata bytes the AEM encrypts, 8 hex digits (version 1.0, tx power 0 dBm by
    /// default).
    #[arg(long, value_name = "HEX", default_value = "40000000", value_parser = parse_metadata)]
    metadata: Metadata,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ExportCommand {
    /// Print the header, region, time range, key count, sortedness and signature infos.
    Inspect {
        /// The export zip.
        file: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 only when a signature of the file verifies with the public key.
    Verify {
        /// The export zip.
        file: PathBuf,
        /// The signing key's public half: a "BEGIN PUBLIC KEY" PEM file (P-256).
        #[arg(long, value_name = "PEM")]
        public_key: PathBuf,
    },
}

fn parse_tek(s: &str) -> Result<Tek, String> {
    let b: [u8; 16] = hex::decode(s.trim())
        .map_err(|e| format!("not hex: {e}"))?
        .try_into()
        .map_err(|v: Vec<u8>| format!("a TEK is 16 bytes (32 hex digits), got {}", v.len()))?;
    Ok(Tek::from_bytes(b))
}

fn parse_metadata(s: &str) -> Result<Metadata, String> {
    let b: [u8; 4] = hex::decode(s.trim())
        .map_err(|e| format!("not hex: {e}"))?
        .try_into()
        .map_err(|v: Vec<u8>| format!("metadata is 4 bytes (8 hex digits), got {}", v.len()))?;
    Ok(Metadata(b))
}

pub(crate) fn run(cmd: GaenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GaenCommand::Rpi(a) => rpi(a),
        GaenCommand::Export(ExportCommand::Inspect { file, json }) => inspect(&file, json),
        GaenCommand::Export(ExportCommand::Verify { file, public_key }) => {
            verify(&file, &public_key)
        }
    }
}

fn rpi(a: RpiArgs) -> anyhow::Result<ExitCode> {
    let (rpik, aemk) = (a.tek.rpik(), a.tek.aemk());
    let mut out = std::io::stdout().lock();
    for i in 0..a.count {
        let interval = EnIntervalNumber(a.interval.checked_add(i).context("interval overflows")?);
        let rpi = rpik.rpi(interval);
        let aem = aemk.encrypt(&rpi, a.metadata);
        writeln!(
            out,
            "{} {} {}",
            interval.0,
            hex::encode(rpi.0),
            hex::encode(aem.0)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn read(file: &std::path::Path) -> anyhow::Result<SignedExport> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    export::read_zip(&bytes, ReadLimits::default())
        .with_context(|| format!("{} is not a valid export file", file.display()))
}

fn rfc3339(unix_seconds: u64) -> String {
    i64::try_from(unix_seconds)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(
            || format!("{unix_seconds} (out of range)"),
            |t| t.to_string(),
        )
}

fn inspect(file: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let e = read(file)?;
    let f = &e.file;
    let header = String::from_utf8_lossy(&e.export_bin[..16]).into_owned();
    let sigs: Vec<serde_json::Value> = e
        .signatures
        .iter()
        .map(|s| {
            serde_json::json!({
                "verificationKeyId": s.info.verification_key_id,
                "verificationKeyVersion": s.info.verification_key_version,
                "signatureAlgorithm": s.info.signature_algorithm,
                "batchNum": s.batch_num,
                "batchSize": s.batch_size,
                "signatureBytes": s.signature.len(),
            })
        })
        .collect();
    let infos: Vec<serde_json::Value> = f
        .signature_infos
        .iter()
        .map(|s| serde_json::to_value(s).expect("plain struct"))
        .collect();
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "header": header,
            "region": f.region,
            "startTimestamp": f.start_timestamp,
            "endTimestamp": f.end_timestamp,
            "start": rfc3339(f.start_timestamp),
            "end": rfc3339(f.end_timestamp),
            "batchNum": f.batch_num,
            "batchSize": f.batch_size,
            "keys": f.keys.len(),
            "revisedKeys": f.revised_keys.len(),
            "keysSorted": f.keys_sorted(),
            "exportBinBytes": e.export_bin.len(),
            "signatureInfos": infos,
            "signatures": sigs,
        });
        writeln!(out, "{v}")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "header:       {header:?}")?;
    writeln!(out, "region:       {}", f.region)?;
    writeln!(
        out,
        "time range:   {} .. {}",
        rfc3339(f.start_timestamp),
        rfc3339(f.end_timestamp)
    )?;
    writeln!(out, "batch:        {} of {}", f.batch_num, f.batch_size)?;
    writeln!(
        out,
        "keys:         {} (revised: {})",
        f.keys.len(),
        f.revised_keys.len()
    )?;
    writeln!(
        out,
        "sorted:       {}",
        if f.keys_sorted() {
            "yes, by key bytes"
        } else {
            "NO"
        }
    )?;
    writeln!(out, "export.bin:   {} bytes", e.export_bin.len())?;
    for s in &f.signature_infos {
        writeln!(
            out,
            "signature info (export.bin): key id {:?}, version {:?}, algorithm {}",
            s.verification_key_id, s.verification_key_version, s.signature_algorithm
        )?;
    }
    for s in &e.signatures {
        writeln!(
            out,
            "signature (export.sig): key id {:?}, version {:?}, algorithm {}, batch {} of {}, {} bytes",
            s.info.verification_key_id,
            s.info.verification_key_version,
            s.info.signature_algorithm,
            s.batch_num,
            s.batch_size,
            s.signature.len()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(file: &std::path::Path, public_key: &std::path::Path) -> anyhow::Result<ExitCode> {
    let pem = std::fs::read_to_string(public_key)
        .with_context(|| format!("cannot read {}", public_key.display()))?;
    let key = PublicKey::from_pem(&pem)
        .with_context(|| format!("{} holds no usable public key", public_key.display()))?;
    let e = read(file)?;
    match e.verify_with(&key) {
        Ok(info) => {
            writeln!(
                std::io::stdout().lock(),
                "ok: signature by key id {:?}, version {:?} verifies",
                info.verification_key_id,
                info.verification_key_version
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            writeln!(std::io::stdout().lock(), "FAILED: {err}")?;
            Ok(ExitCode::from(1))
        }
    }
}
