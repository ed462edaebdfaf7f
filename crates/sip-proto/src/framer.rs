//! Sans-IO framing of SIP over stream transports (TCP, TLS, WebSocket payloads excepted).
//!
//! The transport pushes whatever bytes it read and polls frames out. Like mini-redis's
//! `Frame::check`, a cheap completeness check (find the blank line, read Content-Length) runs
//! before the real parse, so a message arriving in many small reads is parsed once.
//!
//! Errors split the rustls way: a message that is *framed* correctly but does not parse is
//! returned as [`Frame::Invalid`] (the stream stays usable; answer `400` with
//! [`crate::bad_request`]); a framing error ([`FrameError`]) means the byte stream can no
//! longer be delimited, and the connection must be closed.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::ParseError;
use crate::message::Message;
use crate::parser::{find_head_end_from, Limits, Parser};
use crate::typed::parse_decimal;

/// One unit read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// A parsed message.
    Message(Message),
    /// A correctly delimited message that failed to parse: the raw bytes and the reason.
    Invalid { bytes: Bytes, error: ParseError },
    /// A `CRLFCRLF` keep-alive ping (RFC 5626 §4.4.1): answer with a single `CRLF`.
    Ping,
    /// A single `CRLF` keep-alive pong.
    Pong,
}

/// The stream cannot be delimited any more; close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header section or the announced message exceeds the size limit.
    #[error("Message too large")]
    TooLarge,
    /// Content-Length is missing a value, malformed, or given twice with different values.
    #[error("Bad Content-Length")]
    BadContentLength,
}

/// Incremental SIP stream framer.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    parser: Parser,
    /// Bytes of `buf` already searched for the end of the header section, so that a message
    /// trickling in is not re-scanned from the start on every push.
    scanned: usize,
    /// Set once a [`FrameError`] occurred: the stream is unusable from then on.
    failed: Option<FrameError>,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new(Limits::default())
    }
}

enum Check {
    Incomplete,
    Ping,
    Pong,
    /// A message of this many bytes is complete at the start of the buffer.
    Message(usize),
}

impl Framer {
    /// A framer enforcing `limits`.
    pub fn new(limits: Limits) -> Framer {
        Framer {
            buf: BytesMut::new(),
            parser: Parser::new(limits),
            scanned: 0,
            failed: None,
        }
    }

    /// Appends bytes read from the transport.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes buffered but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Releases the buffer's memory if it is empty (call when a connection goes idle).
    pub fn shrink(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// The next frame, `Ok(None)` if more bytes are needed, or a fatal framing error
    /// (repeated on every later call).
    pub fn poll(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.check() {
            Ok(Check::Incomplete) => Ok(None),
            Ok(Check::Ping) => {
                self.buf.advance(4);
                self.scanned = 0;
                Ok(Some(Frame::Ping))
            }
            Ok(Check::Pong) => {
                self.buf.advance(2);
                self.scanned = 0;
                Ok(Some(Frame::Pong))
            }
            Ok(Check::Message(len)) => {
                let bytes = self.buf.split_to(len).freeze();
                self.scanned = 0;
                Ok(Some(match self.parser.parse_bytes(bytes.clone()) {
                    Ok(m) => Frame::Message(m),
                    Err(error) => Frame::Invalid { bytes, error },
                }))
            }
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf = BytesMut::new();
                Err(e)
            }
        }
    }

    /// The cheap completeness check.
    fn check(&mut self) -> Result<Check, FrameError> {
        let buf = &self.buf[..];
        if buf.starts_with(b"\r\n\r\n") {
            return Ok(Check::Ping);
        }
        if buf.starts_with(b"\r\n") {
            // A lone CRLF is a pong. "CRLF CR" might be the start of a ping: wait. A CRLF at
            // the very end of the buffer is reported as a pong rather than waited on: RFC 5626
            // pings are sent in one write, and a client expecting its pong must not stall.
            return Ok(if buf == b"\r\n\r" {
                Check::Incomplete
            } else {
                Check::Pong
            });
        }
        if buf == b"\r" {
            return Ok(Check::Incomplete);
        }
        let max = self.parser.limits().max_message_size;
        let from = self.scanned.saturating_sub(3);
        let Some(head_len) = find_head_end_from(buf, from) else {
            self.scanned = buf.len();
            if buf.len() > max {
                return Err(FrameError::TooLarge);
            }
            return Ok(Check::Incomplete);
        };
        let head = buf.get(..head_len).unwrap_or(&[]);
        let body_len = content_length(head)?.unwrap_or(0);
        let total = head_len
            .checked_add(4)
            .and_then(|n| n.checked_add(body_len))
            .ok_or(FrameError::TooLarge)?;
        if total > max {
            return Err(FrameError::TooLarge);
        }
        if buf.len() < total {
            return Ok(Check::Incomplete);
        }
        Ok(Check::Message(total))
    }
}

