//! The lab's figures: pure functions over the clients' samples, the JSON report and the
//! table printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::clients::{ClientKind, ClientLog, Sample};

/// A run of consecutive failed requests of one client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorWindow {
    /// Start of the first failed request (seconds since the scenario's start).
    pub start: f64,
    /// Start of the next successful request, or the end of the run if none came.
    pub end: f64,
    /// Failed requests in the window.
    pub failed: usize,
    /// False when the run ended inside this window.
    pub closed: bool,
}

impl ErrorWindow {
    pub fn len(&self) -> f64 {
        self.end - self.start
    }
}

/// Every figure of one client in one variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientFigures {
    pub client: ClientKind,
    pub sent: usize,
    pub failed: usize,
    /// Failed requests that started at or after the old pods' removal.
    pub failed_after_removal: usize,
    /// The longest error window, seconds.
    pub longest_error_window_s: f64,
    /// The longest error window that overlaps the old pods' removal or comes after it.
    pub longest_error_window_after_removal_s: f64,
    /// From the death of the pod the client was talking to (`pod_at_removal`; the first
    /// death if that was a new pod) to the moment the client saw its last failure (seconds;
    /// 0 when nothing failed after the first death).
    pub removal_to_last_error_s: f64,
    /// The pod that answered the client last before the first old pod died.
    #[serde(default)]
    pub pod_at_removal: Option<String>,
    /// The client got answers again after its last failure (true if nothing failed).
    pub recovered: bool,
    pub error_windows: Vec<ErrorWindow>,
    /// Answers per pod, whole run.
    pub pods: BTreeMap<String, usize>,
    /// Answers per pod to requests started once every old pod was dead and out of the
    /// EndpointSlice (`milestones.slice_updated`).
    pub pods_after_removal: BTreeMap<String, usize>,
    /// Connections opened (TCP clients).
    pub connects: usize,
    /// Distinct source ports used.
    pub source_ports: usize,
    /// Requests the load balancer answered 503 (`lb` only).
    #[serde(default)]
    pub http_503: usize,
    /// Per old pod, from its death to the last failure before the next death (`lb` only: it
    /// talks to every pod at once).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub death_to_last_error_s: BTreeMap<String, f64>,
    /// Set when the client could not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_error: Option<String>,
}

/// Consecutive failures grouped into windows; `end_of_run` closes an open one.
pub fn error_windows(samples: &[Sample], end_of_run: f64) -> Vec<ErrorWindow> {
    let mut out = Vec::new();
    let mut open: Option<ErrorWindow> = None;
    for s in samples {
        if s.outcome.is_ok() {
            if let Some(mut w) = open.take() {
                w.end = s.t;
                w.closed = true;
                out.push(w);
            }
        } else {
            match &mut open {
                Some(w) => w.failed += 1,
                None => {
                    open = Some(ErrorWindow {
                        start: s.t,
                        end: s.t,
                        failed: 1,
                        closed: false,
                    })
                }
            }
        }
    }
    if let Some(mut w) = open {
        w.end = end_of_run.max(samples.last().map_or(w.start, Sample::end));
        out.push(w);
    }
    out
}

