//! `;name[=value]` parameter lists, shared by URIs and headers.
//!
//! Values are kept raw: a quoted value keeps its quotes and escapes, an escaped URI parameter
//! keeps its `%XX`, so parameters we do not understand (`ms-route-sig`, `+sip.instance`, ...)
//! are written back exactly as received.

use std::borrow::Cow;
use std::fmt;

use crate::error::ParseError;
use crate::header::HeaderName;
use crate::scan::{is_token_char, unquote, QuoteError, Scanner};

/// One parameter: a name and an optional raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

/// An ordered list of parameters. Names compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<Param>);

impl Params {
    /// No parameters.
    pub fn new() -> Params {
        Params(Vec::new())
    }

    /// All parameters, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Param> {
        self.0.iter()
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The parameter named `name`.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.0.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Whether a parameter named `name` is present (with or without a value).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The raw value of `name` (`None` if absent or valueless).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|p| p.value.as_deref())
    }

    /// The value of `name` with surrounding quotes and quoted-pairs resolved.
    pub fn unquoted(&self, name: &str) -> Option<Cow<'_, str>> {
        self.value(name).map(|v| {
            if v.starts_with('"') {
                Cow::Owned(unquote(v))
            } else {
                Cow::Borrowed(v)
            }
        })
    }

    /// Sets `name` to `value` (raw, written as given), replacing an existing parameter in place.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        let value = value.map(str::to_owned);
        match self
            .0
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(p) => p.value = value,
            None => self.0.push(Param {
                name: name.to_owned(),
                value,
            }),
        }
    }

    /// Removes `name`; returns whether it was present.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|p| !p.name.eq_ignore_ascii_case(name));
        before != self.0.len()
    }

    pub(crate) fn push(&mut self, p: Param) {
        self.0.push(p);
    }

    /// Parses `*( SEMI generic-param )` for header `hname`, stopping before a `,`, the end,
    /// or anything that is not `;`.
    ///
    /// `generic-param = token [ EQUAL gen-value ]`, `gen-value = token / host / quoted-string`.
    pub(crate) fn parse_generic(
        sc: &mut Scanner<'_>,
        hname: &HeaderName,
    ) -> Result<Params, ParseError> {
        let bad = || ParseError::BadHeader(hname.clone());
        let mut params = Params::new();
        while sc.eat_sep(b';') {
            let name = sc.token().ok_or_else(bad)?;
            let value = if sc.eat_sep(b'=') {
                if sc.peek() == Some(b'"') {
                    match sc.quoted() {
                        Ok(q) => Some(q.to_owned()),
                        Err(QuoteError::Unterminated) => {
                            return Err(ParseError::UnterminatedQuote(hname.clone()))
                        }
                        Err(QuoteError::NotQuoted) => return Err(bad()),
                    }
                } else {
                    let v = sc.take_while(|b| is_token_char(b) || matches!(b, b':' | b'[' | b']'));
                    if v.is_empty() {
                        return Err(bad());
                    }
                    Some(v.to_owned())
                }
            } else {
                None
            };
            params.push(Param {
                name: name.to_owned(),
                value,
            });
        }
        Ok(params)
    }
}

impl<'a> IntoIterator for &'a Params {
    type Item = &'a Param;
    type IntoIter = std::slice::Iter<'a, Param>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Writes `;name=value` for each parameter.
impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            f.write_str(";")?;
            f.write_str(&p.name)?;
            if let Some(v) = &p.value {
                f.write_str("=")?;
                f.write_str(v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_params_with_whitespace_and_quotes() {
        let mut sc = Scanner::new(
            r#" ; tag = 19n ;lr; +sip.instance="<urn:uuid:1>";received=[2001:db8::1], next"#,
        );
        let p = Params::parse_generic(&mut sc, &HeaderName::To).unwrap();
        assert_eq!(p.value("TAG"), Some("19n"));
        assert!(p.contains("lr"));
        assert_eq!(p.value("lr"), None);
        assert_eq!(p.unquoted("+sip.instance").as_deref(), Some("<urn:uuid:1>"));
        assert_eq!(p.value("received"), Some("[2001:db8::1]"));
        assert_eq!(sc.rest(), ", next");
        assert_eq!(
            p.to_string(),
            r#";tag=19n;lr;+sip.instance="<urn:uuid:1>";received=[2001:db8::1]"#
        );
    }

    #[test]
    fn bad_params() {
        for bad in [";", ";=x", ";a=", ";a=\"open"] {
            let mut sc = Scanner::new(bad);
            assert!(
                Params::parse_generic(&mut sc, &HeaderName::Via).is_err(),
                "{bad}"
            );
        }
    }
}
