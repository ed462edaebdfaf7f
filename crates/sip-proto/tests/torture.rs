//! RFC 4475-style torture tests, written by hand after the messages of RFC 4475 §3.1 and
//! RFC 5118 (IPv6). Valid messages must parse; invalid ones must fail with the specific error.

use entente_sip_proto::{
    parse, HeaderName, Limits, Message, Method, ParseError, Parser, StatusCode, Uri, Version,
};

/// Turns `\n` into CRLF, ends the header section, and fills `{CL}` with the body length.
fn msg(head: &str, body: &str) -> Vec<u8> {
    let body = body.replace('\n', "\r\n");
    let head = head
        .trim_matches('\n')
        .replace("{CL}", &body.len().to_string())
        .replace('\n', "\r\n");
    format!("{head}\r\n\r\n{body}").into_bytes()
}

const BASE: &str = "Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdju43234
Max-Forwards: 70
From: \"Bell, Alexander\" <sip:a.g.bell@example.com>;tag=433423
To: \"Watson, Thomas\" <sip:t.watson@example.org>
Call-ID: base.0ha0isndaksdj@192.0.2.1";

fn options(extra: &str) -> Vec<u8> {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!("{extra}\n")
    };
    msg(
        &format!("OPTIONS sip:t.watson@example.org SIP/2.0\n{BASE}\nCSeq: 1 OPTIONS\n{extra}Content-Length: 0"),
        "",
    )
}

fn err(raw: &[u8]) -> ParseError {
    match parse(raw) {
        Err(e) => e,
        Ok(m) => panic!("accepted: {m:?}"),
    }
}

// ---- valid messages (RFC 4475 §3.1.1) ----

