//! Address mapping between SIP URIs and JIDs (RFC 7247 §6), with XEP-0106 JID escaping.
//!
//! RFC 7247 §6.2 maps the local part of an address character by character: unescape the
//! source form (`%hexhex` in a SIP URI, `\hexhex` in a JID), keep what the destination allows
//! and escape the rest in the destination's own way. The characters a SIP `user` may carry but
//! a JID localpart may not (`"`, `&`, `'`, `/`, `:`, `<`, `>`, `@`, space) become XEP-0106
//! escapes (`\22`, `\26`, ...); the other direction percent-encodes everything outside the RFC
//! 3261 §25.1 `user` grammar. The domain is not mapped (RFC 7247 §6.1 leaves it to DNS); it is
//! only validated and lower-cased by [`Jid`]. A GRUU's `gr` parameter and the JID resourcepart
//! name the same thing, a particular device (RFC 7247 §6.3), so one maps to the other.
//!
//! Everything works on *decoded* SIP user parts: percent-decoding a URI is the SIP parser's
//! job, percent-encoding is [`SipAddress::to_uri`]'s.
//!
//! JID localparts are case-folded (see [`crate::jid`]), SIP user parts are not: `sip:Alice@x`
//! and `sip:alice@x` both become `alice@x`, and mapping back yields `alice`.

use std::fmt;

use crate::jid::{Jid, JidError};

/// A SIP address-of-record, or a GRUU when `gruu` is set, in decoded form.
///
/// RFC 7247 §6.4-6.5: the `user` part maps to the JID localpart, the host to the domainpart
/// and the `gr` URI parameter (RFC 5627) to the resourcepart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SipAddress {
    /// The user part, percent-decoded (no `%` escapes).
    pub user: String,
    /// The host, as it goes into the URI.
    pub host: String,
    /// The `gr` parameter's value, decoded; it maps to the JID resource (RFC 7247 §6.3).
    pub gruu: Option<String>,
}

impl SipAddress {
    /// `sip:user@host`, plus `;gr=value` when [`gruu`](Self::gruu) is set.
    ///
    /// The user is percent-encoded per the RFC 3261 §25.1 `user` rule (`unreserved /
    /// escaped / user-unreserved`): every other byte of its UTF-8 form becomes `%XX`, as RFC
    /// 7247 §6.5 step 5 asks (e.g. `tschüss` becomes `tsch%C3%BCss`, a space `%20`). The
    /// `gr` value is encoded per the `paramchar` rule of RFC 3261 §25.1. The host is written
    /// as is: a caller with an internationalized domain converts it to A-labels first (RFC
    /// 7247 §6.1 leaves domain mapping to the DNS).
    pub fn to_uri(&self) -> String {
        let mut uri = self.aor();
        if let Some(gr) = &self.gruu {
            uri.push_str(";gr=");
            percent_encode_into(&mut uri, gr, is_param_char);
        }
        uri
    }

    /// `sip:user@host`, the address-of-record: [`to_uri`](Self::to_uri) without the `gr`
    /// parameter.
    pub fn aor(&self) -> String {
        let mut uri = String::with_capacity(self.user.len() + self.host.len() + 8);
        uri.push_str("sip:");
        percent_encode_into(&mut uri, &self.user, is_user_char);
        uri.push('@');
        uri.push_str(&self.host);
        uri
    }
}

impl fmt::Display for SipAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri())
    }
}

/// Why an address cannot cross the gateway.
///
/// The `Display` texts are short, ASCII, and echo no input, so they can serve as a SIP reason
/// phrase or an XMPP error `<text/>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The SIP user part is empty: a URI without a user names a host, not a person.
    #[error("empty user part")]
    EmptyUser,
    /// The user part starts or ends with a space; XEP-0106 §4.1 forbids `\20` at either end of
    /// an escaped localpart.
    #[error("user part starts or ends with a space")]
    EdgeSpace,
    /// The `gr` value holds control characters, which no resourcepart may contain.
    #[error("control character in gr parameter")]
    BadGruu,
    /// The JID has no localpart, so there is no SIP user to map it to.
    #[error("JID has no localpart")]
    NoLocalpart,
    /// After escaping, the result is still not a valid JID (too long, a character a
    /// localpart forbids, a bad domain, ...).
    #[error("not a valid JID: {0}")]
    Jid(#[from] JidError),
}

