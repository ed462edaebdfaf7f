//! XMPP addresses (RFC 7622).
//!
//! A [`Jid`] is `[localpart@]domainpart[/resourcepart]`. Parsing normalises the parts the way
//! Entente compares them: the domain is lower-cased and stripped of a trailing dot, the localpart is
//! lower-cased (a simplification of the UsernameCaseMapped profile that is exact for ASCII), and the
//! resource is kept as sent. Characters RFC 7622 forbids in a localpart are rejected.
//!
//! [`is_same_or_subdomain`] and [`Jid::domain`] comparisons are whole-label: `cup.example.com` is
//! never taken for `example.com`, nor `example.com.evil` for `example.com` (the seed's
//! "Federation and Subdomains").

use std::fmt;
use std::str::FromStr;

/// Why a string is not a JID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JidError {
    #[error("empty domain")]
    EmptyDomain,
    #[error("empty localpart")]
    EmptyLocal,
    #[error("empty resource")]
    EmptyResource,
    #[error("part longer than 1023 bytes")]
    TooLong,
    #[error("forbidden character {0:?} in localpart")]
    BadLocalChar(char),
    #[error("invalid domain {0:?}")]
    BadDomain(String),
}

/// A full or bare JID.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jid {
    local: Option<String>,
    domain: String,
    resource: Option<String>,
}

const MAX_PART: usize = 1023;

impl Jid {
    /// Parses and normalises a JID.
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        // RFC 7622 §3.1: the first '/' separates the resource, then the first '@' the localpart.
        let (rest, resource) = match s.find('/') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        let (local, domain) = match rest.find('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let domain = normalise_domain(domain)?;
        let local = match local {
            Some(l) => Some(normalise_local(l)?),
            None => None,
        };
        let resource = match resource {
            Some("") => return Err(JidError::EmptyResource),
            Some(r) if r.len() > MAX_PART => return Err(JidError::TooLong),
            Some(r) => {
                if r.chars().any(|c| c.is_control()) {
                    return Err(JidError::EmptyResource);
                }
                Some(r.to_string())
            }
            None => None,
        };
        Ok(Jid {
            local,
            domain,
            resource,
        })
    }

    /// Builds a bare JID from already-valid parts (validated again).
    pub fn bare_from(local: &str, domain: &str) -> Result<Jid, JidError> {
        Ok(Jid {
            local: Some(normalise_local(local)?),
            domain: normalise_domain(domain)?,
            resource: None,
        })
    }

    /// A domain-only JID.
    pub fn domain_only(domain: &str) -> Result<Jid, JidError> {
        Ok(Jid {
            local: None,
            domain: normalise_domain(domain)?,
            resource: None,
        })
    }

    pub fn local(&self) -> Option<&str> {
        self.local.as_deref()
    }
    pub fn domain(&self) -> &str {
        &self.domain
    }
    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }
    pub fn is_bare(&self) -> bool {
        self.resource.is_none()
    }
    pub fn is_full(&self) -> bool {
        self.resource.is_some()
    }

    /// The same JID without its resource.
    pub fn to_bare(&self) -> Jid {
        Jid {
            local: self.local.clone(),
            domain: self.domain.clone(),
            resource: None,
        }
    }

    /// This bare JID with a resource.
    pub fn with_resource(&self, resource: &str) -> Result<Jid, JidError> {
        if resource.is_empty() {
            return Err(JidError::EmptyResource);
        }
        if resource.len() > MAX_PART {
            return Err(JidError::TooLong);
        }
        Ok(Jid {
            local: self.local.clone(),
            domain: self.domain.clone(),
            resource: Some(resource.to_string()),
        })
    }
}

fn normalise_domain(d: &str) -> Result<String, JidError> {
    let d = d.strip_suffix('.').unwrap_or(d);
    if d.is_empty() {
        return Err(JidError::EmptyDomain);
    }
    if d.len() > MAX_PART {
        return Err(JidError::TooLong);
    }
    // IPv6 literal
    if let Some(inner) = d.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        if inner.parse::<std::net::Ipv6Addr>().is_ok() {
            return Ok(d.to_ascii_lowercase());
        }
        return Err(JidError::BadDomain(d.to_string()));
    }
    let lower = d.to_lowercase();
    for label in lower.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(JidError::BadDomain(d.to_string()));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(JidError::BadDomain(d.to_string()));
        }
        if !label
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        {
            return Err(JidError::BadDomain(d.to_string()));
        }
    }
    Ok(lower)
}

fn normalise_local(l: &str) -> Result<String, JidError> {
    if l.is_empty() {
        return Err(JidError::EmptyLocal);
    }
    if l.len() > MAX_PART {
        return Err(JidError::TooLong);
    }
    // RFC 7622 §3.3.1: these are disallowed in a localpart.
    for c in l.chars() {
        if matches!(c, '"' | '&' | '\'' | '/' | ':' | '<' | '>' | '@')
            || c.is_whitespace()
            || c.is_control()
        {
            return Err(JidError::BadLocalChar(c));
        }
    }
    Ok(l.to_lowercase())
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = &self.local {
            write!(f, "{l}@")?;
        }
        f.write_str(&self.domain)?;
        if let Some(r) = &self.resource {
            write!(f, "/{r}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jid({self})")
    }
}

impl FromStr for Jid {
    type Err = JidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Jid::parse(s)
    }
}

/// True when `domain` equals `parent` or is a subdomain of it, comparing whole labels.
pub fn is_same_or_subdomain(domain: &str, parent: &str) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    let p = parent.trim_end_matches('.').to_ascii_lowercase();
    d == p || d.ends_with(&format!(".{p}"))
}

/// Validates a username for a local account (the localpart of a JID).
pub fn validate_username(name: &str) -> Result<String, JidError> {
    normalise_local(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parts() {
        let j = Jid::parse("Alice@Example.COM./phone/1").unwrap();
        assert_eq!(j.local(), Some("alice"));
        assert_eq!(j.domain(), "example.com");
        assert_eq!(j.resource(), Some("phone/1"));
        assert_eq!(j.to_string(), "alice@example.com/phone/1");
        assert_eq!(j.to_bare().to_string(), "alice@example.com");
    }

    #[test]
    fn resource_may_contain_at() {
        let j = Jid::parse("example.com/a@b").unwrap();
        assert_eq!(j.local(), None);
        assert_eq!(j.resource(), Some("a@b"));
    }

    #[test]
    fn rejects_bad() {
        assert!(Jid::parse("").is_err());
        assert!(Jid::parse("@example.com").is_err());
        assert!(Jid::parse("a@").is_err());
        assert!(Jid::parse("a@example.com/").is_err());
        assert!(Jid::parse("a b@example.com").is_err());
        assert!(Jid::parse("a@exa mple.com").is_err());
        assert!(Jid::parse("a@-x.com").is_err());
        assert!(Jid::parse("a@x..com").is_err());
        assert!(Jid::parse(&"a".repeat(2000)).is_err());
    }

    #[test]
    fn subdomains_are_whole_labels() {
        assert!(is_same_or_subdomain("cup.example.com", "example.com"));
        assert!(is_same_or_subdomain("example.com", "example.com"));
        assert!(!is_same_or_subdomain("badexample.com", "example.com"));
        assert!(!is_same_or_subdomain("example.com", "cup.example.com"));
        assert!(!is_same_or_subdomain("example.com.evil", "example.com"));
    }
}
