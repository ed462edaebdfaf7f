//! Raw headers: every header line is kept, in order, as the name and value that arrived.
//!
//! Unknown headers (Lync's `ms-*`, `Authorization` with its quoted commas, ...) are never
//! re-parsed, so they go back on the wire byte for byte. Known headers are looked up through
//! [`HeaderName`], which folds compact forms (`i`, `v`, `m`, ...) onto the full name, and parsed
//! on demand by the typed accessors in [`crate::typed`].

use std::borrow::Cow;
use std::fmt;

/// A header name, with the headers this stack interprets as variants.
///
/// Compare and look up with this type: `HeaderName::parse("i") == HeaderName::CallId`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderName {
    Accept,
    AcceptContact,
    Allow,
    AllowEvents,
    Authorization,
    CallId,
    Contact,
    ContentDisposition,
    ContentEncoding,
    ContentId,
    ContentLength,
    ContentType,
    CSeq,
    Event,
    Expires,
    From,
    Identity,
    IdentityInfo,
    MaxForwards,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyRequire,
    RecordRoute,
    ReferTo,
    ReferredBy,
    RejectContact,
    RequestDisposition,
    Require,
    Route,
    SessionExpires,
    Subject,
    SubscriptionState,
    Supported,
    Timestamp,
    To,
    Unsupported,
    UserAgent,
    Via,
    WwwAuthenticate,
    /// Any other header, spelled as it arrived.
    Other(String),
}

/// (canonical name, compact form, variant) for every known header.
const KNOWN: &[(&str, Option<&str>, HeaderName)] = &[
    ("Accept", None, HeaderName::Accept),
    ("Accept-Contact", Some("a"), HeaderName::AcceptContact),
    ("Allow", None, HeaderName::Allow),
    ("Allow-Events", Some("u"), HeaderName::AllowEvents),
    ("Authorization", None, HeaderName::Authorization),
    ("Call-ID", Some("i"), HeaderName::CallId),
    ("Contact", Some("m"), HeaderName::Contact),
    ("Content-Disposition", None, HeaderName::ContentDisposition),
    ("Content-Encoding", Some("e"), HeaderName::ContentEncoding),
    ("Content-ID", None, HeaderName::ContentId),
    ("Content-Length", Some("l"), HeaderName::ContentLength),
    ("Content-Type", Some("c"), HeaderName::ContentType),
    ("CSeq", None, HeaderName::CSeq),
    ("Event", Some("o"), HeaderName::Event),
    ("Expires", None, HeaderName::Expires),
    ("From", Some("f"), HeaderName::From),
    ("Identity", Some("y"), HeaderName::Identity),
    ("Identity-Info", Some("n"), HeaderName::IdentityInfo),
    ("Max-Forwards", None, HeaderName::MaxForwards),
    ("Proxy-Authenticate", None, HeaderName::ProxyAuthenticate),
    ("Proxy-Authorization", None, HeaderName::ProxyAuthorization),
    ("Proxy-Require", None, HeaderName::ProxyRequire),
    ("Record-Route", None, HeaderName::RecordRoute),
    ("Refer-To", Some("r"), HeaderName::ReferTo),
    ("Referred-By", Some("b"), HeaderName::ReferredBy),
    ("Reject-Contact", Some("j"), HeaderName::RejectContact),
    (
        "Request-Disposition",
        Some("d"),
        HeaderName::RequestDisposition,
    ),
    ("Require", None, HeaderName::Require),
    ("Route", None, HeaderName::Route),
    ("Session-Expires", Some("x"), HeaderName::SessionExpires),
    ("Subject", Some("s"), HeaderName::Subject),
    ("Subscription-State", None, HeaderName::SubscriptionState),
    ("Supported", Some("k"), HeaderName::Supported),
    ("Timestamp", None, HeaderName::Timestamp),
    ("To", Some("t"), HeaderName::To),
    ("Unsupported", None, HeaderName::Unsupported),
    ("User-Agent", None, HeaderName::UserAgent),
    ("Via", Some("v"), HeaderName::Via),
    ("WWW-Authenticate", None, HeaderName::WwwAuthenticate),
];

impl HeaderName {
    /// Maps a name as written on the wire (any case, full or compact form) to a `HeaderName`.
    pub fn parse(raw: &str) -> HeaderName {
        Self::known(raw).unwrap_or_else(|| HeaderName::Other(raw.to_owned()))
    }

    /// The known header `raw` names, if any; allocation-free.
    fn known(raw: &str) -> Option<HeaderName> {
        Self::known_entry(raw).map(|(_, _, n)| n.clone())
    }

