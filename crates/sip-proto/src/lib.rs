//! Entente's sans-IO SIP stack: a strict RFC 3261 message model, parser, serializer and
//! stream framer, multipart bodies (RFC 5621), the transaction layer ([`transaction`]: RFC
//! 3261 §17 with RFC 6026, every timer driven by a caller-supplied `now`) and dialogs
//! ([`dialog`]: RFC 3261 §12, RFC 6665 subscription dialogs, loose and strict routing).
//!
//! # Why our own
//!
//! No existing Rust SIP crate is a sound base for a federation server that faces the open
//! Internet: `rsip` is abandoned (last release 2022); `rsipstack` and `ezk` accept negative or
//! garbage Content-Length values and NUL bytes in headers, and reject some of the valid
//! messages of the RFC 4475 torture tests. A SIP edge must be exactly as liberal as the grammar
//! and no more, and must say *why* it refuses a message. (`ezk-sip-types`' lazily typed headers
//! were the most useful design to study; the same idea is used here.)
//!
//! # Design
//!
//! - **Sans-IO.** Nothing here touches a socket or a clock. [`parse`] takes a datagram (or a
//!   frame); [`Framer`] takes stream bytes with [`Framer::push`] and hands out
//!   [`Frame`]s from [`Framer::poll`], including RFC 5626 CRLF keep-alive pings and pongs. A
//!   cheap completeness check (find the blank line, read Content-Length) precedes the real
//!   parse, as in mini-redis's `Frame::check`.
//! - **Raw headers are the source of truth.** Every header line is kept in arrival order as its
//!   name and (unfolded) value, so unknown headers such as Lync's `ms-*` and their parameters
//!   go back on the wire byte for byte. Typed views ([`Via`], [`NameAddr`], [`CSeq`],
//!   [`Contact`], [`MediaType`], [`Event`], [`SubscriptionState`], ...) are parsed on demand by
//!   accessors on [`Headers`] (`top_via()`, `cseq()`, `from()`, `to()`, `call_id()`, ...), so
//!   they can never go stale when a proxy edits the raw list.
//! - **Strict, with precise errors.** The parser validates the start-line, the header section
//!   (NUL bytes, bare CR/LF, UTF-8, folding) and the headers a transaction or dialog layer
//!   relies on (presence, uniqueness, syntax, CSeq method), then bounds the body by
//!   Content-Length. Each failure is a distinct [`ParseError`] whose `Display` text is a usable
//!   `400` reason phrase; [`bad_request`] builds that `400` from a best-effort scan of the
//!   rejected bytes. Well-formed but unacceptable messages (unknown URI scheme, `SIP/7.0`) parse
//!   fine: refusing them (`416`, `505`) is policy for the layers above, as rustls separates
//!   `InvalidMessage` from `PeerMisbehaved`.
//! - **Canonical output.** [`Message::to_bytes`] writes stored headers as `name: value` and
//!   always sets Content-Length to the body length. Bodies are [`bytes::Bytes`], shared with the
//!   framer's buffer and cheap to clone across many recipients.
//! - **No panics on input.** No `unwrap`, `expect` or slice indexing on input-derived data
//!   outside tests; the `fuzz/` targets at the workspace root check this.
//!
//! # Example
//!
//! ```
//! use entente_sip_proto::{parse, Frame, Framer, Message, StatusCode};
//!
//! let raw = b"MESSAGE sip:bob@example.com SIP/2.0\r\n\
//! Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK74bf9\r\n\
//! From: <sip:alice@example.org>;tag=9fxced76sl\r\n\
//! To: <sip:bob@example.com>\r\n\
//! Call-ID: 3848276298220188511@example.org\r\n\
//! CSeq: 1 MESSAGE\r\n\
//! Content-Length: 2\r\n\
//! \r\n\
//! hi";
//!
//! // Stream transports go through the framer; datagrams straight to `parse`.
//! let mut framer = Framer::default();
//! framer.push(&raw[..40]);
//! assert_eq!(framer.poll(), Ok(None));
//! framer.push(&raw[40..]);
//! let Ok(Some(Frame::Message(Message::Request(req)))) = framer.poll() else { panic!() };
//! assert_eq!(req.headers.top_via()?.branch(), Some("z9hG4bK74bf9"));
//! assert_eq!(req.headers.from()?.tag(), Some("9fxced76sl"));
//!
//! let resp = req.response(StatusCode::OK, Some("b7c2"));
//! let wire = resp.to_bytes();
//! assert!(wire.starts_with(b"SIP/2.0 200 OK\r\n"));
//! assert_eq!(parse(&wire)?.headers().to()?.tag(), Some("b7c2"));
//! # Ok::<(), entente_sip_proto::ParseError>(())
//! ```

mod builder;
pub mod dialog;
mod error;
mod framer;
mod header;
pub mod im;
mod message;
mod method;
pub mod multipart;
mod params;
mod parser;
mod scan;
#[cfg(test)]
mod test_util;
pub mod transaction;
mod typed;
mod uri;

pub use builder::bad_request;
pub use dialog::{
    add_record_route, Dialog, DialogError, DialogId, DialogSnapshot, DialogState, RouteEntry,
};
pub use error::ParseError;
pub use framer::{Frame, FrameError, Framer};
pub use header::{Header, HeaderKey, HeaderName, Headers};
pub use message::{Message, Request, Response};
pub use method::{Method, StatusCode, Version};
pub use params::{Param, Params};
pub use parser::{parse, Limits, Parser};
pub use transaction::{
    ClientTxKey, Config, Event as TxEvent, ServerTxKey, TransactionLayer, Transmit, Transport,
    TransportAddr, TxKey,
};
pub use typed::{
    CSeq, CallId, Contact, ContentLength, DeltaSeconds, Event, HeaderValue, MaxForwards, MediaType,
    NameAddr, OptionTag, SubState, SubscriptionState, Via, BRANCH_MAGIC_COOKIE,
};
pub use uri::{
    percent_decode, percent_encode_user, Host, InvalidUri, OtherUri, SipUri, TelUri, Uri,
};
