//! timeline.svg: one row per variant and client, time on x, a green tick per answered
//! request and a red one per failed request, a vertical line where the old pods were removed.
//! lb-503.svg: the load balancer's 503s per second, a panel per variant.
//! Hand-written SVG: a few dozen lines, no dependency, opens in any browser.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::clients::{ClientKind, ClientLog};
use super::report::Report;

const LABEL_W: f64 = 230.0;
const PLOT_W: f64 = 860.0;
const ROW_H: f64 = 22.0;
const GROUP_GAP: f64 = 12.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 46.0;
const OK: &str = "#2e9e44";
const FAIL: &str = "#d62728";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The time axis of both plots: the longest variant, at least the run's duration.
fn span_s(report: &Report) -> f64 {
    report
        .variants
        .iter()
        .map(|v| v.milestones.end)
        .fold(report.duration_s, f64::max)
        .max(1.0)
}

/// An SVG document `height` high, white, with `title` on top (plain text, escaped).
fn svg_open(height: f64, title: &str) -> String {
    let width = LABEL_W + PLOT_W + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LABEL_W}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        esc(title)
    );
    s
}

/// The SVG for a report and its samples (variant -> client -> log).
pub fn timeline(
    report: &Report,
    samples: &BTreeMap<String, BTreeMap<ClientKind, ClientLog>>,
) -> String {
    let span = span_s(report);
    let x = |t: f64| LABEL_W + (t.clamp(0.0, span) / span) * PLOT_W;
    let rows: usize = report.variants.iter().map(|v| v.clients.len().max(1)).sum();
    let groups = report.variants.len();
    let height = TOP + rows as f64 * ROW_H + groups as f64 * GROUP_GAP + BOTTOM;
    let mut s = svg_open(
        height,
        "ctreap lab: requests over time (green answered, red failed; dashed lines: the old pods die; blue: a hostPort replacement's ADD)",
    );
    let _ = writeln!(
        s,
        r##"<text x="{LABEL_W}" y="36" fill="#555">NAT {} · kube-proxy sync delay {:.1}s · kernel {}</text>"##,
        esc(&report.nat),
        report.sync_delay_s,
        esc(&report.kernel)
    );
    let mut y = TOP;
    for v in &report.variants {
        let group_top = y;
        let logs = samples.get(&v.variant);
        if !v.ran || v.clients.is_empty() {
            let _ = writeln!(
                s,
                r#"<text x="8" y="{:.1}" font-weight="bold">{}</text><text x="{LABEL_W}" y="{:.1}" fill="{FAIL}">did not run: {}</text>"#,
                y + 15.0,
                esc(&v.variant),
                y + 15.0,
                esc(v.error.as_deref().unwrap_or("unknown error"))
            );
            y += ROW_H + GROUP_GAP;
            continue;
        }
        for c in &v.clients {
            let _ = writeln!(
                s,
                r##"<text x="8" y="{:.1}"><tspan font-weight="bold">{}</tspan> {} <tspan fill="#555" font-size="10">{} failed / {}</tspan></text>"##,
                y + 15.0,
                esc(&v.variant),
                c.client,
                c.failed,
                c.sent
            );
            let _ = writeln!(
                s,
                r##"<rect x="{LABEL_W}" y="{:.1}" width="{PLOT_W}" height="{:.1}" fill="#f4f4f4"/>"##,
                y + 2.0,
                ROW_H - 4.0
            );
            if let Some(log) = logs.and_then(|l| l.get(&c.client)) {
                let mut ok = String::new();
                let mut bad = String::new();
                for smp in &log.samples {
                    if smp.outcome.is_ok() {
                        let _ = write!(ok, "M{:.1} {:.1}v{:.1}", x(smp.t), y + 4.0, ROW_H - 8.0);
                    } else {
                        // A failure covers the time the client waited for it (its timeout).
                        let (x0, x1) = (x(smp.t), x(smp.end()));
                        let _ = write!(
                            bad,
                            "M{x0:.1} {:.1}h{:.1}v{:.1}h{:.1}z",
                            y + 4.0,
                            (x1 - x0).max(1.2),
                            ROW_H - 8.0,
                            -(x1 - x0).max(1.2)
                        );
                    }
                }
                if !ok.is_empty() {
                    let _ = writeln!(s, r#"<path d="{ok}" stroke="{OK}" stroke-width="1.2"/>"#);
                }
                // Failures last, so that they stay visible between dense green ticks.
                if !bad.is_empty() {
                    let _ = writeln!(
                        s,
                        r#"<path d="{bad}" fill="{FAIL}" stroke="{FAIL}" stroke-width="0.6"/>"#
                    );
                }
            }
            y += ROW_H;
        }
        // Later deaths (the old pods die one after the other): thin grey lines.
        for d in v.pod_deaths.iter().skip(1) {
            let dx = x(d.died);
            let _ = writeln!(
                s,
                r##"<line x1="{dx:.1}" y1="{group_top:.1}" x2="{dx:.1}" y2="{y:.1}" stroke="#777" stroke-width="1" stroke-dasharray="2 3"/>"##
            );
        }
        let rx = x(v.milestones.old_pods_removed);
        let _ = writeln!(
            s,
            r#"<line x1="{rx:.1}" y1="{:.1}" x2="{rx:.1}" y2="{:.1}" stroke="black" stroke-width="1.5" stroke-dasharray="4 3"/>"#,
            group_top, y
        );
        // The hostPort roll's replacement comes after the death (its ADD): nothing can answer
        // before that line, whatever cleans conntrack.
        if v.milestones.new_pods_added > v.milestones.old_pods_removed {
            let ax = x(v.milestones.new_pods_added);
            let _ = writeln!(
                s,
                r##"<line x1="{ax:.1}" y1="{group_top:.1}" x2="{ax:.1}" y2="{y:.1}" stroke="#1f5fbf" stroke-width="1.5" stroke-dasharray="1 2"/>"##
            );
        }
        y += GROUP_GAP;
    }
    axis(&mut s, y, span, x);
    s.push_str("</svg>\n");
    s
}

/// The time axis under the rows that end at `y`.
fn axis(s: &mut String, y: f64, span: f64, x: impl Fn(f64) -> f64) {
    let axis_y = y + 4.0;
    let _ = writeln!(
        s,
        r#"<line x1="{LABEL_W}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="black"/>"#,
        LABEL_W + PLOT_W
    );
    let step = if span > 60.0 {
        10.0
    } else if span > 20.0 {
        5.0
    } else {
        2.0
    };
    let mut t = 0.0;
    while t <= span + 1e-9 {
        let tx = x(t);
        let _ = writeln!(
            s,
            r#"<line x1="{tx:.1}" y1="{axis_y:.1}" x2="{tx:.1}" y2="{:.1}" stroke="black"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle">{t:.0}s</text>"#,
            axis_y + 5.0,
            axis_y + 18.0
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since the clients started</text>"#,
        LABEL_W + PLOT_W / 2.0,
        axis_y + 36.0
    );
}

const RATE_H: f64 = 70.0;

/// lb-503.svg: per second, the share of the load balancer's answers that were 503, one panel
/// per variant on the timeline's time axis, as the seed's timeline gives them (T+0:05 5%,
/// T+0:30 3%, ...). `None` when no variant ran the `lb` client.
pub fn rate_503(
    report: &Report,
    samples: &BTreeMap<String, BTreeMap<ClientKind, ClientLog>>,
) -> Option<String> {
    // (503s, answers) per second of each variant.
    let panels: Vec<(&str, Vec<(usize, usize)>)> = report
        .variants
        .iter()
        .filter_map(|v| {
            let log = samples.get(&v.variant)?.get(&ClientKind::Lb)?;
            let mut bins = vec![(0, 0); v.milestones.end.max(1.0).ceil() as usize + 1];
            for smp in &log.samples {
                let i = (smp.t.max(0.0) as usize).min(bins.len() - 1);
                bins[i].1 += 1;
                if smp.status == Some(503) {
                    bins[i].0 += 1;
                }
            }
            Some((v.variant.as_str(), bins))
        })
        .collect();
    if panels.is_empty() {
        return None;
    }
    let span = span_s(report);
    let x = |t: f64| LABEL_W + (t.clamp(0.0, span) / span) * PLOT_W;
    let height = TOP + panels.len() as f64 * (RATE_H + GROUP_GAP) + BOTTOM;
    let mut s = svg_open(
        height,
        "Share of the load balancer's answers that were 503, per second (dashed: the first old pod dies)",
    );
    let _ = writeln!(
        s,
        r##"<text x="{LABEL_W}" y="36" fill="#555">NodePort {} on node A, {} pooled keep-alive connections, {} clients of its own · each panel 0-100%</text>"##,
        super::world::objects::HTTP_NODE_PORT,
        super::clients::LB_POOL,
        super::clients::LB_FRONT,
    );
    let mut y = TOP;
    for (variant, bins) in &panels {
        let total: usize = bins.iter().map(|b| b.0).sum();
        let _ = writeln!(
            s,
            r##"<text x="8" y="{:.1}"><tspan font-weight="bold">{}</tspan> <tspan fill="#555" font-size="10">{total} × 503</tspan></text>"##,
            y + RATE_H / 2.0,
            esc(variant)
        );
        let _ = writeln!(
            s,
            r##"<rect x="{LABEL_W}" y="{y:.1}" width="{PLOT_W}" height="{RATE_H:.1}" fill="#f4f4f4"/>"##
        );
        let mut bars = String::new();
        for (i, &(bad, all)) in bins.iter().enumerate().filter(|(_, b)| b.0 > 0) {
            let (x0, x1) = (x(i as f64), x(i as f64 + 1.0));
            let h = (bad as f64 / all as f64) * (RATE_H - 4.0);
            let _ = write!(
                bars,
                "M{x0:.1} {:.1}h{:.1}v{h:.1}h{:.1}z",
                y + RATE_H - h,
                (x1 - x0 - 0.5).max(0.8),
                -(x1 - x0 - 0.5).max(0.8)
            );
        }
        if !bars.is_empty() {
            let _ = writeln!(s, r#"<path d="{bars}" fill="{FAIL}"/>"#);
        }
        if let Some(v) = report.variants.iter().find(|v| v.variant == *variant) {
            let rx = x(v.milestones.old_pods_removed);
            let _ = writeln!(
                s,
                r#"<line x1="{rx:.1}" y1="{y:.1}" x2="{rx:.1}" y2="{:.1}" stroke="black" stroke-width="1.5" stroke-dasharray="4 3"/>"#,
                y + RATE_H
            );
        }
        y += RATE_H + GROUP_GAP;
    }
    axis(&mut s, y, span, x);
    s.push_str("</svg>\n");
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::super::report::{Milestones, VariantReport};
    use super::*;

    /// A report of one variant whose replacement came at `added`, its old pod dying at 4 s.
    fn one_variant(added: f64) -> (Report, BTreeMap<String, BTreeMap<ClientKind, ClientLog>>) {
        let logs: BTreeMap<ClientKind, ClientLog> =
            [(ClientKind::Udp, ClientLog::default())].into();
        let mut v = VariantReport {
            variant: "v".into(),
            ran: true,
            ..VariantReport::default()
        };
        v.measure(
            Milestones {
                new_pods_added: added,
                old_pods_removed: 4.0,
                slice_updated: 4.1,
                end: 10.0,
                ..Milestones::default()
            },
            &logs,
        );
        let report = Report {
            duration_s: 10.0,
            variants: vec![v],
            ..Report::default()
        };
        (report, [("v".to_string(), logs)].into())
    }

    #[test]
    fn a_replacement_after_the_death_is_marked() {
        let (report, samples) = one_variant(5.1);
        assert!(timeline(&report, &samples).contains(r##"stroke="#1f5fbf""##));
        // The control: a Service rollout's new pods come before the death, no such line.
        let (report, samples) = one_variant(3.0);
        assert!(!timeline(&report, &samples).contains(r##"stroke="#1f5fbf""##));
    }
}
