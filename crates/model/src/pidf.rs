//! PIDF (RFC 3863) with RPID (RFC 4480) and the Microsoft availability number: parse and write.
//!
//! This module knows documents, not presence semantics: [`PidfDocument`] holds the parts of a
//! presence document Entente uses, [`PidfDocument::parse`] reads one from untrusted bytes and
//! [`PidfDocument::to_xml`] writes one. Turning a document into a canonical presence (and back)
//! is [`crate::availability::wire`]'s job.
//!
//! # What is read
//!
//! * `<presence entity=…>` (PIDF namespace) with its `<tuple>`s (`id`, `<status><basic>`,
//!   `<note>`s) and presence-level `<note>`s; RFC 4479 `<dm:person>`'s `<dm:note>`s.
//! * RPID `<activities>` and `<user-input>` (RFC 4480, `urn:ietf:params:xml:ns:pidf:rpid`)
//!   *anywhere* in the document (person, tuple, device), and the pre-RFC RPID form that older
//!   SIP servers (OCS among them) send: `urn:ietf:params:xml:ns:pidf:status:rpid-status`,
//!   `<ep:activities><ep:activity>away</ep:activity></ep:activities>`.
//! * The Microsoft availability number: any `<availability>` element in the namespace of the
//!   `state` category, `http://schemas.microsoft.com/2006/09/sip/state` (also the `https`
//!   spelling some Microsoft documentation uses), whether it sits in a PIDF document or in a bare
//!   msrtc `state` / `categories` document; an `aggregateState` instance wins over others. A
//!   `<custom>` activity text in that namespace is read as a note.
//! * Entente's own extension, `<ent:availability>` in [`ENTENTE_NS`], carrying the exact
//!   canonical state between Entente and its rich clients.
//!
//! # Safety on untrusted input
//!
//! Parsing never panics. The document size, nesting depth and element count are capped;
//! a DOCTYPE is refused (no entity expansion of any kind: only the five predefined entities and
//! character references are resolved); malformed XML, a root that is neither PIDF nor an msrtc
//! state document, and invalid values (`<basic>maybe</basic>`, a non-numeric availability, a bad
//! `last-input`) are errors.

use std::fmt::Write as _;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use crate::availability::{Availability, Timestamp};

/// PIDF namespace (RFC 3863).
pub const PIDF_NS: &str = "urn:ietf:params:xml:ns:pidf";
/// PIDF data model namespace (RFC 4479).
pub const DM_NS: &str = "urn:ietf:params:xml:ns:pidf:data-model";
/// RPID namespace (RFC 4480).
pub const RPID_NS: &str = "urn:ietf:params:xml:ns:pidf:rpid";
/// The pre-RFC RPID namespace (draft-ietf-simple-rpid), still sent by older servers.
pub const RPID_DRAFT_NS: &str = "urn:ietf:params:xml:ns:pidf:status:rpid-status";
/// Microsoft's presence `state` category namespace (OCS 2007, Lync).
pub const MS_STATE_NS: &str = "http://schemas.microsoft.com/2006/09/sip/state";
const MS_STATE_NS_HTTPS: &str = "https://schemas.microsoft.com/2006/09/sip/state";
/// Entente's private extension namespace: `<ent:availability>do-not-disturb</ent:availability>`.
pub const ENTENTE_NS: &str = "urn:entente:params:xml:ns:pidf:availability";

