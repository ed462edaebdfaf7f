//! Typed views of the headers the stack interprets, parsed on demand from the raw values.
//!
//! Parsing on access (rather than keeping a typed copy next to the raw one) means the raw
//! header list is the single source of truth: editing it can never leave a stale typed copy,
//! and a proxy that forwards a message untouched never pays for headers it does not read. The
//! message parser runs the same functions once to reject malformed mandatory headers.

use std::fmt;
use std::net::IpAddr;

use crate::error::ParseError;
use crate::header::{HeaderName, Headers};
use crate::method::Method;
use crate::params::Params;
use crate::scan::{is_token_char, is_word_char, quote, split_list, unquote, QuoteError, Scanner};
use crate::uri::{Host, Uri};

/// A value that can be parsed from (one element of) a header.
pub trait HeaderValue: Sized {
    /// Parses one element (for list headers, one comma-separated item) of header `name`.
    fn parse_value(value: &str, name: &HeaderName) -> Result<Self, ParseError>;
}

impl Headers {
    /// Parses every element of every line named `name`. List headers (Via, Contact, Route, ...)
    /// are split at top-level commas; lines of other headers are parsed whole.
    pub fn parse_all<T: HeaderValue>(&self, name: &HeaderName) -> Result<Vec<T>, ParseError> {
        let mut out = Vec::new();
        for value in self.all(name) {
            if name.is_list() {
                if value.is_empty() && empty_list_allowed(name) {
                    continue;
                }
                let items =
                    split_list(value).map_err(|_| ParseError::UnterminatedQuote(name.clone()))?;
                for item in items {
                    out.push(T::parse_value(item, name)?);
                }
            } else {
                out.push(T::parse_value(value, name)?);
            }
        }
        Ok(out)
    }

