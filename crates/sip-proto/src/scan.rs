//! A small byte cursor over an (already UTF-8 validated, unfolded) header value, with the
//! RFC 3261 §25.1 building blocks: tokens, separators with optional whitespace, quoted strings.

/// Outcome of scanning a quoted string.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum QuoteError {
    /// Not at a `"`.
    NotQuoted,
    /// No closing `"`.
    Unterminated,
}

pub(crate) struct Scanner<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Scanner { s, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn set_pos(&mut self, pos: usize) {
        self.pos = pos.min(self.s.len());
    }

    #[cfg(test)]
    pub(crate) fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    pub(crate) fn slice(&self, from: usize, to: usize) -> &'a str {
        self.s.get(from..to).unwrap_or("")
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Consumes `b` if it is next.
    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// `SWS b SWS`: consumes optional whitespace, `b`, optional whitespace; restores the
    /// position if `b` is not there.
    pub(crate) fn eat_sep(&mut self, b: u8) -> bool {
        let start = self.pos;
        self.skip_ws();
        if self.eat(b) {
            self.skip_ws();
            true
        } else {
            self.pos = start;
            false
        }
    }

    pub(crate) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        // Only ASCII predicates are used, so `start..pos` lies on char boundaries; `get`
        // keeps this panic-free regardless.
        self.slice(start, self.pos)
    }

    /// `1*token-char`.
    pub(crate) fn token(&mut self) -> Option<&'a str> {
        let t = self.take_while(is_token_char);
        (!t.is_empty()).then_some(t)
    }

    /// A quoted string starting at the cursor; returns it raw, quotes included.
    pub(crate) fn quoted(&mut self) -> Result<&'a str, QuoteError> {
        let start = self.pos;
        if !self.eat(b'"') {
            return Err(QuoteError::NotQuoted);
        }
        let bytes = self.s.as_bytes();
        while let Some(&b) = bytes.get(self.pos) {
            match b {
                b'"' => {
                    self.pos += 1;
                    return Ok(self.slice(start, self.pos));
                }
                b'\\' => {
                    // quoted-pair: any char but CR/LF (already excluded by unfolding).
                    if bytes.get(self.pos + 1).is_none() {
                        break;
                    }
                    self.pos += 2;
                }
                _ => self.pos += 1,
            }
        }
        self.pos = start;
        Err(QuoteError::Unterminated)
    }
}

/// RFC 3261 `token` characters.
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// RFC 3261 `word` characters (Call-ID).
pub(crate) fn is_word_char(b: u8) -> bool {
    is_token_char(b)
        || matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

/// Removes the surrounding quotes of a raw quoted string and resolves quoted-pairs.
/// Returns the input unchanged if it is not quoted.
pub(crate) fn unquote(raw: &str) -> String {
    let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return raw.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Quotes `s` as a quoted-string, escaping `"` and `\`.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Splits a header value at top-level commas: commas inside quoted strings or `<...>` do not
/// split. Pieces are trimmed; empty pieces are kept (the caller decides whether they are legal).
pub(crate) fn split_list(value: &str) -> Result<Vec<&str>, QuoteError> {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut in_angle = false;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' if !in_angle => {
                let mut sc = Scanner::new(value);
                sc.set_pos(i);
                sc.quoted()?;
                i = sc.pos();
                continue;
            }
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            b',' if !in_angle => {
                out.push(value.get(start..i).unwrap_or("").trim_matches([' ', '\t']));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(value.get(start..).unwrap_or("").trim_matches([' ', '\t']));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_quotes_and_angles() {
        let v = r#""Doe, John" <sip:a@b;x=1,2>;q=1, <sip:c@d>"#;
        assert_eq!(
            split_list(v).unwrap(),
            vec![r#""Doe, John" <sip:a@b;x=1,2>;q=1"#, "<sip:c@d>"]
        );
        assert_eq!(split_list(r#""a\", b""#).unwrap(), vec![r#""a\", b""#]);
        assert_eq!(split_list(r#""open, b"#), Err(QuoteError::Unterminated));
        assert_eq!(split_list("a,,b").unwrap(), vec!["a", "", "b"]);
    }

    #[test]
    fn quoting_round_trips() {
        let s = r#"J Rosenberg \""#;
        assert_eq!(quote(s), r#""J Rosenberg \\\"""#);
        assert_eq!(unquote(&quote(s)), s);
        let mut sc = Scanner::new(r#""a\"b" rest"#);
        assert_eq!(sc.quoted(), Ok(r#""a\"b""#));
        assert_eq!(sc.rest(), " rest");
    }
}