/// Largest document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// Deepest element nesting accepted.
pub const MAX_DEPTH: usize = 32;
/// Most elements accepted in one document.
pub const MAX_ELEMENTS: usize = 2048;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PidfError {
    /// Larger than [`MAX_DOCUMENT_BYTES`].
    #[error("presence document of {0} bytes exceeds the {MAX_DOCUMENT_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not well-formed XML.
    #[error("malformed XML: {0}")]
    Malformed(String),
    /// A DOCTYPE declaration (refused: no DTDs, no entity expansion).
    #[error("DOCTYPE declarations are not allowed")]
    Doctype,
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("elements nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// More than [`MAX_ELEMENTS`] elements.
    #[error("more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    /// Well-formed, but neither a PIDF `<presence/>` nor an msrtc state document.
    #[error("root element {0:?} is not a PIDF presence document")]
    NotPidf(String),
    /// `<presence>` without its required `entity` attribute.
    #[error("<presence> lacks the entity attribute")]
    MissingEntity,
    /// A value that the schema does not allow.
    #[error("invalid {what}: {value:?}")]
    InvalidValue {
        /// Which element or attribute.
        what: &'static str,
        /// The offending value (truncated).
        value: String,
    },
}

/// `<basic>` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Basic {
    /// `open`.
    Open,
    /// `closed`.
    Closed,
}

/// An RPID activity (RFC 4480 §3.2), the ones presence mapping cares about by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Activity {
    /// `<away/>`.
    Away,
    /// `<busy/>`.
    Busy,
    /// `<meeting/>`.
    Meeting,
    /// `<on-the-phone/>`.
    OnThePhone,
    /// `<appointment/>`.
    Appointment,
    /// `<vacation/>`.
    Vacation,
    /// `<holiday/>`.
    Holiday,
    /// `<permanent-absence/>`.
    PermanentAbsence,
    /// `<unknown/>`.
    Unknown,
    /// Any other activity, by element name (or `<other>` text).
    Other(String),
}

impl Activity {
    fn from_name(name: &str) -> Activity {
        match name.trim() {
            "away" => Activity::Away,
            "busy" => Activity::Busy,
            "meeting" => Activity::Meeting,
            "on-the-phone" => Activity::OnThePhone,
            "appointment" => Activity::Appointment,
            "vacation" => Activity::Vacation,
            "holiday" => Activity::Holiday,
            "permanent-absence" => Activity::PermanentAbsence,
            "unknown" => Activity::Unknown,
            other => Activity::Other(other.to_owned()),
        }
    }

    /// The RFC 4480 element name.
    pub fn name(&self) -> &str {
        match self {
            Activity::Away => "away",
            Activity::Busy => "busy",
            Activity::Meeting => "meeting",
            Activity::OnThePhone => "on-the-phone",
            Activity::Appointment => "appointment",
            Activity::Vacation => "vacation",
            Activity::Holiday => "holiday",
            Activity::PermanentAbsence => "permanent-absence",
            Activity::Unknown => "unknown",
            Activity::Other(s) => s,
        }
    }
}

/// RPID `<user-input>` (RFC 4480 §3.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserInput {
    /// `idle` (true) or `active` (false).
    pub idle: bool,
    /// `last-input` attribute.
    pub last_input: Option<Timestamp>,
}

/// A PIDF tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    /// `id` attribute.
    pub id: String,
    /// `<status><basic>`; `None` when absent (RFC 3863 allows a status without basic).
    pub basic: Option<Basic>,
    /// Tuple-level `<note>`s.
    pub notes: Vec<String>,
}

/// The parts of a presence document Entente reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PidfDocument {
    /// `entity` (a `pres:` or `sip:` URI); for an msrtc document, its `uri`, if any.
    pub entity: String,
    /// Tuples, in document order.
    pub tuples: Vec<Tuple>,
    /// Presence-level `<note>`s, then `<dm:note>`s and msrtc custom activity texts.
    pub notes: Vec<String>,
    /// RPID activities found anywhere (RFC 4480 and pre-RFC forms).
    pub activities: Vec<Activity>,
    /// RPID user input, the first found (an idle one wins over an active one).
    pub user_input: Option<UserInput>,
    /// The Microsoft availability number, if any.
    pub ms_availability: Option<u32>,
    /// Entente's exact state extension, if any (unknown tokens are ignored).
    pub entente_state: Option<Availability>,
}

/// A parsed element: namespace, local name, attributes (namespace, local, value), children, text.
#[derive(Debug, Default)]
struct Element {
    ns: Option<String>,
    name: String,
    attrs: Vec<(Option<String>, String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn is(&self, ns: &str, name: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.name == name
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(ns, n, _)| ns.is_none() && n == name)
            .map(|(_, _, v)| v.as_str())
    }