    /// Parses the first element of the first line named `name`.
    pub fn parse_first<T: HeaderValue>(&self, name: &HeaderName) -> Result<Option<T>, ParseError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        if name.is_list() {
            let items =
                split_list(value).map_err(|_| ParseError::UnterminatedQuote(name.clone()))?;
            match items.first() {
                Some(first) => T::parse_value(first, name).map(Some),
                None => Ok(None),
            }
        } else {
            T::parse_value(value, name).map(Some)
        }
    }

    fn required<T: HeaderValue>(&self, name: HeaderName) -> Result<T, ParseError> {
        self.parse_first(&name)?
            .ok_or(ParseError::MissingHeader(name))
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        self.get(HeaderName::CallId)
    }

    /// The CSeq.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        self.required(HeaderName::CSeq)
    }

    /// The topmost Via (the one whose branch identifies the transaction).
    pub fn top_via(&self) -> Result<Via, ParseError> {
        self.required(HeaderName::Via)
    }

    /// Replaces the topmost Via value (e.g. to add `received`/`rport` per RFC 3261 §18.2.1
    /// and RFC 3581), keeping any further values on the same line. Returns `false` if there
    /// is no Via.
    pub fn replace_top_via(&mut self, via: &Via) -> Result<bool, ParseError> {
        let Some(line) = self.first_mut(HeaderName::Via) else {
            return Ok(false);
        };
        let items =
            split_list(line.value()).map_err(|_| ParseError::UnterminatedQuote(HeaderName::Via))?;
        let mut value = via.to_string();
        for rest in items.iter().skip(1) {
            value.push_str(", ");
            value.push_str(rest);
        }
        line.set_value(value);
        Ok(true)
    }

    /// Removes and returns the topmost Via value (what a proxy does to a response before
    /// forwarding it, RFC 3261 §16.7), keeping further values on the same line.
    pub fn pop_top_via(&mut self) -> Result<Option<Via>, ParseError> {
        let Some(line) = self.first_mut(HeaderName::Via) else {
            return Ok(None);
        };
        let items =
            split_list(line.value()).map_err(|_| ParseError::UnterminatedQuote(HeaderName::Via))?;
        let Some(first) = items.first() else {
            return Ok(None);
        };
        let top = Via::parse_value(first, &HeaderName::Via)?;
        let rest = items.get(1..).unwrap_or(&[]).join(", ");
        if rest.is_empty() {
            // Remove exactly this line: the first Via line.
            let mut removed = false;
            self.retain(|h| {
                if !removed && h.name() == &HeaderName::Via {
                    removed = true;
                    false
                } else {
                    true
                }
            });
        } else {
            line.set_value(rest);
        }
        Ok(Some(top))
    }

    /// All Vias, top first.
    pub fn vias(&self) -> Result<Vec<Via>, ParseError> {
        self.parse_all(&HeaderName::Via)
    }

    /// The From header.
    pub fn from(&self) -> Result<NameAddr, ParseError> {
        self.required(HeaderName::From)
    }

    /// The To header.
    pub fn to(&self) -> Result<NameAddr, ParseError> {
        self.required(HeaderName::To)
    }

    /// All Contact values, in order.
    pub fn contacts(&self) -> Result<Vec<Contact>, ParseError> {
        self.parse_all(&HeaderName::Contact)
    }

    /// Route values, in order.
    pub fn routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.parse_all(&HeaderName::Route)
    }

    /// Record-Route values, in order.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.parse_all(&HeaderName::RecordRoute)
    }

    /// Max-Forwards.
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        self.parse_first::<MaxForwards>(&HeaderName::MaxForwards)
            .map(|m| m.map(|m| m.0))
    }

    /// Content-Length.
    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        self.parse_first::<ContentLength>(&HeaderName::ContentLength)
            .map(|m| m.map(|m| m.0))
    }

    /// Content-Type.
    pub fn content_type(&self) -> Result<Option<MediaType>, ParseError> {
        self.parse_first(&HeaderName::ContentType)
    }

    /// Expires (delta-seconds).
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.parse_first::<DeltaSeconds>(&HeaderName::Expires)
            .map(|m| m.map(|m| m.0))
    }

    /// Event.
    pub fn event(&self) -> Result<Option<Event>, ParseError> {
        self.parse_first(&HeaderName::Event)
    }

    /// Subscription-State.
    pub fn subscription_state(&self) -> Result<Option<SubscriptionState>, ParseError> {
        self.parse_first(&HeaderName::SubscriptionState)
    }

    /// Allow.
    pub fn allow(&self) -> Result<Vec<Method>, ParseError> {
        self.parse_all(&HeaderName::Allow)
    }

    /// Supported option tags.
    pub fn supported(&self) -> Result<Vec<OptionTag>, ParseError> {
        self.parse_all(&HeaderName::Supported)
    }

    /// Require option tags.
    pub fn require(&self) -> Result<Vec<OptionTag>, ParseError> {
        self.parse_all(&HeaderName::Require)
    }
}

fn empty_list_allowed(name: &HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Allow
            | HeaderName::Supported
            | HeaderName::Accept
            | HeaderName::AllowEvents
            | HeaderName::Unsupported
    )
}

fn bad(name: &HeaderName) -> ParseError {
    ParseError::BadHeader(name.clone())
}

/// Fails unless only whitespace remains.
fn finish(sc: &mut Scanner<'_>, name: &HeaderName) -> Result<(), ParseError> {
    sc.skip_ws();
    if sc.is_empty() {
        Ok(())
    } else {
        Err(bad(name))
    }
}

/// `name-addr` or `addr-spec`, with header parameters (From, To, Contact, Route, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted and unescaped.
    pub display_name: Option<String>,
    pub uri: Uri,
    /// Header parameters after the URI (`tag`, `epid`, `expires`, `+sip.instance`, ...), raw.
    pub params: Params,
}

