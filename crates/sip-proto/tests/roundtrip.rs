//! Property tests: serialize → parse round trips, framing under arbitrary chunking, and
//! "never panics" on arbitrary and mutated input.

use bytes::Bytes;
use entente_sip_proto::{parse, Frame, Framer, Host, Message, Method, Request, SipUri, Uri};
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn base_request() -> Request {
    let Message::Request(r) = parse(&fixture("message.sip")).unwrap() else {
        panic!()
    };
    r
}

fn header_name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9!%*_+`'~.-]{0,20}".prop_filter("not a known header", |n| {
        matches!(
            entente_sip_proto::HeaderName::parse(n),
            entente_sip_proto::HeaderName::Other(_)
        )
    })
}

/// Header values: printable ASCII and UTF-8, no leading/trailing whitespace, no CR/LF/NUL.
fn header_value() -> impl Strategy<Value = String> {
    "[!-~\u{a0}-\u{2ff}]([ -~\u{a0}-\u{2ff}\t]{0,60}[!-~\u{a0}-\u{2ff}])?"
}

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        "[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,8}[a-z0-9])?){0,3}"
            .prop_map(Host::Domain),
        any::<[u8; 4]>().prop_map(|o| Host::Ipv4(o.into())),
        any::<[u16; 8]>().prop_map(|s| Host::Ipv6(s.into())),
    ]
}

fn sip_uri() -> impl Strategy<Value = SipUri> {
    (
        any::<bool>(),
        proptest::option::of("[ -~é]{1,12}"),
        host(),
        proptest::option::of(any::<u16>()),
        proptest::collection::vec(
            (
                "[a-z][a-z0-9-]{0,6}",
                proptest::option::of("[a-zA-Z0-9.-]{1,8}"),
            ),
            0..4,
        ),
    )
        .prop_map(|(secure, user, host, port, params)| {
            let mut u = SipUri::new(host);
            u.secure = secure;
            if let Some(user) = user {
                u.set_user(&user);
            }
            u.port = port;
            for (n, v) in params {
                u.params.set(&n, v.as_deref());
            }
            u
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn uri_display_parse_round_trip(u in sip_uri()) {
        let text = u.to_string();
        let parsed: Uri = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(&parsed, &Uri::Sip(u.clone()));
        prop_assert!(parsed.equivalent(&Uri::Sip(u)));
    }

    #[test]
    fn unknown_headers_survive_byte_for_byte(
        extra in proptest::collection::vec((header_name(), header_value()), 1..8),
        body in proptest::collection::vec(any::<u8>(), 0..200),
        uri in sip_uri(),
    ) {
        let mut req = base_request();
        req.uri = Uri::Sip(uri);
        for (n, v) in &extra {
            req.headers.push(n.clone(), v.clone());
        }
        req.set_body(Bytes::from(body));
        let out = req.to_bytes();
        for (n, v) in &extra {
            let line = format!("\r\n{n}: {v}\r\n");
            prop_assert!(out.windows(line.len()).any(|w| w == line.as_bytes()), "missing {:?}", line);
        }
        let parsed = parse(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed.to_bytes(), out);
        prop_assert_eq!(parsed, Message::Request(req));
    }

    #[test]
    fn framer_is_chunking_independent(cuts in proptest::collection::vec(1usize..64, 1..200)) {
        let names = ["lync_subscribe.sip", "notify_rlmi_multipart.sip", "rfc3261_180_ringing.sip"];
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for n in names {
            let raw = fixture(n);
            expected.push(parse(&raw).unwrap());
            stream.extend_from_slice(&raw);
        }
        let mut framer = Framer::default();
        let mut got = Vec::new();
        let mut pos = 0;
        let mut cuts = cuts.into_iter().cycle();
        while pos < stream.len() {
            let n = cuts.next().unwrap_or(1).min(stream.len() - pos);
            framer.push(&stream[pos..pos + n]);
            pos += n;
            while let Some(f) = framer.poll().map_err(|e| TestCaseError::fail(e.to_string()))? {
                match f {
                    Frame::Message(m) => got.push(m),
                    other => return Err(TestCaseError::fail(format!("{other:?}"))),
                }
            }
        }
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn parser_never_panics_on_bytes(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&input);
        let mut f = Framer::default();
        f.push(&input);
        while let Ok(Some(_)) = f.poll() {}
    }

    #[test]
    fn parser_never_panics_on_mutated_messages(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        which in 0usize..3,
    ) {
        let name = ["torture_wsinv.sip", "lync_invite_im.sip", "notify_rlmi_multipart.sip"][which];
        let mut raw = fixture(name);
        for (i, b) in edits {
            let at = i.index(raw.len());
            raw[at] = b;
        }
        if let Ok(m) = parse(&raw) {
            // Whatever parses must serialize to something that parses to the same message.
            let out = m.to_bytes();
            let again = parse(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(again.to_bytes(), out);
            prop_assert_eq!(again.body(), m.body());
            let no_cl = |m: &Message| {
                m.headers()
                    .iter()
                    .filter(|h| h.name() != &entente_sip_proto::HeaderName::ContentLength)
                    .cloned()
                    .collect::<Vec<_>>()
            };
            prop_assert_eq!(no_cl(&again), no_cl(&m));
            let _ = m.multipart();
            let h = m.headers();
            let _ = (h.contacts(), h.event(), h.subscription_state(), h.allow(), h.supported());
        } else if let Err(e) = parse(&raw) {
            let _ = entente_sip_proto::bad_request(&raw, &e, Some("x"));
        }
    }

    #[test]
    fn method_round_trip(m in "[A-Za-z!%*_+`'~.-]{1,12}") {
        let parsed: Method = m.parse().map_err(|e: entente_sip_proto::ParseError| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed.as_str(), m.as_str());
    }
}
