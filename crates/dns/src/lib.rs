//! Federation server location for Entente, shared by XMPP server-to-server (RFC 6120 §3.2,
//! XEP-0368) and SIP (RFC 3263).
//!
//! # Design
//!
//! Locating a peer is two different jobs, kept apart the way the workspace keeps protocol logic
//! away from I/O:
//!
//! - [`select`]: pure logic. RFC 2782's target ordering (priorities ascending, then the weighted
//!   running-sum draw within a priority, weight-0 records keeping their small chance), with the
//!   random number generator passed in so that tests are deterministic. A lone "." target means
//!   "service not available at this domain".
//! - [`Locator`]: the async procedures. It asks DNS through `hickory-resolver`, applies the
//!   protocol's procedure (XEP-0368 mixing of `_xmpps-server`/`_xmpp-server`, RFC 6120
//!   fallback to A/AAAA on 5269 unless the SRV says "."; RFC 3263 NAPTR → SRV → A/AAAA for
//!   SIP, including the `_sipfederationtls._tcp` record of Microsoft federation), checks
//!   static routes first, and returns an ordered list of [`Candidate`]s.
//!
//! Why not let hickory do it: `hickory-resolver` performs the lookups (and caches them), but it
//! returns SRV records in the name server's order and knows nothing of RFC 2782's weighted
//! selection, of XEP-0368's merge of two RRsets, of the "." target, or of RFC 3263's NAPTR and
//! transport rules. Those are ours.
//!
//! ## Every target, not the first
//!
//! The result is the whole ordered list; the connector tries each candidate, and each address
//! of a candidate, in turn. (The seed document complains of a peer that only tries the first
//! SRV record and so fails whenever that host is down.)
//!
//! ## Eager address resolution
//!
//! Candidates come back with their A and AAAA addresses already resolved (all targets queried in
//! parallel, each host once). Lazy resolution would save a few queries when the first target
//! answers, but federation connections are rare and long-lived, the resolver caches, and eager
//! resolution lets a failure report say precisely what was missing ("no address records for the
//! servers of b.test (x.b.test)"). Targets that do not resolve are dropped; the list is capped at
//! [`LocatorConfig::max_candidates`]. Each candidate keeps its host name (the SRV target), which
//! TLS needs for SNI and certificate checks.
//!
//! ## Errors
//!
//! [`Error`] separates a missing domain (NXDOMAIN), missing records, a "." target, timeouts and
//! server failures; its `Display` texts are fit for an XMPP bounce or SIP reason phrase. A DNS
//! failure is never mistaken for "no SRV record": the A/AAAA fallback is taken only on
//! NXDOMAIN/NODATA.
//!
//! ## Metrics
//!
//! Every query the [`Locator`] sends is counted by kind and outcome and timed in
//! [`stats::LookupStats`] (plain atomics); the server shares one between its locators and
//! renders it at `/metrics`. Static routes and IP literals send no query and are not counted.
//!
//! ## Test DNS server
//!
//! With the `test-server` feature, `testserver::TestDns` runs an in-process authoritative
//! `hickory-server` on a loopback address (UDP and TCP) serving records given in code or in a
//! small zone-file syntax, and the `entente-testdns` binary serves such a file for end-to-end
//! tests written in other languages. Production builds do not pull `hickory-server`.

pub mod candidate;
pub mod config;
pub mod error;
pub mod locator;
pub mod select;
pub mod stats;
#[cfg(feature = "test-server")]
pub mod testserver;

pub use candidate::{Candidate, Origin, Transport};
pub use config::{LocatorConfig, StaticRoute, StaticRouteError};
pub use error::Error;
pub use locator::{Locator, XMPP_SERVER_PORT};
pub use select::{order_srv, rfc2782_order, SrvOrder, SrvRecord, Target};
pub use stats::{Histogram, LookupKind, LookupOutcome, LookupStats, DURATION_BUCKETS};