impl NameAddr {
    /// `<uri>` without display name or parameters.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display_name: None,
            uri,
            params: Params::new(),
        }
    }

    /// The `tag` parameter (From/To).
    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }

    /// Parses a name-addr; `addr_spec_allowed` accepts a bare URI too.
    fn parse_with(
        value: &str,
        name: &HeaderName,
        addr_spec_allowed: bool,
    ) -> Result<NameAddr, ParseError> {
        let mut sc = Scanner::new(value);
        sc.skip_ws();
        let mut display_name = None;
        let angle = match sc.peek() {
            Some(b'"') => {
                let q = sc.quoted().map_err(|e| match e {
                    QuoteError::Unterminated => ParseError::UnterminatedQuote(name.clone()),
                    QuoteError::NotQuoted => bad(name),
                })?;
                display_name = Some(unquote(q));
                sc.skip_ws();
                if sc.peek() != Some(b'<') {
                    return Err(bad(name));
                }
                true
            }
            Some(b'<') => true,
            _ => {
                // `*(token LWS) <`: an unquoted display name. (Non-ASCII bytes are accepted as
                // well: several deployed UAs send unquoted UTF-8 names.)
                let start = sc.pos();
                let words =
                    sc.take_while(|b| is_token_char(b) || b == b' ' || b == b'\t' || b >= 0x80);
                if sc.peek() == Some(b'<') {
                    let words = words.trim_matches([' ', '\t']);
                    if !words.is_empty() {
                        display_name = Some(words.to_owned());
                    }
                    true
                } else {
                    sc.set_pos(start);
                    false
                }
            }
        };
        let uri_text = if angle {
            sc.eat(b'<');
            let start = sc.pos();
            sc.take_while(|b| b != b'>');
            let end = sc.pos();
            if !sc.eat(b'>') {
                return Err(bad(name));
            }
            sc.slice(start, end)
        } else {
            if !addr_spec_allowed {
                return Err(bad(name));
            }
            // RFC 3261 §20.10: a URI with `,`, `;` or `?` must be in angle brackets, so an
            // addr-spec ends at the first of them (or whitespace).
            let t = sc.take_while(|b| !matches!(b, b';' | b',' | b' ' | b'\t'));
            if t.contains('?') {
                return Err(bad(name));
            }
            t
        };
        let uri: Uri = uri_text.parse().map_err(|_| bad(name))?;
        let params = Params::parse_generic(&mut sc, name)?;
        finish(&mut sc, name)?;
        Ok(NameAddr {
            display_name,
            uri,
            params,
        })
    }
}

impl HeaderValue for NameAddr {
    fn parse_value(value: &str, name: &HeaderName) -> Result<Self, ParseError> {
        // Route and Record-Route are always name-addr (RFC 3261 §25.1 `route-param`).
        let addr_spec_allowed = !matches!(name, HeaderName::Route | HeaderName::RecordRoute);
        NameAddr::parse_with(value, name, addr_spec_allowed)
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display_name {
            write!(f, "{} ", quote(d))?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// A Contact value: `*` (only in REGISTER, to remove all bindings) or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Contact {
    /// `Contact: *`.
    Wildcard,
    Address(NameAddr),
}

impl Contact {
    /// The address, unless this is the wildcard.
    pub fn address(&self) -> Option<&NameAddr> {
        match self {
            Contact::Address(a) => Some(a),
            Contact::Wildcard => None,
        }
    }
}

impl HeaderValue for Contact {
    fn parse_value(value: &str, name: &HeaderName) -> Result<Self, ParseError> {
        if value.trim_matches([' ', '\t']) == "*" {
            Ok(Contact::Wildcard)
        } else {
            NameAddr::parse_with(value, name, true).map(Contact::Address)
        }
    }
}

impl fmt::Display for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Contact::Wildcard => f.write_str("*"),
            Contact::Address(a) => a.fmt(f),
        }
    }
}

/// One Via value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `SIP` (protocol-name).
    pub protocol_name: String,
    /// `2.0` (protocol-version).
    pub protocol_version: String,
    /// `UDP`, `TCP`, `TLS`, `SCTP`, `WS`, ... as written.
    pub transport: String,
    pub host: Host,
    pub port: Option<u16>,
    /// via-params (`branch`, `received`, `rport`, `maddr`, `ttl`, extensions), raw.
    pub params: Params,
}

/// The RFC 3261 magic cookie that starts every compliant branch.
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