#[test]
fn intmeth_wide_range_of_valid_characters() {
    let raw = msg(
        "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: \"BEL:\\\u{7} NUL:\\\u{0} DEL:\\\u{7f}\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}\";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~: \u{feff}\u{5927}\u{505c}\u{96fb}
Content-Length: 0",
        "",
    );
    // NUL inside a quoted display name is a NUL byte in the header section: we refuse those
    // outright (a deliberate strictness beyond RFC 4475, which calls this message valid).
    assert_eq!(err(&raw), ParseError::NulInHeader);
    let raw = String::from_utf8(raw)
        .unwrap()
        .replace(" NUL:\\\u{0}", "")
        .into_bytes();
    let Message::Request(req) = parse(&raw).unwrap() else {
        panic!()
    };
    assert_eq!(
        req.method,
        Method::Extension("!interesting-Method0123456789_*+`.%indeed'~".into())
    );
    let uri = req.uri.as_sip().unwrap();
    assert_eq!(
        uri.user.as_deref(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        uri.password.as_deref(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    let from = req.headers.from().unwrap();
    assert_eq!(
        from.display_name.as_deref(),
        Some("token1~` token2'+_ token3*%!.-")
    );
    assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
    assert_eq!(req.headers.max_forwards().unwrap(), Some(255));
    assert_eq!(
        req.headers.call_id(),
        Some("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
    );
}

#[test]
fn esc01_escaped_uris() {
    let raw = msg(
        "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: {CL}",
        "v=0\no=mhandley 29739 7272939 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 49217 RTP/AVP 0 12\nm=video 3227 RTP/AVP 31\na=rtpmap:31 LPC\n",
    );
    let Message::Request(req) = parse(&raw).unwrap() else {
        panic!()
    };
    let uri = req.uri.as_sip().unwrap();
    assert_eq!(uri.user_decoded().as_deref(), Some("sips:user@example.com"));
    assert_eq!(uri.host.to_string(), "example.net");
    let to = req.headers.to().unwrap();
    let want: Uri = "sip:user@example.com".parse().unwrap();
    assert!(to.uri.equivalent(&want));
    let from = req.headers.from().unwrap();
    assert_eq!(
        from.uri.as_sip().unwrap().user_decoded().as_deref(),
        Some("I have spaces")
    );
    let c = req.headers.contacts().unwrap();
    let cu = c[0].address().unwrap().uri.as_sip().unwrap();
    assert!(cu.params.contains("%6C%72"));
    assert_eq!(
        req.headers.call_id(),
        Some("esc01.239409asdfakjkn23onasd0-3234")
    );
    assert!(req
        .headers
        .content_type()
        .unwrap()
        .unwrap()
        .is("application", "sdp"));
}

#[test]
fn escnull_and_esc02() {
    let raw = msg(
        "REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0",
        "",
    );
    let msg1 = parse(&raw).unwrap();
    let to = msg1.headers().to().unwrap();
    assert_eq!(
        to.uri.as_sip().unwrap().user_decoded().as_deref(),
        Some("null-\0-null")
    );
    assert_eq!(msg1.headers().contacts().unwrap().len(), 2);

    // esc02: an escaped method is a different (extension) method, and a display name with %.
    let raw = msg(
        "RE%47IST%45R sip:registrar.example.com SIP/2.0
To: \"%Z%45\" <sip:resource@example.com>
From: \"%Z%45\" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209793
Max-Forwards: 70
Contact: <sip:alias@host.example.com>
CSeq: 29344 RE%47IST%45R
Content-Length: 0",
        "",
    );
    let Message::Request(req) = parse(&raw).unwrap() else {
        panic!()
    };
    assert_eq!(req.method, Method::Extension("RE%47IST%45R".into()));
    assert_eq!(
        req.headers.to().unwrap().display_name.as_deref(),
        Some("%Z%45")
    );
}

#[test]
fn lwsdisp_semiuri_and_unknown_schemes() {
    let raw = options("");
    parse(&raw).unwrap();

    let raw = msg(
        &format!("OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0\n{BASE}\nCSeq: 1 OPTIONS\nContent-Length: 0")
            .replace("From: \"Bell, Alexander\" <sip:a.g.bell@example.com>", "From: caller<sip:caller@example.com>"),
        "",
    );
    let Message::Request(req) = parse(&raw).unwrap() else {
        panic!()
    };
    assert_eq!(
        req.uri.as_sip().unwrap().user.as_deref(),
        Some("user;par=u%40example.net")
    );
    assert_eq!(
        req.headers.from().unwrap().display_name.as_deref(),
        Some("caller")
    );

    // unksm / novelsc / unksm2: unknown schemes parse; refusing them (416) is policy.
    for ruri in [
        "nobodyKnowsThisScheme:totallyopaquecontent",
        "soap.beep://192.0.2.103:3002",
    ] {
        let raw = msg(
            &format!("OPTIONS {ruri} SIP/2.0\n{BASE}\nCSeq: 1 OPTIONS\nl: 0"),
            "",
        );
        let Message::Request(req) = parse(&raw).unwrap() else {
            panic!()
        };
        assert_eq!(req.uri.to_string(), ruri);
        assert!(req.uri.as_sip().is_none());
    }
    let raw = msg(
        &format!("REGISTER sip:example.com SIP/2.0\n{BASE}\nCSeq: 1 REGISTER\nl: 0").replace(
            "To: \"Watson, Thomas\" <sip:t.watson@example.org>",
            "To: isbn:2983792873",
        ),
        "",
    );
    assert_eq!(
        parse(&raw).unwrap().headers().to().unwrap().uri.scheme(),
        "isbn"
    );
}

#[test]
fn transports_and_ipv6() {
    let raw = msg(
        "OPTIONS sip:user@[2001:db8::10]:5070 SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
Via: SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3-111
l: 0",
        "",
    );
    let Message::Request(req) = parse(&raw).unwrap() else {
        panic!()
    };
    let u = req.uri.as_sip().unwrap();
    assert_eq!(u.port, Some(5070));
    assert_eq!(u.host.to_string(), "[2001:db8::10]");
    let vias = req.headers.vias().unwrap();
    let t: Vec<_> = vias.iter().map(|v| v.transport.as_str()).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP", "UDP"]);
    assert_eq!(vias[5].received(), Some("2001:db8::9:255".parse().unwrap()));

    for bad in [
        "sip:user@2001:db8::10",
        "sip:user@[2001:db8:::192.0.2.1]",
        "sip:[2001:db8::10",
    ] {
        let raw = msg(
            &format!("OPTIONS {bad} SIP/2.0\n{BASE}\nCSeq: 1 OPTIONS\nl: 0"),
            "",
        );
        assert_eq!(err(&raw), ParseError::BadRequestUri, "{bad}");
    }
    let raw = msg(
        &format!("OPTIONS sip:user@[2001:db8::192.0.2.1] SIP/2.0\n{BASE}\nCSeq: 1 OPTIONS\nl: 0"),
        "",
    );
    parse(&raw).unwrap();
}

#[test]
fn responses_unusual_and_empty_reason() {
    let raw = msg(
        "SIP/2.0 200 = 2**3 * 5**2 \u{43d}\u{43e} \u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{43d}\u{43e}\u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{442}\u{44c}
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 0",
        "",
    );
    let Message::Response(r) = parse(&raw).unwrap() else {
        panic!()
    };
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.reason.starts_with("= 2**3 * 5**2 "));
    let again = parse(&r.to_bytes()).unwrap();
    assert_eq!(again, Message::Response(r));

    let raw = msg(
        "SIP/2.0 100 \nVia: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe\nCall-ID: noreason.asndj203insdf99223ndf\nCSeq: 35 INVITE\nFrom: <sip:user@example.com>;tag=39ansfi3\nTo: <sip:user@example.edu>;tag=902jndnke3\nContent-Length: 0",
        "",
    );
    let Message::Response(r) = parse(&raw).unwrap() else {
        panic!()
    };
    assert_eq!((r.status.code(), r.reason.as_str()), (100, ""));
}

#[test]
fn dblreq_content_length_bounds_the_message() {
    let mut raw = options("");
    let second = msg(
        &format!("INVITE sip:joe@example.org SIP/2.0\n{BASE}\nCSeq: 8 INVITE\nContent-Length: 0"),
        "",
    );
    raw.extend_from_slice(&second);
    let m = parse(&raw).unwrap();
    assert_eq!(m.method().unwrap(), Method::Options);
    assert!(m.body().is_empty());
}

#[test]
fn datagram_without_content_length_takes_the_rest() {
    let raw = msg(
        &format!("MESSAGE sip:t.watson@example.org SIP/2.0\n{BASE}\nCSeq: 1 MESSAGE"),
        "hello\n",
    );
    assert_eq!(&parse(&raw).unwrap().body()[..], b"hello\r\n");
}

#[test]
fn leading_crlf_before_start_line_is_ignored() {
    let mut raw = b"\r\n\r\n".to_vec();
    raw.extend_from_slice(&options(""));
    parse(&raw).unwrap();
}

#[test]
fn badvers_parses_for_a_505() {
    let raw = msg(
        &format!("OPTIONS sip:t.watson@example.org SIP/7.0\n{BASE}\nCSeq: 1 OPTIONS\nl: 0"),
        "",
    );
    let Message::Request(r) = parse(&raw).unwrap() else {
        panic!()
    };
    assert_eq!(r.version, Version { major: 7, minor: 0 });
}

// ---- invalid messages (RFC 4475 §3.1.2) ----

#[test]
fn bad_content_length() {
    for cl in ["-999", "abc", "", "+1", "1 2", "99999999999999999999999"] {
        let raw = msg(&format!("OPTIONS sip:t.watson@example.org SIP/2.0\n{BASE}\nCSeq: 1 OPTIONS\nContent-Length: {cl}"), "");
        assert_eq!(
            err(&raw),
            ParseError::BadHeader(HeaderName::ContentLength),
            "{cl:?}"
        );
        assert_eq!(err(&raw).to_string(), "Bad Content-Length");
    }
    // clerr: larger than the datagram.
    let raw = msg(
        &format!(
            "INVITE sip:user@example.com SIP/2.0\n{BASE}\nCSeq: 1 INVITE\nContent-Length: 9999"
        ),
        "v=0\n",
    );
    assert_eq!(err(&raw), ParseError::BodyTruncated);
    // mcl01: several Content-Length values.
    let raw = options("Content-Length: 0\nl: 0");
    assert_eq!(
        err(&raw),
        ParseError::DuplicateHeader(HeaderName::ContentLength)
    );
}

#[test]
fn nul_and_non_utf8_and_bare_lf() {
    let raw = options("X-Foo: a\0b");
    assert_eq!(err(&raw), ParseError::NulInHeader);
    assert_eq!(err(&raw).to_string(), "NUL byte in header");
    let mut raw = options("X-Foo: ab");
    let at = raw.windows(2).position(|w| w == b"ab").unwrap();
    raw[at] = 0xff;
    assert_eq!(err(&raw), ParseError::NonUtf8Header);
    let raw = options("X-Foo: a\nX-Bar: b");
    let s = String::from_utf8(raw)
        .unwrap()
        .replacen("X-Foo: a\r\n", "X-Foo: a\n", 1);
    assert_eq!(err(s.as_bytes()), ParseError::BareLineBreak);
}

#[test]
fn unterminated_quote() {
    // quotbal
    let raw = msg(
        &format!("INVITE sip:user@example.com SIP/2.0\n{BASE}\nCSeq: 1 INVITE\nl: 0").replace(
            "To: \"Watson, Thomas\" <sip:t.watson@example.org>",
            "To: \"Mr. J. User <sip:j.user@example.com>",
        ),
        "",
    );
    assert_eq!(err(&raw), ParseError::UnterminatedQuote(HeaderName::To));
    assert_eq!(err(&raw).to_string(), "Unterminated quoted string in To");
}

#[test]
fn missing_and_duplicate_mandatory_headers() {
    // insuf
    let raw = msg("INVITE sip:user@example.com SIP/2.0\nCSeq: 193942 INVITE\nVia: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf\nl: 0", "");
    assert_eq!(err(&raw), ParseError::MissingHeader(HeaderName::To));
    for (drop, name) in [
        ("Via:", HeaderName::Via),
        ("From:", HeaderName::From),
        ("To:", HeaderName::To),
        ("Call-ID:", HeaderName::CallId),
        ("CSeq:", HeaderName::CSeq),
    ] {
        let raw = String::from_utf8(options("")).unwrap();
        let raw: Vec<&str> = raw.split("\r\n").filter(|l| !l.starts_with(drop)).collect();
        let e = err(raw.join("\r\n").as_bytes());
        assert_eq!(e, ParseError::MissingHeader(name.clone()));
        assert_eq!(e.to_string(), format!("Missing {name}"));
    }
    // Max-Forwards is recommended, not required.
    let raw = String::from_utf8(options(""))
        .unwrap()
        .replace("Max-Forwards: 70\r\n", "");
    parse(raw.as_bytes()).unwrap();
    // multi01
    for dup in [
        "Call-ID: other@x",
        "CSeq: 2 OPTIONS",
        "From: <sip:x@y.com>;tag=1",
        "To: <sip:x@y.com>",
        "Max-Forwards: 5",
    ] {
        let e = err(&options(dup));
        assert!(matches!(e, ParseError::DuplicateHeader(_)), "{dup}: {e}");
    }
    assert_eq!(err(&options("i: other@x")).to_string(), "Duplicate Call-ID");
}

#[test]
fn cseq_problems() {
    // mismatch01
    let raw = msg(
        &format!("OPTIONS sip:user@example.com SIP/2.0\n{BASE}\nCSeq: 8 INVITE\nl: 0"),
        "",
    );
    assert_eq!(err(&raw), ParseError::CSeqMethodMismatch);
    // mismatch02: same with an unknown method.
    let raw = msg(
        &format!("NEWMETHOD sip:user@example.com SIP/2.0\n{BASE}\nCSeq: 8 INVITE\nl: 0"),
        "",
    );
    assert_eq!(err(&raw), ParseError::CSeqMethodMismatch);
    for bad in ["-1 OPTIONS", "36893488147419103232 OPTIONS", "OPTIONS", "1"] {
        let raw = msg(
            &format!("OPTIONS sip:user@example.com SIP/2.0\n{BASE}\nCSeq: {bad}\nl: 0"),
            "",
        );
        assert_eq!(err(&raw), ParseError::BadHeader(HeaderName::CSeq), "{bad}");
    }
}

#[test]
fn scalar02_overlarge_values() {
    for extra in [
        "Max-Forwards: 300",
        "Expires: 4294967296",
        "Contact: <sip:user@host129.example.com>;expires=280297596632815",
    ] {
        let raw =
            String::from_utf8(options(extra))
                .unwrap()
                .replacen("Max-Forwards: 70\r\n", "", 1);
        assert!(
            matches!(err(raw.as_bytes()), ParseError::BadHeader(_)),
            "{extra}"
        );
    }
    let raw = String::from_utf8(options(""))
        .unwrap()
        .replace("branch=z9hG4bKkdju43234", "branch=z9hG4bKkdju43234;ttl=256");
    assert_eq!(err(raw.as_bytes()), ParseError::BadHeader(HeaderName::Via));
}

#[test]
fn bad_start_lines() {
    let cases: &[(&str, ParseError)] = &[
        // ltgtruri
        (
            "INVITE <sip:user@example.com> SIP/2.0",
            ParseError::BadRequestUri,
        ),
        // lwsruri
        (
            "INVITE sip:user@example.com; lr SIP/2.0",
            ParseError::BadRequestUri,
        ),
        // lwsstart
        (
            "INVITE  sip:user@example.com  SIP/2.0",
            ParseError::BadRequestLine,
        ),
        // trws
        (
            "OPTIONS sip:remote-target@example.com SIP/2.0  ",
            ParseError::BadVersion,
        ),
        (
            "OPTIONS sip:remote-target@example.com",
            ParseError::BadRequestLine,
        ),
        (
            "OPTIONS sip:remote-target@example.com HTTP/1.1",
            ParseError::BadVersion,
        ),
        (
            "OPT(ONS sip:remote-target@example.com SIP/2.0",
            ParseError::BadMethod,
        ),
        // bigcode / scalarlg
        (
            "SIP/2.0 4294967301 better not break the receiver",
            ParseError::BadStatusCode,
        ),
        ("SIP/2.0 99 Too low", ParseError::BadStatusCode),
        ("SIP/2.0 700 Too high", ParseError::BadStatusCode),
        ("SIP/2.0 2000 OK", ParseError::BadStatusCode),
        ("SIP/2.0 20x OK", ParseError::BadStatusCode),
        ("SIP/2 200 OK", ParseError::BadVersion),
        ("SIP/2.0 200 \u{7}bell", ParseError::BadReasonPhrase),
    ];
    for (line, want) in cases {
        let raw = msg(&format!("{line}\n{BASE}\nCSeq: 1 OPTIONS\nl: 0"), "");
        assert_eq!(&err(&raw), want, "{line:?}");
    }
}

#[test]
fn bad_header_lines_and_values() {
    assert_eq!(err(&options("NoColonHere")), ParseError::BadHeaderLine);
    assert_eq!(err(&options("Bad Name: x")), ParseError::BadHeaderLine);
    assert_eq!(err(&options(": x")), ParseError::BadHeaderLine);
    let raw = msg(&format!("OPTIONS sip:t.watson@example.org SIP/2.0\n continuation\n{BASE}\nCSeq: 1 OPTIONS\nl: 0"), "");
    assert_eq!(err(&raw), ParseError::BadHeaderLine);
    // badinv01: extraneous separators in Via.
    let raw = String::from_utf8(options(""))
        .unwrap()
        .replace("branch=z9hG4bKkdju43234", "branch=z9hG4bKkdju43234;;,;,,");
    assert_eq!(err(raw.as_bytes()), ParseError::BadHeader(HeaderName::Via));
    // baddn: unquoted display name with a comma.
    let raw = String::from_utf8(options(""))
        .unwrap()
        .replace("\"Bell, Alexander\"", "Bell, Alexander");
    assert_eq!(err(raw.as_bytes()), ParseError::BadHeader(HeaderName::From));
    // regbadct: addr-spec Contact with a `?`.
    let raw = options("Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E");
    assert_eq!(err(&raw), ParseError::BadHeader(HeaderName::Contact));
    // A wildcard Contact must stand alone.
    assert_eq!(
        err(&options("Contact: *, <sip:a@b.com>")),
        ParseError::BadHeader(HeaderName::Contact)
    );
    assert_eq!(
        err(&options("Route: sip:p.example.com;lr")),
        ParseError::BadHeader(HeaderName::Route)
    );
    assert_eq!(
        err(&options("Call-ID: has space")),
        ParseError::DuplicateHeader(HeaderName::CallId)
    );
    assert_eq!(
        err(&options("Content-Type: text")),
        ParseError::BadHeader(HeaderName::ContentType)
    );
    // Headers we do not validate up front still parse lazily with specific errors.
    let m = parse(&options("Event: presence;;")).unwrap();
    assert_eq!(
        m.headers().event(),
        Err(ParseError::BadHeader(HeaderName::Event))
    );
}

#[test]
fn limits() {
    let raw = options("");
    let tight = Parser::new(Limits {
        max_message_size: raw.len() - 1,
        max_headers: 64,
    });
    assert_eq!(tight.parse(&raw), Err(ParseError::TooLarge));
    let few = Parser::new(Limits {
        max_message_size: 4096,
        max_headers: 3,
    });
    assert_eq!(few.parse(&raw), Err(ParseError::TooManyHeaders));
    assert_eq!(
        err(b"OPTIONS sip:a@b.com SIP/2.0\r\nVia: x"),
        ParseError::Incomplete
    );
}
