//! Sans-IO XMPP for Entente.
//!
//! Nothing here touches a socket or a clock: the server crate feeds received bytes in and writes
//! out what these state machines hand back.
//!
//! - [`framer`]: the XML stream parser with stanza-size and depth limits (on `rxml`, which refuses
//!   DTDs and entity declarations).
//! - [`element`]: the element tree stanzas are held in, and its serializer.
//! - [`c2s`]: client-to-server stream negotiation (RFC 6120: STARTTLS, SASL, resource binding).
//! - [`s2s`]: server-to-server streams: STARTTLS, SASL EXTERNAL, Server Dialback.
//! - [`scram`]: SASL SCRAM-SHA-1/-256 and PLAIN against stored SCRAM keys.
//! - [`stanza`]: helpers for building replies and errors.
//!
//! We own the stream layer rather than use `tokio-xmpp` so that limits and error conditions are
//! ours; see `../shared/STYLE.md`.

pub mod c2s;
pub mod element;
pub mod framer;
pub mod s2s;
pub mod scram;
pub mod stanza;
mod stream_error;

pub use element::{Element, Node};
pub use framer::{parse_stanza, FrameError, Limits, StreamEvent, XmlStream};
pub use stream_error::StreamErrorCondition;