    fn descendants(&self) -> Vec<&Element> {
        let mut out = Vec::new();
        let mut stack: Vec<&Element> = self.children.iter().rev().collect();
        while let Some(e) = stack.pop() {
            out.push(e);
            stack.extend(e.children.iter().rev());
        }
        out
    }
}

fn owned_ns(r: &ResolveResult<'_>) -> Option<String> {
    match r {
        ResolveResult::Bound(ns) => Some(String::from_utf8_lossy(ns.0).into_owned()),
        _ => None,
    }
}

fn malformed(e: impl std::fmt::Display) -> PidfError {
    PidfError::Malformed(e.to_string())
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Reads `xml` into an element tree, enforcing the limits.
fn parse_tree(xml: &str) -> Result<Element, PidfError> {
    if xml.len() > MAX_DOCUMENT_BYTES {
        return Err(PidfError::TooLarge(xml.len()));
    }
    let mut reader = NsReader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(malformed)?;
        let ns = owned_ns(&ns);
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                if root.is_some() {
                    return Err(PidfError::Malformed(
                        "content after the root element".into(),
                    ));
                }
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(PidfError::TooManyElements);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(PidfError::TooDeep);
                }
                let mut el = Element {
                    ns,
                    name: String::from_utf8_lossy(start.local_name().as_ref()).into_owned(),
                    ..Element::default()
                };
                for attr in start.attributes() {
                    let attr = attr.map_err(malformed)?;
                    let (ans, local) = reader.resolve_attribute(attr.key);
                    let value = attr.unescape_value().map_err(malformed)?;
                    el.attrs.push((
                        owned_ns(&ans),
                        String::from_utf8_lossy(local.as_ref()).into_owned(),
                        value.into_owned(),
                    ));
                }
                if matches!(event, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => root = Some(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| PidfError::Malformed("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let text = t.xml10_content().map_err(malformed)?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(PidfError::Malformed("text outside the root".into())),
                }
            }
            Event::CData(t) => {
                let text = t.decode().map_err(malformed)?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&text),
                    None => return Err(PidfError::Malformed("CDATA outside the root".into())),
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(malformed)? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(malformed)?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| {
                                PidfError::Malformed(format!(
                                    "undeclared entity &{};",
                                    truncate(&name)
                                ))
                            })?
                            .to_owned()
                    }
                };
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&resolved),
                    None => return Err(PidfError::Malformed("reference outside the root".into())),
                }
            }
            Event::DocType(_) => return Err(PidfError::Doctype),
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(PidfError::Malformed("unexpected end of document".into()));
    }
    root.ok_or_else(|| PidfError::Malformed("no root element".into()))
}

