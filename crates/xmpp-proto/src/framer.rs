//! XML stream framing with limits.
//!
//! [`XmlStream`] takes the bytes of one XML stream (RFC 6120 §4) as they arrive and hands out the
//! stream header, one [`Element`] per complete top-level stanza, and the stream end. It is built
//! on `rxml`, which refuses DTDs, processing instructions and undeclared entities outright, so a
//! billion-laughs document never expands. On top of that it enforces a maximum stanza size
//! (counted in input bytes) and a maximum element depth.

use rxml::error::EndOrError;
use rxml::{Event, Parse, Parser, WithOptions};

use crate::element::{Element, Node, NS_XML};

/// Limits applied while parsing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest stanza, in bytes of input.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting inside a stanza (the stanza itself is depth 1).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
        }
    }
}

/// What the stream produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The `<stream:stream>` opening tag (as an element without children).
    Header(Element),
    /// A complete top-level element.
    Stanza(Element),
    /// `</stream:stream>`.
    End,
}

/// Why the stream cannot go on; each maps to an RFC 6120 stream error condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    #[error("restricted XML: {0}")]
    RestrictedXml(String),
    #[error("stanza larger than {0} bytes")]
    StanzaTooLarge(usize),
    #[error("elements nested deeper than {0}")]
    TooDeep(usize),
    #[error("the stream root is not <stream:stream>")]
    BadRoot,
}

impl FrameError {
    /// The RFC 6120 §4.9.3 condition for this error.
    pub fn condition(&self) -> crate::StreamErrorCondition {
        use crate::StreamErrorCondition as C;
        match self {
            FrameError::NotWellFormed(_) => C::NotWellFormed,
            FrameError::RestrictedXml(_) => C::RestrictedXml,
            FrameError::StanzaTooLarge(_) | FrameError::TooDeep(_) => C::PolicyViolation,
            FrameError::BadRoot => C::InvalidNamespace,
        }
    }
}

pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";

/// An incremental parser for one XML stream.
pub struct XmlStream {
    parser: Parser,
    limits: Limits,
    /// Elements opened inside the current stanza; `stack[0]` is the stanza.
    stack: Vec<Element>,
    /// Input bytes of the stanza being built.
    stanza_bytes: usize,
    header_seen: bool,
    ended: bool,
    failed: Option<FrameError>,
}

impl XmlStream {
    pub fn new(limits: Limits) -> XmlStream {
        let opts = rxml::Options {
            // A single token longer than a whole stanza may be is rejected by the lexer itself,
            // before it buffers more.
            max_token_length: limits.max_stanza_bytes.max(1024),
            ..Default::default()
        };
        XmlStream {
            parser: Parser::with_options(opts),
            limits,
            stack: Vec::new(),
            stanza_bytes: 0,
            header_seen: false,
            ended: false,
            failed: None,
        }
    }

