//! The message model and its serializer.

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use crate::error::ParseError;
use crate::header::{HeaderName, Headers};
use crate::method::{Method, StatusCode, Version};
use crate::uri::Uri;

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: Headers,
    pub body: Bytes,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub version: Version,
    pub status: StatusCode,
    /// The reason phrase (may be empty, may be UTF-8).
    pub reason: String,
    pub headers: Headers,
    pub body: Bytes,
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Request {
    /// A SIP/2.0 request with no headers and no body.
    pub fn new(method: Method, uri: Uri) -> Request {
        Request {
            method,
            uri,
            version: Version::SIP_2_0,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// The response to this request per RFC 3261 §8.2.6.2: same Vias (in order), From,
    /// Call-ID and CSeq, and To with `to_tag` added when it has no tag yet (pass `None` for a
    /// `100 Trying`, which also copies Timestamp per §8.2.6.1). Raw values are copied, so
    /// unknown parameters survive.
    pub fn response(&self, status: StatusCode, to_tag: Option<&str>) -> Response {
        let mut resp = Response::new(status);
        copy_dialog_headers(&self.headers, &mut resp.headers, to_tag);
        if status == StatusCode::TRYING {
            if let Some(ts) = self.headers.get(HeaderName::Timestamp) {
                resp.headers.push("Timestamp", ts);
            }
        }
        resp
    }

    /// Replaces the body and sets Content-Length to match.
    pub fn set_body(&mut self, body: impl Into<Bytes>) {
        self.body = body.into();
        self.headers
            .set("Content-Length", self.body.len().to_string());
    }

    /// Serializes the request; see [`Message::to_bytes`].
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(estimate(&self.headers, &self.body) + 64);
        // Writing to a BytesMut cannot fail.
        let _ = write!(buf, "{} {} {}\r\n", self.method, self.uri, self.version);
        write_headers_and_body(&mut buf, &self.headers, &self.body);
        buf.freeze()
    }
}

/// Copies Via, From, To (adding `to_tag` if To has none), Call-ID and CSeq, raw.
pub(crate) fn copy_dialog_headers(from: &Headers, to: &mut Headers, to_tag: Option<&str>) {
    for h in from.iter() {
        match h.name() {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                to.push(h.raw_name(), h.value());
            }
            HeaderName::To => {
                let has_tag = from.to().map(|t| t.tag().is_some()).unwrap_or(false);
                match to_tag {
                    Some(tag) if !has_tag => {
                        to.push(h.raw_name(), format!("{};tag={tag}", h.value()))
                    }
                    _ => to.push(h.raw_name(), h.value()),
                }
            }
            _ => {}
        }
    }
}

impl Response {
    /// A SIP/2.0 response with the canonical reason phrase, no headers and no body.
    pub fn new(status: StatusCode) -> Response {
        Response {
            version: Version::SIP_2_0,
            status,
            reason: status.canonical_reason().to_owned(),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Replaces the body and sets Content-Length to match.
    pub fn set_body(&mut self, body: impl Into<Bytes>) {
        self.body = body.into();
        self.headers
            .set("Content-Length", self.body.len().to_string());
    }

    /// Serializes the response; see [`Message::to_bytes`].
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(estimate(&self.headers, &self.body) + 64);
        let _ = write!(buf, "{} {} ", self.version, self.status);
        // The reason phrase is free text: never let it break the status line.
        for c in self.reason.chars() {
            let _ = buf.write_char(if c.is_control() && c != '\t' { ' ' } else { c });
        }
        buf.extend_from_slice(b"\r\n");
        write_headers_and_body(&mut buf, &self.headers, &self.body);
        buf.freeze()
    }
}

impl Message {
    /// Parses one message with the default [`crate::Limits`]; see [`crate::Parser`].
    pub fn parse(input: &[u8]) -> Result<Message, ParseError> {
        crate::parser::parse(input)
    }

    /// Writes the message in canonical form: start-line, every header line as stored
    /// (`name: value`), a blank line, the body. Content-Length is always written and always
    /// equals the body length: it replaces the first stored Content-Length line in place
    /// (keeping its spelling, e.g. `l`), or is appended after the other headers.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    /// The headers, mutably.
    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }

    /// The request, if this is one.
    pub fn as_request(&self) -> Option<&Request> {
        match self {
            Message::Request(r) => Some(r),
            Message::Response(_) => None,
        }
    }

    /// The response, if this is one.
    pub fn as_response(&self) -> Option<&Response> {
        match self {
            Message::Response(r) => Some(r),
            Message::Request(_) => None,
        }
    }

    /// The request's method, or for a response the CSeq method (what a transaction layer
    /// matches on, RFC 3261 §17.1.3).
    pub fn method(&self) -> Result<Method, ParseError> {
        match self {
            Message::Request(r) => Ok(r.method.clone()),
            Message::Response(r) => r.headers.cseq().map(|c| c.method),
        }
    }

    /// The multipart parts of the body, if its Content-Type is `multipart/*`.
    pub fn multipart(
        &self,
    ) -> Result<Option<Vec<crate::multipart::Part>>, crate::multipart::MultipartError> {
        crate::multipart::parts_of(self.headers(), self.body())
    }
}

impl From<Request> for Message {
    fn from(r: Request) -> Self {
        Message::Request(r)
    }
}

impl From<Response> for Message {
    fn from(r: Response) -> Self {
        Message::Response(r)
    }
}

fn estimate(headers: &Headers, body: &[u8]) -> usize {
    headers
        .iter()
        .map(|h| h.raw_name().len() + h.value().len() + 4)
        .sum::<usize>()
        + body.len()
        + 24
}

fn write_headers_and_body(buf: &mut BytesMut, headers: &Headers, body: &[u8]) {
    let mut wrote_length = false;
    for h in headers {
        if h.name() == &HeaderName::ContentLength {
            if !wrote_length {
                let _ = write!(buf, "{}: {}\r\n", h.raw_name(), body.len());
                wrote_length = true;
            }
            continue;
        }
        buf.extend_from_slice(h.raw_name().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(h.value().as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if !wrote_length {
        let _ = write!(buf, "Content-Length: {}\r\n", body.len());
    }
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(body);
}
