//! Responses built from requests (RFC 3261 §8.2.6) and best-effort `400`s.

use entente_sip_proto::{bad_request, parse, HeaderName, Message, ParseError, StatusCode};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn response_copies_dialog_headers_and_adds_to_tag() {
    let Message::Request(req) = parse(&fixture("lync_subscribe.sip")).unwrap() else {
        panic!()
    };
    let resp = req.response(StatusCode::OK, Some("srv-tag-1"));
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.reason, "OK");
    let names: Vec<_> = resp.headers.iter().map(|h| h.name().clone()).collect();
    assert_eq!(
        names,
        [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq
        ]
    );
    assert_eq!(
        resp.headers.get(HeaderName::Via),
        req.headers.get(HeaderName::Via)
    );
    assert_eq!(
        resp.headers.from().unwrap().params.value("epid"),
        Some("01010101af")
    );
    assert_eq!(resp.headers.to().unwrap().tag(), Some("srv-tag-1"));
    // It is itself a valid message.
    let again = parse(&resp.to_bytes()).unwrap();
    assert_eq!(again.to_bytes(), resp.to_bytes());
    assert!(resp.to_bytes().ends_with(b"Content-Length: 0\r\n\r\n"));

    // An existing To tag is kept; 100 Trying gets none.
    let Message::Request(req) = parse(&fixture("notify_pidf.sip")).unwrap() else {
        panic!()
    };
    let resp = req.response(StatusCode::OK, Some("other"));
    assert_eq!(resp.headers.to().unwrap().tag(), Some("xfg9"));
    let Message::Request(req) = parse(&fixture("rfc3261_invite.sip")).unwrap() else {
        panic!()
    };
    let trying = req.response(StatusCode::TRYING, None);
    assert_eq!(trying.headers.to().unwrap().tag(), None);
    assert_eq!(trying.reason, "Trying");
}

#[test]
fn bad_request_from_partial_parse() {
    let raw = String::from_utf8(fixture("rfc3261_invite.sip"))
        .unwrap()
        .replace("Content-Length: 142", "Content-Length: -1")
        .replace("Content-Length: 148", "Content-Length: -1");
    let raw = if raw.contains("Content-Length: -1") {
        raw
    } else {
        // Whatever the SDP length is, break it.
        let at = raw.find("Content-Length: ").unwrap();
        let end = raw[at..].find("\r\n").unwrap() + at;
        format!("{}Content-Length: -1{}", &raw[..at], &raw[end..])
    };
    let err = parse(raw.as_bytes()).unwrap_err();
    assert_eq!(err, ParseError::BadHeader(HeaderName::ContentLength));
    let resp = bad_request(raw.as_bytes(), &err, Some("t1")).unwrap();
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.reason, "Bad Content-Length");
    assert_eq!(
        resp.headers.top_via().unwrap().branch(),
        Some("z9hG4bK776asdhds")
    );
    assert_eq!(
        resp.headers.call_id(),
        Some("a84b4c76e66710@pc33.atlanta.com")
    );
    assert_eq!(resp.headers.cseq().unwrap().seq, 314159);
    assert_eq!(resp.headers.to().unwrap().tag(), Some("t1"));
    let out = resp.to_bytes();
    assert!(out.starts_with(b"SIP/2.0 400 Bad Content-Length\r\n"));
    parse(&out).unwrap();
}

#[test]
fn bad_request_with_nul_and_cseq_mismatch() {
    let raw = String::from_utf8(fixture("rfc3261_register.sip"))
        .unwrap()
        .replace("Expires: 7200", "Expires: 72\u{0}00");
    let err = parse(raw.as_bytes()).unwrap_err();
    assert_eq!(err, ParseError::NulInHeader);
    let resp = bad_request(raw.as_bytes(), &err, None).unwrap();
    assert_eq!(resp.reason, "NUL byte in header");

    let raw = String::from_utf8(fixture("rfc3261_register.sip"))
        .unwrap()
        .replace("CSeq: 1826 REGISTER", "CSeq: 1826 INVITE");
    let err = parse(raw.as_bytes()).unwrap_err();
    let resp = bad_request(raw.as_bytes(), &err, None).unwrap();
    assert_eq!(resp.reason, "CSeq method does not match request method");
}

#[test]
fn no_bad_request_when_unanswerable() {
    let err = ParseError::BadRequestLine;
    // Missing Call-ID.
    let raw = String::from_utf8(fixture("rfc3261_register.sip"))
        .unwrap()
        .replace("Call-ID: 843817637684230@998sdasdh09\r\n", "");
    assert!(bad_request(
        raw.as_bytes(),
        &ParseError::MissingHeader(HeaderName::CallId),
        None
    )
    .is_none());
    // Responses and ACKs are never answered.
    assert!(bad_request(&fixture("rfc3261_180_ringing.sip"), &err, None).is_none());
    let ack = String::from_utf8(fixture("rfc3261_invite.sip"))
        .unwrap()
        .replacen("INVITE", "ACK", 1);
    assert!(bad_request(ack.as_bytes(), &err, None).is_none());
    // Unparseable top Via.
    let raw = String::from_utf8(fixture("rfc3261_register.sip"))
        .unwrap()
        .replace("SIP/2.0/UDP bobspc", "garbage bobspc");
    assert!(bad_request(raw.as_bytes(), &err, None).is_none());
    assert!(bad_request(b"", &err, None).is_none());
    assert!(bad_request(b"\xff\xfe", &err, None).is_none());
}
