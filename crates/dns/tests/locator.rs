//! The locator against the in-process test DNS server on 127.0.0.1 (random free port).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use entente_dns::testserver::{parse_zone, TestDns, ZoneRecord};
use entente_dns::{
    Candidate, Error, Locator, LocatorConfig, LookupKind, LookupOutcome, Origin, StaticRoute,
    Transport,
};

async fn dns(zone: &str) -> TestDns {
    TestDns::start(
        "127.0.0.1:0".parse().unwrap(),
        parse_zone(zone).expect("zone parses"),
    )
    .await
    .expect("test DNS starts")
}

fn config(dns: &TestDns) -> LocatorConfig {
    LocatorConfig {
        nameservers: vec![dns.addr()],
        query_timeout: Duration::from_secs(2),
        attempts: 1,
        rng_seed: Some(7),
        ..Default::default()
    }
}

fn locator(dns: &TestDns) -> Locator {
    Locator::new(config(dns)).expect("locator builds")
}

fn summary(c: &[Candidate]) -> Vec<(String, u16, Transport)> {
    c.iter()
        .map(|c| (c.host.clone(), c.port, c.transport))
        .collect()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn srv_priority_order_and_addresses() {
    let d = dns("
        _xmpp-server._tcp.b.test. SRV 20 0 5269 backup.b.test.
        _xmpp-server._tcp.b.test. SRV 10 0 5299 main.b.test.
        main.b.test.   A    127.0.0.2
        main.b.test.   AAAA ::1
        backup.b.test. A    127.0.0.3
    ")
    .await;
    let c = locator(&d).xmpp_server("B.test.").await.unwrap();
    assert_eq!(
        summary(&c),
        vec![
            ("main.b.test".into(), 5299, Transport::Tcp),
            ("backup.b.test".into(), 5269, Transport::Tcp),
        ]
    );
    let mut addrs = c[0].addrs.clone();
    addrs.sort();
    assert_eq!(addrs, vec![sa("127.0.0.2:5299"), sa("[::1]:5299")]);
    assert_eq!(c[1].addrs, vec![sa("127.0.0.3:5269")]);
    assert_eq!(
        c[0].origin,
        Origin::Srv {
            record: "_xmpp-server._tcp.b.test".into(),
            priority: 10,
            weight: 0
        }
    );
    assert!(!c[0].is_direct_tls());
}

#[tokio::test]
async fn srv_weights_shape_the_order() {
    let d = dns("
        _xmpp-server._tcp.w.test. SRV 10 90 5269 heavy.w.test.
        _xmpp-server._tcp.w.test. SRV 10 10 5269 light.w.test.
        heavy.w.test. A 127.0.0.2
        light.w.test. A 127.0.0.3
    ")
    .await;
    let loc = locator(&d);
    let mut first: HashMap<String, u32> = HashMap::new();
    for _ in 0..200 {
        let c = loc.xmpp_server("w.test").await.unwrap();
        assert_eq!(c.len(), 2, "both targets are always returned");
        *first.entry(c[0].host.clone()).or_default() += 1;
    }
    let heavy = first.get("heavy.w.test").copied().unwrap_or(0);
    let light = first.get("light.w.test").copied().unwrap_or(0);
    // Expected about 180 / 20.
    assert!(heavy > 150 && light > 5, "{first:?}");
}

#[tokio::test]
async fn xep0368_direct_tls_and_starttls_are_mixed_by_priority() {
    let d = dns("
        _xmpps-server._tcp.b.test. SRV 5 0 5270 tls.b.test.
        _xmpp-server._tcp.b.test.  SRV 1 0 5269 first.b.test.
        _xmpp-server._tcp.b.test.  SRV 10 0 5269 last.b.test.
        tls.b.test.   A 127.0.0.4
        first.b.test. A 127.0.0.5
        last.b.test.  A 127.0.0.6
    ")
    .await;
    let c = locator(&d).xmpp_server("b.test").await.unwrap();
    assert_eq!(
        summary(&c),
        vec![
            ("first.b.test".into(), 5269, Transport::Tcp),
            ("tls.b.test".into(), 5270, Transport::Tls),
            ("last.b.test".into(), 5269, Transport::Tcp),
        ]
    );
    assert!(c[1].is_direct_tls());
    assert!(
        matches!(&c[1].origin, Origin::Srv { record, .. } if record == "_xmpps-server._tcp.b.test")
    );
}

#[tokio::test]
async fn xmpps_only_domain() {
    let d = dns("
        _xmpps-server._tcp.t.test. SRV 0 0 443 t.test.
        _xmpp-server._tcp.t.test. SRV 0 0 0 .
        t.test. A 127.0.0.8
    ")
    .await;
    let c = locator(&d).xmpp_server("t.test").await.unwrap();
    assert_eq!(summary(&c), vec![("t.test".into(), 443, Transport::Tls)]);
}

#[tokio::test]
async fn fallback_to_address_records_without_srv() {
    let d = dns("
        plain.test. A 127.0.0.7
        plain.test. AAAA ::1
    ")
    .await;
    let c = locator(&d).xmpp_server("plain.test").await.unwrap();
    assert_eq!(
        summary(&c),
        vec![("plain.test".into(), 5269, Transport::Tcp)]
    );
    assert_eq!(c[0].origin, Origin::AddressFallback);
    let mut addrs = c[0].addrs.clone();
    addrs.sort();
    assert_eq!(addrs, vec![sa("127.0.0.7:5269"), sa("[::1]:5269")]);
}

#[tokio::test]
async fn no_fallback_when_srv_target_is_dot() {
    let d = dns("
        _xmpp-server._tcp.none.test. SRV 0 0 0 .
        none.test. A 127.0.0.7
    ")
    .await;
    let e = locator(&d).xmpp_server("none.test").await.unwrap_err();
    assert_eq!(
        e,
        Error::ServiceUnavailable {
            domain: "none.test".into()
        }
    );
    assert!(!e.is_transient());
}

#[tokio::test]
async fn static_routes_override_dns() {
    let d = dns("
        _xmpp-server._tcp.b.test. SRV 0 0 5269 dns.b.test.
        dns.b.test. A 127.0.0.2
        relay.internal. A 127.0.0.42
    ")
    .await;
    let mut cfg = config(&d);
    cfg.add_static_route("B.test", "127.0.0.9:5299".parse().unwrap())
        .add_static_route("b.test", "tls://relay.internal".parse().unwrap());
    let loc = Locator::new(cfg).unwrap();
    let c = loc.xmpp_server("b.test").await.unwrap();
    assert_eq!(
        summary(&c),
        vec![
            ("127.0.0.9".into(), 5299, Transport::Tcp),
            ("relay.internal".into(), 5270, Transport::Tls),
        ]
    );
    assert_eq!(c[0].origin, Origin::Static);
    assert_eq!(c[1].addrs, vec![sa("127.0.0.42:5270")]);

    // SIP uses the same routes, with the caller's first transport by default.
    let c = loc.sip_server("b.test", &[Transport::Tcp]).await.unwrap();
    assert_eq!(
        summary(&c),
        vec![("127.0.0.9".into(), 5299, Transport::Tcp)]
    );
}

#[tokio::test]
async fn sip_naptr_leads_to_srv() {
    let d = dns(r#"
        s.test. NAPTR 20 10 "s" "SIP+D2U" "" _sip._udp.s.test.
        s.test. NAPTR 10 10 "s" "SIPS+D2T" "" _sips._tcp.s.test.
        s.test. NAPTR 10 20 "s" "SIP+D2T" "" _sip._tcp.s.test.
        s.test. NAPTR 5 10 "s" "SIP+D2S" "" _sip._sctp.s.test.
        _sips._tcp.s.test. SRV 0 0 5061 tls.s.test.
        _sip._tcp.s.test.  SRV 0 0 5060 tcp.s.test.
        _sip._udp.s.test.  SRV 0 0 5060 udp.s.test.
        _sip._sctp.s.test. SRV 0 0 5060 sctp.s.test.
        _sipfederationtls._tcp.s.test. SRV 0 0 5061 notused.s.test.
        tls.s.test. A 127.0.0.2
        tcp.s.test. A 127.0.0.3
        udp.s.test. A 127.0.0.4
        sctp.s.test. A 127.0.0.5
        notused.s.test. A 127.0.0.6
    "#)
    .await;
    let loc = locator(&d);
    let all = [Transport::Tls, Transport::Tcp, Transport::Udp];
    let c = loc.sip_server("s.test", &all).await.unwrap();
    assert_eq!(
        summary(&c),
        vec![
            ("tls.s.test".into(), 5061, Transport::Tls),
            ("tcp.s.test".into(), 5060, Transport::Tcp),
            ("udp.s.test".into(), 5060, Transport::Udp),
        ]
    );
    // Only the transports the caller supports.
    let c = loc.sip_server("s.test", &[Transport::Udp]).await.unwrap();
    assert_eq!(
        summary(&c),
        vec![("udp.s.test".into(), 5060, Transport::Udp)]
    );
}

#[tokio::test]
async fn sip_federation_tls_record() {
    let d = dns("
        _sipfederationtls._tcp.m.test. SRV 100 1 5061 sipfed.m.test.
        _sip._tcp.m.test. SRV 0 0 5060 sip.m.test.
        sipfed.m.test. A 127.0.0.2
        sip.m.test. A 127.0.0.3
    ")
    .await;
    let loc = locator(&d);
    let c = loc
        .sip_server("m.test", &[Transport::Tls, Transport::Tcp])
        .await
        .unwrap();
    assert_eq!(
        summary(&c),
        vec![
            ("sipfed.m.test".into(), 5061, Transport::Tls),
            ("sip.m.test".into(), 5060, Transport::Tcp),
        ]
    );
    // The caller's preference orders the SRV sets.
    let c = loc
        .sip_server("m.test", &[Transport::Tcp, Transport::Tls])
        .await
        .unwrap();
    assert_eq!(c[0].transport, Transport::Tcp);
}

#[tokio::test]
async fn sip_fallback_to_address_records() {
    let d = dns("sip.test. A 127.0.0.2").await;
    let c = locator(&d)
        .sip_server("sip.test", &[Transport::Tls, Transport::Udp])
        .await
        .unwrap();
    assert_eq!(
        summary(&c),
        vec![
            ("sip.test".into(), 5061, Transport::Tls),
            ("sip.test".into(), 5060, Transport::Udp),
        ]
    );
    assert_eq!(c[1].addrs, vec![sa("127.0.0.2:5060")]);
}

#[tokio::test]
async fn nxdomain_error_text() {
    let d = dns("other.test. A 127.0.0.2").await;
    let loc = locator(&d);
    let e = loc.xmpp_server("nx.test").await.unwrap_err();
    assert_eq!(
        e,
        Error::NxDomain {
            domain: "nx.test".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "DNS: no SRV or address records for nx.test (domain does not exist)"
    );
    let e = loc.sip_server("nx.test", &[]).await.unwrap_err();
    assert!(matches!(e, Error::NxDomain { .. }), "{e:?}");
}

#[tokio::test]
async fn no_records_error_text() {
    // The name exists (it has a CNAME-free SRV elsewhere below it) but has no A/AAAA/SRV.
    let d = dns("_other._tcp.empty.test. SRV 0 0 1 x.test.").await;
    let e = locator(&d).xmpp_server("empty.test").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "DNS: no SRV or address records for empty.test"
    );
}

#[tokio::test]
async fn srv_targets_without_addresses() {
    let d = dns("
        _xmpp-server._tcp.b.test. SRV 0 0 5269 ghost.b.test.
        _xmpp-server._tcp.b.test. SRV 1 0 5269 alias.b.test.
        alias.b.test. CNAME real.b.test.
        real.b.test. A 127.0.0.2
    ")
    .await;
    let loc = locator(&d);
    // The target without address is dropped, the CNAME'd one resolves.
    let c = loc.xmpp_server("b.test").await.unwrap();
    assert_eq!(
        summary(&c),
        vec![("alias.b.test".into(), 5269, Transport::Tcp)]
    );
    assert_eq!(c[0].addrs, vec![sa("127.0.0.2:5269")]);

    let d = dns("_xmpp-server._tcp.g.test. SRV 0 0 5269 ghost.g.test.").await;
    let e = locator(&d).xmpp_server("g.test").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "DNS: no address records for the servers of g.test (ghost.g.test)"
    );
}

#[tokio::test]
async fn records_added_while_running() {
    let d = dns("").await;
    let loc = locator(&d);
    assert!(loc.xmpp_server("late.test").await.is_err());
    d.add(ZoneRecord::a("late.test", "127.0.0.2".parse().unwrap()))
        .await
        .unwrap();
    let c = loc.xmpp_server("late.test").await.unwrap();
    assert_eq!(c[0].addrs, vec![sa("127.0.0.2:5269")]);
}

#[tokio::test]
async fn ip_literal_domain() {
    let d = dns("").await;
    let c = locator(&d).xmpp_server("127.0.0.5").await.unwrap();
    assert_eq!(c[0].addrs, vec![sa("127.0.0.5:5269")]);
    assert_eq!(c[0].origin, Origin::IpLiteral);
}

#[tokio::test]
async fn timeout_is_bounded_when_nothing_answers() {
    // A UDP socket that reads nothing and a TCP listener that accepts but never answers.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port)).await;
    let _hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        if let Ok(tcp) = tcp {
            while let Ok((s, _)) = tcp.accept().await {
                conns.push(s);
            }
        }
    });
    let loc = Locator::new(LocatorConfig {
        nameservers: vec![udp.local_addr().unwrap()],
        query_timeout: Duration::from_secs(1),
        attempts: 1,
        total_timeout: Duration::from_secs(3),
        ..Default::default()
    })
    .unwrap();
    let start = Instant::now();
    let e = loc.xmpp_server("slow.test").await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_millis(3500), "{elapsed:?}");
    assert_eq!(
        e,
        Error::Timeout {
            domain: "slow.test".into()
        }
    );
    assert_eq!(e.to_string(), "DNS: timed out looking up slow.test");
    assert!(e.is_transient());
    // Both SRV queries timed out and were counted as such (the total timeout may cut one
    // short, which is not counted: it never ended).
    let stats = loc.stats();
    assert!(stats.count(LookupKind::Srv, LookupOutcome::Timeout) >= 1);
    assert_eq!(stats.count(LookupKind::Srv, LookupOutcome::Ok), 0);
    let h = stats.histogram(LookupKind::Srv);
    assert!(h.sum >= 0.9, "{h:?}");
    drop(udp);
}

#[tokio::test]
async fn lookups_are_counted_by_kind_and_outcome() {
    let d = dns("
        _xmpp-server._tcp.b.test. SRV 10 0 5269 x.b.test.
        x.b.test. A 127.0.0.2
        plain.test. A 127.0.0.7
        relay.internal. A 127.0.0.42
    ")
    .await;
    let mut cfg = config(&d);
    cfg.add_static_route("static.test", "tls://relay.internal".parse().unwrap())
        .add_static_route("literal.test", "127.0.0.9:5299".parse().unwrap());
    let loc = Locator::new(cfg).unwrap();
    let stats = loc.stats().clone();
    let n = |k, o| stats.count(k, o);

    // _xmpp-server: records; _xmpps-server: no such name; x.b.test: an address.
    loc.xmpp_server("b.test").await.unwrap();
    assert_eq!(n(LookupKind::Srv, LookupOutcome::Ok), 1);
    assert_eq!(n(LookupKind::Srv, LookupOutcome::NxDomain), 1);
    assert_eq!(n(LookupKind::Address, LookupOutcome::Ok), 1);

    // A missing domain: both SRV names and the fallback address look-up fail as NXDOMAIN.
    loc.xmpp_server("missing.test").await.unwrap_err();
    assert_eq!(n(LookupKind::Srv, LookupOutcome::NxDomain), 3);
    assert_eq!(n(LookupKind::Address, LookupOutcome::NxDomain), 1);

    // SIP: NAPTR of a name that exists without NAPTR records is NODATA.
    loc.sip_server("plain.test", &[Transport::Tcp])
        .await
        .unwrap();
    assert_eq!(n(LookupKind::Naptr, LookupOutcome::NoRecords), 1);

    // Static routes are not DNS look-ups; the route's host name is.
    let before_srv = stats.histogram(LookupKind::Srv).count;
    loc.xmpp_server("static.test").await.unwrap();
    loc.xmpp_server("literal.test").await.unwrap();
    assert_eq!(stats.histogram(LookupKind::Srv).count, before_srv);
    assert_eq!(
        n(LookupKind::Address, LookupOutcome::Ok),
        3,
        "plain.test and relay.internal"
    );

    // Every look-up is in the histogram once; no errors or timeouts here.
    for kind in LookupKind::ALL {
        let total: u64 = LookupOutcome::ALL.iter().map(|o| n(kind, *o)).sum();
        assert_eq!(stats.histogram(kind).count, total, "{kind:?}");
        assert_eq!(
            n(kind, LookupOutcome::Error) + n(kind, LookupOutcome::Timeout),
            0
        );
    }

    // Locators built with the same counters add up.
    let shared = Locator::new(config(&d)).unwrap().with_stats(stats.clone());
    shared.xmpp_server("b.test").await.unwrap();
    assert!(n(LookupKind::Srv, LookupOutcome::Ok) >= 2);
}

#[tokio::test]
async fn static_route_type_parses_from_config_text() {
    // The form a TOML config would give: strings.
    let r: StaticRoute = "udp://127.0.0.1:5070".parse().unwrap();
    let mut cfg = LocatorConfig::default();
    cfg.add_static_route("x.test", r);
    let loc = Locator::new(LocatorConfig {
        nameservers: vec![sa("127.0.0.1:9")],
        ..cfg
    })
    .unwrap();
    let c = loc.sip_server("x.test", &[]).await.unwrap();
    assert_eq!(
        summary(&c),
        vec![("127.0.0.1".into(), 5070, Transport::Udp)]
    );
    // XMPP ignores a UDP route, so nothing is left.
    assert!(loc.xmpp_server("x.test").await.is_err());
}

#[tokio::test]
async fn invalid_names() {
    let d = dns("").await;
    let loc = locator(&d);
    for bad in ["", ".", "a..b"] {
        let e = loc.xmpp_server(bad).await.unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{bad:?}: {e:?}");
    }
}

#[tokio::test]
async fn locator_is_shareable_across_tasks() {
    let d = dns("h.test. A 127.0.0.2").await;
    let loc = std::sync::Arc::new(locator(&d));
    let l2 = loc.clone();
    // Compiles only if the futures are Send and the locator Sync.
    let x = tokio::spawn(async move { l2.xmpp_server("h.test").await });
    let s = tokio::spawn(async move { loc.sip_server("h.test", &[Transport::Tcp]).await });
    assert_eq!(x.await.unwrap().unwrap()[0].port, 5269);
    assert_eq!(s.await.unwrap().unwrap()[0].port, 5060);
}
