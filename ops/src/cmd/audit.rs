//! `hotaru audit`: the privacy and security committee's tool. It replays a log (a sled
//! directory, a JetStream server, or an exported archive), rebuilds and checks everything
//! from the events (`hotaru_server::audit`), and reports: a summary table, `--json`, and
//! `--report FILE.html`, a self-contained page with the evidence and plots by day.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use hotaru_events::{Clock, Context, UnixMillis};
use hotaru_log::{AnyLog, EventLog};
use hotaru_server::audit::archive::Archive;
use hotaru_server::audit::{AuditRules, LiveSource, Report, ScanInput, audit};

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

fn table(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    writeln!(out, "audit of {} as of {}", r.source, r.at)?;
    writeln!(out, "{:<15} {:<6}  evidence", "check", "result")?;
    for c in &r.checks {
        writeln!(
            out,
            "{:<15} {:<6}  {}",
            c.name,
            if c.passed { "pass" } else { "FAIL" },
            c.evidence.first().map_or("", String::as_str)
        )?;
        for e in c.evidence.iter().skip(1) {
            writeln!(out, "{:<23} {e}", "")?;
        }
        for f in &c.findings {
            writeln!(out, "{:<23} ! {}", "", describe(f))?;
        }
    }
    if !r.days.is_empty() {
        writeln!(
            out,
            "\n{:<12} {:>8} {:>13} {:>15} {:>8}",
            "day", "issued", "registrations", "keys published", "batches"
        )?;
        for d in &r.days {
            writeln!(
                out,
                "{:<12} {:>8} {:>13} {:>15} {:>8}",
                d.date, d.numbers_issued, d.registrations, d.keys_published, d.batches
            )?;
        }
    }
    writeln!(
        out,
        "\n{}",
        if r.passed {
            "every check passed"
        } else {
            "AUDIT FAILED"
        }
    )
}

fn describe(f: &hotaru_server::audit::Finding) -> String {
    let mut s = f.what.clone();
    if let (Some(c), Some(p)) = (&f.context, f.position) {
        s.push_str(&format!(" [{c} position {p}"));
        if let Some(st) = &f.stream {
            s.push_str(&format!(", stream {st}"));
        }
        if !f.event_types.is_empty() {
            s.push_str(&format!(", {}", f.event_types.join("+")));
        }
        s.push(']');
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A bar chart of one figure by day, as inline SVG (no JavaScript, no fonts to load).
fn bars(title: &str, days: &[(String, u64)]) -> String {
    let (w, h, pad) = (640.0, 180.0, 30.0);
    let max = days.iter().map(|d| d.1).max().unwrap_or(0).max(1) as f64;
    let n = days.len().max(1) as f64;
    let bw = (w - 2.0 * pad) / n;
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#555\"/>\
         <text x=\"2\" y=\"{}\" font-size=\"10\">{max}</text>",
        esc(title),
        esc(title),
        h - pad,
        w - pad,
        h - pad,
        pad - 4.0
    );
    for (i, (date, v)) in days.iter().enumerate() {
        let bh = (*v as f64 / max) * (h - 2.0 * pad);
        let x = pad + i as f64 * bw;
        svg.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#2b6cb0\"><title>{} {v}</title></rect>",
            x + bw * 0.1,
            h - pad - bh,
            bw * 0.8,
            esc(date)
        ));
        if days.len() <= 31 {
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"9\" text-anchor=\"middle\">{}</text>",
                x + bw / 2.0,
                h - pad + 12.0,
                esc(date.get(5..).unwrap_or(date))
            ));
        }
    }
    svg.push_str("</svg></figure>");
    svg
}

/// The committee's report: self-contained HTML.
pub(crate) fn html(r: &Report) -> String {
    let mut h = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Hotaru audit</title>\
         <style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}\
         .pass{color:#276749}.fail{color:#c53030}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}th:first-child,td:first-child{text-align:left}\
         li.finding{color:#c53030}</style></head><body>",
    );
    h.push_str(&format!(
        "<h1>Hotaru audit: <span class=\"{}\">{}</span></h1><p>Audit of {} as of {}: {} events replayed, {} bytes scanned.</p>",
        if r.passed { "pass" } else { "fail" },
        if r.passed { "every check passed" } else { "FAILED" },
        esc(&r.source),
        esc(&r.at),
        r.events,
        r.bytes_scanned
    ));
    for c in &r.checks {
        h.push_str(&format!(
            "<section><h2>{}: <span class=\"{}\">{}</span></h2><ul>",
            esc(c.title),
            if c.passed { "pass" } else { "fail" },
            if c.passed { "pass" } else { "FAIL" }
        ));
        for e in &c.evidence {
            h.push_str(&format!("<li>{}</li>", esc(e)));
        }
        for f in &c.findings {
            h.push_str(&format!("<li class=\"finding\">{}</li>", esc(&describe(f))));
        }
        h.push_str("</ul></section>");
    }
    h.push_str("<section><h2>The log</h2><table><tr><th>context</th><th>commits</th><th>events</th><th>streams</th><th>head</th></tr>");
    for c in &r.contexts {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&c.context),
            c.commits,
            c.events,
            c.streams,
            esc(&c.head_hash)
        ));
    }
    h.push_str("</table></section>");
    if !r.days.is_empty() {
        h.push_str("<section><h2>By day</h2>");
        type Pick = fn(&hotaru_server::audit::DayFigures) -> u64;
        let plots: [(&str, Pick); 4] = [
            ("Processing numbers issued", |d| d.numbers_issued),
            ("Registrations", |d| d.registrations),
            ("Keys published", |d| d.keys_published),
            ("Batches", |d| d.batches),
        ];
        for (title, pick) in plots {
            let series: Vec<(String, u64)> =
                r.days.iter().map(|d| (d.date.clone(), pick(d))).collect();
            h.push_str(&bars(title, &series));
        }
        h.push_str("<table><tr><th>day</th><th>numbers issued</th><th>registrations</th><th>keys published</th><th>batches</th></tr>");
        for d in &r.days {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.date),
                d.numbers_issued,
                d.registrations,
                d.keys_published,
                d.batches
            ));
        }
        h.push_str("</table></section>");
    }
    h.push_str("</body></html>\n");
    h
}
