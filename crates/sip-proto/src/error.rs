//! Parse errors.
//!
//! Every variant describes *malformed bytes* (the peer's fault, answered with `400 Bad Request`
//! for requests, silently dropped for responses). A well-formed message that the stack refuses
//! for policy reasons (`403`, `416`, `505`, ...) is not a parse error: that decision belongs to the
//! layers above (the same split rustls makes between `InvalidMessage` and `PeerMisbehaved`).
//!
//! The `Display` text of each variant is short, ASCII, free of CR/LF and never echoes input bytes
//! other than a header *name* (a token), so it is safe to use verbatim as the reason phrase of
//! a `400` response (see [`crate::bad_request`]).

use crate::header::HeaderName;

/// Why a message, or a header inside it, could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The input ends before the blank line that closes the header section.
    #[error("Incomplete header section")]
    Incomplete,
    /// The request-line is not `Method SP Request-URI SP SIP-Version`.
    #[error("Bad Request-Line")]
    BadRequestLine,
    /// The status-line is not `SIP-Version SP Status-Code SP Reason-Phrase`.
    #[error("Bad Status-Line")]
    BadStatusLine,
    /// The method is not a token.
    #[error("Bad Method")]
    BadMethod,
    /// The Request-URI does not parse.
    #[error("Bad Request-URI")]
    BadRequestUri,
    /// The SIP-Version is not `SIP/<digits>.<digits>`.
    #[error("Bad SIP-Version")]
    BadVersion,
    /// The Status-Code is not three digits in 100..=699.
    #[error("Bad Status-Code")]
    BadStatusCode,
    /// The reason phrase contains forbidden control characters.
    #[error("Bad Reason-Phrase")]
    BadReasonPhrase,
    /// A header line has no colon, an empty or non-token name, or starts with whitespace
    /// right after the start-line.
    #[error("Malformed header line")]
    BadHeaderLine,
    /// A NUL byte appears in the start-line or header section.
    #[error("NUL byte in header")]
    NulInHeader,
    /// A bare CR or LF (not part of CRLF) appears in the header section.
    #[error("Bare CR or LF in header")]
    BareLineBreak,
    /// The start-line or a header is not valid UTF-8.
    #[error("Invalid UTF-8 in header")]
    NonUtf8Header,
    /// A quoted string inside a structured header is not closed.
    #[error("Unterminated quoted string in {0}")]
    UnterminatedQuote(HeaderName),
    /// A structured header's value does not follow its grammar.
    #[error("Bad {0}")]
    BadHeader(HeaderName),
    /// A mandatory header is absent.
    #[error("Missing {0}")]
    MissingHeader(HeaderName),
    /// A single-valued header appears more than once (RFC 3261 §7.3.1).
    #[error("Duplicate {0}")]
    DuplicateHeader(HeaderName),
    /// The CSeq method differs from the request method (RFC 3261 §8.1.1.5).
    #[error("CSeq method does not match request method")]
    CSeqMethodMismatch,
    /// Content-Length promises more bytes than the datagram carries (RFC 3261 §18.3).
    #[error("Content-Length larger than body")]
    BodyTruncated,
    /// The message is larger than the configured limit.
    #[error("Message too large")]
    TooLarge,
    /// The message has more header lines than the configured limit.
    #[error("Too many headers")]
    TooManyHeaders,
}

impl ParseError {
    /// The error's text as a SIP reason phrase (same as `to_string()`).
    pub fn reason_phrase(&self) -> String {
        self.to_string()
    }
}
