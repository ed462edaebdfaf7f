//! Building a `400 Bad Request` for a request that did not parse.
//!
//! RFC 3261 §8.2.6 responses need the request's Vias, From, To, Call-ID and CSeq. When the
//! strict parser rejected a request, a lenient scan often still finds those lines; if so we
//! answer with the parse error as reason phrase, otherwise the request is dropped (as are
//! malformed responses and ACKs, which are never answered).

use crate::error::ParseError;
use crate::header::{HeaderName, Headers};
use crate::message::{copy_dialog_headers, Response};
use crate::method::StatusCode;
use crate::parser::{find_head_end, skip_leading_crlf};

/// Largest input the lenient scan looks at: beyond that, the request is dropped.
const SCAN_LIMIT: usize = 64 * 1024;

/// A `400` response to the unparseable request `input`, with `error`'s text as reason
/// phrase, or `None` if the input does not look like a request (or is an ACK) or lacks a
/// usable top Via, From, To, Call-ID or CSeq. `to_tag` is added to To if it has no tag.
pub fn bad_request(input: &[u8], error: &ParseError, to_tag: Option<&str>) -> Option<Response> {
    let input = input.get(..input.len().min(SCAN_LIMIT))?;
    let input = input.get(skip_leading_crlf(input)..)?;
    let head = match find_head_end(input) {
        Some(end) => input.get(..end)?,
        None => input,
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.next()?;
    let method = start.split(' ').next()?;
    if method.is_empty()
        || method.eq_ignore_ascii_case("ACK")
        || start
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
        || !crate::scan::is_token(method)
    {
        return None;
    }

    // Lenient header collection: skip lines that are not `token: value`, unfold continuations.
    let mut collected: Vec<(String, String)> = Vec::new();
    let mut last_kept = false;
    for line in lines {
        if line.starts_with([' ', '\t']) {
            if let (true, Some((_, v))) = (last_kept, collected.last_mut()) {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        last_kept = false;
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim_end();
        if !crate::scan::is_token(name) {
            continue;
        }
        let hn = HeaderName::parse(name);
        let wanted = matches!(
            hn,
            HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
        );
        // Keep all Vias, and the first of each single-valued header.
        let first = !collected.iter().any(|(n, _)| hn.matches_raw(n));
        if wanted && (hn == HeaderName::Via || first) {
            collected.push((name.to_owned(), value.trim().to_owned()));
            last_kept = true;
        }
    }
    let mut found = Headers::new();
    for (n, v) in collected {
        found.push(n, v);
    }
    found.top_via().ok()?;
    for required in [
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        found.get(&required)?;
    }
    let mut resp = Response::new(StatusCode::BAD_REQUEST);
    resp.reason = error.reason_phrase();
    copy_dialog_headers(&found, &mut resp.headers, to_tag);
    Some(resp)
}