impl Via {
    /// `SIP/2.0/<transport> host[:port];branch=<branch>`.
    pub fn new(transport: &str, host: Host, port: Option<u16>, branch: &str) -> Via {
        let mut params = Params::new();
        params.set("branch", Some(branch));
        Via {
            protocol_name: "SIP".into(),
            protocol_version: "2.0".into(),
            transport: transport.into(),
            host,
            port,
            params,
        }
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }

    /// Whether the branch starts with the RFC 3261 magic cookie (otherwise the transaction
    /// must be matched the RFC 2543 way).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.starts_with(BRANCH_MAGIC_COOKIE))
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<IpAddr> {
        self.params.value("received").and_then(parse_ip)
    }

    /// `None`: no `rport`; `Some(None)`: `rport` without value (a request asking for it);
    /// `Some(Some(p))`: filled in (RFC 3581).
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|p| p.value.as_deref().and_then(|v| v.parse().ok()))
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&str> {
        self.params.value("maddr")
    }

    /// The `ttl` parameter.
    pub fn ttl(&self) -> Option<u8> {
        self.params.value("ttl").and_then(|v| v.parse().ok())
    }

    fn validate_params(&self, name: &HeaderName) -> Result<(), ParseError> {
        for p in &self.params {
            let v = p.value.as_deref();
            let ok = match p.name.to_ascii_lowercase().as_str() {
                "branch" => v.is_some_and(|v| v.bytes().all(is_token_char)),
                "received" => v.is_some_and(|v| parse_ip(v).is_some()),
                "ttl" => v.is_some_and(|v| {
                    v.len() <= 3 && v.bytes().all(|b| b.is_ascii_digit()) && v.parse::<u8>().is_ok()
                }),
                "rport" => v.is_none_or(|v| {
                    v.len() <= 5
                        && v.bytes().all(|b| b.is_ascii_digit())
                        && v.parse::<u16>().is_ok()
                }),
                "maddr" => v.is_some_and(|v| Host::parse(v).is_ok()),
                _ => true,
            };
            if !ok {
                return Err(bad(name));
            }
        }
        Ok(())
    }
}

fn parse_ip(v: &str) -> Option<IpAddr> {
    let v = v
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(v);
    v.parse().ok()
}

impl HeaderValue for Via {
    fn parse_value(value: &str, name: &HeaderName) -> Result<Self, ParseError> {
        let mut sc = Scanner::new(value);
        sc.skip_ws();
        let protocol_name = sc.token().ok_or_else(|| bad(name))?;
        if !sc.eat_sep(b'/') {
            return Err(bad(name));
        }
        let protocol_version = sc.token().ok_or_else(|| bad(name))?;
        if !sc.eat_sep(b'/') {
            return Err(bad(name));
        }
        let transport = sc.token().ok_or_else(|| bad(name))?;
        let before = sc.pos();
        sc.skip_ws();
        if sc.pos() == before {
            return Err(bad(name));
        }
        let host_text = if sc.peek() == Some(b'[') {
            let start = sc.pos();
            sc.take_while(|b| b != b']');
            if !sc.eat(b']') {
                return Err(bad(name));
            }
            sc.slice(start, sc.pos())
        } else {
            sc.take_while(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        };
        let host = Host::parse(host_text).map_err(|_| bad(name))?;
        let port = if sc.eat_sep(b':') {
            let digits = sc.take_while(|b| b.is_ascii_digit());
            if digits.is_empty() || digits.len() > 5 {
                return Err(bad(name));
            }
            Some(digits.parse::<u16>().map_err(|_| bad(name))?)
        } else {
            None
        };
        let params = Params::parse_generic(&mut sc, name)?;
        finish(&mut sc, name)?;
        let via = Via {
            protocol_name: protocol_name.to_owned(),
            protocol_version: protocol_version.to_owned(),
            transport: transport.to_owned(),
            host,
            port,
            params,
        };
        via.validate_params(name)?;
        Ok(via)
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{} {}",
            self.protocol_name, self.protocol_version, self.transport, self.host
        )?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        self.params.fmt(f)
    }
}