impl PidfDocument {
    /// Parses a presence document from untrusted text. Never panics.
    pub fn parse(xml: &str) -> Result<PidfDocument, PidfError> {
        let root = parse_tree(xml)?;
        let all = root.descendants();
        let mut doc = PidfDocument::default();

        let is_pidf = root.is(PIDF_NS, "presence");
        if is_pidf {
            doc.entity = root
                .attr("entity")
                .map(str::to_owned)
                .ok_or(PidfError::MissingEntity)?;
            for child in &root.children {
                if child.is(PIDF_NS, "tuple") {
                    doc.tuples.push(read_tuple(child)?);
                } else if child.is(PIDF_NS, "note") {
                    push_note(&mut doc.notes, &child.text);
                }
            }
            for e in all.iter().filter(|e| e.is(DM_NS, "note")) {
                push_note(&mut doc.notes, &e.text);
            }
        } else {
            doc.entity = root.attr("uri").unwrap_or_default().to_owned();
        }

        // RPID, both namespaces, anywhere.
        for e in &all {
            if e.is(RPID_NS, "activities") {
                for a in &e.children {
                    match a.name.as_str() {
                        "note" | "until" => {}
                        "other" => doc
                            .activities
                            .push(Activity::Other(a.text.trim().to_owned())),
                        name => doc.activities.push(Activity::from_name(name)),
                    }
                }
            } else if e.is(RPID_DRAFT_NS, "activities") {
                for a in e
                    .children
                    .iter()
                    .filter(|a| a.is(RPID_DRAFT_NS, "activity"))
                {
                    doc.activities.push(Activity::from_name(&a.text));
                }
            } else if e.is(RPID_NS, "user-input") {
                let idle = match e.text.trim() {
                    "idle" => true,
                    "active" => false,
                    other => {
                        return Err(PidfError::InvalidValue {
                            what: "rpid:user-input",
                            value: truncate(other),
                        })
                    }
                };
                let last_input = e
                    .attr("last-input")
                    .map(|v| {
                        v.parse::<Timestamp>().map_err(|_| PidfError::InvalidValue {
                            what: "last-input",
                            value: truncate(v),
                        })
                    })
                    .transpose()?;
                let better = match doc.user_input {
                    None => true,
                    Some(prev) => idle && !prev.idle,
                };
                if better {
                    doc.user_input = Some(UserInput { idle, last_input });
                }
            } else if e.is(ENTENTE_NS, "availability") && doc.entente_state.is_none() {
                doc.entente_state = e.text.trim().parse::<Availability>().ok();
            }
        }

        // Microsoft availability: prefer the aggregateState instance.
        let ms_ns = |e: &Element| matches!(e.ns.as_deref(), Some(MS_STATE_NS | MS_STATE_NS_HTTPS));
        let mut states: Vec<&Element> = Vec::new();
        if ms_ns(&root) && root.name == "state" {
            states.push(&root);
        }
        states.extend(
            all.iter()
                .copied()
                .filter(|e| ms_ns(e) && e.name == "state"),
        );
        states.sort_by_key(|s| {
            !s.attrs
                .iter()
                .any(|(_, n, v)| n == "type" && v.ends_with("aggregateState"))
        });
        let candidates = states
            .iter()
            .flat_map(|s| s.children.iter())
            .chain(all.iter().copied())
            .filter(|e| ms_ns(e) && e.name == "availability");
        if let Some(e) = candidates.into_iter().next() {
            let v = e.text.trim();
            doc.ms_availability = Some(v.parse::<u32>().map_err(|_| PidfError::InvalidValue {
                what: "availability",
                value: truncate(v),
            })?);
        }
        for s in &states {
            for act in s
                .children
                .iter()
                .filter(|c| ms_ns(c) && c.name == "activity")
            {
                for custom in act
                    .children
                    .iter()
                    .filter(|c| ms_ns(c) && c.name == "custom")
                {
                    push_note(&mut doc.notes, &custom.text);
                }
            }
        }

        if !is_pidf && doc.ms_availability.is_none() {
            return Err(PidfError::NotPidf(truncate(&root.name)));
        }
        Ok(doc)
    }

    /// Whether any tuple is `open`.
    pub fn is_open(&self) -> bool {
        self.tuples.iter().any(|t| t.basic == Some(Basic::Open))
    }

    /// The first note: presence-level or person notes first, then the first open tuple's, then
    /// any tuple's.
    pub fn first_note(&self) -> Option<&str> {
        self.notes
            .first()
            .or_else(|| {
                self.tuples
                    .iter()
                    .filter(|t| t.basic == Some(Basic::Open))
                    .chain(self.tuples.iter())
                    .find_map(|t| t.notes.first())
            })
            .map(String::as_str)
    }

