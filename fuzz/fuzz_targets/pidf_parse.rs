//! Parses arbitrary text as a PIDF document (what a SIP peer puts in a NOTIFY). Invariants: no
//! panic; a document that parses serializes to XML that parses again.
#![no_main]

use entente_model::pidf::PidfDocument;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(doc) = PidfDocument::parse(text) {
        let xml = doc.to_xml();
        assert!(PidfDocument::parse(&xml).is_ok(), "re-parse failed: {xml}");
    }
});