/// `CSeq: <seq> <method>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Less than 2**31 (RFC 3261 §8.1.1.5).
    pub seq: u32,
    pub method: Method,
}

impl HeaderValue for CSeq {
    fn parse_value(value: &str, name: &HeaderName) -> Result<Self, ParseError> {
        let mut sc = Scanner::new(value);
        sc.skip_ws();
        let seq = parse_decimal(
            sc.take_while(|b| b.is_ascii_digit()),
            u64::from(i32::MAX as u32),
        )
        .ok_or_else(|| bad(name))?;
        let before = sc.pos();
        sc.skip_ws();
        if sc.pos() == before {
            return Err(bad(name));
        }
        let method = sc.token().ok_or_else(|| bad(name))?;
        finish(&mut sc, name)?;
        Ok(CSeq {
            // parse_decimal bounded the value by i32::MAX.
            seq: u32::try_from(seq).map_err(|_| bad(name))?,
            method: method.parse().map_err(|_| bad(name))?,
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// `1*DIGIT` bounded by `max`; leading zeros allowed.
pub(crate) fn parse_decimal(digits: &str, max: u64) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    if significant.len() > 19 {
        return None;
    }
    let v: u64 = if significant.is_empty() {
        0
    } else {
        significant.parse().ok()?
    };
    (v <= max).then_some(v)
}

fn whole_decimal(value: &str, name: &HeaderName, max: u64) -> Result<u64, ParseError> {
    parse_decimal(value.trim_matches([' ', '\t']), max).ok_or_else(|| bad(name))
}

/// Max-Forwards, 0..=255.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxForwards(pub u8);

impl HeaderValue for MaxForwards {
    fn parse_value(value: &str, name: &HeaderName) -> Result<Self, ParseError> {
        let v = whole_decimal(value, name, 255)?;
        Ok(MaxForwards(u8::try_from(v).map_err(|_| bad(name))?))
    }
}

/// Content-Length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentLength(pub usize);

impl HeaderValue for ContentLength {
    fn parse_value(value: &str, name: &HeaderName) -> Result<Self, ParseError> {
        let v = whole_decimal(value, name, u64::from(u32::MAX))?;
        Ok(ContentLength(usize::try_from(v).map_err(|_| bad(name))?))
    }
}

/// delta-seconds (Expires, `expires=` parameters), 0..=2**32-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaSeconds(pub u32);

impl HeaderValue for DeltaSeconds {
    fn parse_value(value: &str, name: &HeaderName) -> Result<Self, ParseError> {
        let v = whole_decimal(value, name, u64::from(u32::MAX))?;
        Ok(DeltaSeconds(u32::try_from(v).map_err(|_| bad(name))?))
    }
}

/// The Call-ID, validated as `word [ "@" word ]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallId(pub String);

impl HeaderValue for CallId {
    fn parse_value(value: &str, name: &HeaderName) -> Result<Self, ParseError> {
        let (a, b) = match value.split_once('@') {
            Some((a, b)) => (a, Some(b)),
            None => (value, None),
        };
        let word = |w: &str| !w.is_empty() && w.bytes().all(is_word_char);
        if word(a) && b.is_none_or(word) {
            Ok(CallId(value.to_owned()))
        } else {
            Err(bad(name))
        }
    }
}

/// A media type with parameters (Content-Type, and part headers in multipart bodies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// e.g. `application`.
    pub mtype: String,
    /// e.g. `pidf+xml`.
    pub subtype: String,
    pub params: Params,
}

impl MediaType {
    /// Case-insensitive `type/subtype` comparison.
    pub fn is(&self, mtype: &str, subtype: &str) -> bool {
        self.mtype.eq_ignore_ascii_case(mtype) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// Whether this is `multipart/*`.
    pub fn is_multipart(&self) -> bool {
        self.mtype.eq_ignore_ascii_case("multipart")
    }

    /// The `boundary` parameter, unquoted.
    pub fn boundary(&self) -> Option<String> {
        self.params.unquoted("boundary").map(|b| b.into_owned())
    }
}

impl HeaderValue for MediaType {
    fn parse_value(value: &str, name: &HeaderName) -> Result<Self, ParseError> {
        let mut sc = Scanner::new(value);
        sc.skip_ws();
        let mtype = sc.token().ok_or_else(|| bad(name))?;
        if !sc.eat_sep(b'/') {
            return Err(bad(name));
        }
        let subtype = sc.token().ok_or_else(|| bad(name))?;
        let params = Params::parse_generic(&mut sc, name)?;
        finish(&mut sc, name)?;
        Ok(MediaType {
            mtype: mtype.to_owned(),
            subtype: subtype.to_owned(),
            params,
        })
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.mtype, self.subtype, self.params)
    }
}

/// Event (RFC 6665): package and parameters (`id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// e.g. `presence`, `presence.winfo`.
    pub package: String,
    pub params: Params,
}

impl Event {
    /// The `id` parameter.
    pub fn id(&self) -> Option<&str> {
        self.params.value("id")
    }
}

impl HeaderValue for Event {
    fn parse_value(value: &str, name: &HeaderName) -> Result<Self, ParseError> {
        let mut sc = Scanner::new(value);
        sc.skip_ws();
        let package = sc.token().ok_or_else(|| bad(name))?;
        let params = Params::parse_generic(&mut sc, name)?;
        finish(&mut sc, name)?;
        Ok(Event {
            package: package.to_owned(),
            params,
        })
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.package, self.params)
    }
}

