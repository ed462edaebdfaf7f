//! The fixture messages under `tests/fixtures/`: RFC 3261 §24 examples, Lync/Skype for
//! Business SUBSCRIBE and IM INVITE, presence NOTIFYs, MESSAGE, and the RFC 4475 "wsinv"-style
//! tortuous INVITE. Each one parses, round-trips, and exposes what the stack needs.

use entente_sip_proto::{
    parse, Contact, Frame, Framer, HeaderName, Host, Message, Method, OptionTag, StatusCode,
    SubState, Uri,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const ALL: &[&str] = &[
    "rfc3261_invite.sip",
    "rfc3261_register.sip",
    "rfc3261_180_ringing.sip",
    "lync_subscribe.sip",
    "lync_invite_im.sip",
    "notify_pidf.sip",
    "notify_rlmi_multipart.sip",
    "message.sip",
    "torture_wsinv.sip",
];

#[test]
fn every_fixture_parses_and_round_trips() {
    for name in ALL {
        let raw = fixture(name);
        let msg = parse(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = msg.to_bytes();
        let again = parse(&out).unwrap_or_else(|e| panic!("{name} reparse: {e}"));
        assert_eq!(msg, again, "{name}");
        // Serializing is idempotent.
        assert_eq!(out, again.to_bytes(), "{name}");
    }
}

#[test]
fn canonical_fixtures_are_byte_identical() {
    // Everything but the tortuous one is already in canonical form.
    for name in ALL.iter().filter(|n| !n.starts_with("torture")) {
        let raw = fixture(name);
        let msg = parse(&raw).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&msg.to_bytes()),
            String::from_utf8_lossy(&raw),
            "{name}"
        );
    }
}

