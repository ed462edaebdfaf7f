//! The strict message parser (RFC 3261 §7, §25).
//!
//! Order of work: size limit, header-section boundary, NUL bytes, UTF-8, start-line, header
//! lines (unfolding LWS continuations), then semantic checks on the headers a transaction
//! layer depends on (presence, uniqueness, syntax), then the body bounded by Content-Length.

use bytes::Bytes;

use crate::error::ParseError;
use crate::header::{HeaderName, Headers};
use crate::message::{Message, Request, Response};
use crate::method::{Method, StatusCode, Version};
use crate::typed::{
    CallId, Contact, ContentLength, DeltaSeconds, HeaderValue, MaxForwards, MediaType, NameAddr,
};
use crate::uri::Uri;

/// Resource limits applied while parsing and framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted message (start-line, headers and body), in bytes.
    pub max_message_size: usize,
    /// Largest accepted number of (unfolded) header lines.
    pub max_headers: usize,
}

impl Default for Limits {
    /// 128 KiB and 256 headers: a UDP datagram is at most 64 KiB, and the largest messages in
    /// practice are NOTIFYs with RLMI multipart bodies, a few tens of KiB.
    fn default() -> Self {
        Limits {
            max_message_size: 128 * 1024,
            max_headers: 256,
        }
    }
}

/// A parser with configured [`Limits`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Parser {
    limits: Limits,
}

/// Parses one message with default limits. See [`Parser::parse`].
pub fn parse(input: &[u8]) -> Result<Message, ParseError> {
    Parser::default().parse(input)
}