/// The XEP-0106 §3 escapes: each character and the two lower-case hex digits that follow the
/// backslash. The last row, the backslash itself, is used only in front of a sequence that
/// would otherwise read as an escape.
const ESCAPES: [(char, &str); 10] = [
    (' ', "20"),
    ('"', "22"),
    ('&', "26"),
    ('\'', "27"),
    ('/', "2f"),
    (':', "3a"),
    ('<', "3c"),
    ('>', "3e"),
    ('@', "40"),
    ('\\', "5c"),
];

/// XEP-0106 §3.2 escaping of a JID localpart, with the §4 business rules.
///
/// The nine characters a localpart may not contain (space `"` `&` `'` `/` `:` `<` `>` `@`)
/// become `\20 \22 \26 \27 \2f \3a \3c \3e \40`. A backslash becomes `\5c` only where it
/// starts one of the ten escape sequences (XEP-0106 §4.1 rule 7, §4.2 step 3:
/// `c:\5commas` becomes `c\3a\5c5commas`); anywhere else it is kept, as are partial or
/// unknown sequences (§4.3: `foo\bar` stays as it is). (The XEP's example table, §5.1 rows
/// 9-11, escapes every backslash, `c:\net` as `c\3a\5cnet`, against its own §4.3; this
/// follows §4.3, and [`unescape_node`] reads both forms back as `c:\net`.) The sequence
/// check ignores case, because a JID localpart is case-folded afterwards and `\2F` would
/// become the escape `\2f`.
///
/// This is the bare transformation: it does not enforce the §4.1 rule that `\20` may not begin
/// or end a localpart, nor length limits; [`jid_from_sip`] does.
pub fn escape_node(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 4);
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let mut ahead = chars.clone();
            if starts_escape_ignoring_case(ahead.next(), ahead.next()) {
                out.push_str("\\5c");
            } else {
                out.push('\\');
            }
            continue;
        }
        match ESCAPES.iter().find(|(from, _)| *from == c) {
            Some((_, hex)) => {
                out.push('\\');
                out.push_str(hex);
            }
            None => out.push(c),
        }
    }
    out
}

/// True when the two characters after a backslash spell one of the ten escape codes, in any
/// case.
fn starts_escape_ignoring_case(a: Option<char>, b: Option<char>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return false;
    };
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    ESCAPES.iter().any(|(_, hex)| {
        let mut h = hex.chars();
        h.next() == Some(a) && h.next() == Some(b)
    })
}