/// The figures of one client, measured from `m.old_pods_removed` (the first old pod's
/// death) to `m.end` (the clients stopped).
pub fn client_figures(
    client: ClientKind,
    log: &ClientLog,
    m: &Milestones,
    deaths: &[PodDeath],
) -> ClientFigures {
    let (removal, end_of_run) = (m.old_pods_removed, m.end);
    let samples = &log.samples;
    // The pod the client was talking to when the first old pod died; "removal -> last
    // error" counts from that pod's death (the old pods die one after the other).
    let pod_at_removal = samples
        .iter()
        .rev()
        .filter(|s| s.t < removal)
        .find_map(|s| s.pod.clone());
    // The load balancer spreads its requests over every pod: it counts from the first death.
    let pod_at_removal = pod_at_removal.filter(|_| client != ClientKind::Lb);
    let own_death = pod_at_removal
        .as_deref()
        .and_then(|p| deaths.iter().find(|d| d.pod == p))
        .map_or(removal, |d| d.died);
    let windows = error_windows(samples, end_of_run);
    let failed = samples.iter().filter(|s| !s.outcome.is_ok()).count();
    let longest = windows.iter().map(ErrorWindow::len).fold(0.0, f64::max);
    let longest_after = windows
        .iter()
        .filter(|w| w.end >= removal)
        .map(ErrorWindow::len)
        .fold(0.0, f64::max);
    let last_error_end = samples
        .iter()
        .filter(|s| !s.outcome.is_ok() && s.end() >= removal)
        .map(Sample::end)
        .fold(None, |acc: Option<f64>, e| {
            Some(acc.map_or(e, |a| a.max(e)))
        });
    // Every death costs the load balancer the connections it had to that pod: per death, the
    // time to the last failure before the next one; its figure is the longest.
    let per_death = match client {
        ClientKind::Lb => after_each_death(samples, deaths),
        _ => BTreeMap::new(),
    };
    let removal_to_last_error = match client {
        ClientKind::Lb if !deaths.is_empty() => per_death.values().copied().fold(0.0, f64::max),
        _ => last_error_end.map_or(0.0, |e| (e - own_death).max(0.0)),
    };
    let mut pods = BTreeMap::new();
    let mut pods_after = BTreeMap::new();
    for s in samples {
        if let Some(p) = &s.pod {
            *pods.entry(p.clone()).or_insert(0) += 1;
            if s.t >= m.slice_updated {
                *pods_after.entry(p.clone()).or_insert(0) += 1;
            }
        }
    }
    let mut ports: Vec<u16> = samples
        .iter()
        .map(|s| s.sport)
        .chain(log.connects.iter().map(|c| c.sport))
        .filter(|&p| p != 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ClientFigures {
        client,
        sent: samples.len(),
        failed,
        failed_after_removal: samples
            .iter()
            .filter(|s| !s.outcome.is_ok() && s.t >= removal)
            .count(),
        longest_error_window_s: round3(longest),
        longest_error_window_after_removal_s: round3(longest_after),
        removal_to_last_error_s: round3(removal_to_last_error),
        pod_at_removal,
        recovered: windows.last().is_none_or(|w| w.closed),
        error_windows: windows
            .into_iter()
            .map(|w| ErrorWindow {
                start: round3(w.start),
                end: round3(w.end),
                ..w
            })
            .collect(),
        pods,
        pods_after_removal: pods_after,
        connects: log.connects.len(),
        source_ports: ports.len(),
        http_503: samples.iter().filter(|s| s.status == Some(503)).count(),
        death_to_last_error_s: per_death,
        setup_error: log.setup_error.clone(),
    }
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The scenario's milestones, seconds since its start (the clients' first request).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Milestones {
    /// New pods started and added to the EndpointSlice.
    pub new_pods_added: f64,
    /// Old pods marked terminating (ready=false, serving=true, terminating=true).
    pub old_pods_terminating: f64,
    /// The first old pod died (its network cut): the vertical line of the plot, and time zero
    /// of every "after removal" figure. Each pod leaves the EndpointSlice shortly after its
    /// death (`VariantReport::pod_deaths`).
    pub old_pods_removed: f64,
    /// The last old pod left the EndpointSlice: from here only new pods exist.
    pub slice_updated: f64,
    /// Clients stopped.
    pub end: f64,
}

/// When an old pod died and when it left the EndpointSlice (seconds since the start).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodDeath {
    pub pod: String,
    pub ip: String,
    pub died: f64,
    pub removed_from_slice: f64,
}

/// One variant's result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VariantReport {
    pub variant: String,
    pub title: String,
    /// False when the variant could not run; `error` says why.
    pub ran: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub milestones: Milestones,
    /// Each old pod's death and removal from the EndpointSlice.
    #[serde(default)]
    pub pod_deaths: Vec<PodDeath>,
    pub clients: Vec<ClientFigures>,
    /// What the variant's fix did, as it said it (preStop output, sysctls set, agent flushes).
    pub notes: Vec<String>,
    /// Names of the pods before and after the rollout.
    pub old_pods: Vec<String>,
    pub new_pods: Vec<String>,
    /// Files written for this variant (agent log), relative to the report directory.
    pub files: Vec<String>,
}

impl VariantReport {
    /// Records the milestones (seconds since the clients' start, rounded to the millisecond)
    /// and every client's figures from its samples against them and `pod_deaths`.
    pub fn measure(&mut self, m: Milestones, logs: &BTreeMap<ClientKind, ClientLog>) {
        self.milestones = Milestones {
            new_pods_added: round3(m.new_pods_added),
            old_pods_terminating: round3(m.old_pods_terminating),
            old_pods_removed: round3(m.old_pods_removed),
            slice_updated: round3(m.slice_updated),
            end: round3(m.end),
        };
        self.clients = logs
            .iter()
            .map(|(k, l)| client_figures(*k, l, &self.milestones, &self.pod_deaths))
            .collect();
    }
}

/// The whole report.json.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub kernel: String,
    pub nat: String,
    pub duration_s: f64,
    pub sync_delay_s: f64,
    pub clients: Vec<String>,
    /// What each client does.
    pub client_descriptions: Vec<String>,
    pub samples_file: String,
    pub variants: Vec<VariantReport>,
}

/// samples.json: every request of every client of every variant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Samples {
    pub variants: BTreeMap<String, BTreeMap<ClientKind, ClientLog>>,
}