impl Parser {
    /// A parser with `limits`.
    pub fn new(limits: Limits) -> Parser {
        Parser { limits }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Parses one message from a buffer (a datagram, or a frame cut by [`crate::Framer`]).
    ///
    /// Leading CRLFs are skipped (RFC 3261 §7.5). With a Content-Length, the body is that many
    /// bytes and anything after it is ignored (RFC 3261 §18.3); fewer bytes is
    /// [`ParseError::BodyTruncated`]. Without one, the body is the rest of the input.
    pub fn parse(&self, input: &[u8]) -> Result<Message, ParseError> {
        self.parse_with(input, |range| {
            Bytes::copy_from_slice(input.get(range).unwrap_or(&[]))
        })
    }

    /// Like [`Parser::parse`], but the body shares `input`'s buffer instead of being copied.
    pub fn parse_bytes(&self, input: Bytes) -> Result<Message, ParseError> {
        self.parse_with(&input, |range| input.slice(range))
    }

    fn parse_with(
        &self,
        input: &[u8],
        body_of: impl FnOnce(std::ops::Range<usize>) -> Bytes,
    ) -> Result<Message, ParseError> {
        if input.len() > self.limits.max_message_size {
            return Err(ParseError::TooLarge);
        }
        let start = skip_leading_crlf(input);
        let rest = input.get(start..).unwrap_or(&[]);
        let head_len = find_head_end(rest).ok_or(ParseError::Incomplete)?;
        let head = rest.get(..head_len).unwrap_or(&[]);
        let body_start = start + head_len + 4;

        let (start_line, headers) = parse_head(head, self.limits.max_headers)?;
        let (msg_kind, headers) = (start_line, headers);
        validate_headers(&headers, msg_kind.method())?;

        let available = input.len().saturating_sub(body_start);
        let body_len = match headers.content_length()? {
            Some(cl) if cl > available => return Err(ParseError::BodyTruncated),
            Some(cl) => cl,
            None => available,
        };
        let body = if body_len == 0 {
            Bytes::new()
        } else {
            body_of(body_start..body_start + body_len)
        };
        Ok(match msg_kind {
            StartLine::Request {
                method,
                uri,
                version,
            } => Message::Request(Request {
                method,
                uri,
                version,
                headers,
                body,
            }),
            StartLine::Response {
                version,
                status,
                reason,
            } => Message::Response(Response {
                version,
                status,
                reason,
                headers,
                body,
            }),
        })
    }
}

pub(crate) enum StartLine {
    Request {
        method: Method,
        uri: Uri,
        version: Version,
    },
    Response {
        version: Version,
        status: StatusCode,
        reason: String,
    },
}

impl StartLine {
    fn method(&self) -> Option<&Method> {
        match self {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }
}

pub(crate) fn skip_leading_crlf(input: &[u8]) -> usize {
    let mut i = 0;
    while input.get(i..i + 2) == Some(b"\r\n") {
        i += 2;
    }
    i
}

/// Offset of the `\r\n\r\n` that ends the header section.
pub(crate) fn find_head_end(buf: &[u8]) -> Option<usize> {
    find_head_end_from(buf, 0)
}

/// Like [`find_head_end`], starting the search at `from` (for incremental framing).
pub(crate) fn find_head_end_from(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(rel) = buf.get(i..)?.iter().position(|&b| b == b'\r') {
        let at = i + rel;
        if buf.get(at..at + 4)? == b"\r\n\r\n" {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// Parses the start-line and header lines of `head` (which excludes the final CRLFCRLF).
pub(crate) fn parse_head(
    head: &[u8],
    max_headers: usize,
) -> Result<(StartLine, Headers), ParseError> {
    check_head_bytes(head)?;
    let head = std::str::from_utf8(head).map_err(|_| ParseError::NonUtf8Header)?;
    let mut lines = crlf_lines(head);
    let first = lines.next().unwrap_or("");
    let start = parse_start_line(first)?;
    let headers = parse_header_lines(lines, max_headers)?;
    Ok((start, headers))
}

/// One pass over the header section: no NUL, and every CR/LF part of a CRLF pair.
pub(crate) fn check_head_bytes(head: &[u8]) -> Result<(), ParseError> {
    let mut prev = 0u8;
    let mut iter = head.iter().peekable();
    while let Some(&b) = iter.next() {
        match b {
            0 => return Err(ParseError::NulInHeader),
            b'\r' if iter.peek() != Some(&&b'\n') => return Err(ParseError::BareLineBreak),
            b'\n' if prev != b'\r' => return Err(ParseError::BareLineBreak),
            _ => {}
        }
        prev = b;
    }
    Ok(())
}

/// Splits a header section already checked by [`check_head_bytes`] into lines.
pub(crate) fn crlf_lines(head: &str) -> impl Iterator<Item = &str> {
    head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// Parses header lines (already split at CRLF), unfolding continuation lines.
pub(crate) fn parse_header_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
    max_headers: usize,
) -> Result<Headers, ParseError> {
    let mut headers = Headers::new();
    let mut current: Option<(&str, std::borrow::Cow<'_, str>)> = None;
    for line in lines {
        if line.starts_with([' ', '\t']) {
            // LWS continuation: equivalent to a single SP (RFC 3261 §7.3.1).
            let (_, value) = current.as_mut().ok_or(ParseError::BadHeaderLine)?;
            let cont = line.trim_matches([' ', '\t']);
            if !cont.is_empty() {
                let v = value.to_mut();
                let trimmed_len = v.trim_end_matches([' ', '\t']).len();
                v.truncate(trimmed_len);
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(cont);
            }
            continue;
        }
        if let Some((name, value)) = current.take() {
            push_header(&mut headers, name, value, max_headers)?;
        }
        let (name, value) = line.split_once(':').ok_or(ParseError::BadHeaderLine)?;
        let name = name.trim_end_matches([' ', '\t']);
        if !crate::scan::is_token(name) {
            return Err(ParseError::BadHeaderLine);
        }
        current = Some((
            name,
            std::borrow::Cow::Borrowed(value.trim_matches([' ', '\t'])),
        ));
    }
    if let Some((name, value)) = current.take() {
        push_header(&mut headers, name, value, max_headers)?;
    }
    Ok(headers)
}

fn push_header(
    headers: &mut Headers,
    name: &str,
    value: std::borrow::Cow<'_, str>,
    max_headers: usize,
) -> Result<(), ParseError> {
    if headers.len() >= max_headers {
        return Err(ParseError::TooManyHeaders);
    }
    let value = match value {
        std::borrow::Cow::Borrowed(v) => v.to_owned(),
        std::borrow::Cow::Owned(v) => v.trim_end_matches([' ', '\t']).to_owned(),
    };
    headers.push_parsed(name, value);
    Ok(())
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    let is_status = line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"));
    if is_status {
        let mut parts = line.splitn(3, ' ');
        let version = Version::parse(parts.next().unwrap_or(""))?;
        let code = parts.next().ok_or(ParseError::BadStatusLine)?;
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::BadStatusCode);
        }
        let status = code
            .parse()
            .ok()
            .and_then(StatusCode::new)
            .ok_or(ParseError::BadStatusCode)?;
        // RFC 3261 requires `SP Reason-Phrase` (possibly empty); a missing SP is tolerated.
        let reason = parts.next().unwrap_or("");
        if reason.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ParseError::BadReasonPhrase);
        }
        Ok(StartLine::Response {
            version,
            status,
            reason: reason.to_owned(),
        })
    } else {
        let mut parts = line.splitn(3, ' ');
        let (Some(method), Some(uri), Some(version)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ParseError::BadRequestLine);
        };
        if method.is_empty() || uri.is_empty() {
            return Err(ParseError::BadRequestLine);
        }
        let method: Method = method.parse()?;
        let uri: Uri = uri.parse().map_err(|_| ParseError::BadRequestUri)?;
        let version = Version::parse(version)?;
        Ok(StartLine::Request {
            method,
            uri,
            version,
        })
    }
}

/// Headers that may appear at most once (RFC 3261 §7.3.1: not list-valued).
const SINGLE: [HeaderName; 8] = [
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::From,
    HeaderName::To,
    HeaderName::MaxForwards,
    HeaderName::ContentLength,
    HeaderName::ContentType,
    HeaderName::Expires,
];

/// RFC 3261 §8.1.1: mandatory in every request (and every response).
const MANDATORY: [HeaderName; 5] = [
    HeaderName::To,
    HeaderName::From,
    HeaderName::CSeq,
    HeaderName::CallId,
    HeaderName::Via,
];

/// Checks presence, uniqueness and syntax of the headers the stack depends on.
pub(crate) fn validate_headers(
    headers: &Headers,
    method: Option<&Method>,
) -> Result<(), ParseError> {
    let mut seen = [0usize; SINGLE.len()];
    let mut mandatory = [false; MANDATORY.len()];
    for h in headers {
        if let Some(i) = SINGLE.iter().position(|n| n == h.name()) {
            if let Some(c) = seen.get_mut(i) {
                *c += 1;
                if *c > 1 {
                    return Err(ParseError::DuplicateHeader(h.name().clone()));
                }
            }
        }
        if let Some(i) = MANDATORY.iter().position(|n| n == h.name()) {
            if let Some(m) = mandatory.get_mut(i) {
                *m = true;
            }
        }
    }
    for (name, present) in MANDATORY.iter().zip(mandatory) {
        if !present {
            return Err(ParseError::MissingHeader(name.clone()));
        }
    }
    for h in headers {
        let name = h.name();
        let v = h.value();
        match name {
            HeaderName::To | HeaderName::From => {
                NameAddr::parse_value(v, name)?;
            }
            HeaderName::CallId => {
                CallId::parse_value(v, name)?;
            }
            HeaderName::MaxForwards => {
                MaxForwards::parse_value(v, name)?;
            }
            HeaderName::ContentLength => {
                ContentLength::parse_value(v, name)?;
            }
            HeaderName::ContentType => {
                MediaType::parse_value(v, name)?;
            }
            HeaderName::Expires => {
                DeltaSeconds::parse_value(v, name)?;
            }
            _ => {}
        }
    }
    headers.vias()?;
    headers.routes()?;
    headers.record_routes()?;
    let contacts = headers.contacts()?;
    if contacts.len() > 1 && contacts.contains(&Contact::Wildcard) {
        return Err(ParseError::BadHeader(HeaderName::Contact));
    }
    for c in &contacts {
        if let Some(Some(e)) = c
            .address()
            .and_then(|a| a.params.get("expires"))
            .map(|p| p.value.as_deref())
        {
            DeltaSeconds::parse_value(e, &HeaderName::Contact)?;
        }
    }
    let cseq = headers.cseq()?;
    if let Some(m) = method {
        if &cseq.method != m {
            return Err(ParseError::CSeqMethodMismatch);
        }
    }
    Ok(())
}