    /// True once `</stream:stream>` was read.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Feeds bytes; complete events are appended to `out`. After an error, every call returns it.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        while !self.ended {
            match self.parser.parse(&mut data, false) {
                Ok(Some(ev)) => {
                    if let Err(e) = self.handle(ev, out) {
                        self.failed = Some(e.clone());
                        return Err(e);
                    }
                }
                Ok(None) => break,
                Err(EndOrError::NeedMoreData) => {
                    if data.is_empty() {
                        break;
                    }
                }
                Err(EndOrError::Error(e)) => {
                    let err = map_rxml_error(e);
                    self.failed = Some(err.clone());
                    return Err(err);
                }
            }
        }
        // The parser buffers at most one token; the check covers a stanza that is still growing.
        if self.stanza_bytes > self.limits.max_stanza_bytes {
            let e = FrameError::StanzaTooLarge(self.limits.max_stanza_bytes);
            self.failed = Some(e.clone());
            return Err(e);
        }
        if self.stack.is_empty() {
            self.release_buffers();
        }
        Ok(())
    }

    /// Frees the buffers kept between stanzas. rxml reserves `max_token_length` bytes (here the
    /// whole stanza limit, 256 KiB by default) for its token buffer as soon as it reads a token
    /// and keeps that capacity; on an idle connection that is dead weight (a few touched pages of
    /// resident memory per connection, and 256 KiB of address space), so it is given back
    /// whenever the stream is between stanzas. What a partial token holds is kept.
    fn release_buffers(&mut self) {
        self.parser.release_temporaries();
        self.stack = Vec::new();
    }

    fn handle(&mut self, ev: Event, out: &mut Vec<StreamEvent>) -> Result<(), FrameError> {
        let len = ev.metrics().len();
        match ev {
            Event::XmlDeclaration(..) => {}
            Event::StartElement(_, (ns, name), attrs) => {
                let mut el = Element::new(name.as_str(), ns.as_str());
                for ((ans, aname), value) in attrs.into_iter() {
                    let key = if ans.is_empty() {
                        aname.to_string()
                    } else if ans.as_str() == NS_XML {
                        format!("xml:{}", aname.as_str())
                    } else {
                        // Namespaced attributes other than xml:* are not used by XMPP stanzas
                        // we process; they are dropped rather than re-prefixed.
                        continue;
                    };
                    el.attrs.push((key, value));
                }
                if !self.header_seen {
                    if el.name != "stream" || el.ns != NS_STREAM {
                        return Err(FrameError::BadRoot);
                    }
                    self.header_seen = true;
                    out.push(StreamEvent::Header(el));
                    return Ok(());
                }
                self.stanza_bytes += len;
                self.check_size()?;
                if self.stack.len() >= self.limits.max_depth {
                    return Err(FrameError::TooDeep(self.limits.max_depth));
                }
                self.stack.push(el);
            }
            Event::Text(_, text) => {
                if self.stack.is_empty() {
                    // Whitespace between stanzas (keep-alives) is allowed; other text is not.
                    if !text.chars().all(|c| c.is_ascii_whitespace()) {
                        return Err(FrameError::NotWellFormed(
                            "text outside a stanza".to_string(),
                        ));
                    }
                    return Ok(());
                }
                self.stanza_bytes += len;
                self.check_size()?;
                if let Some(top) = self.stack.last_mut() {
                    if let Some(Node::Text(t)) = top.children.last_mut() {
                        t.push_str(&text);
                    } else {
                        top.children.push(Node::Text(text));
                    }
                }
            }
            Event::EndElement(_) => match self.stack.pop() {
                None => {
                    self.ended = true;
                    out.push(StreamEvent::End);
                }
                Some(el) => {
                    self.stanza_bytes += len;
                    self.check_size()?;
                    if let Some(parent) = self.stack.last_mut() {
                        parent.children.push(Node::Element(el));
                    } else {
                        self.stanza_bytes = 0;
                        out.push(StreamEvent::Stanza(el));
                    }
                }
            },
        }
        Ok(())
    }

    fn check_size(&self) -> Result<(), FrameError> {
        if self.stanza_bytes > self.limits.max_stanza_bytes {
            Err(FrameError::StanzaTooLarge(self.limits.max_stanza_bytes))
        } else {
            Ok(())
        }
    }
}

fn map_rxml_error(e: rxml::Error) -> FrameError {
    match e {
        rxml::Error::RestrictedXml(msg) => {
            if msg.contains("long") {
                // A token longer than the whole stanza limit.
                FrameError::StanzaTooLarge(0)
            } else {
                FrameError::RestrictedXml(msg.to_string())
            }
        }
        other => FrameError::NotWellFormed(other.to_string()),
    }
}

