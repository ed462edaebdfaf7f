//! URIs: `sip:`/`sips:` (RFC 3261 §19.1, §25.1), `tel:` (RFC 3966) and any other absolute URI
//! kept opaque (so that a Request-URI with an unknown scheme parses and the layer above can
//! answer `416 Unsupported URI Scheme`).
//!
//! The user part, password and parameters are kept in their escaped wire form, so a URI is
//! written back exactly as it came; [`SipUri::user_decoded`] and [`SipUri::set_user`] convert.
//! [`SipUri::equivalent`] implements the RFC 3261 §19.1.4 comparison (case-insensitive scheme
//! and host, escapes resolved, significant parameters).

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::params::{Param, Params};

/// The URI text does not follow the grammar of its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid URI")]
pub struct InvalidUri;

/// A URI as found in a Request-URI, a name-addr or an addr-spec.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// `tel:`.
    Tel(TelUri),
    /// Any other scheme, opaque.
    Other(OtherUri),
}

impl Uri {
    /// The scheme in lower case.
    pub fn scheme(&self) -> Cow<'_, str> {
        match self {
            Uri::Sip(u) if u.secure => Cow::Borrowed("sips"),
            Uri::Sip(_) => Cow::Borrowed("sip"),
            Uri::Tel(_) => Cow::Borrowed("tel"),
            Uri::Other(o) => Cow::Owned(o.scheme.to_ascii_lowercase()),
        }
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// RFC 3261 §19.1.4 equivalence for SIP URIs; for other schemes, case-insensitive
    /// scheme and exact remainder.
    pub fn equivalent(&self, other: &Uri) -> bool {
        match (self, other) {
            (Uri::Sip(a), Uri::Sip(b)) => a.equivalent(b),
            (Uri::Tel(a), Uri::Tel(b)) => a == b,
            (Uri::Other(a), Uri::Other(b)) => {
                a.scheme.eq_ignore_ascii_case(&b.scheme) && a.rest == b.rest
            }
            _ => false,
        }
    }
}

impl FromStr for Uri {
    type Err = InvalidUri;

    fn from_str(s: &str) -> Result<Uri, InvalidUri> {
        let (scheme, rest) = s.split_once(':').ok_or(InvalidUri)?;
        if scheme.eq_ignore_ascii_case("sip") {
            SipUri::parse_after_scheme(rest, false).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("sips") {
            SipUri::parse_after_scheme(rest, true).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            TelUri::parse_after_scheme(rest).map(Uri::Tel)
        } else {
            OtherUri::parse(scheme, rest).map(Uri::Other)
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Tel(u) => u.fmt(f),
            Uri::Other(u) => u.fmt(f),
        }
    }
}

/// The host part of a SIP URI or Via.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Host {
    /// A domain name, in the case it arrived; compare with [`Host::eq_ignore_case`].
    Domain(String),
    Ipv4(Ipv4Addr),
    /// Written as an IPv6 reference, `[::1]`.
    Ipv6(Ipv6Addr),
}