/// The state in a Subscription-State header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubState {
    Active,
    Pending,
    Terminated,
    Extension(String),
}

/// Subscription-State (RFC 6665 §8.2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub state: SubState,
    pub params: Params,
}

impl SubscriptionState {
    /// The `expires` parameter.
    pub fn expires(&self) -> Option<u32> {
        self.params.value("expires").and_then(|v| v.parse().ok())
    }

    /// The `reason` parameter.
    pub fn reason(&self) -> Option<&str> {
        self.params.value("reason")
    }

    /// The `retry-after` parameter.
    pub fn retry_after(&self) -> Option<u32> {
        self.params
            .value("retry-after")
            .and_then(|v| v.parse().ok())
    }
}

impl HeaderValue for SubscriptionState {
    fn parse_value(value: &str, name: &HeaderName) -> Result<Self, ParseError> {
        let mut sc = Scanner::new(value);
        sc.skip_ws();
        let state = sc.token().ok_or_else(|| bad(name))?;
        let params = Params::parse_generic(&mut sc, name)?;
        finish(&mut sc, name)?;
        for p in ["expires", "retry-after"] {
            if let Some(Some(v)) = params.get(p).map(|p| p.value.as_deref()) {
                parse_decimal(v, u64::from(u32::MAX)).ok_or_else(|| bad(name))?;
            }
        }
        let state = match state.to_ascii_lowercase().as_str() {
            "active" => SubState::Active,
            "pending" => SubState::Pending,
            "terminated" => SubState::Terminated,
            _ => SubState::Extension(state.to_owned()),
        };
        Ok(SubscriptionState { state, params })
    }
}

impl HeaderValue for Method {
    fn parse_value(value: &str, name: &HeaderName) -> Result<Self, ParseError> {
        value
            .trim_matches([' ', '\t'])
            .parse()
            .map_err(|_| bad(name))
    }
}

/// An option tag (Supported, Require, Proxy-Require, Unsupported).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OptionTag(pub String);

impl HeaderValue for OptionTag {
    fn parse_value(value: &str, name: &HeaderName) -> Result<Self, ParseError> {
        let v = value.trim_matches([' ', '\t']);
        if crate::scan::is_token(v) {
            Ok(OptionTag(v.to_owned()))
        } else {
            Err(bad(name))
        }
    }
}

impl PartialEq<str> for OptionTag {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn na(v: &str) -> Result<NameAddr, ParseError> {
        NameAddr::parse_value(v, &HeaderName::From)
    }

