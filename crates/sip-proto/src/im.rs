//! Bodies used by SIP instant messaging: RFC 3994 composing indications, the SDP of a
//! Lync/OCS-style session-mode IM session, and the first message Lync carries in an INVITE's
//! `Ms-Text-Format` header.
//!
//! Everything here takes untrusted bytes and never panics: oversized, non-UTF-8 or malformed
//! input gives an error or `false`/`None`.

use base64::alphabet;
use base64::engine::general_purpose::GeneralPurpose;
use base64::engine::{DecodePaddingMode, GeneralPurposeConfig};
use base64::Engine as _;

/// The media type of RFC 3994 composing indications (RFC 3994 §9.1).
pub const ISCOMPOSING_TYPE: &str = "application/im-iscomposing+xml";

/// The XML namespace of RFC 3994 documents (RFC 3994 §9.2).
pub const ISCOMPOSING_NS: &str = "urn:ietf:params:xml:ns:im-iscomposing";

/// Composing documents larger than this are refused ([`BodyError::TooLarge`]); real ones are
/// a few hundred bytes.
pub const MAX_ISCOMPOSING_LEN: usize = 16 * 1024;

/// Element nesting deeper than this is refused: the schema needs two levels, extensions a few
/// more.
const MAX_DEPTH: usize = 16;

/// Why a message body could not be used.
///
/// As with [`crate::ParseError`], the `Display` texts are short, ASCII and echo no input, so
/// they can serve as the reason phrase of a `400` (or `415`) response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is larger than [`MAX_ISCOMPOSING_LEN`].
    #[error("Body too large")]
    TooLarge,
    /// The body is not UTF-8 (RFC 3994 §4 documents are UTF-8 XML).
    #[error("Body is not UTF-8")]
    NotUtf8,
    /// The body is not well-formed XML, or uses what this parser refuses (a DTD, undefined
    /// entities, nesting deeper than 16, an element inside a text-only field).
    #[error("Malformed XML body")]
    MalformedXml,
    /// The root element is not `isComposing` in the RFC 3994 namespace.
    #[error("Not an isComposing document")]
    NotIsComposing,
    /// The mandatory `<state/>` is missing or is neither `active` nor `idle` (RFC 3994 §4).
    #[error("Missing or invalid composing state")]
    BadState,
    /// An element the schema allows once appears twice.
    #[error("Duplicate {0} element")]
    Duplicate(&'static str),
}

/// An RFC 3994 composing indication (`application/im-iscomposing+xml`).
///
/// RFC 3994 §4: a sender says `active` while a message is being composed, refreshing the
/// indication every `refresh` seconds, and `idle` when composing stops; `lastactive` is when
/// the user last composed (an RFC 3339 date-time, kept as text) and `contenttype` what is being
/// composed (`text/plain`, `audio`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsComposing {
    /// `<state>active</state>` (true) or `<state>idle</state>` (false).
    pub active: bool,
    /// `<refresh>`: seconds until the sender refreshes an `active` state (a positive integer:
    /// `0` or garbage is read as absent, and `Some(0)` is not written).
    pub refresh: Option<u32>,
    /// `<contenttype>`: the type of the message being composed.
    pub content_type: Option<String>,
    /// `<lastactive>`: when the user last composed, as sent.
    pub last_active: Option<String>,
}

impl IsComposing {
    /// Parses an RFC 3994 document.
    ///
    /// The document must be well-formed UTF-8 XML (an optional BOM, XML declaration, comments
    /// and processing instructions are fine; a DTD is refused, as by the XMPP side) of at most
    /// [`MAX_ISCOMPOSING_LEN`] bytes, whose root is `isComposing` in the
    /// `urn:ietf:params:xml:ns:im-iscomposing` namespace, with any prefix. A root in no
    /// namespace at all is accepted too, since some senders omit the `xmlns`. The fields are
    /// read from the root's children in the root's namespace, in any order, their text trimmed;
    /// other children (RFC 3994 §7 allows extension elements in other namespaces) are skipped.
    /// A missing or unknown `<state/>` is an error ([`BodyError::BadState`]); a `<refresh/>`
    /// that is not a positive integer is ignored; empty `<contenttype/>` or `<lastactive/>`
    /// count as absent.
    pub fn parse(body: &[u8]) -> Result<IsComposing, BodyError> {
        if body.len() > MAX_ISCOMPOSING_LEN {
            return Err(BodyError::TooLarge);
        }
        let text = std::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.chars().any(is_forbidden_xml_char) {
            return Err(BodyError::MalformedXml);
        }
        parse_document(text)
    }

