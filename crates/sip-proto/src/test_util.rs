//! Test harness: two transaction layers wired through an in-memory network with a simulated
//! clock, in the shape of quinn-proto's `Pair`.
//!
//! `drive()` delivers every queued transmit (serialized and re-parsed, so the wire format is
//! exercised too) unless the drop rule says otherwise; `run_until()` jumps `now` from one
//! `poll_timeout()` to the next, so 32 s of Timer B take microseconds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::message::{Message, Request};
use crate::method::Method;
use crate::parser::parse;
use crate::transaction::{Config, Event, TransactionLayer, Transport, TransportAddr};
use crate::uri::Host;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    A,
    B,
}

pub(crate) struct Node {
    pub(crate) layer: TransactionLayer,
    pub(crate) addr: TransportAddr,
    pub(crate) events: Vec<(Instant, Event)>,
}

/// One message put on the wire.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) at: Instant,
    pub(crate) from: Side,
    pub(crate) msg: Message,
    #[allow(dead_code)] // for debugging failed tests
    pub(crate) dropped: bool,
}

type DropRule = Box<dyn FnMut(Side, &Message) -> bool>;

pub(crate) struct Pair {
    pub(crate) a: Node,
    pub(crate) b: Node,
    pub(crate) start: Instant,
    pub(crate) now: Instant,
    pub(crate) reliable: bool,
    pub(crate) log: Vec<Sent>,
    drop: DropRule,
}

fn node(ip: [u8; 4], transport: Transport, seed: u64) -> Node {
    let addr = SocketAddr::from((ip, 5060));
    let mut config = Config::new(Host::Ipv4(ip.into()), Some(5060));
    config.branch_seed = seed;
    Node {
        layer: TransactionLayer::new(config),
        addr: TransportAddr::new(addr, transport),
        events: Vec::new(),
    }
}

impl Pair {
    /// A UDP pair (`reliable == false`) or a TCP one.
    pub(crate) fn new(reliable: bool) -> Pair {
        let transport = if reliable {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let start = Instant::now();
        Pair {
            a: node([192, 0, 2, 1], transport, 1),
            b: node([192, 0, 2, 2], transport, 2),
            start,
            now: start,
            reliable,
            log: Vec::new(),
            drop: Box::new(|_, _| false),
        }
    }

    /// Drops every message for which `rule` returns true.
    pub(crate) fn set_drop(&mut self, rule: impl FnMut(Side, &Message) -> bool + 'static) {
        self.drop = Box::new(rule);
    }

    pub(crate) fn node(&mut self, side: Side) -> &mut Node {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// Milliseconds since the start.
    pub(crate) fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.start).as_millis()).unwrap()
    }

    /// Delivers everything queued, repeatedly, until the network is quiet.
    pub(crate) fn drive(&mut self) {
        loop {
            let mut progressed = false;
            for side in [Side::A, Side::B] {
                while let Some(t) = self.node(side).layer.poll_transmit() {
                    progressed = true;
                    let msg = parse(&t.bytes).expect("we only send valid messages");
                    let (from, to) = match side {
                        Side::A => (self.a.addr, self.b.addr),
                        Side::B => (self.b.addr, self.a.addr),
                    };
                    assert_eq!(t.dest, to, "sent to the wrong place: {msg:?}");
                    let dropped = (self.drop)(side, &msg);
                    self.log.push(Sent {
                        at: self.now,
                        from: side,
                        msg: msg.clone(),
                        dropped,
                    });
                    if !dropped {
                        let other = match side {
                            Side::A => Side::B,
                            Side::B => Side::A,
                        };
                        let (now, reliable) = (self.now, self.reliable);
                        self.node(other)
                            .layer
                            .handle_incoming(msg, from, reliable, now);
                    }
                }
            }
            for side in [Side::A, Side::B] {
                let now = self.now;
                let n = self.node(side);
                while let Some(e) = n.layer.poll_event() {
                    n.events.push((now, e));
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn next_timeout(&mut self) -> Option<Instant> {
        match (self.a.layer.poll_timeout(), self.b.layer.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the protocol, jumping from timeout to timeout, up to `deadline`.
    pub(crate) fn run_until(&mut self, deadline: Instant) {
        self.drive();
        while let Some(t) = self.next_timeout() {
            if t > deadline {
                break;
            }
            self.now = self.now.max(t);
            let now = self.now;
            self.a.layer.handle_timeout(now);
            self.b.layer.handle_timeout(now);
            self.drive();
        }
        self.now = self.now.max(deadline);
    }

    pub(crate) fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs until no timer is left.
    pub(crate) fn run_to_quiescence(&mut self) {
        self.run_until(self.now + Duration::from_secs(3600));
    }

    /// Times (ms) at which `side` put a message matching `pred` on the wire.
    pub(crate) fn sent_times(&self, side: Side, pred: impl Fn(&Message) -> bool) -> Vec<u64> {
        self.log
            .iter()
            .filter(|s| s.from == side && pred(&s.msg))
            .map(|s| self.ms(s.at))
            .collect()
    }

    /// Takes the events of `side` seen so far.
    pub(crate) fn take_events(&mut self, side: Side) -> Vec<(Instant, Event)> {
        std::mem::take(&mut self.node(side).events)
    }
}

/// Whether `m` is a request with this method.
pub(crate) fn is_req(m: &Message, method: Method) -> bool {
    m.as_request().is_some_and(|r| r.method == method)
}

/// Whether `m` is a response with this code.
pub(crate) fn is_resp(m: &Message, code: u16) -> bool {
    m.as_response().is_some_and(|r| r.status.code() == code)
}

/// An out-of-dialog request from alice@a to bob@b.
pub(crate) fn request(method: Method, call_id: &str) -> Request {
    let mut r = Request::new(method.clone(), "sip:bob@192.0.2.2".parse().unwrap());
    r.headers.push("Max-Forwards", "70");
    r.headers
        .push("From", "<sip:alice@192.0.2.1>;tag=alice-1;epid=ab12");
    r.headers.push("To", "<sip:bob@192.0.2.2>");
    r.headers.push("Call-ID", call_id);
    r.headers.push("CSeq", format!("1 {method}"));
    r.headers.push("Contact", "<sip:alice@192.0.2.1:5060>");
    r
}
