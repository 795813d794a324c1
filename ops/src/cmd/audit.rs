//! `hotaru audit`: the privacy and security committee's tool. It replays a log (a sled
//! directory, a JetStream server, or an exported archive), rebuilds and checks everything
//! from the events (`hotaru_audit`), and reports: a summary table, `--json`, and
//! `--report FILE.html`, a self-contained page with the evidence and plots by day.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use hotaru_audit::archive::Archive;
use hotaru_audit::report::{html, table};
use hotaru_audit::{AuditRules, LiveSource, ScanInput, audit};
use hotaru_events::{Clock, Context, UnixMillis};
use hotaru_log::{AnyLog, EventLog};

use crate::StoreArgs;
use crate::progress::bar;

#[derive(Args, Debug)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Audit an archive written by `hotaru log export` instead of a live log.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["data_dir", "nats"])]
    archive: Option<PathBuf>,
    /// Print the report as JSON on stdout (instead of the table).
    #[arg(long)]
    json: bool,
    /// Write a self-contained HTML report for the committee.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// The audit's "now" for the retention check (RFC 3339) [default: now].
    #[arg(long, value_name = "TIME")]
    at: Option<jiff::Timestamp>,
    /// Days after which uploaded keys and number digests must be unreadable.
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u32).range(1..=3650))]
    retention_days: u32,
    /// More files or directories to scan for personal data (the processes' own log files;
    /// on NATS, the nats-server's store directory).
    #[arg(long, value_name = "PATH")]
    scan: Vec<PathBuf>,
}

fn files_under(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if p.is_dir() {
        for e in std::fs::read_dir(p)? {
            files_under(&e?.path(), out)?;
        }
    } else if p.is_file() {
        out.push(p.to_path_buf());
    }
    Ok(())
}

fn scan_paths(paths: &[PathBuf], root: Option<&Path>) -> anyhow::Result<Vec<ScanInput>> {
    let mut files = Vec::new();
    for p in paths {
        files_under(p, &mut files).with_context(|| format!("cannot read {}", p.display()))?;
    }
    Ok(files
        .into_iter()
        .map(|f| {
            let name = root
                .and_then(|r| f.strip_prefix(r).ok())
                .map_or_else(|| f.display().to_string(), |r| r.display().to_string());
            ScanInput::file(name, f)
        })
        .collect())
}

/// The side-store namespaces Hotaru writes (secrets, API-key digests and labels, keys).
const SIDE_NAMESPACES: [&str; 7] = [
    "server",
    hotaru_domain::sealing::DAY_KEYS,
    "signing",
    hotaru_domain::sealing::OPLOG_KEYS,
    "revision-keys",
    "centres",
    "operators",
];

/// On JetStream the stored bytes are read back through the server: every frame of every
/// context, every side-store entry (names and values) and every published zip. The
/// consumers' checkpoints are not reachable this way: pass the nats-server's store
/// directory with --scan to read every byte on its disk.
async fn scan_log(log: &AnyLog) -> anyhow::Result<Vec<ScanInput>> {
    use hotaru_log::SideStore;
    let mut out = Vec::new();
    let mut blobs = Vec::new();
    for ctx in Context::ALL {
        let mut bytes = Vec::new();
        let mut from = 1;
        loop {
            let batch = log.read_all(ctx, from, 8192).await?;
            let Some(last) = batch.last() else { break };
            from = last.position + 1;
            for c in &batch {
                bytes.extend_from_slice(&c.frame);
                for env in c.commit.envelopes().flatten() {
                    if let hotaru_events::DomainEvent::BatchPublished(p) = env.event {
                        blobs.extend(p.blobs);
                    }
                }
            }
        }
        out.push(ScanInput::bytes(format!("stream of {}", ctx.name()), bytes));
    }
    for ns in SIDE_NAMESPACES {
        let mut bytes = Vec::new();
        for key in log.side_keys(ns).await? {
            bytes.extend_from_slice(key.as_bytes());
            bytes.push(0);
            if let Some(v) = log.side_get(ns, &key).await? {
                bytes.extend_from_slice(&v);
                bytes.push(0);
            }
        }
        out.push(ScanInput::bytes(format!("side store {ns}"), bytes));
    }
    for addr in blobs {
        let name = hex::encode(addr);
        if let Some(zip) = log.blob_get(&name).await? {
            out.push(ScanInput::bytes(format!("export {}", &name[..12]), zip));
        }
    }
    Ok(out)
}

pub(crate) async fn run(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let at = a.at.map_or_else(
        || hotaru_actors::SystemClock.now(),
        |t| UnixMillis(t.as_millisecond().max(0) as u64),
    );
    let rules = AuditRules {
        retention_days: a.retention_days,
        ..AuditRules::at(at)
    };
    let heads_pb = std::cell::RefCell::new(None::<(String, indicatif::ProgressBar)>);
    let mut progress = |what: &str, done: u64, total: u64| {
        let mut cur = heads_pb.borrow_mut();
        if cur.as_ref().is_none_or(|(c, _)| c != what) {
            if let Some((_, pb)) = cur.take() {
                pb.finish_and_clear();
            }
            *cur = Some((what.to_owned(), bar(total, what)));
        }
        if let Some((_, pb)) = cur.as_ref() {
            pb.set_position(done);
        }
    };
    let mut extra = scan_paths(&a.scan, None)?;
    let report = match &a.archive {
        Some(file) => {
            let archive = Archive::read_file(file)
                .with_context(|| format!("cannot read the archive {}", file.display()))?;
            let mut scan = vec![ScanInput::file(
                file.file_name().map_or_else(
                    || "the archive".into(),
                    |n| n.to_string_lossy().into_owned(),
                ),
                file.clone(),
            )];
            scan.append(&mut extra);
            audit(&archive, &rules, scan, &mut progress).await?
        }
        None => {
            let log = a.store.open().await?;
            let (kind, mut scan) = match (&log, a.store.data_dir()) {
                (AnyLog::Sled(_), Some(dir)) => (
                    "embedded store",
                    scan_paths(std::slice::from_ref(&dir), Some(&dir))?,
                ),
                _ => ("JetStream", scan_log(&log).await?),
            };
            scan.append(&mut extra);
            let source = LiveSource { log, kind };
            audit(&source, &rules, scan, &mut progress).await?
        }
    };
    if let Some((_, pb)) = heads_pb.borrow_mut().take() {
        pb.finish_and_clear();
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        table(&mut out, &report)?;
    }
    if let Some(path) = &a.report {
        std::fs::write(path, html(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
        if !a.json {
            writeln!(out, "report written to {}", path.display())?;
        }
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