    /// Serialises the indication as an RFC 3994 document, elements in the schema's order
    /// (RFC 3994 §7: state, lastactive, contenttype, refresh). Text is XML-escaped; characters
    /// XML 1.0 cannot carry are dropped.
    pub fn to_xml(&self) -> String {
        let mut xml = String::with_capacity(200);
        xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<isComposing xmlns=\"");
        xml.push_str(ISCOMPOSING_NS);
        xml.push_str("\">");
        xml.push_str(if self.active {
            "<state>active</state>"
        } else {
            "<state>idle</state>"
        });
        if let Some(last) = &self.last_active {
            xml.push_str("<lastactive>");
            push_escaped(&mut xml, last);
            xml.push_str("</lastactive>");
        }
        if let Some(ct) = &self.content_type {
            xml.push_str("<contenttype>");
            push_escaped(&mut xml, ct);
            xml.push_str("</contenttype>");
        }
        if let Some(refresh) = self.refresh.filter(|r| *r > 0) {
            xml.push_str("<refresh>");
            xml.push_str(&refresh.to_string());
            xml.push_str("</refresh>");
        }
        xml.push_str("</isComposing>");
        xml
    }
}

/// The SDP (RFC 4566) of a session-mode IM session as Lync and OCS negotiate it: the offer or
/// answer of an INVITE whose media is SIP itself (the messages then flow as MESSAGE requests in
/// the dialog).
///
/// ```text
/// v=0
/// o=- 0 0 IN IP4 <addr>
/// s=session
/// c=IN IP4 <addr>
/// t=0 0
/// m=message <port> sip <uri>
/// a=accept-types:text/plain application/im-iscomposing+xml
/// ```
///
/// Lync offers `m=message 5060 sip null` and `o=- 0 0`, as here; OCS-era clients list in
/// `a=accept-types` what they render (`text/plain text/html image/gif multipart/alternative
/// application/im-iscomposing+xml`). A gateway to XMPP takes plain text and composing
/// indications, so it lists those two. An address with a `:` is written as `IP6` (brackets
/// dropped). Whitespace and control characters are removed from `addr` and `uri`, so they
/// cannot break a line; an empty `uri` becomes `null`. Lines end in CRLF (RFC 4566 §5).
pub fn message_session_sdp(addr: &str, port: u16, uri: &str) -> String {
    let addr = sdp_field(addr.trim().trim_start_matches('[').trim_end_matches(']'));
    let addr = if addr.is_empty() {
        "0.0.0.0".to_string()
    } else {
        addr
    };
    let uri = sdp_field(uri);
    let uri = if uri.is_empty() {
        "null".to_string()
    } else {
        uri
    };
    let family = if addr.contains(':') { "IP6" } else { "IP4" };
    format!(
        "v=0\r\n\
         o=- 0 0 IN {family} {addr}\r\n\
         s=session\r\n\
         c=IN {family} {addr}\r\n\
         t=0 0\r\n\
         m=message {port} sip {uri}\r\n\
         a=accept-types:text/plain {ISCOMPOSING_TYPE}\r\n"
    )
}

/// True when an SDP body offers a session-mode IM session: an `m=message <port> sip ...`
/// media line (RFC 4566 §5.14) with a non-zero port (a zero port declines the stream, RFC 3264
/// §5.1), as Lync and OCS send.
///
/// Tolerant of CRLF or bare LF line ends, missing or extra lines and other media lines, which
/// are skipped. The transport must be `sip` (any case): `m=message 7394 TCP/MSRP *` is an MSRP
/// chat (RFC 4975), which this session mode cannot answer. Non-UTF-8 or garbage gives `false`.
pub fn sdp_offers_message_session(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    text.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter_map(|line| line.strip_prefix("m="))
        .any(|media| {
            let mut fields = media.split_ascii_whitespace();
            let is_message = fields.next() == Some("message");
            // <port> or <port>/<number of ports>.
            let port = fields
                .next()
                .and_then(|p| p.split('/').next())
                .and_then(|p| p.parse::<u16>().ok());
            let transport = fields.next();
            is_message
                && port.is_some_and(|p| p != 0)
                && transport.is_some_and(|t| t.eq_ignore_ascii_case("sip"))
        })
}

