//! The `/metrics` page: per-app families and the daemon's own control
//! requests, written in the OpenMetrics text format from a snapshot taken
//! at scrape time. Pure: values come in, text goes out; nothing here reads
//! files.
//!
//! Written straight into one string, family after family, apps in the
//! order they come (by name): with a thousand apps a registry of label
//! sets (a hash map per family, a `String` per label, then encoded from
//! the maps) cost more than reading every app's cgroup. Nothing is kept
//! between scrapes (an app that was removed simply is not there next
//! time), and nothing needs a timer.

use std::fmt::Write as _;

use appvisor_protocol::{AppStatus, State};

use super::usage::Usage;
use crate::audit::RequestKey;

/// The content type of the page `render` produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every name starts so.
const PREFIX: &str = "appvisor_";

/// One app at scrape time.
#[derive(Debug, Clone)]
pub struct AppMetrics {
    pub status: AppStatus,
    /// When the running instance started, in seconds since the Unix epoch.
    pub start_time: Option<f64>,
    /// Starts that did not become ready within the readiness timeout.
    pub readiness_failures: u64,
    /// `[limits] memory`, in bytes.
    pub memory_limit: Option<u64>,
    pub usage: Usage,
    /// The exposure score of `appctl security`.
    pub exposure: Option<f64>,
}

/// Everything one scrape shows.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub apps: Vec<AppMetrics>,
    /// Audited control requests, with their counts.
    pub control_requests: Vec<(RequestKey, u64)>,
}

/// The OpenMetrics type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
}

/// A sample's value: integers as such, floats in their shortest form
/// that reads back the same, with a `.0` when whole.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(i64),
    Float(f64),
}

/// A sample's labels: up to two (name, value) pairs.
type Labels<'a> = [Option<(&'static str, &'a str)>; 2];

/// One family: its name (without the prefix, with the unit's suffix),
/// help, unit and type.
#[derive(Debug, Clone, Copy)]
struct Family {
    name: &'static str,
    unit: Option<&'static str>,
    kind: Kind,
    help: &'static str,
}

/// The page being written.
struct Page {
    text: String,
}

impl Page {
    /// Writes `family` and its samples; a family without samples is left
    /// out, metadata included.
    fn family<'a>(
        &mut self,
        family: Family,
        samples: impl IntoIterator<Item = (Labels<'a>, Value)>,
    ) {
        let mut samples = samples.into_iter().peekable();
        if samples.peek().is_none() {
            return;
        }
        let Family {
            name,
            unit,
            kind,
            help,
        } = family;
        let kind_name = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let text = &mut self.text;
        // Writing to a String cannot fail.
        let _ = writeln!(text, "# HELP {PREFIX}{name} {help}.");
        let _ = writeln!(text, "# TYPE {PREFIX}{name} {kind_name}");
        if let Some(unit) = unit {
            let _ = writeln!(text, "# UNIT {PREFIX}{name} {unit}");
        }
        let suffix = if kind == Kind::Counter { "_total" } else { "" };
        for (labels, value) in samples {
            text.push_str(PREFIX);
            text.push_str(name);
            text.push_str(suffix);
            let mut first = true;
            for (label, label_value) in labels.into_iter().flatten() {
                text.push_str(if first { "{" } else { "," });
                first = false;
                text.push_str(label);
                text.push_str("=\"");
                push_escaped(text, label_value);
                text.push('"');
            }
            if !first {
                text.push('}');
            }
            let _ = match value {
                Value::Int(v) => writeln!(text, " {v}"),
                Value::Float(v) => writeln!(text, " {v:?}"),
            };
        }
    }
}

/// A label value as OpenMetrics quotes it: `\`, `"` and newline escaped.
fn push_escaped(text: &mut String, value: &str) {
    let mut rest = value;
    while let Some(at) = rest.find(['\\', '"', '\n']) {
        text.push_str(&rest[..at]);
        text.push_str(match rest.as_bytes()[at] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        rest = &rest[at + 1..];
    }
    text.push_str(rest);
}

/// The `app` label of `app`.
fn app_label(app: &AppMetrics) -> Labels<'_> {
    [Some(("app", app.status.name.as_str())), None]
}