impl Host {
    /// Parses `hostname / IPv4address / IPv6reference`.
    pub fn parse(s: &str) -> Result<Host, InvalidUri> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(InvalidUri)?;
            return inner.parse().map(Host::Ipv6).map_err(|_| InvalidUri);
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            // Looks like an IPv4 address; a hostname's top label cannot start with a digit.
            return s.parse().map(Host::Ipv4).map_err(|_| InvalidUri);
        }
        let labels = s.strip_suffix('.').unwrap_or(s);
        let valid_label = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b.first().is_some_and(u8::is_ascii_alphanumeric)
                && b.last().is_some_and(u8::is_ascii_alphanumeric)
        };
        if labels.is_empty() || !labels.split('.').all(valid_label) {
            return Err(InvalidUri);
        }
        let top_starts_alpha = labels
            .rsplit('.')
            .next()
            .and_then(|l| l.bytes().next())
            .is_some_and(|b| b.is_ascii_alphabetic());
        if !top_starts_alpha {
            return Err(InvalidUri);
        }
        Ok(Host::Domain(s.to_owned()))
    }

    /// Host comparison: domain names case-insensitively, addresses by value.
    pub fn eq_ignore_case(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Domain(a), Host::Domain(b)) => a
                .trim_end_matches('.')
                .eq_ignore_ascii_case(b.trim_end_matches('.')),
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(a) => a.fmt(f),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:`.
    pub secure: bool,
    /// The user part, escaped as on the wire.
    pub user: Option<String>,
    /// The password, escaped as on the wire (deprecated by RFC 3261, but legal).
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    /// uri-parameters, raw.
    pub params: Params,
    /// `?name=value&...` headers, raw.
    pub headers: Vec<(String, String)>,
}

impl SipUri {
    /// `sip:host`.
    pub fn new(host: Host) -> SipUri {
        SipUri {
            secure: false,
            user: None,
            password: None,
            host,
            port: None,
            params: Params::new(),
            headers: Vec::new(),
        }
    }

    /// The user part with percent-escapes resolved (invalid UTF-8 replaced).
    pub fn user_decoded(&self) -> Option<Cow<'_, str>> {
        self.user.as_deref().map(|u| match percent_decode(u) {
            Cow::Borrowed(b) => String::from_utf8_lossy(b),
            Cow::Owned(v) => Cow::Owned(String::from_utf8_lossy(&v).into_owned()),
        })
    }

    /// Sets the user part from its unescaped form, escaping as RFC 3261 requires.
    pub fn set_user(&mut self, user: &str) {
        self.user = Some(percent_encode(user.as_bytes(), is_user_char));
    }

    /// The `transport` parameter, if any.
    pub fn transport(&self) -> Option<&str> {
        self.params.value("transport")
    }

    /// Whether the `lr` parameter is present (loose routing).
    pub fn is_loose_route(&self) -> bool {
        self.params.contains("lr")
    }

    /// RFC 3261 §19.1.4: scheme, user (escapes resolved, case-sensitive), password, host
    /// (case-insensitive), port, the `user`/`ttl`/`method`/`maddr`/`transport` parameters when
    /// present in either, other parameters when present in both, and headers.
    pub fn equivalent(&self, other: &SipUri) -> bool {
        let dec = |u: &Option<String>| u.as_deref().map(|s| percent_decode(s).into_owned());
        if self.secure != other.secure
            || dec(&self.user) != dec(&other.user)
            || dec(&self.password) != dec(&other.password)
            || !self.host.eq_ignore_case(&other.host)
            || self.port != other.port
        {
            return false;
        }
        let pval = |p: &Param| {
            p.value
                .as_deref()
                .map(|v| percent_decode(v).to_ascii_lowercase())
        };
        for name in ["user", "ttl", "method", "maddr", "transport"] {
            let a = self.params.get(name).map(pval);
            let b = other.params.get(name).map(pval);
            if a != b {
                return false;
            }
        }
        for p in &self.params {
            if let Some(q) = other.params.get(&p.name) {
                if pval(p) != pval(q) {
                    return false;
                }
            }
        }
        let mut ha: Vec<_> = self
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v))
            .collect();
        let mut hb: Vec<_> = other
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v))
            .collect();
        ha.sort();
        hb.sort();
        ha == hb
    }

    fn parse_after_scheme(s: &str, secure: bool) -> Result<SipUri, InvalidUri> {
        let (userinfo, hostpart) = match s.split_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, s),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (ui, None),
                };
                if u.is_empty() || !valid_escaped(u, is_user_char) {
                    return Err(InvalidUri);
                }
                if let Some(p) = p {
                    if !valid_escaped(p, is_password_char) {
                        return Err(InvalidUri);
                    }
                }
                (Some(u.to_owned()), p.map(str::to_owned))
            }
        };
        // hostport
        let host_end = if hostpart.starts_with('[') {
            hostpart.find(']').map(|i| i + 1).ok_or(InvalidUri)?
        } else {
            hostpart.find([':', ';', '?']).unwrap_or(hostpart.len())
        };
        let host = Host::parse(hostpart.get(..host_end).ok_or(InvalidUri)?)?;
        let mut rest = hostpart.get(host_end..).ok_or(InvalidUri)?;
        let mut port = None;
        if let Some(r) = rest.strip_prefix(':') {
            let end = r.find([';', '?']).unwrap_or(r.len());
            let digits = r.get(..end).ok_or(InvalidUri)?;
            port = Some(parse_port(digits)?);
            rest = r.get(end..).ok_or(InvalidUri)?;
        }
        let (param_text, header_text) = match rest.split_once('?') {
            Some((p, h)) => (p, Some(h)),
            None => (rest, None),
        };
        let params = parse_uri_params(param_text)?;
        let mut headers = Vec::new();
        if let Some(h) = header_text {
            for pair in h.split('&') {
                let (n, v) = pair.split_once('=').ok_or(InvalidUri)?;
                if n.is_empty() || !valid_escaped(n, is_hnv_char) || !valid_escaped(v, is_hnv_char)
                {
                    return Err(InvalidUri);
                }
                headers.push((n.to_owned(), v.to_owned()));
            }
        }
        Ok(SipUri {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        self.host.fmt(f)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        self.params.fmt(f)?;
        for (i, (n, v)) in self.headers.iter().enumerate() {
            f.write_str(if i == 0 { "?" } else { "&" })?;
            write!(f, "{n}={v}")?;
        }
        Ok(())
    }
}

/// A `tel:` URI (RFC 3966), kept as number plus raw parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri {
    /// The global (`+...`) or local number, visual separators included.
    pub number: String,
    pub params: Params,
}

impl TelUri {
    /// Whether the number is global (`+` prefix).
    pub fn is_global(&self) -> bool {
        self.number.starts_with('+')
    }

    fn parse_after_scheme(s: &str) -> Result<TelUri, InvalidUri> {
        let end = s.find(';').unwrap_or(s.len());
        let number = s.get(..end).ok_or(InvalidUri)?;
        let digits = number.strip_prefix('+').unwrap_or(number);
        let ok = !digits.is_empty()
            && digits.bytes().all(|b| {
                b.is_ascii_hexdigit() || matches!(b, b'*' | b'#' | b'-' | b'.' | b'(' | b')')
            })
            && digits
                .bytes()
                .any(|b| b.is_ascii_hexdigit() || b == b'*' || b == b'#');
        if !ok {
            return Err(InvalidUri);
        }
        let params = parse_uri_params(s.get(end..).ok_or(InvalidUri)?)?;
        Ok(TelUri {
            number: number.to_owned(),
            params,
        })
    }
}

impl fmt::Display for TelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tel:{}{}", self.number, self.params)
    }
}

/// A URI of a scheme this stack does not interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherUri {
    pub scheme: String,
    /// Everything after the `:`.
    pub rest: String,
}

impl OtherUri {
    fn parse(scheme: &str, rest: &str) -> Result<OtherUri, InvalidUri> {
        let mut sb = scheme.bytes();
        let scheme_ok = sb.next().is_some_and(|b| b.is_ascii_alphabetic())
            && sb.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        let rest_ok = !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b > b' ' && b != 0x7f && !matches!(b, b'<' | b'>' | b'"'));
        if !scheme_ok || !rest_ok {
            return Err(InvalidUri);
        }
        Ok(OtherUri {
            scheme: scheme.to_owned(),
            rest: rest.to_owned(),
        })
    }
}

impl fmt::Display for OtherUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.scheme, self.rest)
    }
}

fn parse_port(digits: &str) -> Result<u16, InvalidUri> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidUri);
    }
    digits.parse().map_err(|_| InvalidUri)
}

/// `*( ";" pname [ "=" pvalue ] )` with RFC 3261 paramchars.
fn parse_uri_params(s: &str) -> Result<Params, InvalidUri> {
    let mut params = Params::new();
    if s.is_empty() {
        return Ok(params);
    }
    let s = s.strip_prefix(';').ok_or(InvalidUri)?;
    for p in s.split(';') {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (p, None),
        };
        if name.is_empty() || !valid_escaped(name, is_param_char) {
            return Err(InvalidUri);
        }
        if let Some(v) = value {
            if v.is_empty() || !valid_escaped(v, is_param_char) {
                return Err(InvalidUri);
            }
        }
        params.push(Param {
            name: name.to_owned(),
            value: value.map(str::to_owned),
        });
    }
    Ok(params)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

fn is_user_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

fn is_hnv_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

/// Every byte is allowed by `allowed` or starts a valid `%XX` escape.
fn valid_escaped(s: &str, allowed: fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !hex(i + 1) || !hex(i + 2) {
                return false;
            }
            i += 3;
        } else if allowed(c) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Resolves `%XX` escapes; invalid escapes are left as they are.
pub fn percent_decode(s: &str) -> Cow<'_, [u8]> {
    if !s.contains('%') {
        return Cow::Borrowed(s.as_bytes());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| b.get(j).and_then(|h| (*h as char).to_digit(16));
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                // hi, lo < 16, so the value fits a byte.
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// Escapes every byte not allowed by `allowed` as `%XX`.
fn percent_encode(raw: &[u8], allowed: fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if allowed(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Escapes a user part for a SIP URI.
pub fn percent_encode_user(user: &str) -> String {
    percent_encode(user.as_bytes(), is_user_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match s.parse::<Uri>() {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn full_sip_uri() {
        let u = sip("sips:alice:secret@Atlanta.COM:5061;transport=tcp;lr?subject=project%20x&priority=urgent");
        assert!(u.secure);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, Host::Domain("Atlanta.COM".into()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.is_loose_route());
        assert_eq!(u.headers.len(), 2);
        assert_eq!(
            u.to_string(),
            "sips:alice:secret@Atlanta.COM:5061;transport=tcp;lr?subject=project%20x&priority=urgent"
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(
            sip("sip:[2001:db8::10]:5070").host,
            Host::Ipv6("2001:db8::10".parse().unwrap())
        );
        assert_eq!(sip("sip:[2001:db8::192.0.2.1]").port, None);
        assert_eq!(
            sip("sip:192.0.2.1").host,
            Host::Ipv4(Ipv4Addr::new(192, 0, 2, 1))
        );
        assert!("sip:[2001:db8:::192.0.2.1]".parse::<Uri>().is_err());
        assert!("sip:2001:db8::10".parse::<Uri>().is_err());
        assert!("sip:1.2.3.256".parse::<Uri>().is_err());
        assert!("sip:a..b".parse::<Uri>().is_err());
        assert!("sip:-a.com".parse::<Uri>().is_err());
        assert!("sip:host:99999".parse::<Uri>().is_err());
        assert!("sip:host:".parse::<Uri>().is_err());
        assert!("sip:@host".parse::<Uri>().is_err());
        assert!("sip:".parse::<Uri>().is_err());
        assert!("sip:user@host;".parse::<Uri>().is_err());
        assert!("sip:us er@host".parse::<Uri>().is_err());
        assert!("sip:user@host?x".parse::<Uri>().is_err());
        assert!(sip("sip:example.com.")
            .host
            .eq_ignore_case(&Host::Domain("EXAMPLE.com".into())));
    }

    #[test]
    fn escapes() {
        let u = sip("sip:sips%3Auser%40example.com@example.net");
        assert_eq!(u.user_decoded().as_deref(), Some("sips:user@example.com"));
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(u.host, Host::Domain("example.com".into()));
        let u = sip("sip:null-%00-null@example.com");
        assert_eq!(u.user_decoded().as_deref(), Some("null-\0-null"));
        assert!("sip:a%4@example.com".parse::<Uri>().is_err());
        let mut u = SipUri::new(Host::Domain("example.net".into()));
        u.set_user("I have spaces@");
        assert_eq!(u.to_string(), "sip:I%20have%20spaces%40@example.net");
        assert!(u.equivalent(&sip("sip:I%20have%20spaces%40@EXAMPLE.NET")));
    }

    #[test]
    fn equivalence_rules() {
        assert!(sip("sip:%61lice@atlanta.com;transport=TCP")
            .equivalent(&sip("sip:alice@AtLanTa.CoM;Transport=tcp")));
        assert!(!sip("sip:alice@atlanta.com").equivalent(&sip("sip:ALICE@atlanta.com")));
        assert!(!sip("sip:bob@biloxi.com").equivalent(&sip("sip:bob@biloxi.com:5060")));
        assert!(!sip("sip:bob@biloxi.com").equivalent(&sip("sip:bob@biloxi.com;transport=udp")));
        assert!(sip("sip:carol@chicago.com").equivalent(&sip("sip:carol@chicago.com;security=on")));
        assert!(!sip("sips:a@b.com").equivalent(&sip("sip:a@b.com")));
    }

    #[test]
    fn tel_and_other_schemes() {
        match "tel:+1-201-555-0123;phone-context=example.com".parse::<Uri>() {
            Ok(Uri::Tel(t)) => {
                assert!(t.is_global());
                assert_eq!(t.params.value("phone-context"), Some("example.com"));
            }
            other => panic!("{other:?}"),
        }
        assert!("tel:".parse::<Uri>().is_err());
        assert!("tel:+".parse::<Uri>().is_err());
        let o: Uri = "soap.beep://192.0.2.103:3002".parse().unwrap();
        assert_eq!(o.scheme(), "soap.beep");
        assert_eq!(o.to_string(), "soap.beep://192.0.2.103:3002");
        assert!("nobodyKnowsThisScheme:totallyopaquecontent"
            .parse::<Uri>()
            .is_ok());
        assert!("1abc:x".parse::<Uri>().is_err());
        assert!("noscheme".parse::<Uri>().is_err());
        assert!("SIP:alice@example.com".parse::<Uri>().is_ok());
    }
}