/// XEP-0106 §3.3 unescaping, the inverse of [`escape_node`].
///
/// Exactly the ten lower-case sequences `\20 \22 \26 \27 \2f \3a \3c \3e \40 \5c` are
/// replaced (the XEP makes case significant); every other backslash, partial sequence or
/// unknown code is left alone (§4.3: `\2plus\2is\4` and `foob\41r` are unchanged).
pub fn unescape_node(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some((before, after)) = rest.split_once('\\') {
        out.push_str(before);
        let decoded = after
            .get(..2)
            .and_then(|code| ESCAPES.iter().find(|(_, hex)| *hex == code));
        match (decoded, after.get(2..)) {
            (Some((c, _)), Some(tail)) => {
                out.push(*c);
                rest = tail;
            }
            _ => {
                out.push('\\');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Maps a SIP address to a JID (RFC 7247 §6.4).
///
/// `user` is the already percent-decoded user part (§6.4 steps 3-4), `host` the URI's host
/// and `gruu` the value of its `gr` parameter, if any. The user is XEP-0106-escaped (step 5:
/// `o'malley` becomes `o\27malley`), the JID is validated and normalised by [`Jid`] (step 6:
/// the domain and the localpart are lower-cased), and a `gr` value becomes the resourcepart
/// (step 8: `sip:foo@sip.example;gr=bar` becomes `foo@sip.example/bar`). An empty `gr`
/// value (`;gr` alone marks a temporary GRUU, RFC 5627) is ignored: §6.3 maps only
/// GRUUs tied to an address-of-record.
///
/// With `aol_email_form`, an AOL screen name that is an e-mail address, which AOL writes as
/// `user(gmail.com)` (`sip:user(gmail.com)@aol.com`), becomes the e-mail address again before
/// escaping, giving the node `user\40gmail.com`: local users then add the contact as
/// `user\40gmail.com@aol.com`. This applies only when the user has that exact shape (text,
/// `(`, a non-empty tail without `(`, `)` or `@`, `)`) and [`sip_from_jid`] maps the result
/// back to the same user.
pub fn jid_from_sip(
    user: &str,
    host: &str,
    gruu: Option<&str>,
    aol_email_form: bool,
) -> Result<Jid, AddressError> {
    if user.is_empty() {
        return Err(AddressError::EmptyUser);
    }
    let email = if aol_email_form {
        aol_to_email(user)
    } else {
        None
    };
    let source = email.as_deref().unwrap_or(user);
    if source.starts_with(' ') || source.ends_with(' ') {
        return Err(AddressError::EdgeSpace);
    }
    let bare = Jid::bare_from(&escape_node(source), host)?;
    match gruu {
        None | Some("") => Ok(bare),
        Some(gr) if gr.chars().any(char::is_control) => Err(AddressError::BadGruu),
        Some(gr) => Ok(bare.with_resource(gr)?),
    }
}

/// Maps a JID to a SIP address (RFC 7247 §6.5), the inverse of [`jid_from_sip`].
///
/// The localpart is XEP-0106-unescaped (§6.5 step 3: `m\26m` becomes `m&m`), the domain is
/// the host, and the resourcepart becomes the `gr` value (step 8: `baz@xmpp.example/qux`
/// becomes `sip:baz@xmpp.example;gr=qux`). Percent-encoding is left to
/// [`SipAddress::to_uri`] (step 5).
///
/// With `aol_email_form`, a localpart that unescapes to an e-mail address `a@b.c` becomes the
/// AOL form `a(b.c)`. For every JID that [`jid_from_sip`] produces, with the same flag, this
/// gives back the original user, host and `gr` value (up to the case folding of JIDs). Two
/// SIP users can share one JID, so not every user comes back unchanged: with the flag set,
/// both `a(b.c)` and `a@b.c` map to `a\40b.c`, which maps back to `a(b.c)`.
///
/// Fails only for a JID without a localpart (a server or component address).
pub fn sip_from_jid(jid: &Jid, aol_email_form: bool) -> Result<SipAddress, AddressError> {
    let node = jid.local().ok_or(AddressError::NoLocalpart)?;
    let user = unescape_node(node);
    let user = if aol_email_form {
        email_to_aol(&user).unwrap_or(user)
    } else {
        user
    };
    Ok(SipAddress {
        user,
        host: jid.domain().to_string(),
        gruu: jid.resource().map(str::to_string),
    })
}

/// `user(gmail.com)` → `user@gmail.com`, only when [`email_to_aol`] maps the result back.
fn aol_to_email(user: &str) -> Option<String> {
    let email = split_aol(user)?;
    (join_aol(&email).as_deref() == Some(user)).then_some(email)
}

/// `user@gmail.com` → `user(gmail.com)`, only when [`aol_to_email`] maps the result back.
fn email_to_aol(email: &str) -> Option<String> {
    let aol = join_aol(email)?;
    (split_aol(&aol).as_deref() == Some(email)).then_some(aol)
}

fn split_aol(user: &str) -> Option<String> {
    let (local, domain) = user.strip_suffix(')')?.rsplit_once('(')?;
    if local.is_empty() || domain.is_empty() || domain.contains(['(', ')', '@']) {
        return None;
    }
    Some(format!("{local}@{domain}"))
}

fn join_aol(email: &str) -> Option<String> {
    let (local, domain) = email.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains(['(', ')']) {
        return None;
    }
    Some(format!("{local}({domain})"))
}

/// RFC 3261 §25.1 `unreserved` = alphanum / mark.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// RFC 3261 §25.1 `user` characters: unreserved / user-unreserved.
fn is_user_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

/// RFC 3261 §25.1 `paramchar`: param-unreserved / unreserved.
fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

/// Appends `raw`, with every byte that `allowed` refuses written as `%XX` (upper-case hex,
/// RFC 3986 §2.1).
fn percent_encode_into(out: &mut String, raw: &str, allowed: fn(u8) -> bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in raw.as_bytes() {
        if allowed(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn jid(user: &str, host: &str) -> Jid {
        jid_from_sip(user, host, None, false).unwrap()
    }

    #[test]
    fn xep0106_table_examples() {
        // XEP-0106 §5.1, examples 1-12 (user input → escaped localpart).
        let cases = [
            ("space cadet", "space\\20cadet"),
            ("call me \"ishmael\"", "call\\20me\\20\\22ishmael\\22"),
            ("at&t guy", "at\\26t\\20guy"),
            ("d'artagnan", "d\\27artagnan"),
            ("/.fanboy", "\\2f.fanboy"),
            ("::foo::", "\\3a\\3afoo\\3a\\3a"),
            ("<foo>", "\\3cfoo\\3e"),
            ("user@host", "user\\40host"),
            ("c:\\5commas", "c\\3a\\5c5commas"),
        ];
        for (input, escaped) in cases {
            assert_eq!(escape_node(input), escaped, "{input}");
            assert_eq!(unescape_node(escaped), input, "{escaped}");
            let j = jid(input, "example.com");
            assert_eq!(j.to_string(), format!("{escaped}@example.com"));
            assert_eq!(sip_from_jid(&j, false).unwrap().user, input);
        }
        // Examples 9-11 escape every backslash, against the XEP's own §4.3 ("foo\bar is not
        // modified"); we follow §4.3, and the table's forms still unescape to the same input.
        let cases = [
            ("c:\\net", "c\\3a\\5cnet", "c\\3a\\net"),
            ("c:\\\\net", "c\\3a\\5c\\5cnet", "c\\3a\\\\net"),
            (
                "c:\\cool stuff",
                "c\\3a\\5ccool\\20stuff",
                "c\\3a\\cool\\20stuff",
            ),
        ];
        for (input, xep_form, ours) in cases {
            assert_eq!(escape_node(input), ours, "{input}");
            assert_eq!(unescape_node(ours), input, "{ours}");
            assert_eq!(unescape_node(xep_form), input, "{xep_form}");
            let j = Jid::parse(&format!("{xep_form}@example.com")).unwrap();
            assert_eq!(sip_from_jid(&j, false).unwrap().user, input);
        }
    }

    #[test]
    fn backslash_sequences() {
        // §4.3: partial and unknown sequences are never touched.
        for s in [
            "\\2plus\\2is\\4",
            "foo\\bar",
            "foob\\41r",
            "trailing\\",
            "\\",
        ] {
            assert_eq!(escape_node(s), s);
            assert_eq!(unescape_node(s), s);
        }
        // §4.2 step 3: the IMPS example.
        assert_eq!(escape_node("\\3and\\2is\\5cool"), "\\5c3and\\2is\\5c5cool");
        assert_eq!(
            unescape_node("\\5c3and\\2is\\5c5cool"),
            "\\3and\\2is\\5cool"
        );
        // "\5c" itself.
        assert_eq!(escape_node("\\5c"), "\\5c5c");
        assert_eq!(unescape_node("\\5c"), "\\");
        assert_eq!(unescape_node("\\5c5c"), "\\5c");
        // An upper-case sequence is escaped too: case folding would turn it into an escape.
        assert_eq!(escape_node("a\\2Fb"), "a\\5c2Fb");
        // Unescaping is case-sensitive.
        assert_eq!(unescape_node("a\\2Fb"), "a\\2Fb");
        // Non-ASCII right after a backslash.
        assert_eq!(escape_node("\\é\\"), "\\é\\");
        assert_eq!(unescape_node("\\é2"), "\\é2");
    }

    #[test]
    fn rfc7247_sip_to_xmpp_examples() {
        // RFC 7247 §6.4 (the user parts already percent-decoded).
        assert_eq!(jid("fü", "sip.example").to_string(), "fü@sip.example");
        assert_eq!(
            jid("o'malley", "sip.example").to_string(),
            "o\\27malley@sip.example"
        );
        let full = jid_from_sip("foo", "sip.example", Some("bar"), false).unwrap();
        assert_eq!(full.to_string(), "foo@sip.example/bar");
    }

    #[test]
    fn rfc7247_xmpp_to_sip_examples() {
        // RFC 7247 §6.5.
        let cases = [
            ("m\\26m@xmpp.example", "sip:m&m@xmpp.example"),
            ("tschüss@xmpp.example", "sip:tsch%C3%BCss@xmpp.example"),
            ("baz@xmpp.example/qux", "sip:baz@xmpp.example;gr=qux"),
        ];
        for (j, uri) in cases {
            let sip = sip_from_jid(&Jid::parse(j).unwrap(), false).unwrap();
            assert_eq!(sip.to_uri(), uri);
        }
    }

    #[test]
    fn to_uri_escapes_the_user() {
        let a = SipAddress {
            user: "alice smith".into(),
            host: "example.com".into(),
            gruu: None,
        };
        assert_eq!(a.to_uri(), "sip:alice%20smith@example.com");
        assert_eq!(a.aor(), a.to_uri());
        assert_eq!(a.to_string(), a.to_uri());
        let b = SipAddress {
            user: "a@b:c#d%e\"<>\\[]^`{|}".into(),
            host: "example.com".into(),
            gruu: Some("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6 x;y".into()),
        };
        assert_eq!(
            b.to_uri(),
            "sip:a%40b%3Ac%23d%25e%22%3C%3E%5C%5B%5D%5E%60%7B%7C%7D@example.com\
             ;gr=urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6%20x%3By"
        );
        assert_eq!(b.aor(), b.to_uri().split(";gr=").next().unwrap());
        // Everything RFC 3261 allows in a user part stays as it is.
        let c = SipAddress {
            user: "Az09-_.!~*'()&=+$,;?/".into(),
            host: "h".into(),
            gruu: None,
        };
        assert_eq!(c.to_uri(), "sip:Az09-_.!~*'()&=+$,;?/@h");
    }

    #[test]
    fn aol_email_form_both_ways() {
        let j = jid_from_sip("user(gmail.com)", "AOL.com", None, true).unwrap();
        assert_eq!(j.to_string(), "user\\40gmail.com@aol.com");
        let back = sip_from_jid(&j, true).unwrap();
        assert_eq!(back.to_uri(), "sip:user(gmail.com)@aol.com");
        // The local user adds the escaped form.
        let added = Jid::parse("user\\40gmail.com@aol.com").unwrap();
        assert_eq!(added, j);
        // Without the flag, the parentheses are ordinary localpart characters.
        let plain = jid_from_sip("user(gmail.com)", "aol.com", None, false).unwrap();
        assert_eq!(plain.to_string(), "user(gmail.com)@aol.com");
        assert_eq!(sip_from_jid(&j, false).unwrap().user, "user@gmail.com");
        // Shapes that are not an e-mail address stay as they are.
        for user in ["()", "(x)", "a()", "a(b", "a(b@c)", "a(b(c))"] {
            let j = jid_from_sip(user, "aol.com", None, true).unwrap();
            assert_eq!(sip_from_jid(&j, true).unwrap().user, user, "{user}");
        }
        // An '@' inside the screen name survives.
        let j = jid_from_sip("x@y(z.com)", "aol.com", None, true).unwrap();
        assert_eq!(j.local(), Some("x\\40y\\40z.com"));
        assert_eq!(sip_from_jid(&j, true).unwrap().user, "x@y(z.com)");
    }

    #[test]
    fn domain_is_lower_cased() {
        let j = jid("bob", "Example.COM");
        assert_eq!(j.domain(), "example.com");
        assert_eq!(sip_from_jid(&j, false).unwrap().host, "example.com");
    }

    #[test]
    fn gruu_and_resource() {
        let gr = "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
        let j = jid_from_sip("bob", "example.com", Some(gr), false).unwrap();
        assert_eq!(j.resource(), Some(gr));
        let sip = sip_from_jid(&j, false).unwrap();
        assert_eq!(sip.gruu.as_deref(), Some(gr));
        assert_eq!(sip.to_uri(), format!("sip:bob@example.com;gr={gr}"));
        assert_eq!(sip.aor(), "sip:bob@example.com");
        // Temporary GRUU (`;gr` without a value): no resource.
        let t = jid_from_sip("bob", "example.com", Some(""), false).unwrap();
        assert!(t.is_bare());
        // A resource may hold anything but control characters.
        assert_eq!(
            jid_from_sip("bob", "example.com", Some("a\u{7}b"), false),
            Err(AddressError::BadGruu)
        );
        let j = jid_from_sip("bob", "example.com", Some("phone/1 é"), false).unwrap();
        assert_eq!(
            sip_from_jid(&j, false).unwrap().to_uri(),
            "sip:bob@example.com;gr=phone/1%20%C3%A9"
        );
        assert!(matches!(
            jid_from_sip("bob", "example.com", Some(&"r".repeat(1024)), false),
            Err(AddressError::Jid(JidError::TooLong))
        ));
    }

    #[test]
    fn errors() {
        assert_eq!(
            jid_from_sip("", "example.com", None, false),
            Err(AddressError::EmptyUser)
        );
        assert_eq!(
            jid_from_sip(" bob", "example.com", None, false),
            Err(AddressError::EdgeSpace)
        );
        assert_eq!(
            jid_from_sip("bob ", "example.com", None, false),
            Err(AddressError::EdgeSpace)
        );
        // 1023 bytes is the limit, counted after escaping.
        assert!(jid_from_sip(&"a".repeat(1023), "example.com", None, false).is_ok());
        assert_eq!(
            jid_from_sip(&"a".repeat(1024), "example.com", None, false),
            Err(AddressError::Jid(JidError::TooLong))
        );
        assert_eq!(
            jid_from_sip(&"@".repeat(342), "example.com", None, false),
            Err(AddressError::Jid(JidError::TooLong))
        );
        // Characters XEP-0106 does not escape and a localpart forbids.
        assert!(matches!(
            jid_from_sip("a\tb", "example.com", None, false),
            Err(AddressError::Jid(JidError::BadLocalChar('\t')))
        ));
        assert!(matches!(
            jid_from_sip("a\u{a0}b", "example.com", None, false),
            Err(AddressError::Jid(JidError::BadLocalChar(_)))
        ));
        assert!(matches!(
            jid_from_sip("bob", "bad domain", None, false),
            Err(AddressError::Jid(JidError::BadDomain(_)))
        ));
        assert!(matches!(
            jid_from_sip("bob", "", None, false),
            Err(AddressError::Jid(JidError::EmptyDomain))
        ));
        assert_eq!(
            sip_from_jid(&Jid::parse("example.com").unwrap(), false),
            Err(AddressError::NoLocalpart)
        );
        // Display texts are safe reason phrases.
        for e in [
            AddressError::EmptyUser,
            AddressError::EdgeSpace,
            AddressError::BadGruu,
            AddressError::NoLocalpart,
            AddressError::Jid(JidError::TooLong),
        ] {
            let text = e.to_string();
            assert!(text.is_ascii() && !text.contains(['\r', '\n']), "{text}");
        }
    }

    #[test]
    fn case_folding() {
        let j = jid("Alice", "example.com");
        assert_eq!(j.local(), Some("alice"));
        assert_eq!(sip_from_jid(&j, false).unwrap().user, "alice");
    }

    /// Lower-case user parts (JIDs are case-folded), rich in escapable characters and
    /// backslash sequences, with no space at either end.
    fn user() -> impl Strategy<Value = String> {
        "[a-z0-9 \"&'/:<>@\\\\._()%+=,;?!~*$éß-]{1,60}".prop_filter("no edge space", |s| {
            !s.starts_with(' ') && !s.ends_with(' ')
        })
    }

    proptest! {
        #[test]
        fn escape_round_trips(s in any::<String>()) {
            prop_assert_eq!(unescape_node(&escape_node(&s)), s);
        }

        #[test]
        fn escaped_has_no_forbidden_chars(s in any::<String>()) {
            let e = escape_node(&s);
            prop_assert!(!e.contains(['"', '&', '\'', '/', ':', '<', '>', '@', ' ']));
        }

        #[test]
        fn unescape_never_panics(s in "[\\\\0-9a-fA-Fé]{0,40}") {
            let _ = unescape_node(&s);
            let _ = escape_node(&s);
        }

        #[test]
        fn sip_jid_sip(u in user(), gr in proptest::option::of("[a-zA-Z0-9:;/ é-]{1,30}")) {
            let j = jid_from_sip(&u, "Example.com", gr.as_deref(), false).unwrap();
            let back = sip_from_jid(&j, false).unwrap();
            prop_assert_eq!(&back.user, &u);
            prop_assert_eq!(back.host.as_str(), "example.com");
            prop_assert_eq!(back.gruu.as_deref(), gr.as_deref());
            // And the JID comes back identical.
            let again = jid_from_sip(&back.user, &back.host, back.gruu.as_deref(), false).unwrap();
            prop_assert_eq!(again, j);
        }

        #[test]
        fn aol_round_trip(local in "[a-z0-9._-]{1,20}", domain in "[a-z0-9.-]{1,20}") {
            let u = format!("{local}({domain})");
            let j = jid_from_sip(&u, "aol.com", None, true).unwrap();
            prop_assert_eq!(j.local().unwrap(), format!("{local}\\40{domain}"));
            prop_assert_eq!(sip_from_jid(&j, true).unwrap().user, u);
        }

        #[test]
        fn aol_flag_round_trip(u in user().prop_filter("no @", |s| !s.contains('@'))) {
            let j = jid_from_sip(&u, "aol.com", None, true).unwrap();
            prop_assert_eq!(sip_from_jid(&j, true).unwrap().user, u);
        }

        #[test]
        fn to_uri_is_well_formed(u in any::<String>(), gr in any::<String>()) {
            let a = SipAddress { user: u, host: "h".into(), gruu: Some(gr) };
            let uri = a.to_uri();
            let rest = uri.strip_prefix("sip:").unwrap();
            let (user, rest) = rest.split_once('@').unwrap();
            let gr = rest.strip_prefix("h;gr=").unwrap();
            prop_assert!(user.bytes().all(|b| is_user_char(b) || b == b'%' || b.is_ascii_hexdigit()));
            prop_assert!(gr.bytes().all(|b| is_param_char(b) || b == b'%'));
        }
    }
}