/// Per dead pod, the time from its death to the end of the last failure that started before
/// the next death (the last death: before the end); 0 when none failed.
fn after_each_death(samples: &[Sample], deaths: &[PodDeath]) -> BTreeMap<String, f64> {
    let mut died: Vec<(f64, &str)> = deaths.iter().map(|d| (d.died, d.pod.as_str())).collect();
    died.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = BTreeMap::new();
    for (i, &(d, pod)) in died.iter().enumerate() {
        let next = died.get(i + 1).map_or(f64::INFINITY, |n| n.0);
        let end = samples
            .iter()
            .filter(|s| !s.outcome.is_ok() && s.t >= d && s.t < next)
            .map(Sample::end)
            .reduce(f64::max);
        out.insert(pod.to_string(), round3(end.map_or(0.0, |e| e - d)));
    }
    out
}

fn fmt_s(v: f64) -> String {
    format!("{v:.2}s")
}

/// The table printed at the end of a run.
pub fn table(report: &Report) -> String {
    let header = [
        "variant",
        "client",
        "sent",
        "failed",
        "failed after removal",
        "longest error window",
        "removal -> last error",
        "503s",
        "recovered",
        "answering after removal",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for v in &report.variants {
        if !v.ran {
            rows.push(vec![
                v.variant.clone(),
                "-".into(),
                format!(
                    "did not run: {}",
                    v.error.as_deref().unwrap_or("unknown error")
                ),
            ]);
            continue;
        }
        for c in &v.clients {
            if let Some(e) = &c.setup_error {
                rows.push(vec![
                    v.variant.clone(),
                    c.client.to_string(),
                    format!("did not run: {e}"),
                ]);
                continue;
            }
            let pods = c
                .pods_after_removal
                .iter()
                .map(|(p, n)| format!("{p}:{n}"))
                .collect::<Vec<_>>()
                .join(" ");
            rows.push(vec![
                v.variant.clone(),
                c.client.to_string(),
                c.sent.to_string(),
                c.failed.to_string(),
                c.failed_after_removal.to_string(),
                fmt_s(c.longest_error_window_s),
                fmt_s(c.removal_to_last_error_s),
                if c.client == ClientKind::Lb {
                    c.http_503.to_string()
                } else {
                    "-".into()
                },
                if c.recovered { "yes" } else { "NO" }.into(),
                if pods.is_empty() { "-".into() } else { pods },
            ]);
        }
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        // Rows that say "did not run" span the rest of the line: they do not set widths.
        if r.len() == header.len() {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let last = cells.len() - 1;
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                let _ = write!(out, "{c}");
            } else if i >= 2 && cells.len() == header.len() {
                let _ = write!(out, "{c:>w$}  ", w = widths[i]);
            } else {
                let _ = write!(out, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(
        &header.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        &mut out,
    );
    for r in &rows {
        line(r, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::clients::Outcome;
    use super::*;

    /// old-1 dies at `old_1`, old-2 at `old_2`.
    fn deaths(old_1: f64, old_2: f64) -> [PodDeath; 2] {
        [("old-1", old_1), ("old-2", old_2)].map(|(pod, died)| PodDeath {
            pod: pod.into(),
            died,
            ..PodDeath::default()
        })
    }

    fn ms(removal: f64, end: f64) -> Milestones {
        Milestones {
            old_pods_removed: removal,
            slice_updated: removal + 0.05,
            end,
            ..Milestones::default()
        }
    }

    fn s(t: f64, ok: bool, pod: &str) -> Sample {
        Sample {
            t,
            outcome: if ok { Outcome::Ok } else { Outcome::Timeout },
            latency_ms: if ok { 1.0 } else { 200.0 },
            pod: ok.then(|| pod.to_string()),
            sport: 40000,
            error: None,
            status: None,
        }
    }

    /// A load balancer's answer to one of its clients.
    fn lb(t: f64, status: u16) -> Sample {
        Sample {
            t,
            outcome: if status == 200 {
                Outcome::Ok
            } else {
                Outcome::Error
            },
            latency_ms: if status == 200 { 1.0 } else { 1000.0 },
            pod: (status == 200).then(|| "new-1".to_string()),
            sport: 0,
            error: None,
            status: Some(status),
        }
    }

    #[test]
    fn the_load_balancer_counts_503s_and_each_death_apart() {
        let log = ClientLog {
            samples: vec![
                lb(0.5, 200),
                lb(1.1, 503),
                lb(1.15, 200),
                lb(1.2, 503),
                lb(1.3, 200),
                lb(5.0, 503),
                lb(5.1, 200),
                lb(9.0, 200),
            ],
            ..ClientLog::default()
        };
        let deaths = deaths(1.0, 4.9);
        let f = client_figures(ClientKind::Lb, &log, &ms(1.0, 10.0), &deaths);
        assert_eq!(f.http_503, 3);
        assert_eq!(f.failed, 3);
        // Old-1: the failure at 1.2 ends at 2.2; old-2: the one at 5.0 ends at 6.0.
        assert_eq!(f.removal_to_last_error_s, 1.2);
        assert_eq!(f.death_to_last_error_s.get("old-1"), Some(&1.2));
        assert_eq!(f.death_to_last_error_s.get("old-2"), Some(&1.1));
        assert_eq!(f.pod_at_removal, None);
        assert!(f.recovered);
        let report = Report {
            variants: vec![VariantReport {
                variant: "nothing".into(),
                ran: true,
                clients: vec![f],
                ..VariantReport::default()
            }],
            ..Report::default()
        };
        let t = table(&report);
        let row = t.lines().nth(1).unwrap_or_default();
        assert!(row.starts_with("nothing  lb"), "{t}");
        assert!(row.contains(" 3  "), "the 503s column: {t}");
    }

    #[test]
    fn windows_and_recovery() {
        let log = ClientLog {
            samples: vec![
                s(0.0, true, "old-0"),
                s(1.0, false, ""),
                s(1.2, false, ""),
                s(1.4, true, "new-0"),
                s(5.0, false, ""),
                s(5.2, true, "new-1"),
            ],
            ..ClientLog::default()
        };
        let f = client_figures(ClientKind::Udp, &log, &ms(1.1, 6.0), &[]);
        assert_eq!(f.sent, 6);
        assert_eq!(f.failed, 3);
        assert_eq!(f.failed_after_removal, 2);
        assert_eq!(f.error_windows.len(), 2);
        assert_eq!(f.longest_error_window_s, 0.4);
        assert_eq!(f.longest_error_window_after_removal_s, 0.4);
        assert_eq!(f.removal_to_last_error_s, 4.1);
        assert!(f.recovered);
        assert_eq!(f.pods_after_removal.get("new-0"), Some(&1));
        assert_eq!(f.pods.get("old-0"), Some(&1));
        assert_eq!(f.source_ports, 1);
    }

    #[test]
    fn open_window_until_the_end() {
        let log = ClientLog {
            samples: vec![s(0.0, true, "old-0"), s(2.0, false, ""), s(2.2, false, "")],
            ..ClientLog::default()
        };
        let f = client_figures(ClientKind::Udp, &log, &ms(2.0, 10.0), &[]);
        assert!(!f.recovered);
        assert_eq!(f.longest_error_window_s, 8.0);
        assert_eq!(f.removal_to_last_error_s, 0.4);
        assert!(!f.error_windows[0].closed);
    }

    #[test]
    fn last_error_counts_from_the_death_of_the_clients_pod() {
        let log = ClientLog {
            samples: vec![
                s(0.5, true, "old-2"),
                s(1.6, false, ""),
                s(1.8, true, "new-1"),
            ],
            ..ClientLog::default()
        };
        let deaths = deaths(1.0, 1.5);
        let f = client_figures(ClientKind::Udp, &log, &ms(1.0, 3.0), &deaths);
        assert_eq!(f.pod_at_removal.as_deref(), Some("old-2"));
        assert_eq!(f.removal_to_last_error_s, 0.3);
        assert_eq!(f.longest_error_window_after_removal_s, 0.2);
    }

    #[test]
    fn nothing_failed() {
        let log = ClientLog {
            samples: vec![s(0.0, true, "a"), s(1.0, true, "b")],
            ..ClientLog::default()
        };
        let f = client_figures(ClientKind::Fresh, &log, &ms(0.5, 2.0), &[]);
        assert!(f.recovered);
        assert_eq!(f.longest_error_window_s, 0.0);
        assert_eq!(f.removal_to_last_error_s, 0.0);
    }

    #[test]
    fn table_lines_up() {
        let log = ClientLog {
            samples: vec![s(0.0, true, "old-0"), s(2.0, false, "")],
            ..ClientLog::default()
        };
        let report = Report {
            variants: vec![
                VariantReport {
                    variant: "nothing".into(),
                    ran: true,
                    clients: vec![client_figures(ClientKind::Udp, &log, &ms(1.0, 3.0), &[])],
                    ..VariantReport::default()
                },
                VariantReport {
                    variant: "ctreap".into(),
                    ran: false,
                    error: Some("ctreap run: not built yet".into()),
                    ..VariantReport::default()
                },
            ],
            ..Report::default()
        };
        let t = table(&report);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("nothing  udp"), "{t}");
        assert!(lines[1].contains("NO"), "{t}");
        assert!(
            lines[2].contains("did not run: ctreap run: not built yet"),
            "{t}"
        );
    }
}
