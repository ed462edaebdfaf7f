//! Multipart bodies (RFC 2046 §5.1, as used by SIP per RFC 5621): `multipart/mixed`,
//! `multipart/related` (RLMI + PIDF in presence NOTIFYs), `multipart/alternative`.
//!
//! Parts share the body's buffer (`Bytes::slice`), so splitting copies no content.

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use crate::error::ParseError;
use crate::header::Headers;
use crate::parser::{check_head_bytes, crlf_lines, parse_header_lines};
use crate::typed::MediaType;

/// Part headers beyond this count are an error.
const MAX_PART_HEADERS: usize = 64;

/// One body part: its MIME headers and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub headers: Headers,
    pub body: Bytes,
}

impl Part {
    /// The part's Content-Type (RFC 2046: `text/plain` when absent).
    pub fn content_type(&self) -> Result<Option<MediaType>, ParseError> {
        self.headers.content_type()
    }
}

/// Why a multipart body could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MultipartError {
    /// Content-Type is malformed.
    #[error("Bad Content-Type")]
    BadContentType(#[source] ParseError),
    /// Content-Type is `multipart/*` without a usable `boundary` parameter.
    #[error("Missing multipart boundary")]
    MissingBoundary,
    /// The body contains no boundary delimiter line.
    #[error("No multipart delimiter in body")]
    NoDelimiter,
    /// A delimiter line is followed by something other than whitespace and CRLF.
    #[error("Bad multipart delimiter line")]
    BadDelimiterLine,
    /// The body ends without the close delimiter `--boundary--`.
    #[error("Missing multipart close delimiter")]
    MissingCloseDelimiter,
    /// A part's header section is malformed.
    #[error("Bad multipart part headers")]
    BadPartHeaders(#[source] ParseError),
}

/// Splits `body` according to the `multipart/*` Content-Type in `headers`; `Ok(None)` if the
/// body is not multipart.
pub fn parts_of(headers: &Headers, body: &Bytes) -> Result<Option<Vec<Part>>, MultipartError> {
    let Some(ct) = headers
        .content_type()
        .map_err(MultipartError::BadContentType)?
    else {
        return Ok(None);
    };
    if !ct.is_multipart() {
        return Ok(None);
    }
    let boundary = ct.boundary().ok_or(MultipartError::MissingBoundary)?;
    split(body, &boundary).map(Some)
}

/// Splits a multipart body at `boundary` (without the leading `--`). The preamble before the
/// first delimiter and the epilogue after the close delimiter are ignored.
pub fn split(body: &Bytes, boundary: &str) -> Result<Vec<Part>, MultipartError> {
    // RFC 2046: 1 to 70 characters, not ending with a space.
    if boundary.is_empty() || boundary.len() > 70 || boundary.ends_with(' ') {
        return Err(MultipartError::MissingBoundary);
    }
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut pos = if body.starts_with(delim) {
        0
    } else {
        let mut crlf_delim = b"\r\n".to_vec();
        crlf_delim.extend_from_slice(delim);
        find(body, &crlf_delim, 0).ok_or(MultipartError::NoDelimiter)? + 2
    };
    let mut parts = Vec::new();
    loop {
        let after = pos + delim.len();
        let rest = body.get(after..).unwrap_or(&[]);
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // transport-padding, then CRLF.
        let pad = rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        if rest.get(pad..pad + 2) != Some(b"\r\n") {
            return Err(MultipartError::BadDelimiterLine);
        }
        let part_start = after + pad + 2;
        let mut next = b"\r\n".to_vec();
        next.extend_from_slice(delim);
        let part_end =
            find(body, &next, part_start).ok_or(MultipartError::MissingCloseDelimiter)?;
        parts.push(parse_part(&body.slice(part_start..part_end))?);
        pos = part_end + 2;
    }
}

fn parse_part(part: &Bytes) -> Result<Part, MultipartError> {
    let (head, content_start) = if part.starts_with(b"\r\n") {
        (&[][..], 2)
    } else {
        match find(part, b"\r\n\r\n", 0) {
            Some(end) => (part.get(..end).unwrap_or(&[]), end + 4),
            // A part with headers but no body, ending right after the last header line.
            None => (&part[..], part.len()),
        }
    };
    check_head_bytes(head).map_err(MultipartError::BadPartHeaders)?;
    let head = std::str::from_utf8(head)
        .map_err(|_| MultipartError::BadPartHeaders(ParseError::NonUtf8Header))?;
    let headers = if head.is_empty() {
        Headers::new()
    } else {
        parse_header_lines(crlf_lines(head), MAX_PART_HEADERS)
            .map_err(MultipartError::BadPartHeaders)?
    };
    Ok(Part {
        headers,
        body: part.slice(content_start.min(part.len())..),
    })
}

/// Encodes parts as a multipart body with `boundary`.
pub fn encode(parts: &[Part], boundary: &str) -> Bytes {
    let mut buf = BytesMut::new();
    for p in parts {
        let _ = write!(buf, "--{boundary}\r\n");
        for h in &p.headers {
            let _ = write!(buf, "{}: {}\r\n", h.raw_name(), h.value());
        }
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(&p.body);
        buf.extend_from_slice(b"\r\n");
    }
    let _ = write!(buf, "--{boundary}--\r\n");
    buf.freeze()
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let hay_from = hay.get(from..)?;
    if needle.is_empty() || hay_from.len() < needle.len() {
        return None;
    }
    hay_from
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn related_rlmi_pidf() {
        let body = Bytes::from_static(
            b"preamble\r\n--50UBfW7LSCVLtggUPe5z\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <nXYxAE@pres.vancouver.example.com>\r\nContent-Type: application/rlmi+xml;charset=\"UTF-8\"\r\n\r\n<list/>\r\n--50UBfW7LSCVLtggUPe5z  \r\nContent-Type: application/pidf+xml\r\n\r\n<presence>\r\n\r\n</presence>\r\n--50UBfW7LSCVLtggUPe5z\r\n\r\nno headers\r\n--50UBfW7LSCVLtggUPe5z--\r\nepilogue",
        );
        let parts = split(&body, "50UBfW7LSCVLtggUPe5z").unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(&parts[0].body[..], b"<list/>");
        assert_eq!(
            parts[0].headers.get("content-id"),
            Some("<nXYxAE@pres.vancouver.example.com>")
        );
        assert!(parts[1]
            .content_type()
            .unwrap()
            .unwrap()
            .is("application", "pidf+xml"));
        assert_eq!(&parts[1].body[..], b"<presence>\r\n\r\n</presence>");
        assert!(parts[2].headers.is_empty());
        assert_eq!(&parts[2].body[..], b"no headers");

        let re = split(&encode(&parts, "b1"), "b1").unwrap();
        assert_eq!(re, parts);
    }

    #[test]
    fn errors() {
        let b = Bytes::from_static(b"--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n");
        assert_eq!(split(&b, "x"), Err(MultipartError::MissingCloseDelimiter));
        let b = Bytes::from_static(b"nothing here");
        assert_eq!(split(&b, "x"), Err(MultipartError::NoDelimiter));
        let b = Bytes::from_static(b"--xjunk\r\n\r\n--x--");
        assert_eq!(split(&b, "x"), Err(MultipartError::BadDelimiterLine));
        assert_eq!(split(&b, ""), Err(MultipartError::MissingBoundary));
        let b = Bytes::from_static(b"--x\r\nbad header line\r\n\r\nhi\r\n--x--");
        assert!(matches!(
            split(&b, "x"),
            Err(MultipartError::BadPartHeaders(_))
        ));
    }
}
