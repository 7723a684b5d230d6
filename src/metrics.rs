//! The daemon's Prometheus metrics (SPEC §6): syncs by result, converge and
//! smoke durations, per-stack state, last success time, how many stacks are
//! quarantined / held / blocked, fetch health, webhook outcomes, stack runs
//! by outcome (deploys, reverts, rollbacks), the newest backup's time and
//! the build.
//!
//! One [`Metrics`] value is shared (`Arc`) between the reconciler, which
//! records, and the HTTP server, which encodes. Recording never fails and
//! never blocks on the scrape for longer than an atomic update or a map
//! insert. The exposition is OpenMetrics text ([`CONTENT_TYPE`]) when the
//! scraper asks for it (Prometheus does), and the classic text format
//! ([`CLASSIC_CONTENT_TYPE`], [`to_classic`]) otherwise, which `promtool
//! check metrics` and older tools read.

use crate::outcome::{Health, Outcome, Reason, State, SyncStatus};
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::{Mutex, PoisonError};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`to_classic`]'s output (Prometheus text 0.0.4).
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds (seconds) of the converge and smoke duration histograms:
/// a smoke test takes seconds, a converge with pulls up to minutes.
pub const DURATION_BUCKETS: [f64; 10] = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];

/// The values of the `condition` label of `stackpin_stacks`.
pub const CONDITIONS: [&str; 3] = ["quarantined", "held", "blocked"];

