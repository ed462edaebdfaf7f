//! Parses arbitrary bytes as one SIP datagram. Invariants: no panic; whatever parses
//! serializes to bytes that parse to the same message; every typed accessor and the `400`
//! builder cope with whatever the parser let through (or refused).
#![no_main]

use entente_sip_proto::{bad_request, parse, HeaderName, Message};
use libfuzzer_sys::fuzz_target;

/// Equal up to Content-Length, which the serializer always rewrites to the body length
/// (a datagram may have none, or spell it `007`).
fn same(a: &Message, b: &Message) -> bool {
    let lines = |m: &Message| {
        m.headers()
            .iter()
            .filter(|h| h.name() != &HeaderName::ContentLength)
            .cloned()
            .collect::<Vec<_>>()
    };
    let start = |m: &Message| match m {
        Message::Request(r) => format!("{} {} {}", r.method, r.uri, r.version),
        Message::Response(r) => format!("{} {} {}", r.version, r.status, r.reason),
        _ => String::new(),
    };
    a.body() == b.body()
        && lines(a) == lines(b)
        && start(a) == start(b)
        && a.as_request().map(|r| &r.uri) == b.as_request().map(|r| &r.uri)
}

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(msg) => {
            let out = msg.to_bytes();
            let again = parse(&out).expect("serialized message must parse");
            assert!(same(&again, &msg), "round trip changed the message");
            assert_eq!(again.to_bytes(), out, "serialization is not idempotent");
            let h = msg.headers();
            let _ = (
                h.top_via(),
                h.cseq(),
                h.call_id(),
                h.from(),
                h.to(),
                h.vias(),
            );
            let _ = (
                h.contacts(),
                h.routes(),
                h.record_routes(),
                h.max_forwards(),
            );
            let _ = (
                h.content_type(),
                h.expires(),
                h.event(),
                h.subscription_state(),
            );
            let _ = (h.allow(), h.supported(), h.require(), msg.method());
            let _ = msg.multipart();
        }
        Err(e) => {
            assert!(!e.to_string().contains(['\r', '\n']));
            if let Some(resp) = bad_request(data, &e, Some("fuzz")) {
                let out = resp.to_bytes();
                // A 400 built from garbage must still be a well-framed message.
                assert!(out.starts_with(b"SIP/2.0 400 "));
            }
        }
    }
});
