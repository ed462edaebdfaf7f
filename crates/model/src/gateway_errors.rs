//! Errors crossing the SIP-XMPP gateway (RFC 7247 §7).
//!
//! RFC 7247 §7 ("Error Mapping") gives two tables: XMPP defined conditions to SIP response
//! codes (§7.1, Table 2) and SIP response codes to XMPP conditions (§7.2, Table 3), with
//! class-wide fallbacks for codes the table does not list. The tables here are transcribed from
//! the text of draft-ietf-stox-core-11, the last draft before RFC 7247 (same sections: §6
//! addresses, §7 errors). RFC 7572 (SIP-XMPP instant messaging) defines no error mapping of
//! its own and refers to RFC 7247.
//!
//! The RFC calls the mapping "more of an art than a science" and lets gateways deviate. Where a
//! table row offers a choice, the functions below take the one documented on each function.
//!
//! Stanza error *types* come from RFC 6120 §8.3.3, which names the usual type of each defined
//! condition ([`xmpp_error_type`]).

/// The 22 defined stanza error conditions of RFC 6120 §8.3.3, each with the error type that
/// section recommends for it.
const CONDITIONS: [(&str, &str); 22] = [
    ("bad-request", "modify"),
    ("conflict", "cancel"),
    ("feature-not-implemented", "cancel"),
    ("forbidden", "auth"),
    ("gone", "cancel"),
    ("internal-server-error", "cancel"),
    ("item-not-found", "cancel"),
    ("jid-malformed", "modify"),
    ("not-acceptable", "modify"),
    ("not-allowed", "cancel"),
    ("not-authorized", "auth"),
    ("policy-violation", "modify"),
    ("recipient-unavailable", "wait"),
    ("redirect", "modify"),
    ("registration-required", "auth"),
    ("remote-server-not-found", "cancel"),
    ("remote-server-timeout", "wait"),
    ("resource-constraint", "wait"),
    ("service-unavailable", "cancel"),
    ("subscription-required", "auth"),
    ("undefined-condition", "cancel"),
    ("unexpected-request", "wait"),
];

/// RFC 7247 §7.2, Table 3: the SIP response codes listed individually.
const SIP_TO_XMPP: [(u16, &str); 48] = [
    (300, "redirect"),
    (301, "gone"),
    (302, "redirect"),
    (305, "redirect"),
    (380, "not-acceptable"),
    (400, "bad-request"),
    (401, "not-authorized"),
    (402, "bad-request"),
    (403, "forbidden"),
    (404, "item-not-found"),
    (405, "feature-not-implemented"),
    (406, "not-acceptable"),
    (407, "registration-required"),
    (408, "remote-server-timeout"),
    (410, "gone"),
    (413, "policy-violation"),
    (414, "policy-violation"),
    (415, "not-acceptable"),
    (416, "not-acceptable"),
    (420, "feature-not-implemented"),
    (421, "not-acceptable"),
    (423, "resource-constraint"),
    (430, "recipient-unavailable"),
    (439, "feature-not-implemented"),
    (440, "policy-violation"),
    (480, "recipient-unavailable"),
    (481, "item-not-found"),
    (482, "not-acceptable"),
    (483, "not-acceptable"),
    (484, "item-not-found"),
    (485, "item-not-found"),
    (486, "recipient-unavailable"),
    (487, "recipient-unavailable"),
    (488, "not-acceptable"),
    (489, "policy-violation"),
    (491, "unexpected-request"),
    (493, "bad-request"),
    (500, "internal-server-error"),
    (501, "feature-not-implemented"),
    (502, "remote-server-not-found"),
    (503, "internal-server-error"),
    (504, "remote-server-timeout"),
    (505, "not-acceptable"),
    (513, "policy-violation"),
    (600, "recipient-unavailable"),
    (603, "recipient-unavailable"),
    (604, "item-not-found"),
    (606, "not-acceptable"),
];

