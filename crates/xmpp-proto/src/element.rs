//! A small XML element tree for stanzas, and its serializer.
//!
//! Names are `(namespace, local name)` pairs as the parser resolved them; the serializer writes a
//! default-namespace declaration only where an element's namespace differs from its parent's,
//! which is how XMPP streams are written in practice.

pub const NS_CLIENT: &str = "jabber:client";
pub const NS_SERVER: &str = "jabber:server";
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// A child of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// An XML element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub ns: String,
    /// Attributes in document order. Attributes in the XML namespace are stored as `xml:NAME`.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Element {
    pub fn new(name: &str, ns: &str) -> Element {
        Element {
            name: name.to_string(),
            ns: ns.to_string(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: sets an attribute.
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Element {
        self.set_attr(name, value);
        self
    }

    /// Builder: appends a child element.
    pub fn child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends text.
    pub fn text(mut self, text: impl Into<String>) -> Element {
        self.children.push(Node::Text(text.into()));
        self
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        if let Some(slot) = self.attrs.iter_mut().find(|(k, _)| k == name) {
            slot.1 = value;
        } else {
            self.attrs.push((name.to_string(), value));
        }
    }

    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let i = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(i).1)
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn find(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    pub fn find_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|n| match n {
            Node::Element(e) if e.is(name, ns) => Some(e),
            _ => None,
        })
    }

    /// The first child element in namespace `ns`, whatever its name.
    pub fn find_ns(&self, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.ns == ns)
    }

    pub fn remove_children(&mut self, name: &str, ns: &str) {
        self.children
            .retain(|n| !matches!(n, Node::Element(e) if e.is(name, ns)));
    }

    /// The concatenated text children.
    pub fn text_content(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s
    }

    /// Serializes this element as a child of an element in namespace `parent_ns`.
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        out.push('<');
        out.push_str(&self.name);
        if self.ns != parent_ns {
            out.push_str(" xmlns='");
            escape_into(out, &self.ns);
            out.push('\'');
        }
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("='");
            escape_into(out, v);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for c in &self.children {
            match c {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => escape_into(out, t),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    /// Serializes a top-level stanza for a stream whose default namespace is `stream_ns`.
    /// A stanza in `jabber:client` or `jabber:server` is written in the stream's namespace.
    pub fn to_stream_string(&self, stream_ns: &str) -> String {
        let mut out = String::with_capacity(256);
        if (self.ns == NS_CLIENT || self.ns == NS_SERVER) && self.ns != stream_ns {
            let mut e = self.clone();
            let from = self.ns.clone();
            retarget_ns(&mut e, &from, stream_ns);
            e.write_to(&mut out, stream_ns);
        } else {
            self.write_to(&mut out, stream_ns);
        }
        out
    }
}

fn retarget_ns(e: &mut Element, from: &str, to: &str) {
    if e.ns == from {
        e.ns = to.to_string();
    }
    for c in &mut e.children {
        if let Node::Element(child) = c {
            retarget_ns(child, from, to);
        }
    }
}

impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        self.write_to(&mut s, "");
        f.write_str(&s)
    }
}

/// Escapes text for use in character data or a single-quoted attribute value.
pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_namespaces() {
        let e = Element::new("iq", NS_CLIENT)
            .attr("type", "result")
            .attr("id", "a'<")
            .child(
                Element::new("query", "jabber:iq:roster").child(
                    Element::new("item", "jabber:iq:roster")
                        .attr("jid", "a@b")
                        .text("x&y"),
                ),
            );
        assert_eq!(
            e.to_stream_string(NS_SERVER),
            "<iq type='result' id='a&apos;&lt;'><query xmlns='jabber:iq:roster'><item jid='a@b'>x&amp;y</item></query></iq>"
        );
    }
}
