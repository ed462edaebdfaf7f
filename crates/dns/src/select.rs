//! RFC 2782 target selection: pure logic, no I/O.
//!
//! The resolver hands us SRV records in whatever order the name server chose; RFC 2782 says how a
//! client turns them into the order in which it contacts the targets. Everything here takes the
//! random number generator as a parameter, so tests (and the [`Locator`](crate::Locator), when
//! given a seed) are deterministic.

use rand::seq::SliceRandom;
use rand::Rng;

/// One SRV record as found in DNS (or made up from a static route).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SrvRecord {
    /// Lower is tried first.
    pub priority: u16,
    /// Relative weight among records of the same priority.
    pub weight: u16,
    /// The port the service listens on at `target`.
    pub port: u16,
    /// The target host name, with or without the trailing dot. `"."` means "no service here".
    pub target: String,
}

impl SrvRecord {
    /// Builds a record.
    pub fn new(priority: u16, weight: u16, port: u16, target: impl Into<String>) -> Self {
        Self {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    /// RFC 2782: "A Target of "." means that the service is decidedly not available at this
    /// domain."
    pub fn is_unavailable(&self) -> bool {
        self.target.trim_end_matches('.').is_empty()
    }
}

/// One host to contact, in the order produced by [`order_srv`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// Host name without the trailing dot, lower-cased. Keep it: TLS certificate checks and
    /// logs need the name, not only the addresses.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    /// The SRV priority the target came from.
    pub priority: u16,
    /// The SRV weight the target came from.
    pub weight: u16,
}

impl From<SrvRecord> for Target {
    fn from(r: SrvRecord) -> Self {
        Self {
            host: normalize_host(&r.target),
            port: r.port,
            priority: r.priority,
            weight: r.weight,
        }
    }
}

/// The outcome of ordering one SRV RRset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SrvOrder {
    /// Every usable target, in the order to try them. Empty if the input was empty.
    Targets(Vec<Target>),
    /// The RRset said the service is decidedly not available (a lone `"."` target).
    Unavailable,
}

/// Orders one SRV RRset per RFC 2782 and drops `"."` targets.
///
/// A lone `"."` record (or an RRset made only of `"."` records, which RFC 2782 does not foresee
/// but which can only mean the same) gives [`SrvOrder::Unavailable`]. A `"."` record next to real
/// targets is meaningless; it is skipped.
pub fn order_srv<R: Rng + ?Sized>(records: Vec<SrvRecord>, rng: &mut R) -> SrvOrder {
    if !records.is_empty() && records.iter().all(SrvRecord::is_unavailable) {
        return SrvOrder::Unavailable;
    }
    let usable: Vec<SrvRecord> = records
        .into_iter()
        .filter(|r| !r.is_unavailable())
        .collect();
    SrvOrder::Targets(
        rfc2782_order(usable, |r| (r.priority, r.weight), rng)
            .into_iter()
            .map(Target::from)
            .collect(),
    )
}

/// The ordering core, generic over the item so that callers can carry extra data along (the
/// locator tags each record with its transport when it mixes `_xmpps-server` and
/// `_xmpp-server`, as XEP-0368 §3 asks: "all priorities and weights are mixed").
///
/// `key` returns `(priority, weight)`. Priorities are taken in ascending order; within one
/// priority, RFC 2782's selection is repeated until no record is left:
///
/// > To select a target to be contacted next, arrange all SRV RRs (that have not been ordered
/// > yet) in any order, except that all those with weight 0 are placed at the beginning of the
/// > list. Compute the sum of the weights of those RRs, and with each RR associate the running
/// > sum in the selected order. Then choose a uniform random number between 0 and the sum
/// > computed (inclusive), and select the RR whose running sum value is the first in the
/// > selected order which is greater than or equal to the random number selected.
///
/// "Any order" is a random shuffle here: that way the weight-0 records share fairly the small
/// chance (1 in sum+1) that the rule above gives them, and an RRset made only of weight-0
/// records comes out uniformly shuffled instead of in the name server's order.
pub fn rfc2782_order<T, R, K>(mut items: Vec<T>, key: K, rng: &mut R) -> Vec<T>
where
    R: Rng + ?Sized,
    K: Fn(&T) -> (u16, u16),
{
    // Stable sort: items of one priority keep their relative order until shuffled below.
    items.sort_by_key(|t| key(t).0);
    let mut out = Vec::with_capacity(items.len());
    let mut rest = items;
    while let Some(first) = rest.first() {
        let priority = key(first).0;
        let end = rest
            .iter()
            .position(|t| key(t).0 != priority)
            .unwrap_or(rest.len());
        let tail = rest.split_off(end);
        weighted_order(rest, &key, rng, &mut out);
        rest = tail;
    }
    out
}