/// RFC 7247 §7.1, Table 2: (condition, code for a full JID, code for a bare JID). The two
/// codes differ only where the table offers a 4xx/6xx choice (its notes 1 and 2).
const XMPP_TO_SIP: [(&str, u16, u16); 22] = [
    ("bad-request", 400, 400),
    ("conflict", 400, 400),
    ("feature-not-implemented", 405, 501),
    ("forbidden", 403, 603),
    ("gone", 410, 410),
    ("internal-server-error", 500, 500),
    ("item-not-found", 404, 604),
    ("jid-malformed", 400, 400),
    ("not-acceptable", 406, 606),
    ("not-allowed", 403, 403),
    ("not-authorized", 401, 401),
    ("policy-violation", 403, 403),
    ("recipient-unavailable", 480, 600),
    ("redirect", 302, 302),
    ("registration-required", 407, 407),
    ("remote-server-not-found", 404, 404),
    ("remote-server-timeout", 408, 408),
    ("resource-constraint", 500, 500),
    ("service-unavailable", 403, 403),
    ("subscription-required", 400, 400),
    ("undefined-condition", 400, 400),
    ("unexpected-request", 400, 400),
];

/// XMPP stanza error (type, defined condition) for a SIP final response code >= 300 (RFC 7247
/// §7.2, Table 3).
///
/// Codes the table lists map as it says (`404` → `item-not-found`, `486` →
/// `recipient-unavailable`, `503` → `internal-server-error`: the RFC's note 9 declines
/// `service-unavailable` for 503, whose SIP meaning is "this whole server"). Other codes take
/// their class's fallback from the same section: 3xx → `redirect`, 4xx → `bad-request`, 5xx →
/// `internal-server-error`, 6xx → `recipient-unavailable`. Anything outside 300..=699 (not a
/// failure, or not a SIP code) gives `undefined-condition`.
///
/// The type is the one RFC 6120 §8.3.3 gives the condition ([`xmpp_error_type`]).
///
/// The caller adds what the condition needs: for `301` → `gone` and for `3xx` → `redirect`
/// the new address (the response's Contact) as the element's character data (RFC 7247 §7.2
/// note 1, RFC 6120 §8.3.3.5 and §8.3.3.14); for `410` → `gone`, no address. The SIP reason
/// phrase may go into the error's `<text/>` (RFC 7247 §7).
pub fn xmpp_error_for_sip(status: u16) -> (&'static str, &'static str) {
    let condition = SIP_TO_XMPP
        .iter()
        .find(|(code, _)| *code == status)
        .map(|(_, condition)| *condition)
        .unwrap_or(match status {
            300..=399 => "redirect",
            400..=499 => "bad-request",
            500..=599 => "internal-server-error",
            600..=699 => "recipient-unavailable",
            _ => "undefined-condition",
        });
    (xmpp_error_type(condition), condition)
}

/// SIP response code for an XMPP defined condition (RFC 7247 §7.1, Table 2), for an error
/// about a full JID: the 4xx codes.
///
/// Same as [`sip_status_for_xmpp_at`] with `to_bare_jid = false`; see there for the choices
/// made where the table offers two codes. Unknown conditions give `500`.
pub fn sip_status_for_xmpp(condition: &str) -> u16 {
    sip_status_for_xmpp_at(condition, false)
}

/// SIP response code for an XMPP defined condition (RFC 7247 §7.1, Table 2), choosing
/// between the table's 4xx and 6xx codes by the JID the error is about.
///
/// With `to_bare_jid` (the error concerns `localpart@domainpart`, that is every device of the
/// user) the table's notes 1 and 2 recommend `feature-not-implemented` → `501`, `forbidden` →
/// `603`, `item-not-found` → `604`, `not-acceptable` → `606` and `recipient-unavailable` →
/// `600`; for a full JID, `405`, `403`, `404`, `406` and `480`. The other choices, the same in
/// both cases:
///
/// - `gone` → `410`; `301` only when the `<gone/>` element names a new address, which the
///   caller then puts in a Contact header (note 3).
/// - `remote-server-not-found` → `404` (the server does not exist); the table allows `408`
///   when it merely cannot be resolved (note 4).
/// - `service-unavailable` → `403`: note 5 says `503` is NOT RECOMMENDED, since SIP reads it
///   as the whole server being unusable, and names `403` and `405` as closest.
/// - `unexpected-request` → `400`: the table allows `491`, but `491 Request Pending` (RFC
///   3261 §21.4.27) means a request pending in the same dialog, which gateway traffic rarely
///   is.
/// - A condition that is not one of RFC 6120's 22 (a typo, a future condition) gives `500`:
///   the RFC has no row for it, and the failure is not the SIP sender's.
///
/// Some codes require headers (RFC 3261 §21): `401` a WWW-Authenticate, `405` an Allow, `407`
/// a Proxy-Authenticate. A gateway that cannot supply them answers the generic code of the
/// class instead (`400`), as RFC 7247 §7 leaves it free to.
pub fn sip_status_for_xmpp_at(condition: &str, to_bare_jid: bool) -> u16 {
    XMPP_TO_SIP
        .iter()
        .find(|(c, _, _)| *c == condition)
        .map(|(_, full, bare)| if to_bare_jid { *bare } else { *full })
        .unwrap_or(500)
}