/// Renders `scrape` in the OpenMetrics text format, which Prometheus reads.
pub fn render(scrape: &Scrape) -> String {
    let apps = &scrape.apps;
    // About 800 bytes an app: the eight state samples are most of it.
    let mut page = Page {
        text: String::with_capacity(1024 + 900 * apps.len()),
    };
    page.family(
        Family {
            name: "app_state",
            unit: None,
            kind: Kind::Gauge,
            help: "Current state of the app: 1 for its state, 0 for the others",
        },
        apps.iter().flat_map(|app| {
            State::ALL.iter().map(move |s| {
                let labels = [
                    Some(("app", app.status.name.as_str())),
                    Some(("state", s.as_str())),
                ];
                (labels, Value::Int(i64::from(app.status.state == *s)))
            })
        }),
    );
    page.family(
        Family {
            name: "app_up",
            unit: None,
            kind: Kind::Gauge,
            help: "1 while the app is running (ready)",
        },
        apps.iter().map(|app| {
            let up = i64::from(app.status.state == State::Running);
            (app_label(app), Value::Int(up))
        }),
    );
    page.family(
        Family {
            name: "app_restarts",
            unit: None,
            kind: Kind::Counter,
            help: "Times the app was started again since the daemon loaded it",
        },
        apps.iter().map(|app| {
            let restarts = i64::from(app.status.restarts);
            (app_label(app), Value::Int(restarts))
        }),
    );
    page.family(
        Family {
            name: "app_start_time_seconds",
            unit: Some("seconds"),
            kind: Kind::Gauge,
            help: "When the app's main process was spawned, seconds since the Unix epoch",
        },
        apps.iter()
            .filter_map(|app| Some((app_label(app), Value::Float(app.start_time?)))),
    );
    page.family(
        Family {
            name: "app_memory_bytes",
            unit: Some("bytes"),
            kind: Kind::Gauge,
            help: "Memory the app's own memory cgroup charges it (memory.current on cgroup v2, memory.usage_in_bytes of its v1 memory cgroup on hybrid hosts: its processes' memory and the page cache they brought in), or the sum of its processes' PSS where no memory cgroup of its own counts it",
        },
        apps.iter().filter_map(|app| {
            let bytes = app.usage.memory_bytes?;
            Some((app_label(app), Value::Int(saturating_i64(bytes))))
        }),
    );
    page.family(
        Family {
            name: "app_memory_limit_bytes",
            unit: Some("bytes"),
            kind: Kind::Gauge,
            help: "The app's [limits] memory",
        },
        apps.iter().filter_map(|app| {
            let bytes = app.memory_limit?;
            Some((app_label(app), Value::Int(saturating_i64(bytes))))
        }),
    );
    page.family(
        Family {
            name: "app_cpu_seconds",
            unit: Some("seconds"),
            kind: Kind::Counter,
            help: "CPU time the app's processes used, from its cgroup's cpu.stat",
        },
        apps.iter().filter_map(|app| {
            let seconds = app.usage.cpu_seconds?;
            Some((app_label(app), Value::Float(seconds)))
        }),
    );
    page.family(
        Family {
            name: "app_readiness_failures",
            unit: None,
            kind: Kind::Counter,
            help: "Starts that did not become ready within the readiness timeout",
        },
        apps.iter().map(|app| {
            let failures = saturating_i64(app.readiness_failures);
            (app_label(app), Value::Int(failures))
        }),
    );
    page.family(
        Family {
            name: "app_exposure_score",
            unit: None,
            kind: Kind::Gauge,
            help: "How exposed the app is, from 0 (tight) to 10 (unconfined): appctl security APP explains it",
        },
        apps.iter().filter_map(|app| Some((app_label(app), Value::Float(app.exposure?)))),
    );
    page.family(
        Family {
            name: "app_log_dropped_bytes",
            unit: Some("bytes"),
            kind: Kind::Counter,
            help: "Output of the app that could not be written to its log files (disk full, no log directory) since the daemon loaded it",
        },
        apps.iter().map(|app| {
            let dropped = saturating_i64(app.status.log_dropped_bytes);
            (app_label(app), Value::Int(dropped))
        }),
    );
    page.family(
        Family {
            name: "control_requests",
            unit: None,
            kind: Kind::Counter,
            help: "Mutating control requests by action and outcome (ok or the error code)",
        },
        scrape.control_requests.iter().map(|(key, count)| {
            let labels = [
                Some(("action", key.action)),
                Some(("outcome", key.outcome.as_str())),
            ];
            (labels, Value::Int(saturating_i64(*count)))
        }),
    );
    page.text.push_str("# EOF\n");
    page.text
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditOutcome;
    use appvisor_protocol::ErrorCode;

    fn status(name: &str, state: State, pid: Option<u32>, restarts: u32) -> AppStatus {
        AppStatus {
            name: name.to_owned(),
            state,
            reason: String::new(),
            pid,
            uptime_secs: pid.map(|_| 10.0),
            since: 0,
            restarts,
            failures: 0,
            description: String::new(),
            app_groups: Vec::new(),
            user: "shop".to_owned(),
            directory: "/srv/shop".to_owned(),
            release: None,
            autostart: true,
            stopped_by: None,
            config_error: None,
            log_error: None,
            log_dropped_bytes: 0,
        }
    }

    /// The sample lines of `text` (no comments), sorted.
    fn samples(text: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        lines.sort();
        lines
    }

    #[test]
    fn every_family_from_fake_data() {
        let scrape = Scrape {
            apps: vec![
                AppMetrics {
                    status: AppStatus {
                        log_dropped_bytes: 4096,
                        ..status("shop", State::Running, Some(42), 3)
                    },
                    start_time: Some(1_700_000_000.0),
                    readiness_failures: 1,
                    memory_limit: Some(512 * 1024 * 1024),
                    usage: Usage {
                        memory_bytes: Some(1_048_576),
                        cpu_seconds: Some(2.5),
                    },
                    exposure: Some(1.5),
                },
                AppMetrics {
                    status: status("blog", State::Backoff, None, 0),
                    start_time: None,
                    readiness_failures: 0,
                    memory_limit: None,
                    usage: Usage::default(),
                    exposure: None,
                },
            ],
            control_requests: vec![
                (
                    RequestKey {
                        action: "restart",
                        outcome: AuditOutcome::Ok,
                    },
                    2,
                ),
                (
                    RequestKey {
                        action: "stop",
                        outcome: AuditOutcome::Error(ErrorCode::Forbidden),
                    },
                    1,
                ),
            ],
        };
        let text = render(&scrape);
        let mut want = vec![
            "appvisor_app_cpu_seconds_total{app=\"shop\"} 2.5",
            "appvisor_app_exposure_score{app=\"shop\"} 1.5",
            "appvisor_app_log_dropped_bytes_total{app=\"blog\"} 0",
            "appvisor_app_log_dropped_bytes_total{app=\"shop\"} 4096",
            "appvisor_app_memory_bytes{app=\"shop\"} 1048576",
            "appvisor_app_memory_limit_bytes{app=\"shop\"} 536870912",
            "appvisor_app_readiness_failures_total{app=\"blog\"} 0",
            "appvisor_app_readiness_failures_total{app=\"shop\"} 1",
            "appvisor_app_restarts_total{app=\"blog\"} 0",
            "appvisor_app_restarts_total{app=\"shop\"} 3",
            "appvisor_app_start_time_seconds{app=\"shop\"} 1700000000.0",
            "appvisor_app_up{app=\"blog\"} 0",
            "appvisor_app_up{app=\"shop\"} 1",
            "appvisor_control_requests_total{action=\"restart\",outcome=\"ok\"} 2",
            "appvisor_control_requests_total{action=\"stop\",outcome=\"forbidden\"} 1",
        ];
        for app in ["shop", "blog"] {
            let current = if app == "shop" { "running" } else { "backoff" };
            for s in State::ALL {
                let value = i32::from(s.as_str() == current);
                want.push(Box::leak(
                    format!(
                        "appvisor_app_state{{app=\"{app}\",state=\"{}\"}} {value}",
                        s.as_str()
                    )
                    .into_boxed_str(),
                ));
            }
        }
        want.sort();
        assert_eq!(samples(&text), want, "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# TYPE appvisor_app_restarts counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# UNIT appvisor_app_memory_bytes bytes\n"),
            "{text}"
        );
    }

    /// The whole page for one app: metadata, the counters' `_total`,
    /// units, floats, the families without samples left out, `# EOF`.
    #[test]
    fn one_app_page_exactly() {
        let scrape = Scrape {
            apps: vec![AppMetrics {
                status: status("shop", State::Running, Some(42), 1),
                start_time: Some(1_700_000_000.0),
                readiness_failures: 0,
                memory_limit: None,
                usage: Usage {
                    memory_bytes: Some(4096),
                    cpu_seconds: Some(0.005714),
                },
                exposure: Some(3.4),
            }],
            ..Scrape::default()
        };
        let text = render(&scrape);
        let mut want = String::from(
            "# HELP appvisor_app_state Current state of the app: 1 for its state, 0 for the others.\n\
             # TYPE appvisor_app_state gauge\n",
        );
        for s in State::ALL {
            want += &format!(
                "appvisor_app_state{{app=\"shop\",state=\"{}\"}} {}\n",
                s.as_str(),
                i32::from(s == State::Running)
            );
        }
        want += "# HELP appvisor_app_up 1 while the app is running (ready).\n\
            # TYPE appvisor_app_up gauge\n\
            appvisor_app_up{app=\"shop\"} 1\n\
            # HELP appvisor_app_restarts Times the app was started again since the daemon loaded it.\n\
            # TYPE appvisor_app_restarts counter\n\
            appvisor_app_restarts_total{app=\"shop\"} 1\n\
            # HELP appvisor_app_start_time_seconds When the app's main process was spawned, seconds since the Unix epoch.\n\
            # TYPE appvisor_app_start_time_seconds gauge\n\
            # UNIT appvisor_app_start_time_seconds seconds\n\
            appvisor_app_start_time_seconds{app=\"shop\"} 1700000000.0\n";
        assert!(text.starts_with(&want), "{text}");
        for line in [
            "# TYPE appvisor_app_memory_bytes gauge\n# UNIT appvisor_app_memory_bytes bytes\nappvisor_app_memory_bytes{app=\"shop\"} 4096\n",
            "# UNIT appvisor_app_cpu_seconds seconds\nappvisor_app_cpu_seconds_total{app=\"shop\"} 0.005714\n",
            "# TYPE appvisor_app_exposure_score gauge\nappvisor_app_exposure_score{app=\"shop\"} 3.4\n",
            "# UNIT appvisor_app_log_dropped_bytes bytes\nappvisor_app_log_dropped_bytes_total{app=\"shop\"} 0\n# EOF\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        for absent in ["memory_limit", "control_requests"] {
            assert!(!text.contains(absent), "{absent} has no samples: {text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let scrape = Scrape {
            apps: vec![AppMetrics {
                status: status("a\"b\\c", State::Running, None, 0),
                start_time: None,
                readiness_failures: 0,
                memory_limit: None,
                usage: Usage::default(),
                exposure: None,
            }],
            ..Scrape::default()
        };
        let text = render(&scrape);
        assert!(
            text.contains("appvisor_app_up{app=\"a\\\"b\\\\c\"} 1"),
            "{text}"
        );
    }
}
