//! Counters of the DNS look-ups a [`crate::Locator`] makes, for the server's Prometheus page
//! (`entente_dns_lookups_total{kind,outcome}`, `entente_dns_lookup_duration_seconds{kind}`).
//!
//! One look-up is one question to the resolver: an SRV or NAPTR query, or the A and AAAA
//! queries of one host name (hickory asks both families together, so they are timed and counted
//! as one `address` look-up). Answers from the resolver's cache count too (they are what the
//! connector waited for). Static routes and IP literals are not DNS look-ups and are not
//! counted. Everything is plain atomics: recording costs a few relaxed additions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LookupKind {
    Srv,
    Naptr,
    /// A and AAAA of one host.
    Address,
}

impl LookupKind {
    pub const ALL: [LookupKind; 3] = [LookupKind::Srv, LookupKind::Naptr, LookupKind::Address];

    pub fn as_str(self) -> &'static str {
        match self {
            LookupKind::Srv => "srv",
            LookupKind::Naptr => "naptr",
            LookupKind::Address => "address",
        }
    }

    fn index(self) -> usize {
        match self {
            LookupKind::Srv => 0,
            LookupKind::Naptr => 1,
            LookupKind::Address => 2,
        }
    }
}

/// How a look-up ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LookupOutcome {
    /// Records of the type asked (for SRV, a lone "." target counts: it is an answer).
    Ok,
    /// The name does not exist.
    NxDomain,
    /// The name exists but has no record of the type asked (NODATA).
    NoRecords,
    /// No answer in time.
    Timeout,
    /// Anything else: SERVFAIL, REFUSED, a broken answer, a network error. (A name that is not
    /// a valid DNS name is never asked, and not counted.)
    Error,
}

impl LookupOutcome {
    pub const ALL: [LookupOutcome; 5] = [
        LookupOutcome::Ok,
        LookupOutcome::NxDomain,
        LookupOutcome::NoRecords,
        LookupOutcome::Timeout,
        LookupOutcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LookupOutcome::Ok => "ok",
            LookupOutcome::NxDomain => "nxdomain",
            LookupOutcome::NoRecords => "no-records",
            LookupOutcome::Timeout => "timeout",
            LookupOutcome::Error => "error",
        }
    }

    fn index(self) -> usize {
        match self {
            LookupOutcome::Ok => 0,
            LookupOutcome::NxDomain => 1,
            LookupOutcome::NoRecords => 2,
            LookupOutcome::Timeout => 3,
            LookupOutcome::Error => 4,
        }
    }
}

/// Upper bounds (seconds) of the latency histogram's buckets, Prometheus style (`le`); `+Inf`
/// is implied. From a cache hit (well under a millisecond) to the resolver's timeouts (seconds).
pub const DURATION_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

const KINDS: usize = LookupKind::ALL.len();
const OUTCOMES: usize = LookupOutcome::ALL.len();
const BUCKETS: usize = DURATION_BUCKETS.len();

/// The counters; share one (in an `Arc`) between the locators of a server.
#[derive(Debug, Default)]
pub struct LookupStats {
    counts: [[AtomicU64; OUTCOMES]; KINDS],
    /// Per kind, look-ups whose duration fell in each bucket (not cumulative; the last slot is
    /// above the largest bound).
    buckets: [[AtomicU64; BUCKETS + 1]; KINDS],
    /// Per kind, the total duration in nanoseconds.
    sum_nanos: [AtomicU64; KINDS],
}

/// The latency histogram of one kind, as Prometheus exposes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// (upper bound, look-ups that took at most that long), cumulative, ascending; `+Inf` is
    /// [`Histogram::count`].
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    /// Seconds.
    pub sum: f64,
}

impl LookupStats {
    pub fn new() -> LookupStats {
        LookupStats::default()
    }

    /// Records one look-up.
    pub fn record(&self, kind: LookupKind, outcome: LookupOutcome, took: Duration) {
        let k = kind.index();
        if let Some(c) = self.counts.get(k).and_then(|r| r.get(outcome.index())) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        let slot = DURATION_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(BUCKETS);
        if let Some(b) = self.buckets.get(k).and_then(|r| r.get(slot)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(s) = self.sum_nanos.get(k) {
            let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            s.fetch_add(nanos, Ordering::Relaxed);
        }
    }

    /// Look-ups of `kind` that ended with `outcome`.
    pub fn count(&self, kind: LookupKind, outcome: LookupOutcome) -> u64 {
        self.counts
            .get(kind.index())
            .and_then(|r| r.get(outcome.index()))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The latency histogram of `kind`.
    pub fn histogram(&self, kind: LookupKind) -> Histogram {
        let k = kind.index();
        let mut running = 0u64;
        let mut buckets = Vec::with_capacity(BUCKETS);
        let row = self.buckets.get(k);
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            running += row
                .and_then(|r| r.get(i))
                .map_or(0, |b| b.load(Ordering::Relaxed));
            buckets.push((*le, running));
        }
        let count = running
            + row
                .and_then(|r| r.get(BUCKETS))
                .map_or(0, |b| b.load(Ordering::Relaxed));
        let sum = self
            .sum_nanos
            .get(k)
            .map_or(0, |s| s.load(Ordering::Relaxed)) as f64
            / 1e9;
        Histogram {
            buckets,
            count,
            sum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_and_outcome() {
        let s = LookupStats::new();
        s.record(LookupKind::Srv, LookupOutcome::Ok, Duration::from_millis(3));
        s.record(LookupKind::Srv, LookupOutcome::Ok, Duration::from_millis(3));
        s.record(
            LookupKind::Address,
            LookupOutcome::NxDomain,
            Duration::from_micros(10),
        );
        assert_eq!(s.count(LookupKind::Srv, LookupOutcome::Ok), 2);
        assert_eq!(s.count(LookupKind::Address, LookupOutcome::NxDomain), 1);
        assert_eq!(s.count(LookupKind::Address, LookupOutcome::Ok), 0);
        assert_eq!(s.count(LookupKind::Naptr, LookupOutcome::Error), 0);
    }

    #[test]
    fn histogram_is_cumulative() {
        let s = LookupStats::new();
        for ms in [0, 3, 3, 40, 7000] {
            s.record(
                LookupKind::Naptr,
                LookupOutcome::Ok,
                Duration::from_millis(ms),
            );
        }
        let h = s.histogram(LookupKind::Naptr);
        assert_eq!(h.count, 5);
        assert!((h.sum - 7.046).abs() < 1e-9, "{}", h.sum);
        let at = |le: f64| {
            h.buckets
                .iter()
                .find(|(b, _)| (*b - le).abs() < 1e-12)
                .map(|(_, n)| *n)
        };
        assert_eq!(at(0.0005), Some(1));
        assert_eq!(at(0.001), Some(1));
        assert_eq!(at(0.005), Some(3));
        assert_eq!(at(0.05), Some(4));
        assert_eq!(at(5.0), Some(4), "7 s is only in +Inf");
        assert!(h.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(s.histogram(LookupKind::Srv).count, 0);
    }
}