/// The first message of an IM session, which Lync sends inside the INVITE in the
/// `Ms-Text-Format` header (MS-SIPRE), e.g. `text/plain; charset=UTF-8;ms-body=SGVsbG8=`.
///
/// Returns the media type without parameters (lower-cased) and the `ms-body` parameter
/// base64-decoded. Other parameters are skipped: `charset` (the caller decodes accordingly),
/// and `msgr`, where Lync puts the font and colour as base64 UTF-16 `X-MMS-IM-Format`. Values
/// may be quoted; names are case-insensitive; base64 padding may be present or not, and
/// whitespace inside it is ignored. `None` when the value has no `type/subtype`, no `ms-body`,
/// an `ms-body` that is not base64, or an empty one.
pub fn ms_text_format_body(value: &str) -> Option<(String, Vec<u8>)> {
    let mut parts = split_params(value).into_iter();
    let media_type = parts.next()?.trim();
    let (mtype, subtype) = media_type.split_once('/')?;
    if !is_token(mtype) || !is_token(subtype) {
        return None;
    }
    let encoded = parts.find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("ms-body")
            .then(|| unquote(value.trim()))
    })?;
    let compact: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let body = LENIENT_BASE64.decode(compact).ok()?;
    if body.is_empty() {
        return None;
    }
    Some((media_type.to_ascii_lowercase(), body))
}

/// Standard alphabet, padding optional, non-zero trailing bits tolerated.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Splits a header value at the `;` that are not inside a quoted string.
fn split_params(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                parts.push(value.get(start..i).unwrap_or(""));
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value.get(start..).unwrap_or(""));
    parts
}

/// The content of a quoted string (backslash escapes resolved), or the value as is.
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// RFC 3261 §25.1 `token`.
fn is_token(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
                )
        })
}

/// `s` without whitespace and control characters.
fn sdp_field(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect()
}

/// Characters XML 1.0 §2.2 does not allow anywhere in a document.
fn is_forbidden_xml_char(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

/// Appends `text` escaped for element content.
fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // Kept as a reference so that XML line-end normalisation does not eat it.
            '\r' => out.push_str("&#xD;"),
            c if is_forbidden_xml_char(c) => {}
            c => out.push(c),
        }
    }
}

/// The text-only fields of an isComposing document.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    State,
    Refresh,
    ContentType,
    LastActive,
}

impl Field {
    fn from_local_name(name: &str) -> Option<Field> {
        match name {
            "state" => Some(Field::State),
            "refresh" => Some(Field::Refresh),
            "contenttype" => Some(Field::ContentType),
            "lastactive" => Some(Field::LastActive),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Field::State => "state",
            Field::Refresh => "refresh",
            Field::ContentType => "contenttype",
            Field::LastActive => "lastactive",
        }
    }
}

/// What the document's fields hold so far.
#[derive(Default)]
struct Fields {
    state: Option<String>,
    refresh: Option<String>,
    content_type: Option<String>,
    last_active: Option<String>,
}

impl Fields {
    fn slot(&mut self, field: Field) -> &mut Option<String> {
        match field {
            Field::State => &mut self.state,
            Field::Refresh => &mut self.refresh,
            Field::ContentType => &mut self.content_type,
            Field::LastActive => &mut self.last_active,
        }
    }

    fn finish(self) -> Result<IsComposing, BodyError> {
        let active = match self.state.as_deref().map(str::trim) {
            Some("active") => true,
            Some("idle") => false,
            _ => return Err(BodyError::BadState),
        };
        let text = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let refresh = self
            .refresh
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|r| r.parse::<u32>().ok())
            .filter(|r| *r > 0);
        Ok(IsComposing {
            active,
            refresh,
            content_type: text(self.content_type),
            last_active: text(self.last_active),
        })
    }
}

/// An open element: its qualified name and how many namespace declarations it pushed.
struct Open<'a> {
    qname: &'a str,
    declared: usize,
}