    /// Writes the document. Layout (RFC 3863 order: tuples, notes, extensions):
    ///
    /// ```xml
    /// <?xml version="1.0" encoding="UTF-8"?>
    /// <presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="…" xmlns:rpid="…"
    ///           xmlns:st="http://schemas.microsoft.com/2006/09/sip/state" entity="sip:a@example.com">
    ///   <tuple id="t0"><status><basic>open</basic></status></tuple>
    ///   <note>In a call</note>
    ///   <dm:person id="p0">
    ///     <rpid:activities><rpid:busy/></rpid:activities>
    ///     <rpid:user-input last-input="2026-11-03T08:15:00Z">idle</rpid:user-input>
    ///     <st:availability>6500</st:availability>
    ///     <ent:availability>busy</ent:availability>
    ///   </dm:person>
    /// </presence>
    /// ```
    ///
    /// Namespace declarations and the `<dm:person>` appear only when something needs them.
    pub fn to_xml(&self) -> String {
        use quick_xml::escape::escape;
        let has_person = !self.activities.is_empty()
            || self.user_input.is_some()
            || self.ms_availability.is_some()
            || self.entente_state.is_some();
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        // `write!` to a String cannot fail.
        let _ = write!(s, "<presence xmlns=\"{PIDF_NS}\"");
        if has_person {
            let _ = write!(s, " xmlns:dm=\"{DM_NS}\"");
        }
        if !self.activities.is_empty() || self.user_input.is_some() {
            let _ = write!(s, " xmlns:rpid=\"{RPID_NS}\"");
        }
        if self.ms_availability.is_some() {
            let _ = write!(s, " xmlns:st=\"{MS_STATE_NS}\"");
        }
        if self.entente_state.is_some() {
            let _ = write!(s, " xmlns:ent=\"{ENTENTE_NS}\"");
        }
        let _ = writeln!(s, " entity=\"{}\">", escape(self.entity.as_str()));
        for t in &self.tuples {
            let _ = write!(s, "  <tuple id=\"{}\"><status>", escape(t.id.as_str()));
            match t.basic {
                Some(Basic::Open) => s.push_str("<basic>open</basic>"),
                Some(Basic::Closed) => s.push_str("<basic>closed</basic>"),
                None => {}
            }
            s.push_str("</status>");
            for n in &t.notes {
                let _ = write!(s, "<note>{}</note>", escape(n.as_str()));
            }
            s.push_str("</tuple>\n");
        }
        for n in &self.notes {
            let _ = writeln!(s, "  <note>{}</note>", escape(n.as_str()));
        }
        if has_person {
            s.push_str("  <dm:person id=\"p0\">\n");
            if !self.activities.is_empty() {
                s.push_str("    <rpid:activities>");
                for a in &self.activities {
                    match a {
                        Activity::Other(text) => {
                            let _ = write!(s, "<rpid:other>{}</rpid:other>", escape(text.as_str()));
                        }
                        a => {
                            let _ = write!(s, "<rpid:{}/>", a.name());
                        }
                    }
                }
                s.push_str("</rpid:activities>\n");
            }
            if let Some(u) = self.user_input {
                s.push_str("    <rpid:user-input");
                if let Some(t) = u.last_input {
                    let _ = write!(s, " last-input=\"{t}\"");
                }
                let _ = writeln!(
                    s,
                    ">{}</rpid:user-input>",
                    if u.idle { "idle" } else { "active" }
                );
            }
            if let Some(n) = self.ms_availability {
                let _ = writeln!(s, "    <st:availability>{n}</st:availability>");
            }
            if let Some(a) = self.entente_state {
                let _ = writeln!(s, "    <ent:availability>{}</ent:availability>", a.token());
            }
            s.push_str("  </dm:person>\n");
        }
        s.push_str("</presence>\n");
        s
    }
}

fn push_note(notes: &mut Vec<String>, text: &str) {
    if !text.trim().is_empty() {
        notes.push(text.to_owned());
    }
}

