//! Counters for operators, and the Prometheus text exposition format (0.0.4) they are served
//! in at `GET /metrics` on the admin listener (`docs/admin-api.md`).
//!
//! Counters are plain atomics, bumped where the event happens; gauges (sessions, links, SIP
//! connections) are read from their owners when the page is rendered.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use entente_dns::{LookupKind, LookupOutcome, LookupStats};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a stanza came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    C2s,
    S2s,
}

impl Source {
    const ALL: [Source; 2] = [Source::C2s, Source::S2s];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::C2s => "c2s",
            Source::S2s => "s2s",
        }
    }
}

/// The stanza kinds counted (anything else, which the hub ignores, is not).
const KINDS: [&str; 3] = ["message", "presence", "iq"];

fn kind_index(name: &str) -> Option<usize> {
    KINDS.iter().position(|k| *k == name)
}

/// Why federation could not deliver a stanza (`entente_s2s_bounces_total{reason}`).
pub const BOUNCE_REASONS: [&str; 6] = [
    // The admin's federation policy (or [s2s] enabled = false) refused the domain.
    "policy",
    // The link's queue was full.
    "queue-full",
    // The domain could not be reached within retry_timeout_secs.
    "unreachable",
    // The same, and the last attempt timed out.
    "timeout",
    // An administrator drained the link before it was established.
    "drained",
    "other",
];

/// Why a server-to-server stream could not be set up
/// (`entente_s2s_handshake_failures_total{reason}`).
pub const HANDSHAKE_REASONS: [&str; 8] = [
    // Outbound: no server found for the domain, or the look-up failed.
    "dns",
    // Outbound: TCP connect, read or write failed.
    "connect",
    // Outbound: TLS failed, or the peer's certificate was not valid for its domain.
    "tls",
    // Outbound: the peer did not accept our authentication (SASL EXTERNAL or dialback).
    "auth",
    // Outbound: a candidate did not answer in connect_timeout_secs.
    "timeout",
    // Inbound: a dialback key the originating server did not confirm.
    "dialback",
    // Inbound: a domain refused by the federation policy.
    "policy",
    // Inbound: a stream that ended with a stream error before any domain authenticated.
    "stream-error",
];