/// Finds Content-Length (or `l`) in a raw header section, following folded lines. Missing is
/// `None` (RFC 3261 §18.3 requires it on streams; we treat its absence as an empty body).
fn content_length(head: &[u8]) -> Result<Option<usize>, FrameError> {
    let mut found: Option<usize> = None;
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .peekable();
    lines.next(); // start-line
    while let Some(line) = lines.next() {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line.get(..colon).unwrap_or(&[]);
        let name = trim(name);
        let is_cl = name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l");
        if !is_cl || line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        let mut value = trim(line.get(colon + 1..).unwrap_or(&[])).to_vec();
        while let Some(next) = lines.peek() {
            if next.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                value.extend_from_slice(trim(next));
                lines.next();
            } else {
                break;
            }
        }
        let v = std::str::from_utf8(&value)
            .ok()
            .and_then(|v| parse_decimal(v, u64::from(u32::MAX)))
            .and_then(|v| usize::try_from(v).ok())
            .ok_or(FrameError::BadContentLength)?;
        match found {
            Some(prev) if prev != v => return Err(FrameError::BadContentLength),
            _ => found = Some(v),
        }
    }
    Ok(found)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::HeaderName;

    const OPTIONS: &[u8] = b"OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h.example.com;branch=z9hG4bK1\r\nTo: <sip:b@example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\nCall-ID: x1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn byte_by_byte() {
        let mut f = Framer::default();
        let mut frames = Vec::new();
        let mut input = OPTIONS.to_vec();
        input.extend_from_slice(b"\r\n\r\n");
        input.extend_from_slice(OPTIONS);
        input.extend_from_slice(b"\r\n");
        // Byte by byte, except the 4-byte ping, which RFC 5626 peers send in one write (a
        // ping split after its first CRLF reads as two pongs; see `check`).
        let ping_at = OPTIONS.len();
        let mut i = 0;
        while i < input.len() {
            let n = if i == ping_at { 4 } else { 1 };
            f.push(&input[i..i + n]);
            i += n;
            while let Some(fr) = f.poll().unwrap() {
                frames.push(fr);
            }
        }
        assert_eq!(frames.len(), 4);
        assert!(matches!(&frames[0], Frame::Message(m) if &m.body()[..] == b"hello"));
        assert_eq!(frames[1], Frame::Ping);
        assert!(matches!(&frames[2], Frame::Message(_)));
        assert_eq!(frames[3], Frame::Pong);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn pipelined_in_one_push() {
        let mut f = Framer::default();
        let mut input = Vec::new();
        for _ in 0..3 {
            input.extend_from_slice(OPTIONS);
        }
        f.push(&input);
        for _ in 0..3 {
            assert!(matches!(f.poll(), Ok(Some(Frame::Message(_)))));
        }
        assert_eq!(f.poll(), Ok(None));
    }

    #[test]
    fn invalid_message_keeps_stream() {
        let mut f = Framer::default();
        f.push(b"OPTIONS sip:b@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        f.push(OPTIONS);
        match f.poll() {
            Ok(Some(Frame::Invalid { error, .. })) => {
                assert_eq!(error, ParseError::MissingHeader(HeaderName::To))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(f.poll(), Ok(Some(Frame::Message(_)))));
    }

    #[test]
    fn framing_errors_are_fatal() {
        for bad in [
            &b"OPTIONS sip:b SIP/2.0\r\nContent-Length: -1\r\n\r\n"[..],
            b"OPTIONS sip:b SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab",
            b"OPTIONS sip:b SIP/2.0\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"OPTIONS sip:b SIP/2.0\r\nContent-Length:\r\n\r\n",
        ] {
            let mut f = Framer::default();
            f.push(bad);
            assert_eq!(f.poll(), Err(FrameError::BadContentLength));
            assert_eq!(f.poll(), Err(FrameError::BadContentLength));
        }
        let mut f = Framer::new(Limits {
            max_message_size: 100,
            max_headers: 10,
        });
        f.push(b"OPTIONS sip:b SIP/2.0\r\nContent-Length: 1000\r\n\r\n");
        assert_eq!(f.poll(), Err(FrameError::TooLarge));
        let mut f = Framer::new(Limits {
            max_message_size: 100,
            max_headers: 10,
        });
        f.push(&[b'a'; 101]);
        assert_eq!(f.poll(), Err(FrameError::TooLarge));
    }

    #[test]
    fn folded_content_length() {
        let mut f = Framer::default();
        f.push(b"OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h.example.com;branch=z9hG4bK1\r\nTo: <sip:b@example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\nCall-ID: x1\r\nCSeq: 1 OPTIONS\r\nContent-Length:\r\n  2\r\n\r\nhiNEXT");
        match f.poll() {
            Ok(Some(Frame::Message(m))) => assert_eq!(&m.body()[..], b"hi"),
            other => panic!("{other:?}"),
        }
        assert_eq!(f.buffered(), 4);
    }
}
