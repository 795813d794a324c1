//! The committee's report as a person reads it: a table for the terminal and a
//! self-contained HTML page (inline SVG charts; no script, no fonts, nothing fetched).

use std::io::Write;

use crate::{Finding, Report};

/// The report as the terminal shows it: one line per check, its evidence and findings,
/// then the figures by day.
pub fn table(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
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
            "\n{:<12} {:>8} {:>13} {:>8} {:>15} {:>8}",
            "day", "issued", "registrations", "refused", "keys published", "batches"
        )?;
        for d in &r.days {
            writeln!(
                out,
                "{:<12} {:>8} {:>13} {:>8} {:>15} {:>8}",
                d.date, d.numbers_issued, d.registrations, d.refusals, d.keys_published, d.batches
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

fn describe(f: &Finding) -> String {
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
pub fn html(r: &Report) -> String {
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
        type Pick = fn(&crate::DayFigures) -> u64;
        let plots: [(&str, Pick); 5] = [
            ("Processing numbers issued", |d| d.numbers_issued),
            ("Registrations", |d| d.registrations),
            ("Redemptions refused", |d| d.refusals),
            ("Keys published", |d| d.keys_published),
            ("Batches", |d| d.batches),
        ];
        for (title, pick) in plots {
            let series: Vec<(String, u64)> =
                r.days.iter().map(|d| (d.date.clone(), pick(d))).collect();
            h.push_str(&bars(title, &series));
        }
        h.push_str("<table><tr><th>day</th><th>numbers issued</th><th>registrations</th><th>refused</th><th>keys published</th><th>batches</th></tr>");
        for d in &r.days {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.date),
                d.numbers_issued,
                d.registrations,
                d.refusals,
                d.keys_published,
                d.batches
            ));
        }
        h.push_str("</table></section>");
    }
    h.push_str("</body></html>\n");
    h
}
