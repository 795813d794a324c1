//! The HTML report of a run: one self-contained page, plots as inline SVG, readable
//! without JavaScript, no external resource.

use std::fmt::Write;

use crate::figures::{Figures, Rate};
use crate::sim::SimConfig;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A bar chart of one series per day.
fn bars(title: &str, values: &[f64], unit: &str) -> String {
    let (w, h, pad) = (560.0, 160.0, 30.0);
    let max = values.iter().copied().fold(0.0f64, f64::max).max(1e-9);
    let n = values.len().max(1) as f64;
    let bw = (w - 2.0 * pad) / n;
    let mut s = format!(
        "<figure><svg viewBox=\"0 0 {w} {}\" width=\"{w}\" role=\"img\" aria-label=\"{}\">",
        h + 40.0,
        esc(title)
    );
    let _ = write!(
        s,
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#555\"/>",
        h + 10.0,
        w - pad,
        h + 10.0
    );
    for (i, v) in values.iter().enumerate() {
        let bh = (v / max) * (h - 20.0);
        let x = pad + i as f64 * bw;
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#2b6cb0\"><title>day {}: {} {}</title></rect>",
            x + 1.0,
            h + 10.0 - bh,
            (bw - 2.0).max(1.0),
            bh,
            i + 1,
            v,
            esc(unit)
        );
        if values.len() <= 31 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                x + bw / 2.0,
                h + 24.0,
                i + 1
            );
        }
    }
    let _ = write!(
        s,
        "<text x=\"{pad}\" y=\"12\" font-size=\"11\">max {max:.2} {}</text></svg><figcaption>{}</figcaption></figure>",
        esc(unit),
        esc(title)
    );
    s
}

fn rates(title: &str, rows: &[Rate]) -> String {
    let mut s = format!(
        "<table><caption>{}</caption><thead><tr><th scope=\"col\">class</th><th scope=\"col\">phone-days</th><th scope=\"col\">notified</th><th scope=\"col\">share</th><th scope=\"col\"></th></tr></thead><tbody>",
        esc(title)
    );
    for r in rows {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1} %</td><td><svg width=\"120\" height=\"10\" aria-hidden=\"true\"><rect width=\"{:.0}\" height=\"10\" fill=\"#2b6cb0\"/></svg></td></tr>",
            esc(&r.class),
            r.contacts,
            r.notified,
            100.0 * r.share,
            120.0 * r.share
        );
    }
    s + "</tbody></table>"
}

/// The page.
pub fn html(f: &Figures, config: &SimConfig) -> String {
    let mut s = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>Hotaru fleet simulation</title><style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:1rem auto;padding:0 1rem;color:#111}table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #bbb;padding:.25rem .5rem;text-align:right}td:first-child,th:first-child{text-align:left}caption{font-weight:bold;text-align:left}figure{margin:1rem 0}.bad{color:#9b1c1c;font-weight:bold}.good{color:#22543d;font-weight:bold}</style></head><body>",
    );
    let _ = write!(
        s,
        "<h1>Fleet simulation</h1><p>{} phones among {} people, {} days, seed {}{}; {} threads.</p>",
        f.devices,
        f.people,
        f.days,
        f.seed,
        f.preset
            .as_deref()
            .map(|p| format!(", preset <code>{}</code>", esc(p)))
            .unwrap_or_default(),
        config.threads
    );
    let class = |ok: bool| if ok { "good" } else { "bad" };
    let _ = write!(
        s,
        "<table><caption>Outcome</caption><tbody>\
         <tr><td>recall (true close contacts notified)</td><td class=\"{}\">{:.3} ({} of {})</td></tr>\
         <tr><td>precision (notifications that were true close contacts)</td><td>{:.3} ({} of {})</td></tr>\
         <tr><td>notified 4 m or further, 10 min or less</td><td>{} of {}</td></tr>\
         <tr><td>registrations completed</td><td>{}</td></tr>\
         <tr><td>keys accepted / of the fleet published</td><td>{} / {}</td></tr>\
         <tr><td>uploads lost</td><td class=\"{}\">{}</td></tr>\
         <tr><td>export files refused by phones</td><td class=\"{}\">{}</td></tr>\
         <tr><td>phones crashed</td><td class=\"{}\">{}</td></tr>\
         <tr><td>days from registration to notification (mean, max)</td><td>{:.1}, {}</td></tr>\
         <tr><td>infected / confirmed</td><td>{} / {}</td></tr>\
         <tr><td>contacts / sightings</td><td>{} / {}</td></tr>\
         <tr><td>wall time</td><td>{:.1} s</td></tr></tbody></table>",
        class(f.recall >= 0.5),
        f.recall,
        f.true_contacts_notified,
        f.true_contacts,
        f.precision,
        f.true_contacts_notified,
        f.notified,
        f.far_and_brief.notified,
        f.far_and_brief.contacts,
        f.registrations,
        f.keys_accepted,
        f.fleet_keys_published,
        class(f.uploads_lost == 0),
        f.uploads_lost,
        class(f.exports_refused == 0),
        f.exports_refused,
        class(f.phones_crashed == 0),
        f.phones_crashed,
        f.days_to_notification_mean,
        f.days_to_notification_max,
        f.infected,
        f.confirmed,
        f.contacts,
        f.sightings,
        f.wall_seconds
    );
    let series = |v: &[u32]| v.iter().map(|x| f64::from(*x)).collect::<Vec<_>>();
    s += &bars(
        "New infections per day (epidemic curve)",
        &series(&f.infections_by_day),
        "infections",
    );
    s += &bars(
        "Registrations per day",
        &series(&f.registrations_by_day),
        "registrations",
    );
    s += &bars(
        "Keys published per day (without padding)",
        &f.keys_by_day.iter().map(|x| *x as f64).collect::<Vec<_>>(),
        "keys",
    );
    s += &bars(
        "Export files published per day",
        &series(&f.files_by_day),
        "files",
    );
    s += &bars(
        "Phones notified per day",
        &series(&f.notifications_by_day),
        "notifications",
    );
    s += &rates(
        "Notified share by distance (closest contact of a phone-day with a registered case)",
        &f.by_distance,
    );
    s += &rates("Recall by setting (true close contacts)", &f.by_setting);
    if !f.http.is_empty() {
        s += "<table><caption>HTTP by route</caption><thead><tr><th scope=\"col\">route</th><th scope=\"col\">requests</th><th scope=\"col\">errors</th><th scope=\"col\">p50 ms</th><th scope=\"col\">p99 ms</th><th scope=\"col\">per second</th></tr></thead><tbody>";
        for r in &f.http {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.1}</td></tr>",
                esc(&r.route),
                r.requests,
                r.errors,
                r.p50_ms,
                r.p99_ms,
                r.per_second
            );
        }
        s += "</tbody></table>";
        for r in &f.http {
            let mut v = vec![0.0; f.days as usize];
            for (d, p) in &r.p99_by_day {
                if let Some(x) = v.get_mut(*d as usize) {
                    *x = *p;
                }
            }
            s += &bars(&format!("p99 latency by day: {}", r.route), &v, "ms");
        }
    }
    s += "<p>The world, its sources and what the figures mean: docs/SIMULATION.md.</p></body></html>";
    s
}