/// A counter with one label whose values are fixed in advance: one atomic per value.
pub struct LabeledCounter<const N: usize> {
    labels: [&'static str; N],
    values: [AtomicU64; N],
}

impl<const N: usize> LabeledCounter<N> {
    pub fn new(labels: [&'static str; N]) -> Self {
        LabeledCounter {
            labels,
            values: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Adds one for `label`; an unknown label counts as the last one (`other` where there is
    /// one).
    pub fn inc(&self, label: &str) {
        let i = self
            .labels
            .iter()
            .position(|l| *l == label)
            .unwrap_or(N.saturating_sub(1));
        if let Some(v) = self.values.get(i) {
            v.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn get(&self, label: &str) -> u64 {
        self.labels
            .iter()
            .position(|l| *l == label)
            .and_then(|i| self.values.get(i))
            .map(|v| v.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// (label, value) pairs, in the order given to [`LabeledCounter::new`].
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        self.labels
            .iter()
            .zip(&self.values)
            .map(|(l, v)| (*l, v.load(Ordering::Relaxed)))
            .collect()
    }
}

/// The server's counters; one per server, shared through the hub.
pub struct Metrics {
    /// When the server started (seconds since the Unix epoch).
    started: f64,
    /// Stanzas received, by source then kind.
    stanzas_in: [[AtomicU64; 3]; 2],
    /// Stanzas written to outbound federation streams, by kind.
    s2s_sent: [AtomicU64; 3],
    pub s2s_bounces: LabeledCounter<6>,
    pub s2s_handshake_failures: LabeledCounter<8>,
    /// DNS look-ups of every locator (XMPP and SIP federation), shared with them.
    pub dns: Arc<LookupStats>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            stanzas_in: Default::default(),
            s2s_sent: Default::default(),
            s2s_bounces: LabeledCounter::new(BOUNCE_REASONS),
            s2s_handshake_failures: LabeledCounter::new(HANDSHAKE_REASONS),
            dns: Arc::new(LookupStats::new()),
        }
    }

    /// Counts a stanza received from a client or a federated server; `name` is the element
    /// name (`message`, `presence`, `iq`; anything else is not counted).
    pub fn stanza_in(&self, source: Source, name: &str) {
        if let Some(k) = kind_index(name) {
            let s = match source {
                Source::C2s => 0,
                Source::S2s => 1,
            };
            self.stanzas_in[s][k].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a stanza written to an outbound federation stream.
    pub fn s2s_sent(&self, name: &str) {
        if let Some(k) = kind_index(name) {
            self.s2s_sent[k].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stanzas_in_count(&self, source: Source, name: &str) -> u64 {
        let s = match source {
            Source::C2s => 0,
            Source::S2s => 1,
        };
        kind_index(name)
            .map(|k| self.stanzas_in[s][k].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Writes the counters this struct owns (the caller adds the gauges it reads elsewhere).
    pub fn write_counters(&self, e: &mut Exposition) {
        e.family(
            "entente_stanzas_total",
            "Stanzas received from clients (c2s) and federated servers (s2s).",
            Type::Counter,
        );
        for source in Source::ALL {
            for kind in KINDS {
                e.sample(
                    "entente_stanzas_total",
                    &[("kind", kind), ("source", source.as_str())],
                    self.stanzas_in_count(source, kind) as f64,
                );
            }
        }
        e.family(
            "entente_s2s_stanzas_sent_total",
            "Stanzas written to outbound XMPP federation streams.",
            Type::Counter,
        );
        for (k, kind) in KINDS.iter().enumerate() {
            let v = self
                .s2s_sent
                .get(k)
                .map_or(0, |v| v.load(Ordering::Relaxed));
            e.sample(
                "entente_s2s_stanzas_sent_total",
                &[("kind", kind)],
                v as f64,
            );
        }
        e.family(
            "entente_s2s_bounces_total",
            "Stanzas XMPP federation could not deliver (bounced with an error, or dropped where RFC 6120 says so), by reason.",
            Type::Counter,
        );
        for (reason, v) in self.s2s_bounces.snapshot() {
            e.sample("entente_s2s_bounces_total", &[("reason", reason)], v as f64);
        }
        e.family(
            "entente_s2s_handshake_failures_total",
            "Server-to-server streams that could not be set up, by reason.",
            Type::Counter,
        );
        for (reason, v) in self.s2s_handshake_failures.snapshot() {
            e.sample(
                "entente_s2s_handshake_failures_total",
                &[("reason", reason)],
                v as f64,
            );
        }
        self.write_dns(e);
        e.family(
            "process_start_time_seconds",
            "Start time of the server since the Unix epoch, in seconds.",
            Type::Gauge,
        );
        e.sample("process_start_time_seconds", &[], self.started.floor());
    }
}

impl Metrics {
    /// `entente_dns_lookups_total{kind,outcome}` and the histogram
    /// `entente_dns_lookup_duration_seconds{kind}` (every kind and outcome, zeros included, so
    /// that rates work from the first scrape).
    fn write_dns(&self, e: &mut Exposition) {
        e.family(
            "entente_dns_lookups_total",
            "DNS look-ups for federation (srv, naptr, address = A and AAAA of one host), by outcome. Static routes are not counted.",
            Type::Counter,
        );
        for kind in LookupKind::ALL {
            for outcome in LookupOutcome::ALL {
                e.sample(
                    "entente_dns_lookups_total",
                    &[("kind", kind.as_str()), ("outcome", outcome.as_str())],
                    self.dns.count(kind, outcome) as f64,
                );
            }
        }
        e.family(
            "entente_dns_lookup_duration_seconds",
            "How long DNS look-ups for federation took, answers from the resolver's cache included.",
            Type::Histogram,
        );
        for kind in LookupKind::ALL {
            let h = self.dns.histogram(kind);
            for (le, n) in &h.buckets {
                let le = format_value(*le);
                e.sample(
                    "entente_dns_lookup_duration_seconds_bucket",
                    &[("kind", kind.as_str()), ("le", &le)],
                    *n as f64,
                );
            }
            e.sample(
                "entente_dns_lookup_duration_seconds_bucket",
                &[("kind", kind.as_str()), ("le", "+Inf")],
                h.count as f64,
            );
            e.sample(
                "entente_dns_lookup_duration_seconds_sum",
                &[("kind", kind.as_str())],
                h.sum,
            );
            e.sample(
                "entente_dns_lookup_duration_seconds_count",
                &[("kind", kind.as_str())],
                h.count as f64,
            );
        }
    }
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
    /// Samples `<name>_bucket{le}`, `<name>_sum`, `<name>_count`.
    Histogram,
}

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A writer for the Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE`
/// lines per family, then one `name{label="value",...} value` line per sample.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family. `name` must be a valid metric name (they are constants here).
    pub fn family(&mut self, name: &str, help: &str, t: Type) {
        let t = match t {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {t}");
    }

    /// One sample. Label values are escaped; label names must be valid (constants here).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&format_value(value));
        self.out.push('\n');
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, help: &str, t: Type, value: f64) {
        self.family(name, help, t);
        self.sample(name, &[], value);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// HELP text: backslash and line feed are escaped.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label values: backslash, double quote and line feed are escaped.
fn escape_label(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// Integers without a fraction, the rest as Rust prints them, and Prometheus' spellings of
/// the special values.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut e = Exposition::new();
        e.family("x_total", "Things.\nWith a \\ backslash.", Type::Counter);
        e.sample("x_total", &[("reason", "a\"b\\c\nd"), ("k", "v")], 3.0);
        e.sample("x_total", &[], 0.5);
        e.single("g", "A gauge.", Type::Gauge, 42.0);
        assert_eq!(
            e.finish(),
            "# HELP x_total Things.\\nWith a \\\\ backslash.\n\
             # TYPE x_total counter\n\
             x_total{reason=\"a\\\"b\\\\c\\nd\",k=\"v\"} 3\n\
             x_total 0.5\n\
             # HELP g A gauge.\n\
             # TYPE g gauge\n\
             g 42\n"
        );
    }

    #[test]
    fn special_values() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(-2.0), "-2");
        assert_eq!(format_value(1.25), "1.25");
        assert_eq!(format_value(1e20), "100000000000000000000");
        assert_eq!(format_value(1_700_000_000.0), "1700000000");
    }

    #[test]
    fn counters() {
        let m = Metrics::new();
        m.stanza_in(Source::C2s, "message");
        m.stanza_in(Source::C2s, "message");
        m.stanza_in(Source::S2s, "iq");
        m.stanza_in(Source::S2s, "stream:features");
        m.s2s_bounces.inc("queue-full");
        m.s2s_bounces.inc("no-such-reason");
        m.s2s_handshake_failures.inc("tls");
        assert_eq!(m.stanzas_in_count(Source::C2s, "message"), 2);
        assert_eq!(m.stanzas_in_count(Source::S2s, "iq"), 1);
        assert_eq!(m.stanzas_in_count(Source::S2s, "message"), 0);
        assert_eq!(m.s2s_bounces.get("queue-full"), 1);
        assert_eq!(m.s2s_bounces.get("other"), 1);
        let mut e = Exposition::new();
        m.write_counters(&mut e);
        let text = e.finish();
        assert!(text.contains("entente_stanzas_total{kind=\"message\",source=\"c2s\"} 2\n"));
        assert!(text.contains("entente_stanzas_total{kind=\"iq\",source=\"s2s\"} 1\n"));
        assert!(text.contains("entente_s2s_bounces_total{reason=\"queue-full\"} 1\n"));
        assert!(text.contains("entente_s2s_handshake_failures_total{reason=\"tls\"} 1\n"));
        assert!(text.contains("# TYPE process_start_time_seconds gauge\n"));
        m.dns.record(
            LookupKind::Srv,
            LookupOutcome::NxDomain,
            std::time::Duration::from_millis(2),
        );
        let mut e = Exposition::new();
        m.write_counters(&mut e);
        let dns = e.finish();
        assert!(dns.contains("# TYPE entente_dns_lookup_duration_seconds histogram\n"));
        assert!(dns.contains("entente_dns_lookups_total{kind=\"srv\",outcome=\"nxdomain\"} 1\n"));
        assert!(dns.contains("entente_dns_lookups_total{kind=\"address\",outcome=\"ok\"} 0\n"));
        assert!(dns
            .contains("entente_dns_lookup_duration_seconds_bucket{kind=\"srv\",le=\"0.001\"} 0\n"));
        assert!(dns
            .contains("entente_dns_lookup_duration_seconds_bucket{kind=\"srv\",le=\"0.005\"} 1\n"));
        assert!(dns
            .contains("entente_dns_lookup_duration_seconds_bucket{kind=\"srv\",le=\"+Inf\"} 1\n"));
        assert!(dns.contains("entente_dns_lookup_duration_seconds_count{kind=\"srv\"} 1\n"));
        assert!(dns.contains("entente_dns_lookup_duration_seconds_sum{kind=\"srv\"} 0.002\n"));
        // Every line is a comment or `name[{labels}] value`.
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or(("", ""));
            assert!(!series.is_empty(), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