/// Parses one serialized stanza (as stored by the server) back into an element. The text is read
/// as the content of a `jabber:client` stream, with default limits.
pub fn parse_stanza(text: &str) -> Result<Element, FrameError> {
    let mut s = XmlStream::new(Limits {
        max_stanza_bytes: text.len() + 1024,
        max_depth: 64,
    });
    let mut out = Vec::new();
    s.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        &mut out,
    )?;
    s.feed(text.as_bytes(), &mut out)?;
    out.into_iter()
        .find_map(|e| match e {
            StreamEvent::Stanza(el) => Some(el),
            _ => None,
        })
        .ok_or_else(|| FrameError::NotWellFormed("no complete stanza".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HDR: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    fn feed_all(s: &mut XmlStream, data: &[u8]) -> Result<Vec<StreamEvent>, FrameError> {
        let mut out = Vec::new();
        s.feed(data, &mut out)?;
        Ok(out)
    }

    #[test]
    fn frames_stanzas_split_anywhere() {
        let doc = format!("{HDR}<message to='a@b' xml:lang='en'><body>hi &amp; bye</body></message> <presence/></stream:stream>");
        for split in 1..doc.len() {
            let mut s = XmlStream::new(Limits::default());
            let mut out = Vec::new();
            s.feed(&doc.as_bytes()[..split], &mut out).unwrap();
            s.feed(&doc.as_bytes()[split..], &mut out).unwrap();
            assert_eq!(out.len(), 4, "split at {split}");
            match &out[1] {
                StreamEvent::Stanza(m) => {
                    assert_eq!(m.name, "message");
                    assert_eq!(m.ns, "jabber:client");
                    assert_eq!(m.get_attr("xml:lang"), Some("en"));
                    assert_eq!(
                        m.find("body", "jabber:client").unwrap().text_content(),
                        "hi & bye"
                    );
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(out[3], StreamEvent::End);
        }
    }

    #[test]
    fn rejects_doctype_and_entities() {
        let mut s = XmlStream::new(Limits::default());
        let r = feed_all(
            &mut s,
            b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>]><stream:stream/>",
        );
        assert!(
            matches!(
                r,
                Err(FrameError::RestrictedXml(_)) | Err(FrameError::NotWellFormed(_))
            ),
            "{r:?}"
        );
        let mut s = XmlStream::new(Limits::default());
        let r = feed_all(&mut s, format!("{HDR}<message>&lol;</message>").as_bytes());
        assert!(r.is_err());
    }

    #[test]
    fn rejects_bad_xml() {
        let mut s = XmlStream::new(Limits::default());
        assert!(feed_all(&mut s, format!("{HDR}<message></presence>").as_bytes()).is_err());
        // errors stick
        assert!(feed_all(&mut s, b"<presence/>").is_err());
    }

    #[test]
    fn enforces_size_and_depth() {
        let limits = Limits {
            max_stanza_bytes: 1000,
            max_depth: 5,
        };
        let mut s = XmlStream::new(limits);
        let big = format!("{HDR}<message><body>{}</body></message>", "x".repeat(5000));
        let r = feed_all(&mut s, big.as_bytes());
        assert!(matches!(r, Err(FrameError::StanzaTooLarge(_))), "{r:?}");
        let mut s = XmlStream::new(limits);
        let deep = format!("{HDR}{}", "<a>".repeat(10));
        assert!(matches!(
            feed_all(&mut s, deep.as_bytes()),
            Err(FrameError::TooDeep(5))
        ));
        // The size check also fires for a stanza that never completes.
        let mut s = XmlStream::new(limits);
        let mut out = Vec::new();
        s.feed(HDR.as_bytes(), &mut out).unwrap();
        s.feed(b"<message><body>", &mut out).unwrap();
        let mut failed = false;
        for _ in 0..100 {
            if s.feed(&[b'y'; 100], &mut out).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }

    #[test]
    fn wrong_root() {
        let mut s = XmlStream::new(Limits::default());
        assert_eq!(feed_all(&mut s, b"<html>"), Err(FrameError::BadRoot));
    }
}