/// A hand-written, bounded parser for the small subset of XML an isComposing document uses:
/// elements, attributes, namespaces, text with the predefined entities and character
/// references, CDATA, comments and processing instructions. No DTD.
fn parse_document(text: &str) -> Result<IsComposing, BodyError> {
    let mut cur = Cursor { rest: text };
    let mut open: Vec<Open<'_>> = Vec::new();
    let mut namespaces: Vec<(&str, String)> = Vec::new();
    let mut root_ns: Option<Option<String>> = None;
    let mut root_closed = false;
    let mut capture: Option<(Field, String)> = None;
    let mut fields = Fields::default();

    while !cur.rest.is_empty() {
        if cur.eat("<?") {
            cur.skip_past("?>")?;
        } else if cur.eat("<!--") {
            cur.skip_past("-->")?;
        } else if cur.eat("<![CDATA[") {
            let data = cur.take_until("]]>")?;
            text_content(data, &open, &mut capture)?;
        } else if cur.rest.starts_with("<!") {
            // DOCTYPE and other declarations.
            return Err(BodyError::MalformedXml);
        } else if cur.eat("</") {
            let name = cur.name()?;
            cur.skip_ws();
            if !cur.eat(">") {
                return Err(BodyError::MalformedXml);
            }
            let top = open.pop().ok_or(BodyError::MalformedXml)?;
            if top.qname != name {
                return Err(BodyError::MalformedXml);
            }
            namespaces.truncate(namespaces.len().saturating_sub(top.declared));
            if open.len() == 1 {
                if let Some((field, value)) = capture.take() {
                    *fields.slot(field) = Some(value);
                }
            }
            if open.is_empty() {
                root_closed = true;
            }
        } else if cur.eat("<") {
            if root_closed || open.len() >= MAX_DEPTH || capture.is_some() {
                return Err(BodyError::MalformedXml);
            }
            let tag = cur.start_tag()?;
            let declared = tag.declare(&mut namespaces)?;
            let (prefix, local) = split_qname(tag.qname)?;
            let ns = resolve(&namespaces, prefix)?;
            match open.len() {
                0 => {
                    if local != "isComposing"
                        || !(ns.is_none() || ns.as_deref() == Some(ISCOMPOSING_NS))
                    {
                        return Err(BodyError::NotIsComposing);
                    }
                    root_ns = Some(ns);
                }
                1 if root_ns.as_ref() == Some(&ns) => {
                    if let Some(field) = Field::from_local_name(local) {
                        if fields.slot(field).is_some() {
                            return Err(BodyError::Duplicate(field.name()));
                        }
                        capture = Some((field, String::new()));
                    }
                }
                _ => {}
            }
            if tag.empty {
                namespaces.truncate(namespaces.len().saturating_sub(declared));
                if let Some((field, value)) = capture.take() {
                    *fields.slot(field) = Some(value);
                }
                if open.is_empty() {
                    root_closed = true;
                }
            } else {
                open.push(Open {
                    qname: tag.qname,
                    declared,
                });
            }
        } else {
            let raw = cur.text();
            text_content(&decode_entities(raw)?, &open, &mut capture)?;
        }
    }
    if !root_closed || !open.is_empty() {
        return Err(BodyError::MalformedXml);
    }
    fields.finish()
}

/// Character data at the current position: outside the root only whitespace is allowed;
/// directly inside a field it is collected.
fn text_content(
    data: &str,
    open: &[Open<'_>],
    capture: &mut Option<(Field, String)>,
) -> Result<(), BodyError> {
    if open.is_empty() {
        if data.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n')) {
            return Ok(());
        }
        return Err(BodyError::MalformedXml);
    }
    if let Some((_, value)) = capture {
        if value.len() + data.len() > MAX_ISCOMPOSING_LEN {
            return Err(BodyError::TooLarge);
        }
        value.push_str(data);
    }
    Ok(())
}

/// `prefix:local` or `local`.
fn split_qname(qname: &str) -> Result<(&str, &str), BodyError> {
    match qname.split_once(':') {
        None => Ok(("", qname)),
        Some((prefix, local))
            if !prefix.is_empty() && !local.is_empty() && !local.contains(':') =>
        {
            Ok((prefix, local))
        }
        Some(_) => Err(BodyError::MalformedXml),
    }
}

/// The namespace a prefix is bound to in scope (`None`: no namespace, only for the default
/// prefix).
fn resolve(namespaces: &[(&str, String)], prefix: &str) -> Result<Option<String>, BodyError> {
    if prefix == "xml" {
        return Ok(Some("http://www.w3.org/XML/1998/namespace".to_string()));
    }
    match namespaces.iter().rev().find(|(p, _)| *p == prefix) {
        Some((_, uri)) if uri.is_empty() => Ok(None),
        Some((_, uri)) => Ok(Some(uri.clone())),
        None if prefix.is_empty() => Ok(None),
        None => Err(BodyError::MalformedXml),
    }
}

/// Replaces the predefined entities and character references (XML 1.0 §4.1, §4.6). Any other
/// `&` is an error: without a DTD no other entity exists.
fn decode_entities(raw: &str) -> Result<String, BodyError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((before, after)) = rest.split_once('&') {
        out.push_str(before);
        let (entity, tail) = after.split_once(';').ok_or(BodyError::MalformedXml)?;
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => char_reference(entity).ok_or(BodyError::MalformedXml)?,
        };
        out.push(c);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// `#123` or `#x7B` → the character, if it is one XML allows.
fn char_reference(entity: &str) -> Option<char> {
    let code = if let Some(hex) = entity.strip_prefix("#x") {
        if hex.is_empty() || hex.len() > 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(hex, 16).ok()?
    } else {
        let dec = entity.strip_prefix('#')?;
        if dec.is_empty() || dec.len() > 10 || !dec.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        dec.parse::<u32>().ok()?
    };
    char::from_u32(code).filter(|c| !is_forbidden_xml_char(*c))
}

