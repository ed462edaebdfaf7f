//! Entente's domain model, shared by the XMPP and SIP protocol crates and the server.
//!
//! Everything here is pure logic: no sockets, no clocks read behind the caller's back, no storage.
//!
//! - [`jid`]: XMPP addresses (RFC 7622) and the domain checks federation relies on.
//! - [`subscription`]: the RFC 6121 subscription state machine.
//! - [`availability`]: canonical presence and the availability mapping between systems
//!   (tables 1-1 to 1-15 of the seed document).
//! - [`policy`]: who may see whose presence: admin and user layers, polite blocking.
//! - [`pidf`]: PIDF (RFC 3863) with RPID (RFC 4480) and the Microsoft availability values.

pub mod availability;
pub mod gateway_errors;
pub mod jid;
pub mod pidf;
pub mod policy;
pub mod sipaddr;
pub mod subscription;