/// RFC 2782's running-sum selection over records of one priority, appended to `out`.
fn weighted_order<T, R, K>(mut group: Vec<T>, key: &K, rng: &mut R, out: &mut Vec<T>)
where
    R: Rng + ?Sized,
    K: Fn(&T) -> (u16, u16),
{
    if group.len() == 1 {
        out.append(&mut group);
        return;
    }
    group.shuffle(rng);
    // "all those with weight 0 are placed at the beginning of the list" (stable: keeps the shuffle).
    group.sort_by_key(|t| key(t).1 != 0);
    while !group.is_empty() {
        // u64: 65535 records of weight 65535 would overflow a u32.
        let sum: u64 = group.iter().map(|t| u64::from(key(t).1)).sum();
        let pick = rng.gen_range(0..=sum);
        let mut running = 0u64;
        // The last running sum equals `sum` >= `pick`, so `position` always finds one; the
        // fallback to 0 is never taken.
        let index = group
            .iter()
            .position(|t| {
                running += u64::from(key(t).1);
                running >= pick
            })
            .unwrap_or(0);
        // `remove` keeps the remaining order, so weight-0 records stay at the front.
        out.push(group.remove(index));
    }
}

/// Lower-cases a host name and strips the trailing dot.
pub(crate) fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::HashMap;

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    fn targets(order: SrvOrder) -> Vec<Target> {
        match order {
            SrvOrder::Targets(t) => t,
            SrvOrder::Unavailable => panic!("unexpected Unavailable"),
        }
    }

    fn hosts(order: SrvOrder) -> Vec<String> {
        targets(order).into_iter().map(|t| t.host).collect()
    }

    #[test]
    fn priority_ascending() {
        let recs = vec![
            SrvRecord::new(30, 0, 1, "c.test."),
            SrvRecord::new(10, 0, 1, "a.test."),
            SrvRecord::new(20, 0, 1, "b.test."),
        ];
        assert_eq!(
            hosts(order_srv(recs, &mut rng(1))),
            vec!["a.test", "b.test", "c.test"]
        );
    }

    #[test]
    fn keeps_every_target_and_fields() {
        let recs = vec![
            SrvRecord::new(10, 5, 5269, "A.Test."),
            SrvRecord::new(10, 5, 5270, "b.test"),
        ];
        let t = targets(order_srv(recs, &mut rng(2)));
        assert_eq!(t.len(), 2);
        let a = t.iter().find(|t| t.host == "a.test").unwrap();
        assert_eq!((a.port, a.priority, a.weight), (5269, 10, 5));
    }

    #[test]
    fn empty_gives_empty() {
        assert_eq!(
            order_srv(vec![], &mut rng(0)),
            SrvOrder::Targets(Vec::new())
        );
    }

    #[test]
    fn lone_dot_is_unavailable() {
        assert_eq!(
            order_srv(vec![SrvRecord::new(0, 0, 0, ".")], &mut rng(0)),
            SrvOrder::Unavailable
        );
        assert_eq!(
            order_srv(
                vec![SrvRecord::new(0, 0, 0, "."), SrvRecord::new(1, 0, 0, "")],
                &mut rng(0)
            ),
            SrvOrder::Unavailable
        );
    }

    #[test]
    fn dot_among_real_targets_is_skipped() {
        let recs = vec![
            SrvRecord::new(0, 0, 0, "."),
            SrvRecord::new(5, 0, 5269, "x.test."),
        ];
        assert_eq!(hosts(order_srv(recs, &mut rng(0))), vec!["x.test"]);
    }

    /// Counts how often each host comes first over many draws.
    fn first_counts(recs: &[SrvRecord], draws: usize, seed: u64) -> HashMap<String, usize> {
        let mut r = rng(seed);
        let mut counts = HashMap::new();
        for _ in 0..draws {
            let first = targets(order_srv(recs.to_vec(), &mut r)).remove(0).host;
            *counts.entry(first).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn weight_distribution_follows_weights() {
        // Weights 60/30/10: the first pick should follow those proportions.
        let recs = vec![
            SrvRecord::new(10, 60, 1, "a.test."),
            SrvRecord::new(10, 30, 1, "b.test."),
            SrvRecord::new(10, 10, 1, "c.test."),
        ];
        let draws = 20_000;
        let counts = first_counts(&recs, draws, 42);
        let share = |h: &str| counts.get(h).copied().unwrap_or(0) as f64 / draws as f64;
        // Each share is (w)/(sum+1) or so; allow 2 points of slack.
        assert!((share("a.test") - 0.60).abs() < 0.02, "{counts:?}");
        assert!((share("b.test") - 0.30).abs() < 0.02, "{counts:?}");
        assert!((share("c.test") - 0.10).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn weight_zero_has_small_chance() {
        // One weight-0 record next to weight 99: it is picked first with probability 1/100.
        let recs = vec![
            SrvRecord::new(10, 0, 1, "zero.test."),
            SrvRecord::new(10, 99, 1, "heavy.test."),
        ];
        let draws = 50_000;
        let counts = first_counts(&recs, draws, 7);
        let zero = counts.get("zero.test").copied().unwrap_or(0);
        // Expected 500; must be non-zero ("a very small chance") and small.
        assert!(zero > 300 && zero < 700, "{counts:?}");
    }

    #[test]
    fn all_weight_zero_is_uniform() {
        let recs = vec![
            SrvRecord::new(10, 0, 1, "a.test."),
            SrvRecord::new(10, 0, 1, "b.test."),
            SrvRecord::new(10, 0, 1, "c.test."),
        ];
        let draws = 30_000;
        let counts = first_counts(&recs, draws, 9);
        for h in ["a.test", "b.test", "c.test"] {
            let share = counts.get(h).copied().unwrap_or(0) as f64 / draws as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.02, "{counts:?}");
        }
    }

    #[test]
    fn seeded_rng_is_deterministic() {
        let recs: Vec<SrvRecord> = (0..8)
            .map(|i| SrvRecord::new(1, 10 + i, 1, format!("h{i}.test.")))
            .collect();
        assert_eq!(
            order_srv(recs.clone(), &mut rng(123)),
            order_srv(recs, &mut rng(123))
        );
    }

    #[test]
    fn generic_order_carries_tags() {
        let items = vec![("tls", 5u16, 1u16), ("starttls", 1, 1), ("tls", 9, 1)];
        let ordered = rfc2782_order(items, |t| (t.1, t.2), &mut rng(0));
        assert_eq!(
            ordered.iter().map(|t| t.1).collect::<Vec<_>>(),
            vec![1, 5, 9]
        );
    }

    fn arb_record() -> impl Strategy<Value = SrvRecord> {
        (0u16..4, any::<u16>(), any::<u16>(), "[a-e]\\.test\\.|\\.")
            .prop_map(|(p, w, port, t)| SrvRecord::new(p, w, port, t))
    }

    proptest! {
        /// The output is a permutation of the non-"." input, sorted by priority.
        #[test]
        fn output_is_priority_sorted_permutation(
            recs in proptest::collection::vec(arb_record(), 0..20),
            seed in any::<u64>(),
        ) {
            let usable: Vec<Target> = recs.iter().filter(|r| !r.is_unavailable())
                .cloned().map(Target::from).collect();
            match order_srv(recs.clone(), &mut rng(seed)) {
                SrvOrder::Unavailable => {
                    prop_assert!(!recs.is_empty());
                    prop_assert!(usable.is_empty());
                }
                SrvOrder::Targets(out) => {
                    prop_assert!(out.windows(2).all(|w| w[0].priority <= w[1].priority));
                    let mut a = out.clone();
                    let mut b = usable.clone();
                    let k = |t: &Target| (t.priority, t.weight, t.port, t.host.clone());
                    a.sort_by_key(k);
                    b.sort_by_key(k);
                    prop_assert_eq!(a, b);
                }
            }
        }

        /// A record with a strictly positive weight, alone with weight-0 records in its
        /// priority, is picked first with probability at least w/(w+1); over one draw we can
        /// only check that the function never panics with extreme weights.
        #[test]
        fn extreme_weights_do_not_panic(
            weights in proptest::collection::vec(prop_oneof![Just(0u16), Just(u16::MAX), any::<u16>()], 1..50),
            seed in any::<u64>(),
        ) {
            let recs: Vec<SrvRecord> = weights.iter().enumerate()
                .map(|(i, w)| SrvRecord::new(0, *w, 1, format!("h{i}.test"))).collect();
            let n = recs.len();
            prop_assert_eq!(targets(order_srv(recs, &mut rng(seed))).len(), n);
        }
    }
}
