//! Errors of server location.
//!
//! The `Display` texts are written to be shown to a user: they end up in XMPP bounce texts and
//! SIP reason phrases ("DNS: no SRV or address records for example.com"), so they name the domain
//! and say what was missing, not which resolver call failed.

/// Why a federation peer could not be located.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The domain does not exist (NXDOMAIN on every lookup we made).
    #[error("DNS: no SRV or address records for {domain} (domain does not exist)")]
    NxDomain {
        /// The domain looked up.
        domain: String,
    },
    /// The domain exists but has none of the records that locate the service.
    #[error("DNS: no SRV or address records for {domain}")]
    NoRecords {
        /// The domain looked up.
        domain: String,
    },
    /// SRV records exist, but none of their targets has an A or AAAA record.
    #[error("DNS: no address records for the servers of {domain} ({})", hosts.join(", "))]
    NoAddresses {
        /// The domain looked up.
        domain: String,
        /// The SRV targets that did not resolve.
        hosts: Vec<String>,
    },
    /// An SRV record with target "." says the service is decidedly not available (RFC 2782).
    #[error("DNS: {domain} announces that it offers no such service (SRV target \".\")")]
    ServiceUnavailable {
        /// The domain looked up.
        domain: String,
    },
    /// No answer within the configured time.
    #[error("DNS: timed out looking up {domain}")]
    Timeout {
        /// The domain looked up.
        domain: String,
    },
    /// The name server answered with an error (SERVFAIL, REFUSED, ...) or could not be reached.
    #[error("DNS: server failure looking up {domain}: {detail}")]
    ServerFailure {
        /// The domain looked up.
        domain: String,
        /// What the resolver reported.
        detail: String,
    },
    /// The domain is not a valid DNS name.
    #[error("DNS: invalid domain name {domain:?}")]
    InvalidName {
        /// The offending name.
        domain: String,
    },
    /// The resolver could not be set up (unreadable system configuration, ...).
    #[error("DNS: resolver configuration: {0}")]
    Config(String),
}

impl Error {
    /// True for errors that may go away by themselves (timeouts, server failures): worth a retry
    /// later, unlike NXDOMAIN or a "." SRV target.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::ServerFailure { .. })
    }

    /// Ranks errors when several lookups failed and one must be reported: the one a user can act
    /// on most comes first (a transient failure explains a missing answer better than a missing
    /// record does).
    pub(crate) fn rank(&self) -> u8 {
        match self {
            Self::Config(_) | Self::InvalidName { .. } => 0,
            Self::Timeout { .. } => 1,
            Self::ServerFailure { .. } => 2,
            Self::ServiceUnavailable { .. } => 3,
            Self::NoAddresses { .. } => 4,
            Self::NoRecords { .. } => 5,
            Self::NxDomain { .. } => 6,
        }
    }
}

/// Keeps the highest-ranked of two errors (see [`Error::rank`]).
pub(crate) fn worse(a: Option<Error>, b: Error) -> Error {
    match a {
        Some(a) if a.rank() <= b.rank() => a,
        _ => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_texts() {
        assert_eq!(
            Error::NoRecords {
                domain: "example.com".into()
            }
            .to_string(),
            "DNS: no SRV or address records for example.com"
        );
        assert_eq!(
            Error::NxDomain {
                domain: "nx.test".into()
            }
            .to_string(),
            "DNS: no SRV or address records for nx.test (domain does not exist)"
        );
        assert_eq!(
            Error::NoAddresses {
                domain: "b.test".into(),
                hosts: vec!["x.b.test".into(), "y.b.test".into()]
            }
            .to_string(),
            "DNS: no address records for the servers of b.test (x.b.test, y.b.test)"
        );
        assert_eq!(
            Error::Timeout {
                domain: "b.test".into()
            }
            .to_string(),
            "DNS: timed out looking up b.test"
        );
    }

    #[test]
    fn worse_prefers_transient() {
        let t = Error::Timeout { domain: "d".into() };
        let n = Error::NoRecords { domain: "d".into() };
        assert_eq!(worse(Some(n.clone()), t.clone()), t);
        assert_eq!(worse(Some(t.clone()), n.clone()), t);
        assert_eq!(worse(None, n.clone()), n);
        assert!(t.is_transient() && !n.is_transient());
    }
}