#[test]
fn fixtures_through_the_framer_in_one_stream() {
    let mut stream = Vec::new();
    for name in ALL {
        stream.extend_from_slice(&fixture(name));
        stream.extend_from_slice(b"\r\n\r\n");
    }
    let mut framer = Framer::default();
    let mut messages = 0;
    let mut pings = 0;
    for chunk in stream.chunks(7) {
        framer.push(chunk);
        while let Some(f) = framer.poll().unwrap() {
            match f {
                Frame::Message(_) => messages += 1,
                Frame::Ping => pings += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!((messages, pings), (ALL.len(), ALL.len()));
}

#[test]
fn rfc3261_invite() {
    let Message::Request(req) = parse(&fixture("rfc3261_invite.sip")).unwrap() else {
        panic!("not a request");
    };
    assert_eq!(req.method, Method::Invite);
    assert_eq!(req.uri.to_string(), "sip:bob@biloxi.com");
    let h = &req.headers;
    assert_eq!(h.top_via().unwrap().branch(), Some("z9hG4bK776asdhds"));
    assert!(h.top_via().unwrap().has_rfc3261_branch());
    assert_eq!(h.call_id(), Some("a84b4c76e66710@pc33.atlanta.com"));
    let cseq = h.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (314159, Method::Invite));
    assert_eq!(h.from().unwrap().tag(), Some("1928301774"));
    assert_eq!(h.from().unwrap().display_name.as_deref(), Some("Alice"));
    assert_eq!(h.to().unwrap().tag(), None);
    assert_eq!(h.max_forwards().unwrap(), Some(70));
    assert!(h.content_type().unwrap().unwrap().is("application", "sdp"));
    assert!(req.body.starts_with(b"v=0\r\n"));
    assert_eq!(Some(req.body.len()), h.content_length().unwrap());
}

#[test]
fn rfc3261_register_and_response() {
    let msg = parse(&fixture("rfc3261_register.sip")).unwrap();
    assert_eq!(msg.method().unwrap(), Method::Register);
    assert_eq!(msg.headers().expires().unwrap(), Some(7200));
    let contacts = msg.headers().contacts().unwrap();
    match &contacts[..] {
        [Contact::Address(a)] => {
            assert_eq!(
                a.uri.as_sip().map(|u| &u.host),
                Some(&Host::Ipv4("192.0.2.4".parse().unwrap()))
            )
        }
        other => panic!("{other:?}"),
    }

    let Message::Response(resp) = parse(&fixture("rfc3261_180_ringing.sip")).unwrap() else {
        panic!("not a response");
    };
    assert_eq!(resp.status, StatusCode::RINGING);
    assert_eq!(resp.reason, "Ringing");
    let vias = resp.headers.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[2].received(), Some("192.0.2.1".parse().unwrap()));
    assert_eq!(resp.headers.to().unwrap().tag(), Some("a6c85cf"));
    assert_eq!(Message::Response(resp).method().unwrap(), Method::Invite);
}

#[test]
fn lync_subscribe() {
    let raw = fixture("lync_subscribe.sip");
    let msg = parse(&raw).unwrap();
    let h = msg.headers();
    let via = h.top_via().unwrap();
    assert_eq!(via.transport, "TLS");
    assert_eq!(via.port, Some(51234));
    assert_eq!(via.params.value("ms-received-cid"), Some("1A2B00"));
    let from = h.from().unwrap();
    assert_eq!(from.params.value("epid"), Some("01010101af"));
    assert_eq!(from.display_name.as_deref(), Some("Alice Example"));
    assert_eq!(h.event().unwrap().unwrap().package, "presence");
    let supported = h.supported().unwrap();
    assert_eq!(supported.len(), 4);
    assert!(supported.contains(&OptionTag("ms-benotify".into())));
    assert_eq!(h.require().unwrap().len(), 2);
    match &h.contacts().unwrap()[..] {
        [Contact::Address(a)] => {
            assert!(a
                .params
                .unquoted("+sip.instance")
                .is_some_and(|i| i.starts_with("<urn:uuid:")));
            let uri = a.uri.as_sip().unwrap();
            assert!(uri.params.contains("gruu"));
            assert_eq!(
                uri.params.value("opaque"),
                Some("user:epid:abcDEF123xyz_AA")
            );
        }
        other => panic!("{other:?}"),
    }
    // Unknown headers are stored as they came and written back byte for byte.
    assert_eq!(h.get("MS-KEEP-ALIVE"), Some("UAC;hop-hop=yes"));
    let auth = h.get(HeaderName::Authorization).unwrap();
    assert!(auth.contains(r#"sspi-sec-ctx-id="?,=""#));
    let out = msg.to_bytes();
    let find = |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(find(&out, &format!("\r\nAuthorization: {auth}\r\n")));
    assert!(find(&out, "\r\nms-keep-alive: UAC;hop-hop=yes\r\n"));
    assert_eq!(out, raw);
}

#[test]
fn lync_im_invite() {
    let raw = fixture("lync_invite_im.sip");
    let Message::Request(req) = parse(&raw).unwrap() else {
        panic!()
    };
    let h = &req.headers;
    let rr = h.record_routes().unwrap();
    assert_eq!(rr.len(), 2);
    assert_eq!(rr[0].params.value("tag"), Some("A0B1C2D3E4F5"));
    let edge = rr[1].uri.as_sip().unwrap();
    assert!(edge.is_loose_route());
    assert_eq!(edge.params.value("ms-route-sig"), Some("ga2oW-yJ3Sx8-BwA"));
    assert_eq!(edge.port, Some(5061));
    assert_eq!(
        rr[1].to_string(),
        "<sip:edge.contoso.com:5061;transport=tls;epid=0f1e2d3c4b;lr;ms-key-info=jQAAAAEAAAA;ms-route-sig=ga2oW-yJ3Sx8-BwA>;tag=9F8E7D6C"
    );
    let fmt = h.get("ms-text-format").unwrap();
    assert!(
        fmt.starts_with("text/plain; charset=UTF-8;msgr=")
            && fmt.ends_with(";ms-body=SGVsbG8gQm9i")
    );
    assert!(h
        .allow()
        .unwrap()
        .contains(&Method::Extension("BENOTIFY".into())));
    let sdp = std::str::from_utf8(&req.body).unwrap();
    assert!(sdp.contains("\r\nm=message 5060 sip null\r\n"));
    assert_eq!(req.to_bytes(), raw);
}

#[test]
fn presence_notifies() {
    let msg = parse(&fixture("notify_pidf.sip")).unwrap();
    let h = msg.headers();
    let ss = h.subscription_state().unwrap().unwrap();
    assert_eq!((&ss.state, ss.expires()), (&SubState::Active, Some(599)));
    assert_eq!(h.top_via().unwrap().rport(), Some(None));
    assert!(std::str::from_utf8(msg.body())
        .unwrap()
        .contains("<basic>open</basic>"));
    assert_eq!(msg.multipart().unwrap(), None);

    let msg = parse(&fixture("notify_rlmi_multipart.sip")).unwrap();
    let parts = msg.multipart().unwrap().unwrap();
    assert_eq!(parts.len(), 2);
    assert!(parts[0]
        .content_type()
        .unwrap()
        .unwrap()
        .is("application", "rlmi+xml"));
    assert_eq!(
        parts[1].headers.get("Content-ID"),
        Some("<bUZBsM@pres.vancouver.example.com>")
    );
    assert!(parts[1].body.ends_with(b"</presence>\r\n"));
}

#[test]
fn message_with_addr_spec_from_to() {
    let msg = parse(&fixture("message.sip")).unwrap();
    let h = msg.headers();
    let from = h.from().unwrap();
    assert_eq!(from.tag(), Some("49583"));
    assert_eq!(from.uri.to_string(), "sip:user1@domain.com");
    assert_eq!(&msg.body()[..], b"Watson, come here.");
}

#[test]
fn tortuous_invite() {
    let Message::Request(req) = parse(&fixture("torture_wsinv.sip")).unwrap() else {
        panic!()
    };
    let h = &req.headers;
    assert_eq!(req.uri.as_sip().unwrap().params.value("unknownparam"), None);
    assert!(req.uri.as_sip().unwrap().params.contains("unknownparam"));
    assert_eq!(h.to().unwrap().tag(), Some("1918181833n"));
    let from = h.from().unwrap();
    assert_eq!(from.display_name.as_deref(), Some(r#"J Rosenberg \""#));
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(h.max_forwards().unwrap(), Some(68));
    assert_eq!(h.cseq().unwrap().seq, 9);
    let vias = h.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].branch(), Some("390skdjuw"));
    assert_eq!(vias[1].transport, "TCP");
    assert_eq!(vias[1].branch(), Some("z9hG4bK9ikj8"));
    assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
    assert_eq!(h.get(HeaderName::Subject), Some(""));
    assert_eq!(
        h.get("NewFangledHeader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(h.get("UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
    let routes = h.routes().unwrap();
    assert!(routes[0]
        .uri
        .as_sip()
        .unwrap()
        .params
        .contains("unknown-no-value"));
    let Contact::Address(c) = &h.contacts().unwrap()[0] else {
        panic!()
    };
    assert_eq!(c.display_name.as_deref(), Some(r#"Quoted string """#));
    assert_eq!(c.params.value("newparam"), Some("newvalue"));
    assert_eq!(c.params.value("q"), Some("0.33"));
    assert!(c.params.contains("secondparam"));
    assert!(matches!(req.uri, Uri::Sip(_)));
}
