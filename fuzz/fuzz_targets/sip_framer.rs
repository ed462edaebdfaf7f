//! Feeds arbitrary bytes to the stream framer in chunks whose sizes come from the input.
//! Invariants: no panic, no unbounded buffering past the limit, and every framed message
//! round-trips through the serializer.
#![no_main]

use entente_sip_proto::{parse, Frame, Framer, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let limits = Limits {
        max_message_size: 16 * 1024,
        max_headers: 64,
    };
    let mut framer = Framer::new(limits);
    'outer: for piece in stream.chunks(chunk) {
        framer.push(piece);
        loop {
            match framer.poll() {
                Ok(Some(Frame::Message(m))) => {
                    let out = m.to_bytes();
                    let again = parse(&out).expect("framed message must re-parse");
                    assert_eq!(again.to_bytes(), out);
                    assert_eq!(again.body(), m.body());
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    assert!(framer.poll().is_err(), "framing errors must be sticky");
                    break 'outer;
                }
            }
        }
        assert!(framer.buffered() <= limits.max_message_size + chunk);
    }
});