    #[test]
    fn name_addr_forms() {
        let a =
            na(r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#).unwrap();
        assert_eq!(a.display_name.as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(a.tag(), Some("98asjd8"));
        let a = na("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.display_name.as_deref(), Some("caller"));
        let a = na("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(a.display_name, None);
        assert_eq!(a.tag(), Some("1918181833n"));
        let a = na("Bob <sips:bob@biloxi.com>;tag=a48s;epid=abc123").unwrap();
        assert_eq!(a.params.value("epid"), Some("abc123"));
        assert_eq!(
            a.to_string(),
            r#""Bob" <sips:bob@biloxi.com>;tag=a48s;epid=abc123"#
        );
        let a = na("isbn:2983792873").unwrap();
        assert_eq!(a.uri.scheme(), "isbn");
        let a = na("<sip:user;par=u%40example.net@example.com>;tag=1").unwrap();
        assert_eq!(a.tag(), Some("1"));
    }

    #[test]
    fn name_addr_errors() {
        assert_eq!(
            na(r#""Mr. J. User <sip:j.user@example.com>"#),
            Err(ParseError::UnterminatedQuote(HeaderName::From))
        );
        assert!(na("Bell, Alexander <sip:a.g.bell@example.com>;tag=43").is_err());
        assert!(na("< sip:t.watson@example.org >").is_err());
        assert!(na("<sip:a@b.com").is_err());
        assert!(na("sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_err());
        assert!(na("<sip:a@b.com> junk").is_err());
        assert!(na("").is_err());
        assert!(NameAddr::parse_value("sip:p.example.com;lr", &HeaderName::Route).is_err());
    }

    #[test]
    fn via_forms() {
        let v = Via::parse_value(
            "SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw",
            &HeaderName::Via,
        )
        .unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert!(!v.has_rfc3261_branch());
        let v = Via::parse_value(
            "SIP/2.0/TLS [2001:db8::9:1]:5061;received=[2001:db8::9:255];branch=z9hG4bKas3;rport=5062;ms-received-cid=1A00",
            &HeaderName::Via,
        )
        .unwrap();
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.received(), Some("2001:db8::9:255".parse().unwrap()));
        assert_eq!(v.rport(), Some(Some(5062)));
        assert_eq!(v.params.value("ms-received-cid"), Some("1A00"));
        let v = Via::parse_value(
            "SIP/2.0/UDP h.example.com;rport;branch=z9hG4bK1",
            &HeaderName::Via,
        )
        .unwrap();
        assert_eq!(v.rport(), Some(None));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP h.example.com;rport;branch=z9hG4bK1"
        );
        for badv in [
            "SIP/2.0/UDP",
            "SIP/2.0 UDP host",
            "SIP/2.0/UDP host;ttl=256",
            "SIP/2.0/UDP host;received=foo",
            "SIP/2.0/UDP host:70000",
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDPhost",
        ] {
            assert!(Via::parse_value(badv, &HeaderName::Via).is_err(), "{badv}");
        }
    }

    #[test]
    fn scalars() {
        let c = CSeq::parse_value("0009 INVITE", &HeaderName::CSeq).unwrap();
        assert_eq!((c.seq, c.method), (9, Method::Invite));
        assert!(CSeq::parse_value("-1 INVITE", &HeaderName::CSeq).is_err());
        assert!(CSeq::parse_value("2147483648 INVITE", &HeaderName::CSeq).is_err());
        assert!(CSeq::parse_value("36893488147419103232 INVITE", &HeaderName::CSeq).is_err());
        assert!(CSeq::parse_value("1INVITE", &HeaderName::CSeq).is_err());
        assert!(CSeq::parse_value("1 INVITE x", &HeaderName::CSeq).is_err());
        assert_eq!(
            MaxForwards::parse_value("0068", &HeaderName::MaxForwards),
            Ok(MaxForwards(68))
        );
        assert!(MaxForwards::parse_value("300", &HeaderName::MaxForwards).is_err());
        assert!(ContentLength::parse_value("-999", &HeaderName::ContentLength).is_err());
        assert!(ContentLength::parse_value("+5", &HeaderName::ContentLength).is_err());
        assert!(
            ContentLength::parse_value("99999999999999999999999", &HeaderName::ContentLength)
                .is_err()
        );
        assert!(DeltaSeconds::parse_value("4294967296", &HeaderName::Expires).is_err());
        assert!(
            CallId::parse_value("a84b4c76e66710@pc33.atlanta.com", &HeaderName::CallId).is_ok()
        );
        assert!(CallId::parse_value("a b", &HeaderName::CallId).is_err());
        assert!(CallId::parse_value("a@b@c", &HeaderName::CallId).is_err());
    }

    #[test]
    fn other_typed_headers() {
        let ct = MediaType::parse_value(
            r#"multipart/related;type="application/rlmi+xml";boundary="50UBfW7LSCVLtggUPe5z""#,
            &HeaderName::ContentType,
        )
        .unwrap();
        assert!(ct.is_multipart());
        assert_eq!(ct.boundary().as_deref(), Some("50UBfW7LSCVLtggUPe5z"));
        let e = Event::parse_value("presence.winfo;id=7", &HeaderName::Event).unwrap();
        assert_eq!((e.package.as_str(), e.id()), ("presence.winfo", Some("7")));
        let s = SubscriptionState::parse_value(
            "terminated;reason=timeout",
            &HeaderName::SubscriptionState,
        )
        .unwrap();
        assert_eq!(s.state, SubState::Terminated);
        assert_eq!(s.reason(), Some("timeout"));
        let s =
            SubscriptionState::parse_value("active;expires=3600", &HeaderName::SubscriptionState)
                .unwrap();
        assert_eq!(s.expires(), Some(3600));
        let mut h = Headers::new();
        h.push("Allow", "INVITE, ACK,BYE , MESSAGE");
        h.push("k", "");
        h.push("Supported", "timer, ms-benotify");
        h.push("Contact", r#"<sip:a@192.0.2.1;transport=tls>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000000000001>";gr, "Two" <sip:b@b.com>;expires=60"#);
        assert_eq!(
            h.allow().unwrap(),
            vec![Method::Invite, Method::Ack, Method::Bye, Method::Message]
        );
        assert_eq!(
            h.supported().unwrap(),
            vec![OptionTag("timer".into()), OptionTag("ms-benotify".into())]
        );
        let c = h.contacts().unwrap();
        assert_eq!(c.len(), 2);
        let first = c[0].address().unwrap();
        assert!(first.params.contains("gr"));
        assert_eq!(
            first.params.unquoted("+sip.instance").as_deref(),
            Some("<urn:uuid:00000000-0000-1000-8000-000000000001>")
        );
        h.push("Contact", "*");
        assert_eq!(h.contacts().unwrap().last(), Some(&Contact::Wildcard));
    }

    #[test]
    fn top_via_editing() {
        let mut h = Headers::new();
        h.push("v", "SIP/2.0/UDP a.example.com;branch=z9hG4bK1;rport, SIP/2.0/TCP b.example.com;branch=z9hG4bK2");
        h.push("Via", "SIP/2.0/TLS c.example.com;branch=z9hG4bK3");
        let mut top = h.top_via().unwrap();
        top.params.set("received", Some("192.0.2.7"));
        top.params.set("rport", Some("5071"));
        assert!(h.replace_top_via(&top).unwrap());
        let vias = h.vias().unwrap();
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[0].rport(), Some(Some(5071)));
        assert_eq!(vias[0].received(), Some("192.0.2.7".parse().unwrap()));
        assert_eq!(h.iter().next().unwrap().raw_name(), "v");
        assert_eq!(
            h.pop_top_via().unwrap().unwrap().host.to_string(),
            "a.example.com"
        );
        assert_eq!(
            h.pop_top_via().unwrap().unwrap().host.to_string(),
            "b.example.com"
        );
        assert_eq!(h.len(), 1);
        assert_eq!(
            h.pop_top_via().unwrap().unwrap().host.to_string(),
            "c.example.com"
        );
        assert_eq!(h.pop_top_via().unwrap(), None);
        assert!(!h.replace_top_via(&top).unwrap());
    }
}