fn read_tuple(t: &Element) -> Result<Tuple, PidfError> {
    let mut tuple = Tuple {
        id: t.attr("id").unwrap_or_default().to_owned(),
        basic: None,
        notes: Vec::new(),
    };
    for c in &t.children {
        if c.is(PIDF_NS, "status") {
            for b in c.children.iter().filter(|b| b.is(PIDF_NS, "basic")) {
                tuple.basic = Some(match b.text.trim() {
                    "open" => Basic::Open,
                    "closed" => Basic::Closed,
                    other => {
                        return Err(PidfError::InvalidValue {
                            what: "basic",
                            value: truncate(other),
                        })
                    }
                });
            }
        } else if c.is(PIDF_NS, "note") {
            push_note(&mut tuple.notes, &c.text);
        }
    }
    Ok(tuple)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back() {
        let doc = PidfDocument {
            entity: "sip:alice@example.com".into(),
            tuples: vec![Tuple {
                id: "t0".into(),
                basic: Some(Basic::Open),
                notes: vec![],
            }],
            notes: vec!["Fish & <chips>".into()],
            activities: vec![Activity::Busy, Activity::Other("golf".into())],
            user_input: Some(UserInput {
                idle: true,
                last_input: Some(Timestamp::from_unix(1_700_000_000)),
            }),
            ms_availability: Some(6500),
            entente_state: Some(Availability::Busy),
        };
        let xml = doc.to_xml();
        assert_eq!(PidfDocument::parse(&xml).unwrap(), doc);
    }

    #[test]
    fn reads_old_rpid_and_msrtc_state() {
        let xml = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf"
            xmlns:ep="urn:ietf:params:xml:ns:pidf:status:rpid-status" entity="sip:bob@ocs.example">
            <tuple id="x"><status><basic>open</basic>
              <ep:activities><ep:activity>away</ep:activity></ep:activities></status>
              <note>Out &amp; about &#x263A;</note></tuple></presence>"#;
        let doc = PidfDocument::parse(xml).unwrap();
        assert_eq!(doc.activities, vec![Activity::Away]);
        assert_eq!(doc.first_note(), Some("Out & about \u{263A}"));

        let state = r#"<state xmlns="http://schemas.microsoft.com/2006/09/sip/state"
            xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="aggregateState">
            <availability>15500</availability>
            <activity><custom LCID="1033">Out of office until next week</custom></activity></state>"#;
        let doc = PidfDocument::parse(state).unwrap();
        assert_eq!(doc.ms_availability, Some(15500));
        assert_eq!(doc.first_note(), Some("Out of office until next week"));
    }

    #[test]
    fn refuses_bad_input() {
        type Check = fn(&PidfError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, PidfError::Malformed(_))),
            ("<presence", |e| matches!(e, PidfError::Malformed(_))),
            (
                "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'></tuple>",
                |e| matches!(e, PidfError::Malformed(_)),
            ),
            (
                "<!DOCTYPE lol [<!ENTITY a 'aaaa'>]><presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'>&a;</presence>",
                |e| matches!(e, PidfError::Doctype),
            ),
            (
                "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'><note>&a;</note></presence>",
                |e| matches!(e, PidfError::Malformed(_)),
            ),
            ("<html/>", |e| matches!(e, PidfError::NotPidf(_))),
            (
                "<presence xmlns='urn:ietf:params:xml:ns:pidf'/>",
                |e| matches!(e, PidfError::MissingEntity),
            ),
            (
                "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'><tuple id='a'><status><basic>maybe</basic></status></tuple></presence>",
                |e| matches!(e, PidfError::InvalidValue { what: "basic", .. }),
            ),
            (
                "<presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:st='http://schemas.microsoft.com/2006/09/sip/state' entity='x'><st:availability>lots</st:availability></presence>",
                |e| matches!(e, PidfError::InvalidValue { what: "availability", .. }),
            ),
            (
                "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'/><presence xmlns='urn:ietf:params:xml:ns:pidf' entity='y'/>",
                |e| matches!(e, PidfError::Malformed(_)),
            ),
        ];
        for (xml, ok) in cases {
            let err = PidfDocument::parse(xml).unwrap_err();
            assert!(ok(&err), "{xml}: {err:?}");
        }
        let deep = format!(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'>{}{}</presence>",
            "<a>".repeat(MAX_DEPTH),
            "</a>".repeat(MAX_DEPTH)
        );
        assert_eq!(PidfDocument::parse(&deep), Err(PidfError::TooDeep));
        let big = "x".repeat(MAX_DOCUMENT_BYTES + 1);
        assert!(matches!(
            PidfDocument::parse(&big),
            Err(PidfError::TooLarge(_))
        ));
    }
}