    fn known_entry(raw: &str) -> Option<&'static (&'static str, Option<&'static str>, HeaderName)> {
        if raw.len() == 1 {
            return KNOWN
                .iter()
                .find(|(_, compact, _)| compact.is_some_and(|c| c.eq_ignore_ascii_case(raw)));
        }
        KNOWN
            .iter()
            .find(|(full, _, _)| full.len() == raw.len() && full.eq_ignore_ascii_case(raw))
    }

    /// The canonical (full, conventionally capitalised) spelling.
    pub fn as_str(&self) -> &str {
        match self {
            HeaderName::Other(s) => s,
            known => KNOWN
                .iter()
                .find(|(_, _, n)| n == known)
                .map_or("", |(full, _, _)| full),
        }
    }

    /// The compact form (RFC 3261 §7.3.3, RFC 6665 `o`/`u`, ...), if the header has one.
    pub fn compact(&self) -> Option<&'static str> {
        KNOWN
            .iter()
            .find(|(_, _, n)| n == self)
            .and_then(|(_, c, _)| *c)
    }

    /// Whether the header's value may be a comma-separated list (RFC 3261 §7.3.1), so that
    /// several lines and several values in one line are equivalent.
    pub fn is_list(&self) -> bool {
        matches!(
            self,
            HeaderName::Accept
                | HeaderName::Allow
                | HeaderName::AllowEvents
                | HeaderName::Contact
                | HeaderName::ProxyRequire
                | HeaderName::RecordRoute
                | HeaderName::Require
                | HeaderName::Route
                | HeaderName::Supported
                | HeaderName::Unsupported
                | HeaderName::Via
        )
    }

    /// Whether `raw` (as written on the wire) names this header.
    pub fn matches_raw(&self, raw: &str) -> bool {
        match self {
            HeaderName::Other(s) => s.eq_ignore_ascii_case(raw) && Self::known(raw).is_none(),
            known => {
                let (full, compact) = KNOWN
                    .iter()
                    .find(|(_, _, n)| n == known)
                    .map_or(("", None), |(f, c, _)| (*f, *c));
                full.eq_ignore_ascii_case(raw)
                    || compact.is_some_and(|c| c.eq_ignore_ascii_case(raw))
            }
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for HeaderName {
    fn from(raw: &str) -> Self {
        HeaderName::parse(raw)
    }
}

/// One header line: the name as written (e.g. `i` or `CALL-ID`) and the value with
/// surrounding whitespace removed and line folding replaced by a single space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    name: HeaderName,
    /// The spelling that arrived; borrowed from the static table when it is the canonical one
    /// (the common case), so parsing does not allocate for it.
    raw_name: Cow<'static, str>,
    value: String,
}

impl Header {
    /// A header with `name` spelled as given. The caller guarantees `value` contains no CR or
    /// LF (the serializer would otherwise emit a broken message); see [`Headers::push`].
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Header {
        let raw_name: String = name.into();
        Header {
            name: HeaderName::parse(&raw_name),
            raw_name: spelling(&raw_name).map_or(Cow::Owned(raw_name), Cow::Borrowed),
            value: value.into(),
        }
    }

    /// The interpreted name (compact forms folded).
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The name exactly as it arrived.
    pub fn raw_name(&self) -> &str {
        &self.raw_name
    }

    /// The value (unfolded, trimmed).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Replaces the value.
    pub fn set_value(&mut self, value: impl Into<String>) {
        self.value = value.into();
    }
}

/// Anything that can name a header in a lookup: a [`HeaderName`] or a `&str` in any case or
/// compact form.
pub trait HeaderKey {
    /// Whether `header` has this name.
    fn matches(&self, header: &Header) -> bool;
}

impl HeaderKey for HeaderName {
    fn matches(&self, header: &Header) -> bool {
        match self {
            HeaderName::Other(s) => match &header.name {
                HeaderName::Other(o) => s.eq_ignore_ascii_case(o),
                _ => false,
            },
            known => &header.name == known,
        }
    }
}

impl HeaderKey for &HeaderName {
    fn matches(&self, header: &Header) -> bool {
        (*self).matches(header)
    }
}

impl HeaderKey for &str {
    fn matches(&self, header: &Header) -> bool {
        match HeaderName::known(self) {
            Some(known) => header.name == known,
            None => header.raw_name.eq_ignore_ascii_case(self),
        }
    }
}

/// All header lines of a message, in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no header lines.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// All header lines in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// The value of the first line named `key`.
    pub fn get(&self, key: impl HeaderKey) -> Option<&str> {
        self.0
            .iter()
            .find(|h| key.matches(h))
            .map(|h| h.value.as_str())
    }

    /// The values of every line named `key`, in order.
    pub fn all<'a, K: HeaderKey + 'a>(&'a self, key: K) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| key.matches(h))
            .map(|h| h.value.as_str())
    }

    /// Number of lines named `key`.
    pub fn count(&self, key: impl HeaderKey) -> usize {
        self.0.iter().filter(|h| key.matches(h)).count()
    }

    /// Whether a line named `key` exists.
    pub fn contains(&self, key: impl HeaderKey) -> bool {
        self.0.iter().any(|h| key.matches(h))
    }

    /// Appends a header line.
    ///
    /// CR and LF in `value` are replaced by spaces so that a value can never inject a header.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push(Header::new(name, sanitize(value.into())));
    }

    /// Inserts a header line before all others (e.g. a new top Via).
    pub fn push_front(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(0, Header::new(name, sanitize(value.into())));
    }

    /// Appends an already-built header line.
    pub fn push_header(&mut self, header: Header) {
        let Header {
            name,
            raw_name,
            value,
        } = header;
        self.0.push(Header {
            name,
            raw_name,
            value: sanitize(value),
        });
    }

    /// Removes every line named `key`; returns how many were removed.
    pub fn remove(&mut self, key: impl HeaderKey) -> usize {
        let before = self.0.len();
        self.0.retain(|h| !key.matches(h));
        before - self.0.len()
    }

    /// Replaces every line named `name` by one line with `value`, at the position of the first
    /// such line (or at the end).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let header = Header::new(name, sanitize(value.into()));
        let key = header.name.clone();
        match self.0.iter().position(|h| key.matches(h)) {
            Some(pos) => {
                self.0.retain(|h| !key.matches(h));
                self.0.insert(pos, header);
            }
            None => self.0.push(header),
        }
    }

    /// Keeps only the lines for which `keep` returns `true`.
    pub fn retain(&mut self, keep: impl FnMut(&Header) -> bool) {
        self.0.retain(keep);
    }

    /// Mutable access to the first line named `key`.
    pub fn first_mut(&mut self, key: impl HeaderKey) -> Option<&mut Header> {
        self.0.iter_mut().find(|h| key.matches(h))
    }

    /// Used by the parser, which has already validated and unfolded the value.
    pub(crate) fn push_parsed(&mut self, raw_name: &str, value: String) {
        let (name, spelled) = match HeaderName::known_entry(raw_name) {
            Some((full, compact, n)) => {
                let canonical = [Some(*full), *compact]
                    .into_iter()
                    .flatten()
                    .find(|c| *c == raw_name);
                (n.clone(), canonical)
            }
            None => (HeaderName::Other(raw_name.to_owned()), None),
        };
        self.0.push(Header {
            name,
            raw_name: spelled.map_or_else(|| Cow::Owned(raw_name.to_owned()), Cow::Borrowed),
            value,
        });
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The static canonical or compact spelling equal (case-sensitively) to `raw`, if any.
fn spelling(raw: &str) -> Option<&'static str> {
    let (full, compact, _) = HeaderName::known_entry(raw)?;
    [Some(*full), *compact]
        .into_iter()
        .flatten()
        .find(|c| *c == raw)
}

