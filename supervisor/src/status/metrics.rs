//! The `/metrics` page: per-app families and the daemon's own control
//! requests, encoded by `prometheus-client` from a snapshot taken at scrape
//! time. Pure: values come in, text goes out; nothing here reads files.
//!
//! A fresh registry per scrape keeps no state between scrapes (an app that
//! was removed simply is not there next time) and needs no timer.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use appvisor_protocol::{AppStatus, State};

use super::usage::Usage;
use crate::audit::RequestKey;

/// The content type of the page `render` produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const STATES: [State; 8] = [
    State::Stopped,
    State::Starting,
    State::Running,
    State::Backoff,
    State::Stopping,
    State::Exited,
    State::Fatal,
    State::Invalid,
];

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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabel {
    app: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    app: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    action: String,
    outcome: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

/// Renders `scrape` in the OpenMetrics text format, which Prometheus reads.
pub fn render(scrape: &Scrape) -> String {
    let mut registry = Registry::with_prefix("appvisor");

    let state = Family::<StateLabels, Gauge>::default();
    let up = Family::<AppLabel, Gauge>::default();
    let restarts = Family::<AppLabel, Counter>::default();
    let start_time = Family::<AppLabel, FloatGauge>::default();
    let memory = Family::<AppLabel, Gauge>::default();
    let memory_limit = Family::<AppLabel, Gauge>::default();
    let cpu = Family::<AppLabel, FloatCounter>::default();
    let readiness_failures = Family::<AppLabel, Counter>::default();
    let exposure = Family::<AppLabel, FloatGauge>::default();
    let log_dropped = Family::<AppLabel, Counter>::default();
    let requests = Family::<RequestLabels, Counter>::default();

    for app in &scrape.apps {
        let name = &app.status.name;
        let label = AppLabel { app: name.clone() };
        for s in STATES {
            let labels = StateLabels {
                app: name.clone(),
                state: s.as_str().to_owned(),
            };
            state
                .get_or_create(&labels)
                .set(i64::from(app.status.state == s));
        }
        up.get_or_create(&label)
            .set(i64::from(app.status.state == State::Running));
        restarts
            .get_or_create(&label)
            .inc_by(u64::from(app.status.restarts));
        readiness_failures
            .get_or_create(&label)
            .inc_by(app.readiness_failures);
        if let Some(at) = app.start_time {
            start_time.get_or_create(&label).set(at);
        }
        if let Some(bytes) = app.usage.memory_bytes {
            memory.get_or_create(&label).set(saturating_i64(bytes));
        }
        if let Some(bytes) = app.memory_limit {
            memory_limit
                .get_or_create(&label)
                .set(saturating_i64(bytes));
        }
        if let Some(seconds) = app.usage.cpu_seconds {
            cpu.get_or_create(&label).inc_by(seconds);
        }
        if let Some(score) = app.exposure {
            exposure.get_or_create(&label).set(score);
        }
        log_dropped
            .get_or_create(&label)
            .inc_by(app.status.log_dropped_bytes);
    }
    for (key, count) in &scrape.control_requests {
        requests
            .get_or_create(&RequestLabels {
                action: key.action.to_owned(),
                outcome: key.outcome.as_str().to_owned(),
            })
            .inc_by(*count);
    }

    registry.register(
        "app_state",
        "Current state of the app: 1 for its state, 0 for the others",
        state,
    );
    registry.register("app_up", "1 while the app is running (ready)", up);
    registry.register(
        "app_restarts",
        "Times the app was started again since the daemon loaded it",
        restarts,
    );
    registry.register_with_unit(
        "app_start_time",
        "When the app's main process was spawned, seconds since the Unix epoch",
        Unit::Seconds,
        start_time,
    );
    registry.register_with_unit(
        "app_memory",
        "Memory the app's own memory cgroup charges it (memory.current on cgroup v2, memory.usage_in_bytes of its v1 memory cgroup on hybrid hosts: its processes' memory and the page cache they brought in), or the sum of its processes' PSS where no memory cgroup of its own counts it",
        Unit::Bytes,
        memory,
    );
    registry.register_with_unit(
        "app_memory_limit",
        "The app's [limits] memory",
        Unit::Bytes,
        memory_limit,
    );
    registry.register_with_unit(
        "app_cpu",
        "CPU time the app's processes used, from its cgroup's cpu.stat",
        Unit::Seconds,
        cpu,
    );
    registry.register(
        "app_readiness_failures",
        "Starts that did not become ready within the readiness timeout",
        readiness_failures,
    );
    registry.register(
        "app_exposure_score",
        "How exposed the app is, from 0 (tight) to 10 (unconfined): appctl security APP explains it",
        exposure,
    );
    registry.register_with_unit(
        "app_log_dropped",
        "Output of the app that could not be written to its log files (disk full, no log directory) since the daemon loaded it",
        Unit::Bytes,
        log_dropped,
    );
    registry.register(
        "control_requests",
        "Mutating control requests by action and outcome (ok or the error code)",
        requests,
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("encoding into a String cannot fail");
    text
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
            for s in STATES {
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