/// A start tag's name, attributes and whether it closes itself.
struct StartTag<'a> {
    qname: &'a str,
    attrs: Vec<(&'a str, String)>,
    empty: bool,
}

impl<'a> StartTag<'a> {
    /// Pushes this tag's `xmlns` / `xmlns:p` declarations; returns how many.
    fn declare(&self, namespaces: &mut Vec<(&'a str, String)>) -> Result<usize, BodyError> {
        let mut count = 0;
        for (name, value) in &self.attrs {
            let prefix = if *name == "xmlns" {
                ""
            } else if let Some(p) = name.strip_prefix("xmlns:") {
                // Undeclaring a prefix (xmlns:p="") is not XML 1.0.
                if p.is_empty() || value.is_empty() || p.contains(':') {
                    return Err(BodyError::MalformedXml);
                }
                p
            } else {
                continue;
            };
            namespaces.push((prefix, value.clone()));
            count += 1;
        }
        Ok(count)
    }
}

/// The unread rest of the document.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    /// Consumes `prefix` if the input starts with it.
    fn eat(&mut self, prefix: &str) -> bool {
        match self.rest.strip_prefix(prefix) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// Consumes everything up to and including `end`.
    fn skip_past(&mut self, end: &str) -> Result<(), BodyError> {
        self.take_until(end).map(|_| ())
    }

    /// Consumes and returns everything before `end`, and `end` itself.
    fn take_until(&mut self, end: &str) -> Result<&'a str, BodyError> {
        let (before, after) = self.rest.split_once(end).ok_or(BodyError::MalformedXml)?;
        self.rest = after;
        Ok(before)
    }

    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t', '\r', '\n']);
    }

    /// Character data up to the next `<` (or the end).
    fn text(&mut self) -> &'a str {
        let end = self.rest.find('<').unwrap_or(self.rest.len());
        let (text, rest) = self.rest.split_at_checked(end).unwrap_or((self.rest, ""));
        self.rest = rest;
        text
    }

    /// An element or attribute name.
    fn name(&mut self) -> Result<&'a str, BodyError> {
        let end = self
            .rest
            .find(|c: char| {
                matches!(
                    c,
                    ' ' | '\t' | '\r' | '\n' | '/' | '>' | '<' | '=' | '"' | '\'' | '&'
                )
            })
            .unwrap_or(self.rest.len());
        let (name, rest) = self
            .rest
            .split_at_checked(end)
            .ok_or(BodyError::MalformedXml)?;
        let valid_start = name
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_' || c == ':');
        if !valid_start {
            return Err(BodyError::MalformedXml);
        }
        self.rest = rest;
        Ok(name)
    }

    /// The rest of a start tag after `<`.
    fn start_tag(&mut self) -> Result<StartTag<'a>, BodyError> {
        let qname = self.name()?;
        let mut attrs: Vec<(&'a str, String)> = Vec::new();
        loop {
            let had_space = self.rest.starts_with([' ', '\t', '\r', '\n']);
            self.skip_ws();
            if self.eat("/>") {
                return Ok(StartTag {
                    qname,
                    attrs,
                    empty: true,
                });
            }
            if self.eat(">") {
                return Ok(StartTag {
                    qname,
                    attrs,
                    empty: false,
                });
            }
            if !had_space {
                return Err(BodyError::MalformedXml);
            }
            let name = self.name()?;
            self.skip_ws();
            if !self.eat("=") {
                return Err(BodyError::MalformedXml);
            }
            self.skip_ws();
            let quote = if self.eat("\"") {
                "\""
            } else if self.eat("'") {
                "'"
            } else {
                return Err(BodyError::MalformedXml);
            };
            let raw = self.take_until(quote)?;
            if raw.contains('<') || attrs.iter().any(|(n, _)| *n == name) {
                return Err(BodyError::MalformedXml);
            }
            attrs.push((name, decode_entities(raw)?));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<IsComposing, BodyError> {
        IsComposing::parse(s.as_bytes())
    }

    #[test]
    fn rfc3994_active_example() {
        // RFC 3994 §6.
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
   <isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"
     xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
     xsi:schemaLocation="urn:ietf:params:xml:ns:im-composing iscomposing.xsd">
     <state>active</state>
     <contenttype>text/plain</contenttype>
     <refresh>90</refresh>
   </isComposing>"#;
        assert_eq!(
            parse(doc),
            Ok(IsComposing {
                active: true,
                refresh: Some(90),
                content_type: Some("text/plain".into()),
                last_active: None,
            })
        );
    }

    #[test]
    fn rfc3994_idle_example() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
   <isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"
     xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
     xsi:schemaLocation="urn:ietf:params:xml:ns:im-composing iscomposing.xsd">
     <state>idle</state>
     <lastactive>2003-01-27T10:43:00Z</lastactive>
     <contenttype>audio</contenttype>
   </isComposing>"#;
        assert_eq!(
            parse(doc),
            Ok(IsComposing {
                active: false,
                refresh: None,
                content_type: Some("audio".into()),
                last_active: Some("2003-01-27T10:43:00Z".into()),
            })
        );
    }

    #[test]
    fn prefixes_whitespace_and_extensions() {
        let doc =
            "\u{feff}<!-- hi --><ic:isComposing xmlns:ic='urn:ietf:params:xml:ns:im-iscomposing' \
                   xmlns:x=\"urn:example:ext\">\r\n\t<ic:state>\n  active \n</ic:state>\
                   <x:state>idle</x:state><x:ext a='1'><ic:state>idle</ic:state></x:ext>\
                   <ic:unknown/><state>idle</state><?pi data?>\
                   <ic:refresh> 60 </ic:refresh></ic:isComposing>\n<!-- bye -->\n";
        let ic = parse(doc).unwrap();
        assert!(ic.active);
        assert_eq!(ic.refresh, Some(60));
        // A default namespace redeclared on the child still resolves.
        let doc = r#"<p:isComposing xmlns:p="urn:ietf:params:xml:ns:im-iscomposing"><state xmlns="urn:ietf:params:xml:ns:im-iscomposing">idle</state></p:isComposing>"#;
        assert!(!parse(doc).unwrap().active);
        // Entities, character references and CDATA in text.
        let doc = r#"<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"><state>&#x61;ctiv&#101;</state><contenttype>a&amp;b<![CDATA[<c>]]></contenttype></isComposing>"#;
        let ic = parse(doc).unwrap();
        assert!(ic.active);
        assert_eq!(ic.content_type.as_deref(), Some("a&b<c>"));
        // No namespace at all is tolerated.
        assert!(
            parse("<isComposing><state>active</state></isComposing>")
                .unwrap()
                .active
        );
    }

    #[test]
    fn state_errors() {
        let ns = ISCOMPOSING_NS;
        for doc in [
            format!("<isComposing xmlns='{ns}'/>"),
            format!("<isComposing xmlns='{ns}'><state/></isComposing>"),
            format!("<isComposing xmlns='{ns}'><state>typing</state></isComposing>"),
            format!("<isComposing xmlns='{ns}'><state>ACTIVE</state></isComposing>"),
            // The state in another namespace does not count.
            format!(
                "<isComposing xmlns='{ns}'><x:state xmlns:x='urn:x'>active</x:state></isComposing>"
            ),
        ] {
            assert_eq!(parse(&doc), Err(BodyError::BadState), "{doc}");
        }
        assert_eq!(
            parse(&format!(
                "<isComposing xmlns='{ns}'><state>active</state><state>idle</state></isComposing>"
            )),
            Err(BodyError::Duplicate("state"))
        );
    }

    #[test]
    fn tolerated_fields() {
        let ns = ISCOMPOSING_NS;
        for refresh in ["0", "-5", "abc", "+5", "99999999999", ""] {
            let doc = format!(
                "<isComposing xmlns='{ns}'><state>active</state><refresh>{refresh}</refresh><contenttype> </contenttype></isComposing>"
            );
            let ic = parse(&doc).unwrap();
            assert_eq!(ic.refresh, None, "{refresh}");
            assert_eq!(ic.content_type, None);
        }
    }

    #[test]
    fn wrong_documents() {
        assert_eq!(
            parse("<isComposing xmlns='urn:other'><state>active</state></isComposing>"),
            Err(BodyError::NotIsComposing)
        );
        assert_eq!(
            parse("<presence xmlns='urn:ietf:params:xml:ns:pidf'/>"),
            Err(BodyError::NotIsComposing)
        );
        assert_eq!(
            IsComposing::parse(b"<isComposing>\xff</isComposing>"),
            Err(BodyError::NotUtf8)
        );
        let big = format!(
            "<isComposing xmlns='{ISCOMPOSING_NS}'><state>active</state>{}</isComposing>",
            " ".repeat(MAX_ISCOMPOSING_LEN)
        );
        assert_eq!(parse(&big), Err(BodyError::TooLarge));
        let malformed = [
            "",
            "   ",
            "garbage",
            "<isComposing><state>active</state>",
            "<isComposing><state>active</isComposing></state>",
            "<isComposing><state>active</state></isComposing><isComposing/>",
            "<isComposing><state>active</state></isComposing>trailing",
            "text<isComposing><state>active</state></isComposing>",
            "<!DOCTYPE x [<!ENTITY a 'b'>]><isComposing><state>active</state></isComposing>",
            "<isComposing><state>&a;</state></isComposing>",
            "<isComposing><state>&amp</state></isComposing>",
            "<isComposing><state>&#0;</state></isComposing>",
            "<isComposing><state>&#xD800;</state></isComposing>",
            "<isComposing><state>a\u{0}</state></isComposing>",
            "<isComposing a='1' a='2'><state>active</state></isComposing>",
            "<isComposing a='1'b='2'><state>active</state></isComposing>",
            "<isComposing a=1><state>active</state></isComposing>",
            "<isComposing a='<'><state>active</state></isComposing>",
            "<p:isComposing><state>active</state></p:isComposing>",
            "<isComposing><state><b>active</b></state></isComposing>",
            "<isComposing><!-- unterminated <state>active</state></isComposing>",
            "<isComposing><![CDATA[x</isComposing>",
            "<isComposing xmlns:p=''><state>active</state></isComposing>",
            "<1isComposing/>",
            "<:a:b/>",
        ];
        for doc in malformed {
            assert!(
                matches!(parse(doc), Err(BodyError::MalformedXml)),
                "{doc:?}: {:?}",
                parse(doc)
            );
        }
        let deep = format!(
            "<isComposing><state>active</state>{}{}</isComposing>",
            "<a>".repeat(40),
            "</a>".repeat(40)
        );
        assert_eq!(parse(&deep), Err(BodyError::MalformedXml));
        for e in [
            BodyError::TooLarge,
            BodyError::NotUtf8,
            BodyError::MalformedXml,
            BodyError::NotIsComposing,
            BodyError::BadState,
            BodyError::Duplicate("state"),
        ] {
            let text = e.to_string();
            assert!(text.is_ascii() && !text.contains(['\r', '\n']));
        }
    }

    #[test]
    fn to_xml_output() {
        let ic = IsComposing {
            active: true,
            refresh: Some(60),
            content_type: Some("text/plain".into()),
            last_active: None,
        };
        assert_eq!(
            ic.to_xml(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\">\
             <state>active</state><contenttype>text/plain</contenttype>\
             <refresh>60</refresh></isComposing>"
        );
        let idle = IsComposing {
            active: false,
            refresh: Some(0),
            content_type: Some("a<&>\u{1}b\r".into()),
            last_active: Some("2003-01-27T10:43:00Z".into()),
        };
        let xml = idle.to_xml();
        assert!(xml.contains(
            "<state>idle</state><lastactive>2003-01-27T10:43:00Z</lastactive>\
             <contenttype>a&lt;&amp;&gt;b&#xD;</contenttype></isComposing>"
        ));
        assert_eq!(parse(&xml).unwrap().refresh, None);
    }

    #[test]
    fn sdp_answer() {
        let sdp = message_session_sdp("192.0.2.7", 5061, "sip:gw@example.com;transport=tls");
        assert_eq!(
            sdp,
            "v=0\r\no=- 0 0 IN IP4 192.0.2.7\r\ns=session\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n\
             m=message 5061 sip sip:gw@example.com;transport=tls\r\n\
             a=accept-types:text/plain application/im-iscomposing+xml\r\n"
        );
        assert!(sdp_offers_message_session(sdp.as_bytes()));
        let v6 = message_session_sdp("[2001:db8::1]", 5060, "");
        assert!(v6.contains("o=- 0 0 IN IP6 2001:db8::1\r\n"));
        assert!(v6.contains("c=IN IP6 2001:db8::1\r\n"));
        assert!(v6.contains("m=message 5060 sip null\r\n"));
        // Nothing can inject a line.
        let evil = message_session_sdp("1.2.3.4\r\na=evil", 1, "x\r\nm=audio 1 RTP/AVP 0");
        assert_eq!(evil.lines().count(), 7);
        assert!(!evil.contains("\r\na=evil"));
        assert_eq!(
            message_session_sdp("", 1, " ").lines().nth(1),
            Some("o=- 0 0 IN IP4 0.0.0.0")
        );
    }

    #[test]
    fn sdp_detection() {
        // Lync's offer.
        let lync = "v=0\r\no=- 0 0 IN IP4 10.0.0.5\r\ns=session\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
                    m=message 5060 sip null\r\n\
                    a=accept-types:text/plain text/html image/gif multipart/alternative application/im-iscomposing+xml\r\n";
        assert!(sdp_offers_message_session(lync.as_bytes()));
        // LF only, media after audio, port/count, odd case of the transport.
        assert!(sdp_offers_message_session(
            b"v=0\nm=audio 4000 RTP/AVP 0\nm=message 5060/1 SIP null\n"
        ));
        for no in [
            &b"v=0\r\nm=message 0 sip null\r\n"[..],
            b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n",
            b"v=0\r\nm=message 7394 TCP/MSRP *\r\n",
            b"m=message",
            b"m=message 5060",
            b"m=message 70000 sip null",
            b"m=message -1 sip null",
            b" m=message 5060 sip null",
            b"m=messages 5060 sip null",
            b"",
            b"\xff\xfe",
            b"m=message 5060 sip null\xff",
        ] {
            assert!(
                !sdp_offers_message_session(no),
                "{:?}",
                String::from_utf8_lossy(no)
            );
        }
    }

    #[test]
    fn ms_text_format() {
        assert_eq!(
            ms_text_format_body("text/plain; charset=UTF-8;ms-body=SGVsbG8="),
            Some(("text/plain".into(), b"Hello".to_vec()))
        );
        // With Lync's msgr font parameter, quoted, unpadded, odd case and spacing.
        let v = "Text/HTML; charset=UTF-8;msgr=WAAtAE0ATQBTAC0ASQBNAC0ARgBvAHIAbQBhAHQAOgAgAEYATgA9AFMAZQBnAG8AZQAlADIAMABVAEkAOwAgAEUARgA9ADsAIABDAE8APQAwADsAIABDAFMAPQAwADsAIABQAEYAPQAwAA0ACgANAAoADQAKAA; MS-Body = \"PGI+aGk8L2I+\"";
        assert_eq!(
            ms_text_format_body(v),
            Some(("text/html".into(), b"<b>hi</b>".to_vec()))
        );
        assert_eq!(
            ms_text_format_body("text/plain;ms-body=SGk"),
            Some(("text/plain".into(), b"Hi".to_vec()))
        );
        assert_eq!(
            ms_text_format_body("text/plain; x=\"a;ms-body=SGk=\"; ms-body=\"SG k=\""),
            Some(("text/plain".into(), b"Hi".to_vec()))
        );
        for none in [
            "",
            "text/plain",
            "text/plain; charset=UTF-8",
            "text/plain; ms-body=",
            "text/plain; ms-body=\"\"",
            "text/plain; ms-body=!!!",
            "text/plain; ms-body",
            "textplain; ms-body=SGk=",
            "/plain; ms-body=SGk=",
            "text/; ms-body=SGk=",
            "te xt/plain; ms-body=SGk=",
            "; ms-body=SGk=",
        ] {
            assert_eq!(ms_text_format_body(none), None, "{none:?}");
        }
    }

    fn field_text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9/:+.&<>'\" é-]{1,30}".prop_map(|s| s.trim().to_string())
    }

    fn xml_soup() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "<",
            ">",
            "</",
            "/>",
            "<?",
            "?>",
            "<!--",
            "-->",
            "<![CDATA[",
            "]]>",
            "<!DOCTYPE",
            "isComposing",
            "state",
            "active",
            "idle",
            "refresh",
            "60",
            "xmlns",
            "xmlns:p",
            "p:",
            "=",
            "'",
            "\"",
            ISCOMPOSING_NS,
            " ",
            "\n",
            "&",
            "&amp;",
            "&#x",
            ";",
            "é",
            "\u{0}",
        ]);
        prop::collection::vec(pieces, 0..60).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn round_trip(
            active in any::<bool>(),
            refresh in proptest::option::of(1u32..),
            content_type in proptest::option::of(field_text()),
            last_active in proptest::option::of(field_text()),
        ) {
            let ic = IsComposing {
                active,
                refresh,
                content_type: content_type.filter(|s| !s.is_empty()),
                last_active: last_active.filter(|s| !s.is_empty()),
            };
            prop_assert_eq!(parse(&ic.to_xml()), Ok(ic));
        }

        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = IsComposing::parse(&bytes);
            let _ = sdp_offers_message_session(&bytes);
        }

        #[test]
        fn parse_soup_never_panics(doc in xml_soup()) {
            let _ = parse(&doc);
        }

        #[test]
        fn strings_never_panic(s in any::<String>(), port in any::<u16>()) {
            let _ = ms_text_format_body(&s);
            let _ = sdp_offers_message_session(s.as_bytes());
            let sdp = message_session_sdp(&s, port, &s);
            prop_assert_eq!(sdp.split("\r\n").count(), 8);
            prop_assert_eq!(sdp_offers_message_session(sdp.as_bytes()), port != 0);
        }
    }
}