fn sanitize(value: String) -> String {
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        value
            .chars()
            .map(|c| {
                if matches!(c, '\r' | '\n' | '\0') {
                    ' '
                } else {
                    c
                }
            })
            .collect()
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_forms_map_to_full_names() {
        for (compact, full) in [
            ("i", HeaderName::CallId),
            ("m", HeaderName::Contact),
            ("e", HeaderName::ContentEncoding),
            ("l", HeaderName::ContentLength),
            ("c", HeaderName::ContentType),
            ("f", HeaderName::From),
            ("t", HeaderName::To),
            ("v", HeaderName::Via),
            ("k", HeaderName::Supported),
            ("s", HeaderName::Subject),
            ("o", HeaderName::Event),
            ("u", HeaderName::AllowEvents),
            ("r", HeaderName::ReferTo),
            ("I", HeaderName::CallId),
        ] {
            assert_eq!(HeaderName::parse(compact), full, "{compact}");
        }
        assert_eq!(HeaderName::CallId.as_str(), "Call-ID");
        assert_eq!(HeaderName::CallId.compact(), Some("i"));
        assert_eq!(HeaderName::parse("cAlL-iD"), HeaderName::CallId);
    }

    #[test]
    fn lookup_by_str_and_name() {
        let mut h = Headers::new();
        h.push("i", "abc");
        h.push("ms-text-format", "text/plain");
        h.push("X-Foo", "1");
        h.push("x-foo", "2");
        assert_eq!(h.get("Call-ID"), Some("abc"));
        assert_eq!(h.get(HeaderName::CallId), Some("abc"));
        assert_eq!(h.get("MS-TEXT-FORMAT"), Some("text/plain"));
        assert_eq!(h.all("X-FOO").collect::<Vec<_>>(), vec!["1", "2"]);
        assert_eq!(h.get(HeaderName::Other("x-foo".into())), Some("1"));
        h.set("X-Foo", "3");
        assert_eq!(h.all("x-foo").collect::<Vec<_>>(), vec!["3"]);
        assert_eq!(h.remove("X-Foo"), 1);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn push_neutralises_line_breaks() {
        let mut h = Headers::new();
        h.push("Subject", "a\r\nVia: evil");
        assert_eq!(h.get("Subject"), Some("a  Via: evil"));
    }
}