type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The registry and a handle on every metric in it.
pub struct Metrics {
    registry: Mutex<Registry>,
    sync_runs: Family<Labels, Counter>,
    converge: HistogramFamily,
    smoke: HistogramFamily,
    stack_state: Family<Labels, Gauge>,
    stack_sync: Family<Labels, Gauge>,
    stack_health: Family<Labels, Gauge>,
    last_success: Family<Labels, Gauge>,
    stacks: Family<Labels, Gauge>,
    fetch_errors: Counter,
    last_fetch: Gauge,
    webhooks: Family<Labels, Counter>,
    results: Family<Labels, Counter>,
    last_backup: Family<Labels, Gauge>,
    build_info: Family<Labels, Gauge>,
    rollbacks: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// `family{stack, key=word}` for each of `words`: 1 for `now` and 0 for the
/// others; `None` removes every one of them (a stack that is gone).
fn one_hot(
    family: &Family<Labels, Gauge>,
    stack: &str,
    key: &'static str,
    words: &[&str],
    now: Option<&str>,
) {
    for w in words {
        let series = labels([("stack", stack), (key, w)]);
        match now {
            Some(now) => {
                family.get_or_create(&series).set(i64::from(*w == now));
            }
            None => {
                family.remove(&series);
            }
        }
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (families start
    /// without series; `stackpin_fetch_errors_total` and
    /// `stackpin_last_fetch_success_timestamp_seconds` start at 0).
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            sync_runs: Family::default(),
            converge: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            smoke: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            stack_state: Family::default(),
            stack_sync: Family::default(),
            stack_health: Family::default(),
            last_success: Family::default(),
            stacks: Family::default(),
            fetch_errors: Counter::default(),
            last_fetch: Gauge::default(),
            webhooks: Family::default(),
            results: Family::default(),
            last_backup: Family::default(),
            build_info: Family::default(),
            rollbacks: Family::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(PoisonError::into_inner);
            r.register(
                "stackpin_sync_runs",
                "Sync runs by result",
                m.sync_runs.clone(),
            );
            r.register_with_unit(
                "stackpin_converge_duration",
                "Time to converge one stack, from pull to recorded outcome",
                Unit::Seconds,
                m.converge.clone(),
            );
            r.register_with_unit(
                "stackpin_smoke_duration",
                "Time of one stack's smoke tests",
                Unit::Seconds,
                m.smoke.clone(),
            );
            r.register(
                "stackpin_stack_state",
                "1 for the stack's current state, 0 for the others",
                m.stack_state.clone(),
            );
            r.register(
                "stackpin_stack_sync",
                "1 for the stack's sync status (does what runs match git), 0 for the others",
                m.stack_sync.clone(),
            );
            r.register(
                "stackpin_stack_health",
                "1 for the stack's health (is what runs healthy), 0 for the others",
                m.stack_health.clone(),
            );
            r.register_with_unit(
                "stackpin_last_success_timestamp",
                "Unix time of the stack's last successful converge",
                Unit::Seconds,
                m.last_success.clone(),
            );
            r.register(
                "stackpin_stacks",
                "Number of stacks by condition (quarantined, held, blocked)",
                m.stacks.clone(),
            );
            r.register(
                "stackpin_fetch_errors",
                "Failed fetches of the desired-state repository",
                m.fetch_errors.clone(),
            );
            r.register_with_unit(
                "stackpin_last_fetch_success_timestamp",
                "Unix time of the last successful fetch of the desired-state repository",
                Unit::Seconds,
                m.last_fetch.clone(),
            );
            r.register(
                "stackpin_webhooks",
                "Webhook deliveries by outcome",
                m.webhooks.clone(),
            );
            r.register(
                "stackpin_stack_results",
                "Stack runs by outcome (deployed, rolled_back, failed, ...) and reason (the failing stage's reason, or none)",
                m.results.clone(),
            );
            r.register_with_unit(
                "stackpin_backup_last_success_timestamp",
                "Unix time of the stack's newest complete backup",
                Unit::Seconds,
                m.last_backup.clone(),
            );
            r.register(
                "stackpin_rollbacks",
                "Operator rollbacks (stackpin rollback through the daemon) by stack and outcome",
                m.rollbacks.clone(),
            );
            r.register(
                "stackpin_build_info",
                "1, labelled with the running stackpin's version",
                m.build_info.clone(),
            );
        }
        m.build_info
            .get_or_create(&labels([("version", env!("CARGO_PKG_VERSION"))]))
            .set(1);
        m
    }

    /// Counts one operator rollback of `stack` ending in `outcome`.
    pub fn record_rollback(&self, stack: &str, outcome: Outcome) {
        let outcome = outcome_label(outcome);
        self.rollbacks
            .get_or_create(&labels([("stack", stack), ("outcome", outcome.as_str())]))
            .inc();
    }

    /// Sets the time of `stack`'s newest complete backup.
    pub fn set_last_backup(&self, stack: &str, unix_secs: i64) {
        self.last_backup
            .get_or_create(&labels([("stack", stack)]))
            .set(unix_secs);
    }

    /// [`Metrics::encode`] in the classic text format.
    pub fn encode_classic(&self) -> String {
        to_classic(&self.encode())
    }

    /// Counts one sync run ending in `result` (`success`, `failed`, `noop`, …).
    pub fn record_run(&self, result: &str) {
        self.sync_runs
            .get_or_create(&labels([("result", result)]))
            .inc();
    }

    /// Counts one stack's run ending in `outcome` for `reason`.
    pub fn record_result(&self, stack: &str, outcome: Outcome, reason: Option<Reason>) {
        let outcome = outcome_label(outcome);
        let reason = reason.map(Reason::as_str).unwrap_or("none");
        self.results
            .get_or_create(&labels([
                ("stack", stack),
                ("outcome", outcome.as_str()),
                ("reason", reason),
            ]))
            .inc();
    }

    pub fn observe_converge(&self, stack: &str, secs: f64) {
        self.converge
            .get_or_create(&labels([("stack", stack)]))
            .observe(secs);
    }

    pub fn observe_smoke(&self, stack: &str, secs: f64) {
        self.smoke
            .get_or_create(&labels([("stack", stack)]))
            .observe(secs);
    }

    /// Sets `stackpin_stack_state{stack,state}` to 1 for `state` and to 0 for
    /// every other [`State`]. Idempotent.
    pub fn set_stack_state(&self, stack: &str, state: State) {
        one_hot(
            &self.stack_state,
            stack,
            "state",
            &State::ALL.map(State::as_str),
            Some(state.as_str()),
        );
    }

    /// Sets `stackpin_stack_sync{stack,sync}` and
    /// `stackpin_stack_health{stack,health}` one-hot, as
    /// [`Metrics::set_stack_state`]. Idempotent.
    pub fn set_stack_axes(&self, stack: &str, sync: SyncStatus, health: Health) {
        one_hot(
            &self.stack_sync,
            stack,
            "sync",
            &SyncStatus::ALL.map(SyncStatus::as_str),
            Some(sync.as_str()),
        );
        one_hot(
            &self.stack_health,
            stack,
            "health",
            &Health::ALL.map(Health::as_str),
            Some(health.as_str()),
        );
    }

    pub fn set_last_success(&self, stack: &str, unix_secs: i64) {
        self.last_success
            .get_or_create(&labels([("stack", stack)]))
            .set(unix_secs);
    }

    /// Drops every per-stack series of `stack` (for a stack removed from the
    /// desired state). Idempotent.
    pub fn forget_stack(&self, stack: &str) {
        let one = labels([("stack", stack)]);
        self.converge.remove(&one);
        self.smoke.remove(&one);
        self.last_success.remove(&one);
        self.last_backup.remove(&one);
        one_hot(
            &self.stack_state,
            stack,
            "state",
            &State::ALL.map(State::as_str),
            None,
        );
        one_hot(
            &self.stack_sync,
            stack,
            "sync",
            &SyncStatus::ALL.map(SyncStatus::as_str),
            None,
        );
        one_hot(
            &self.stack_health,
            stack,
            "health",
            &Health::ALL.map(Health::as_str),
            None,
        );
    }

    /// Sets `stackpin_stacks{condition}` for the three conditions.
    pub fn set_counts(&self, quarantined: i64, held: i64, blocked: i64) {
        for (c, n) in CONDITIONS.into_iter().zip([quarantined, held, blocked]) {
            self.stacks
                .get_or_create(&labels([("condition", c)]))
                .set(n);
        }
    }

    pub fn fetch_error(&self) {
        self.fetch_errors.inc();
    }

    pub fn set_last_fetch(&self, unix_secs: i64) {
        self.last_fetch.set(unix_secs);
    }

    /// Counts one webhook delivery by outcome (`accepted`, `ignored`,
    /// `unauthorized`, `too_large`, `bad_request`, …).
    pub fn webhook(&self, outcome: &str) {
        self.webhooks
            .get_or_create(&labels([("outcome", outcome)]))
            .inc();
    }

    /// The OpenMetrics text exposition, ending in `# EOF`.
    pub fn encode(&self) -> String {
        let r = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        // Writing to a String only fails if an encoder reports an error,
        // which the built-in metric types never do.
        if text::encode(&mut out, &r).is_err() {
            tracing::error!("failed to encode metrics");
        }
        out
    }
}

/// An outcome as a label value: its JSON spelling (`rolled_back`).
fn outcome_label(o: Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Whether a scraper's `Accept` header asks for OpenMetrics (Prometheus
/// sends `application/openmetrics-text;…` first); anything else, or none,
/// gets the classic text format, as Prometheus' own client libraries do.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// The OpenMetrics exposition in the classic text format (0.0.4): a
/// counter's `HELP`/`TYPE` name its `_total` series, there are no `UNIT`
/// lines, no `_created` series and no `# EOF`. Gauges and histograms are
/// written the same in both. Pure.
pub fn to_classic(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for l in openmetrics.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ")
            && let Some((name, "counter")) = rest.split_once(' ')
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for l in openmetrics.lines() {
        if l == "# EOF" || l.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| l.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((p, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{p}{name}_total {tail}\n"));
                continue;
            }
        } else {
            let series = l.split(['{', ' ']).next().unwrap_or("");
            if series
                .strip_suffix("_created")
                .is_some_and(|base| counters.contains(base))
            {
                continue;
            }
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Label sets with escaped values: prometheus-client writes values as
/// given, and a stack name is user input.
fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (k, escape_label_value(v)))
        .collect()
}

fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn encodes_every_metric() {
        let m = Metrics::new();
        m.record_run("success");
        m.record_run("success");
        m.record_run("failed");
        m.observe_converge("web", 3.0);
        m.observe_smoke("web", 0.2);
        m.set_stack_state("web", State::Converged);
        m.set_last_success("web", 1_700_000_000);
        m.set_counts(1, 2, 3);
        m.fetch_error();
        m.set_last_fetch(1_700_000_001);
        m.webhook("accepted");
        let t = m.encode();
        assert!(t.ends_with("# EOF\n"), "{t}");
        assert_eq!(
            sample(&t, "stackpin_sync_runs_total{result=\"success\"}"),
            Some("2")
        );
        assert_eq!(
            sample(&t, "stackpin_sync_runs_total{result=\"failed\"}"),
            Some("1")
        );
        assert_eq!(
            sample(
                &t,
                "stackpin_converge_duration_seconds_bucket{le=\"5.0\",stack=\"web\"}"
            )
            .or_else(|| sample(
                &t,
                "stackpin_converge_duration_seconds_bucket{stack=\"web\",le=\"5.0\"}"
            )),
            Some("1"),
            "{t}"
        );
        assert_eq!(
            sample(&t, "stackpin_smoke_duration_seconds_count{stack=\"web\"}"),
            Some("1")
        );
        assert_eq!(
            sample(
                &t,
                "stackpin_stack_state{stack=\"web\",state=\"Converged\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(&t, "stackpin_stack_state{stack=\"web\",state=\"Failed\"}"),
            Some("0")
        );
        assert_eq!(
            sample(&t, "stackpin_last_success_timestamp_seconds{stack=\"web\"}"),
            Some("1700000000")
        );
        assert_eq!(sample(&t, "stackpin_stacks{condition=\"held\"}"), Some("2"));
        assert_eq!(sample(&t, "stackpin_fetch_errors_total"), Some("1"));
        assert_eq!(
            sample(&t, "stackpin_last_fetch_success_timestamp_seconds"),
            Some("1700000001")
        );
        assert_eq!(
            sample(&t, "stackpin_webhooks_total{outcome=\"accepted\"}"),
            Some("1")
        );
    }

    #[test]
    fn the_classic_format_names_counters_by_their_series_and_has_no_eof() {
        let m = Metrics::new();
        m.record_run("success");
        m.observe_smoke("web", 0.2);
        m.set_last_backup("web", 1_700_000_000);
        m.record_rollback("web", Outcome::Deployed);
        let t = m.encode_classic();
        assert!(
            t.contains("stackpin_rollbacks_total{stack=\"web\",outcome=\"deployed\"} 1\n"),
            "{t}"
        );
        assert!(!t.contains("# EOF") && !t.contains("# UNIT"), "{t}");
        assert!(
            t.contains("# TYPE stackpin_sync_runs_total counter\n"),
            "{t}"
        );
        assert!(
            t.contains("# HELP stackpin_sync_runs_total Sync runs"),
            "{t}"
        );
        assert!(t.contains("stackpin_sync_runs_total{result=\"success\"} 1\n"));
        assert!(t.contains("# TYPE stackpin_smoke_duration_seconds histogram\n"));
        assert!(
            t.contains("stackpin_backup_last_success_timestamp_seconds{stack=\"web\"} 1700000000")
        );
        assert!(t.contains(&format!(
            "stackpin_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        // A counter's _created series is not in the classic format.
        let om = "# HELP x A thing.\n# TYPE x counter\nx_total 1\nx_created 1.7e9\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP x_total A thing.\n# TYPE x_total counter\nx_total 1\n"
        );
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }

    #[test]
    fn stack_state_is_one_hot() {
        let m = Metrics::new();
        m.set_stack_state("web", State::Converged);
        let t = m.encode();
        let ones: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("stackpin_stack_state{") && l.ends_with(" 1"))
            .collect();
        assert_eq!(
            ones,
            ["stackpin_stack_state{stack=\"web\",state=\"Converged\"} 1"]
        );
        m.set_stack_state("web", State::Held);
        let t = m.encode();
        assert_eq!(
            t.lines()
                .filter(|l| l.starts_with("stackpin_stack_state{") && l.ends_with(" 1"))
                .collect::<Vec<_>>(),
            ["stackpin_stack_state{stack=\"web\",state=\"Held\"} 1"]
        );
        m.set_stack_axes("web", SyncStatus::Quarantined, Health::Healthy);
        let t = m.encode();
        let ones: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("stackpin_stack_") && l.ends_with(" 1"))
            .filter(|l| !l.starts_with("stackpin_stack_state{"))
            .collect();
        assert_eq!(
            ones,
            [
                "stackpin_stack_sync{stack=\"web\",sync=\"Quarantined\"} 1",
                "stackpin_stack_health{stack=\"web\",health=\"Healthy\"} 1"
            ]
        );
        m.forget_stack("web");
        assert!(!m.encode().contains("stack=\"web\""));
    }

    #[test]
    fn results_count_by_outcome_and_reason() {
        let m = Metrics::new();
        m.record_result("web", Outcome::RolledBack, Some(Reason::RolledBack));
        m.record_result("web", Outcome::Failed, Some(Reason::PullFailed));
        m.record_result("web", Outcome::Failed, Some(Reason::PullFailed));
        m.record_result("web", Outcome::Deployed, None);
        let t = m.encode();
        for want in [
            "stackpin_stack_results_total{stack=\"web\",outcome=\"failed\",reason=\"PullFailed\"} 2",
            "stackpin_stack_results_total{stack=\"web\",outcome=\"rolled_back\",reason=\"RolledBack\"} 1",
            "stackpin_stack_results_total{stack=\"web\",outcome=\"deployed\",reason=\"none\"} 1",
        ] {
            assert!(t.contains(want), "{want}\n{t}");
        }
    }

    #[test]
    fn escapes_label_values() {
        let m = Metrics::new();
        m.set_last_success("a\"b\\c\nd", 1);
        let t = m.encode();
        assert!(
            t.contains("stackpin_last_success_timestamp_seconds{stack=\"a\\\"b\\\\c\\nd\"} 1"),
            "{t}"
        );
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Metrics>();
    }
}