/// The stanza error type RFC 6120 §8.3.3 gives a defined condition: `cancel`, `wait`,
/// `modify` or `auth`. Unknown conditions give `cancel` (do not retry).
///
/// Where RFC 6120 offers two (`policy-violation`: modify or wait; `unexpected-request`: wait
/// or modify), the first is used.
pub fn xmpp_error_type(condition: &str) -> &'static str {
    CONDITIONS
        .iter()
        .find(|(c, _)| *c == condition)
        .map(|(_, t)| *t)
        .unwrap_or("cancel")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sip_row() {
        // RFC 7247 Table 3, row by row, with RFC 6120 types.
        let table: [(u16, &str, &str); 48] = [
            (300, "modify", "redirect"),
            (301, "cancel", "gone"),
            (302, "modify", "redirect"),
            (305, "modify", "redirect"),
            (380, "modify", "not-acceptable"),
            (400, "modify", "bad-request"),
            (401, "auth", "not-authorized"),
            (402, "modify", "bad-request"),
            (403, "auth", "forbidden"),
            (404, "cancel", "item-not-found"),
            (405, "cancel", "feature-not-implemented"),
            (406, "modify", "not-acceptable"),
            (407, "auth", "registration-required"),
            (408, "wait", "remote-server-timeout"),
            (410, "cancel", "gone"),
            (413, "modify", "policy-violation"),
            (414, "modify", "policy-violation"),
            (415, "modify", "not-acceptable"),
            (416, "modify", "not-acceptable"),
            (420, "cancel", "feature-not-implemented"),
            (421, "modify", "not-acceptable"),
            (423, "wait", "resource-constraint"),
            (430, "wait", "recipient-unavailable"),
            (439, "cancel", "feature-not-implemented"),
            (440, "modify", "policy-violation"),
            (480, "wait", "recipient-unavailable"),
            (481, "cancel", "item-not-found"),
            (482, "modify", "not-acceptable"),
            (483, "modify", "not-acceptable"),
            (484, "cancel", "item-not-found"),
            (485, "cancel", "item-not-found"),
            (486, "wait", "recipient-unavailable"),
            (487, "wait", "recipient-unavailable"),
            (488, "modify", "not-acceptable"),
            (489, "modify", "policy-violation"),
            (491, "wait", "unexpected-request"),
            (493, "modify", "bad-request"),
            (500, "cancel", "internal-server-error"),
            (501, "cancel", "feature-not-implemented"),
            (502, "cancel", "remote-server-not-found"),
            (503, "cancel", "internal-server-error"),
            (504, "wait", "remote-server-timeout"),
            (505, "modify", "not-acceptable"),
            (513, "modify", "policy-violation"),
            (600, "wait", "recipient-unavailable"),
            (603, "wait", "recipient-unavailable"),
            (604, "cancel", "item-not-found"),
            (606, "modify", "not-acceptable"),
        ];
        for (code, ty, condition) in table {
            assert_eq!(xmpp_error_for_sip(code), (ty, condition), "{code}");
        }
    }

    #[test]
    fn class_fallbacks() {
        let table = [
            (303, "modify", "redirect"),
            (399, "modify", "redirect"),
            (409, "modify", "bad-request"),
            (422, "modify", "bad-request"),
            (499, "modify", "bad-request"),
            (580, "cancel", "internal-server-error"),
            (599, "cancel", "internal-server-error"),
            (601, "wait", "recipient-unavailable"),
            (699, "wait", "recipient-unavailable"),
            (0, "cancel", "undefined-condition"),
            (100, "cancel", "undefined-condition"),
            (200, "cancel", "undefined-condition"),
            (299, "cancel", "undefined-condition"),
            (700, "cancel", "undefined-condition"),
            (u16::MAX, "cancel", "undefined-condition"),
        ];
        for (code, ty, condition) in table {
            assert_eq!(xmpp_error_for_sip(code), (ty, condition), "{code}");
        }
    }

    #[test]
    fn every_xmpp_row() {
        // RFC 7247 Table 2: (condition, full JID, bare JID).
        let table = [
            ("bad-request", 400, 400),
            ("conflict", 400, 400),
            ("feature-not-implemented", 405, 501),
            ("forbidden", 403, 603),
            ("gone", 410, 410),
            ("internal-server-error", 500, 500),
            ("item-not-found", 404, 604),
            ("jid-malformed", 400, 400),
            ("not-acceptable", 406, 606),
            ("not-allowed", 403, 403),
            ("not-authorized", 401, 401),
            ("policy-violation", 403, 403),
            ("recipient-unavailable", 480, 600),
            ("redirect", 302, 302),
            ("registration-required", 407, 407),
            ("remote-server-not-found", 404, 404),
            ("remote-server-timeout", 408, 408),
            ("resource-constraint", 500, 500),
            ("service-unavailable", 403, 403),
            ("subscription-required", 400, 400),
            ("undefined-condition", 400, 400),
            ("unexpected-request", 400, 400),
        ];
        assert_eq!(table.len(), CONDITIONS.len());
        for (condition, full, bare) in table {
            assert_eq!(sip_status_for_xmpp(condition), full, "{condition}");
            assert_eq!(
                sip_status_for_xmpp_at(condition, false),
                full,
                "{condition}"
            );
            assert_eq!(sip_status_for_xmpp_at(condition, true), bare, "{condition}");
        }
    }

    #[test]
    fn unknown_conditions() {
        for c in [
            "",
            "payment-required",
            "Item-Not-Found",
            "item-not-found ",
            "x",
        ] {
            assert_eq!(sip_status_for_xmpp(c), 500, "{c:?}");
            assert_eq!(sip_status_for_xmpp_at(c, true), 500, "{c:?}");
            assert_eq!(xmpp_error_type(c), "cancel", "{c:?}");
        }
    }

    #[test]
    fn every_condition_has_a_type() {
        let types: Vec<_> = CONDITIONS.iter().map(|(c, _)| xmpp_error_type(c)).collect();
        assert!(types
            .iter()
            .all(|t| ["cancel", "wait", "modify", "auth"].contains(t)));
        assert_eq!(xmpp_error_type("forbidden"), "auth");
        assert_eq!(xmpp_error_type("recipient-unavailable"), "wait");
        assert_eq!(xmpp_error_type("jid-malformed"), "modify");
        assert_eq!(xmpp_error_type("item-not-found"), "cancel");
    }

    #[test]
    fn tables_are_consistent() {
        // Every condition a SIP code maps to is an RFC 6120 condition that maps back to a
        // failure code, and every SIP code the XMPP table produces is a final failure.
        for code in 0..=u16::MAX {
            let (_, condition) = xmpp_error_for_sip(code);
            assert!(CONDITIONS.iter().any(|(c, _)| *c == condition), "{code}");
            let back = sip_status_for_xmpp(condition);
            assert!(
                (300..=699).contains(&back),
                "{code} -> {condition} -> {back}"
            );
        }
        for (condition, full, bare) in XMPP_TO_SIP {
            assert!(CONDITIONS.iter().any(|(c, _)| *c == condition));
            assert!((300..=699).contains(&full) && (300..=699).contains(&bare));
        }
        // No code is listed twice.
        for (i, (code, _)) in SIP_TO_XMPP.iter().enumerate() {
            assert!(SIP_TO_XMPP.iter().skip(i + 1).all(|(c, _)| c != code));
        }
    }
}
