//! Stream error conditions (RFC 6120 §4.9.3).

/// A defined stream error condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamErrorCondition {
    BadFormat,
    Conflict,
    ConnectionTimeout,
    HostUnknown,
    ImproperAddressing,
    InternalServerError,
    InvalidFrom,
    InvalidNamespace,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    RemoteConnectionFailed,
    ResourceConstraint,
    RestrictedXml,
    SeeOtherHost,
    SystemShutdown,
    UndefinedCondition,
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamErrorCondition {
    pub fn as_str(self) -> &'static str {
        use StreamErrorCondition::*;
        match self {
            BadFormat => "bad-format",
            Conflict => "conflict",
            ConnectionTimeout => "connection-timeout",
            HostUnknown => "host-unknown",
            ImproperAddressing => "improper-addressing",
            InternalServerError => "internal-server-error",
            InvalidFrom => "invalid-from",
            InvalidNamespace => "invalid-namespace",
            NotAuthorized => "not-authorized",
            NotWellFormed => "not-well-formed",
            PolicyViolation => "policy-violation",
            RemoteConnectionFailed => "remote-connection-failed",
            ResourceConstraint => "resource-constraint",
            RestrictedXml => "restricted-xml",
            SeeOtherHost => "see-other-host",
            SystemShutdown => "system-shutdown",
            UndefinedCondition => "undefined-condition",
            UnsupportedStanzaType => "unsupported-stanza-type",
            UnsupportedVersion => "unsupported-version",
        }
    }

    /// `<stream:error>` with this condition and an optional text, followed by the stream close.
    pub fn to_xml(self, text: Option<&str>) -> String {
        let mut s = format!(
            "<stream:error><{} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>",
            self.as_str()
        );
        if let Some(t) = text {
            s.push_str("<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>");
            crate::element::escape_into(&mut s, t);
            s.push_str("</text>");
        }
        s.push_str("</stream:error></stream:stream>");
        s
    }
}

impl std::fmt::Display for StreamErrorCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
