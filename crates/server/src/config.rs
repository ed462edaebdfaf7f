//! Configuration: one TOML file covers every setting, and every setting has a default, so
//! `entente serve` runs with no file at all. `docs/configuration.md` lists every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The XMPP domain this server hosts.
    pub domain: String,
    /// Where the database and the generated certificate live.
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub tls: TlsConfig,
    pub c2s: C2sConfig,
    pub s2s: S2sConfig,
    pub dns: DnsConfig,
    pub policy: PolicyConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub sip: SipConfig,
    pub admin: AdminConfig,
    /// Multi-node cluster mode (`docs/cluster.md`); absent for a single node.
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: this node's name and the NATS server the nodes of the domain share.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique among the nodes of the domain (letters, digits, `-`, `_`).
    pub node_id: String,
    /// The NATS server (`nats://host:port`).
    pub nats_url: String,
    /// Whether this node federates over XMPP (default true). A node with `false` opens no
    /// s2s listener and no outbound s2s connection: its stanzas to foreign XMPP domains go to
    /// the federation-enabled nodes through NATS (`docs/cluster.md`).
    #[serde(default = "yes")]
    pub federation: bool,
    /// The federation-enabled nodes as foreign servers should reach them, `host` or
    /// `host:port` (the port defaults to this node's first `s2s.listen` port, else 5269).
    /// `entente dns-records` publishes one SRV record per entry; the same list belongs in every
    /// node's configuration. Empty: `s2s.public_hosts` (or the domain) as on a single node.
    #[serde(default)]
    pub federation_nodes: Vec<String>,
}

fn yes() -> bool {
    true
}

impl ClusterConfig {
    /// The entries of `federation_nodes` as (host, port), `default_port` where none is given.
    /// Entries were validated when the configuration was read.
    pub fn federation_hosts(&self, default_port: u16) -> Vec<(String, u16)> {
        self.federation_nodes
            .iter()
            .filter_map(|e| parse_host_port(e, default_port).ok())
            .collect()
    }
}

/// `host` or `host:port`, a host name (it becomes the target of an SRV record, which cannot be
/// an IP address: RFC 2782).
fn parse_host_port(entry: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port: u16 = p
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{entry:?}: the port must be 1 to 65535"))?;
            (h, port)
        }
        _ => (entry, default_port),
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "{entry:?}: give a host name (an SRV record's target cannot be an IP address)"
        ));
    }
    if host.is_empty() || entente_model::jid::Jid::domain_only(host).is_err() {
        return Err(format!("{entry:?}: expected host or host:port"));
    }
    Ok((host.trim_end_matches('.').to_string(), port))
}

/// The admin HTTP API (`docs/admin-api.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The API on or off. Off, no HTTP socket is opened.
    pub enabled: bool,
    /// The address the API listens on (loopback by default: it speaks plain HTTP).
    pub listen: String,
    /// A file holding the bearer token (surrounding whitespace is ignored); required when enabled.
    pub token_file: Option<PathBuf>,
    /// Whether `GET /metrics` needs the bearer token too (false: Prometheus may scrape it
    /// without one).
    pub metrics_require_token: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: false,
            listen: "127.0.0.1:5280".to_string(),
            token_file: None,
            metrics_require_token: true,
        }
    }
}

/// The SIP endpoint (transports and transaction layer) and SIP federation: the foreign SIP
/// domains in `[[sip.peer]]` are the permitted ones; requests from any other domain get `403`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// SIP on or off. Off, no SIP socket is opened.
    pub enabled: bool,
    /// Addresses for SIP over UDP.
    pub listen_udp: Vec<String>,
    /// Addresses for SIP over TCP.
    pub listen_tcp: Vec<String>,
    /// Addresses for SIP over TLS (TLS from the first byte, RFC 3261 §26.2).
    pub listen_tls: Vec<String>,
    /// Largest message accepted (start-line, headers and body), in bytes.
    pub max_message_bytes: usize,
    /// Seconds a TCP/TLS connection may carry nothing before it is closed (0: never).
    pub idle_timeout_secs: u64,
    /// Messages per second one connection (or, over UDP, one source address) may send,
    /// with a burst of twice as many.
    pub max_messages_per_second: u32,
    /// Most simultaneous TCP/TLS connections, inbound and outbound together.
    pub max_connections: usize,
    /// The RFC 3261 T1 timer (RTT estimate) in milliseconds; every other timer derives from it.
    pub t1_ms: u64,
    /// The host written in our Via headers (default: the domain).
    pub via_host: Option<String>,
    /// Seconds a session-mode IM dialog may carry no message before we end it with BYE.
    pub im_idle_secs: u64,
    /// The subscription duration we ask foreign domains for and the longest we grant them
    /// (RFC 6665 `Expires`), in seconds.
    pub subscribe_expires_secs: u32,
    /// Most subscriptions and IM sessions one foreign domain may hold with us at once (its
    /// watchers' subscriptions plus IM sessions it opened); beyond it new ones get `503`.
    pub max_dialogs_per_peer: usize,
    /// The permitted foreign SIP domains.
    pub peer: Vec<SipPeerConfig>,
}

/// One permitted foreign SIP domain.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SipPeerConfig {
    pub domain: String,
    /// What the peer is: `lync`, `moc` (OCS), `aol`, or `simple` (any RFC 3856 presence
    /// server, another Entente). Decides the presence documents and the IM mode.
    #[serde(default = "default_sip_profile")]
    pub profile: String,
    /// `tls` (default) or `tcp` (plain; then `source_addrs` authenticate the peer).
    #[serde(default)]
    pub transport: SipPeerTransport,
    /// Whether requests over TLS must come with a certificate valid for the domain (a client
    /// certificate on connections the peer opens). Default: true. `false` trusts the From
    /// domain of any TLS connection from the peer: only for peers that cannot present one.
    #[serde(default)]
    pub mutual_tls: Option<bool>,
    /// Static routes (`host:port`, `tls://host:port`, `tcp://host:port`) tried before DNS
    /// (`_sipfederationtls._tcp`, `_sips._tcp`, `_sip._tcp`).
    #[serde(default)]
    pub routes: Vec<String>,
    /// Source addresses that authenticate requests from this domain (required for `tcp`;
    /// with TLS, an alternative to the client certificate).
    #[serde(default)]
    pub source_addrs: Vec<std::net::IpAddr>,
    /// `session` (INVITE with `m=message`, then MESSAGE in the dialog, as OCS/Lync and AOL)
    /// or `page` (RFC 3428 MESSAGE each). Default: session for lync/moc/aol, page for simple.
    #[serde(default)]
    pub im: Option<ImMode>,
}

fn default_sip_profile() -> String {
    "simple".to_string()
}

/// How a SIP peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SipPeerTransport {
    #[default]
    Tls,
    Tcp,
}

/// How instant messages are carried to a SIP peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImMode {
    Session,
    Page,
}

impl SipPeerConfig {
    /// Checks one `[[sip.peer]]` (also an admin API's) on its own; `key` prefixes the key in
    /// errors, `own_domain` is this server's domain.
    pub fn validate(&self, key: &str, own_domain: &str) -> Result<(), ConfigError> {
        let invalid = |k: &str, message: String| ConfigError::Invalid {
            key: format!("{key}{k}"),
            message,
        };
        entente_model::jid::Jid::domain_only(&self.domain).map_err(|e| {
            invalid(
                "domain",
                format!("{:?} is not a valid domain: {e}", self.domain),
            )
        })?;
        if self.domain.eq_ignore_ascii_case(own_domain) {
            return Err(invalid("domain", "that is this server's own domain".into()));
        }
        match self.profile.parse::<entente_model::availability::Profile>() {
            Ok(prof) if !prof.is_xmpp() => {}
            Ok(prof) => {
                return Err(invalid(
                    "profile",
                    format!(
                        "{} is an XMPP profile; SIP peers are lync, moc, aol or simple",
                        prof.name()
                    ),
                ))
            }
            Err(e) => return Err(invalid("profile", e.to_string())),
        }
        for (j, r) in self.routes.iter().enumerate() {
            r.parse::<entente_dns::StaticRoute>()
                .map_err(|e| invalid(&format!("routes[{j}]"), e.to_string()))?;
        }
        if self.transport == SipPeerTransport::Tcp && self.source_addrs.is_empty() {
            return Err(invalid(
                "source_addrs",
                "a plain-TCP peer is authenticated by its source addresses: list them".into(),
            ));
        }
        if self.transport == SipPeerTransport::Tcp && self.mutual_tls == Some(true) {
            return Err(invalid("mutual_tls", "needs transport = \"tls\"".into()));
        }
        Ok(())
    }

    /// The parsed presence profile (validated on load; `simple` if somehow not).
    pub fn presence_profile(&self) -> entente_model::availability::Profile {
        self.profile
            .parse()
            .unwrap_or(entente_model::availability::Profile::Simple)
    }

    /// Whether this is one of the peers with Microsoft or AOL behaviour.
    fn is_legacy(&self) -> bool {
        use entente_model::availability::Profile;
        matches!(
            self.presence_profile(),
            Profile::Lync | Profile::Moc | Profile::Aol
        )
    }

    /// Whether a client certificate is required.
    pub fn requires_mutual_tls(&self) -> bool {
        self.transport == SipPeerTransport::Tls && self.mutual_tls.unwrap_or(true)
    }

    /// The IM mode in effect.
    pub fn im_mode(&self) -> ImMode {
        self.im.unwrap_or(if self.is_legacy() {
            ImMode::Session
        } else {
            ImMode::Page
        })
    }

    /// Whether AOL e-mail screen names (`user(gmail.com)`) are mapped.
    pub fn aol_names(&self) -> bool {
        self.presence_profile() == entente_model::availability::Profile::Aol
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            enabled: false,
            listen_udp: vec!["0.0.0.0:5060".to_string()],
            listen_tcp: vec!["0.0.0.0:5060".to_string()],
            listen_tls: vec!["0.0.0.0:5061".to_string()],
            max_message_bytes: 64 * 1024,
            idle_timeout_secs: 600,
            max_messages_per_second: 200,
            max_connections: 1024,
            t1_ms: 500,
            via_host: None,
            im_idle_secs: 600,
            subscribe_expires_secs: 3600,
            max_dialogs_per_peer: 100_000,
            peer: Vec::new(),
        }
    }
}

impl SipConfig {
    /// The host for our Via headers.
    pub fn via_host<'a>(&'a self, domain: &'a str) -> &'a str {
        self.via_host.as_deref().unwrap_or(domain)
    }
}

/// XMPP server-to-server federation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S2sConfig {
    /// Federation on or off. Off, every foreign domain is unreachable.
    pub enabled: bool,
    /// Addresses to accept server-to-server streams on (STARTTLS).
    pub listen: Vec<String>,
    /// Addresses for direct-TLS server-to-server streams (XEP-0368); none by default.
    pub direct_tls_listen: Vec<String>,
    /// `open`, `allowlist` or `denylist`, applied to `domains`.
    pub policy: FederationPolicy,
    /// The domains the policy names.
    pub domains: Vec<String>,
    /// Require certificate authentication (SASL EXTERNAL); no dialback.
    pub secure_auth: bool,
    /// Extra trust anchors (PEM) besides the system's, for peer certificates.
    pub ca_file: Option<PathBuf>,
    /// Use the system's trust anchors as well as `ca_file`.
    pub system_roots: bool,
    /// Seconds an outbound stream may stay unused before it is closed.
    pub idle_timeout_secs: u64,
    /// Seconds for one TCP connect plus stream negotiation.
    pub connect_timeout_secs: u64,
    /// Seconds to keep retrying an unreachable domain before queued stanzas bounce.
    pub retry_timeout_secs: u64,
    /// Seconds one write to a federation stream may take (the peer not reading); then the
    /// connection is dropped and what it was carrying bounces.
    pub write_timeout_secs: u64,
    /// Stanzas queued per foreign domain while it is unreachable; beyond, new ones bounce.
    pub queue_max: usize,
    /// Largest stanza a peer may send.
    pub max_stanza_bytes: usize,
    /// Stanzas per second an inbound stream may carry (burst: twice as many).
    pub max_stanzas_per_second: u32,
    /// Host names published in SRV records by `entente dns-records` (default: the domain).
    pub public_hosts: Vec<String>,
    /// Per-domain settings.
    pub peer: Vec<PeerConfig>,
}

impl Default for S2sConfig {
    fn default() -> Self {
        S2sConfig {
            enabled: false,
            listen: vec!["0.0.0.0:5269".to_string()],
            direct_tls_listen: Vec::new(),
            policy: FederationPolicy::Open,
            domains: Vec::new(),
            secure_auth: false,
            ca_file: None,
            system_roots: true,
            idle_timeout_secs: 600,
            connect_timeout_secs: 10,
            retry_timeout_secs: 120,
            write_timeout_secs: 30,
            queue_max: 1000,
            max_stanza_bytes: 256 * 1024,
            max_stanzas_per_second: 1000,
            public_hosts: Vec::new(),
            peer: Vec::new(),
        }
    }
}

/// The admin's federation policy (the seed's "Presence Subscriptions and Blocking Levels").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FederationPolicy {
    /// Any domain may federate.
    Open,
    /// Only the listed domains.
    Allowlist,
    /// All but the listed domains.
    Denylist,
}

/// Settings for one foreign domain.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub domain: String,
    /// `required` (default), `optional` or `never` (plain TCP with dialback, the seed's
    /// GoogleTalk case).
    #[serde(default = "default_peer_tls")]
    pub tls: PeerTls,
    /// Static routes (`host:port`, `tls://host:port` for direct TLS) tried before DNS.
    #[serde(default)]
    pub routes: Vec<String>,
    /// The peer's presence profile (`sametime`, `webex`, `fed-xmpp`, …): presence crossing the
    /// border is mapped through the availability tables. None: passed unchanged.
    #[serde(default)]
    pub profile: Option<String>,
}

impl PeerConfig {
    /// Checks one `[[s2s.peer]]` (also an admin API's): `key` prefixes the key in errors.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let invalid = |k: &str, message: String| ConfigError::Invalid {
            key: format!("{key}{k}"),
            message,
        };
        entente_model::jid::Jid::domain_only(&self.domain)
            .map_err(|e| invalid("domain", format!("{:?}: {e}", self.domain)))?;
        if let Some(prof) = &self.profile {
            prof.parse::<entente_model::availability::Profile>()
                .map_err(|_| {
                    invalid(
                        "profile",
                        format!("{prof:?}: use xmpp, fed-xmpp, sametime or webex"),
                    )
                })?;
        }
        for (j, r) in self.routes.iter().enumerate() {
            r.parse::<entente_dns::StaticRoute>()
                .map_err(|e| invalid(&format!("routes[{j}]"), format!("{r:?}: {e}")))?;
        }
        Ok(())
    }

    /// The parsed profile (validated when the configuration is loaded).
    pub fn presence_profile(&self) -> Option<entente_model::availability::Profile> {
        self.profile.as_deref().and_then(|p| p.parse().ok())
    }
}

fn default_peer_tls() -> PeerTls {
    PeerTls::Required
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerTls {
    Required,
    Optional,
    Never,
}

/// Presence authorization defaults (the admin layer of the seed's blocking levels).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// What happens to a subscription request no rule of the user decides: `ask` (the user's
    /// clients get it), `allow` (approved on the user's behalf) or `deny` (refused politely).
    pub default: DefaultPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DefaultPolicy {
    #[default]
    Ask,
    Allow,
    Deny,
}

/// How foreign domains are located.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers (`ip:port`) to ask instead of the system's.
    pub nameservers: Vec<String>,
    /// Seconds for one DNS query attempt.
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://…`; default `sqlite://<data_dir>/entente.db`.
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; default: a self-signed certificate generated in `<data_dir>/tls/`.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C2sConfig {
    /// Addresses to listen on for client connections.
    pub listen: Vec<String>,
    /// Refuse authentication before STARTTLS.
    pub require_tls: bool,
    /// Largest stanza a client may send, in bytes.
    pub max_stanza_bytes: usize,
    /// Deepest XML nesting inside a stanza.
    pub max_depth: usize,
    /// Seconds a client has from connecting to binding a resource.
    pub handshake_timeout_secs: u64,
    /// Seconds of silence after which a bound client is disconnected (0: never).
    pub idle_timeout_secs: u64,
    /// Most simultaneous client connections.
    pub max_connections: usize,
    /// Stanzas a client may send per second (sustained), with a burst of twice that.
    pub max_stanzas_per_second: u32,
    /// Failed SASL attempts before the stream is closed.
    pub max_auth_failures: u32,
}

impl Default for C2sConfig {
    fn default() -> Self {
        C2sConfig {
            listen: vec!["127.0.0.1:5222".to_string()],
            require_tls: true,
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            handshake_timeout_secs: 60,
            idle_timeout_secs: 900,
            max_connections: 10_000,
            max_stanzas_per_second: 200,
            max_auth_failures: 3,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Offline messages kept per user; senders beyond it get an error.
    pub offline_messages_per_user: u64,
    /// Items in one user's roster.
    pub roster_items_per_user: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            offline_messages_per_user: 500,
            roster_items_per_user: 2000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A `tracing` filter, e.g. `info` or `entente_server=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".to_string(),
            level: "info".to_string(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: "localhost".to_string(),
            data_dir: PathBuf::from("entente-data"),
            database: DatabaseConfig::default(),
            tls: TlsConfig::default(),
            c2s: C2sConfig::default(),
            s2s: S2sConfig::default(),
            dns: DnsConfig::default(),
            policy: PolicyConfig::default(),
            limits: LimitsConfig::default(),
            log: LogConfig::default(),
            sip: SipConfig::default(),
            admin: AdminConfig::default(),
            cluster: None,
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg = Config::parse(&text).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_string(),
            message,
        };
        entente_model::jid::Jid::domain_only(&self.domain).map_err(|e| {
            invalid(
                "domain",
                format!("{:?} is not a valid domain: {e}", self.domain),
            )
        })?;
        if self.c2s.listen.is_empty() {
            return Err(invalid(
                "c2s.listen",
                "at least one address is needed".into(),
            ));
        }
        for (i, l) in self.c2s.listen.iter().enumerate() {
            l.parse::<SocketAddr>().map_err(|e| {
                invalid(
                    &format!("c2s.listen[{i}]"),
                    format!("{l:?} is not an address:port: {e}"),
                )
            })?;
        }
        if self.c2s.max_stanza_bytes < 1024 {
            return Err(invalid(
                "c2s.max_stanza_bytes",
                "must be at least 1024".into(),
            ));
        }
        if self.c2s.max_depth < 4 {
            return Err(invalid("c2s.max_depth", "must be at least 4".into()));
        }
        if self.c2s.max_connections == 0 {
            return Err(invalid("c2s.max_connections", "must be at least 1".into()));
        }
        if self.c2s.max_stanzas_per_second == 0 {
            return Err(invalid(
                "c2s.max_stanzas_per_second",
                "must be at least 1".into(),
            ));
        }
        if self.c2s.max_auth_failures == 0 {
            return Err(invalid(
                "c2s.max_auth_failures",
                "must be at least 1".into(),
            ));
        }
        if self.c2s.handshake_timeout_secs == 0 {
            return Err(invalid(
                "c2s.handshake_timeout_secs",
                "must be at least 1".into(),
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(invalid(
                "tls",
                "set both tls.cert and tls.key, or neither".into(),
            ));
        }
        if let Some(url) = &self.database.url {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres:")
                || url.starts_with("postgresql:"))
            {
                return Err(invalid(
                    "database.url",
                    format!("{url:?}: only sqlite:// and postgres:// are supported"),
                ));
            }
        }
        if let Some(c) = &self.cluster {
            if c.node_id.is_empty()
                || c.node_id.len() > 64
                || !c
                    .node_id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                return Err(invalid(
                    "cluster.node_id",
                    format!(
                        "{:?}: use 1 to 64 letters, digits, '-' or '_' (it is part of NATS subjects)",
                        c.node_id
                    ),
                ));
            }
            if !c.nats_url.starts_with("nats://") {
                return Err(invalid(
                    "cluster.nats_url",
                    format!(
                        "{:?}: expected nats://host:port (TLS to NATS is not supported yet)",
                        c.nats_url
                    ),
                ));
            }
            for (i, e) in c.federation_nodes.iter().enumerate() {
                if let Err(m) = parse_host_port(e, 5269) {
                    return Err(invalid(&format!("cluster.federation_nodes[{i}]"), m));
                }
            }
            let shared = self
                .database
                .url
                .as_deref()
                .is_some_and(|u| u.starts_with("postgres:") || u.starts_with("postgresql:"));
            if !shared {
                return Err(invalid(
                    "database.url",
                    "a cluster needs a database every node shares: set database.url to a \
                     postgres:// URL (SQLite is a single node's file)"
                        .into(),
                ));
            }
        }
        for (i, l) in self
            .s2s
            .listen
            .iter()
            .chain(&self.s2s.direct_tls_listen)
            .enumerate()
        {
            l.parse::<SocketAddr>().map_err(|e| {
                invalid(
                    &format!("s2s.listen[{i}]"),
                    format!("{l:?} is not an address:port: {e}"),
                )
            })?;
        }
        for (i, d) in self.s2s.domains.iter().enumerate() {
            entente_model::jid::Jid::domain_only(d)
                .map_err(|e| invalid(&format!("s2s.domains[{i}]"), format!("{d:?}: {e}")))?;
        }
        for (i, p) in self.s2s.peer.iter().enumerate() {
            p.validate(&format!("s2s.peer[{i}]."))?;
        }
        for (i, n) in self.dns.nameservers.iter().enumerate() {
            n.parse::<SocketAddr>().map_err(|e| {
                invalid(
                    &format!("dns.nameservers[{i}]"),
                    format!("{n:?} is not an ip:port: {e}"),
                )
            })?;
        }
        if self.s2s.max_stanza_bytes < 1024 {
            return Err(invalid(
                "s2s.max_stanza_bytes",
                "must be at least 1024".into(),
            ));
        }
        self.validate_sip()?;
        self.admin.listen.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "admin.listen",
                format!("{:?} is not an address:port: {e}", self.admin.listen),
            )
        })?;
        if self.admin.enabled && self.admin.token_file.is_none() {
            return Err(invalid(
                "admin.token_file",
                "the admin API is enabled, so a file holding its bearer token is needed".into(),
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid(
                "log.format",
                format!("{:?}: use \"text\" or \"json\"", self.log.format),
            ));
        }
        Ok(())
    }

    /// Checks the `[sip]` section (whether or not it is enabled, so that a typo is found before
    /// the day SIP is switched on).
    fn validate_sip(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_string(),
            message,
        };
        let s = &self.sip;
        for (name, list) in [
            ("listen_udp", &s.listen_udp),
            ("listen_tcp", &s.listen_tcp),
            ("listen_tls", &s.listen_tls),
        ] {
            for (i, l) in list.iter().enumerate() {
                l.parse::<SocketAddr>().map_err(|e| {
                    invalid(
                        &format!("sip.{name}[{i}]"),
                        format!("{l:?} is not an address:port: {e}"),
                    )
                })?;
            }
        }
        if s.enabled
            && s.listen_udp.is_empty()
            && s.listen_tcp.is_empty()
            && s.listen_tls.is_empty()
        {
            return Err(invalid(
                "sip.listen_udp",
                "SIP is enabled but listen_udp, listen_tcp and listen_tls are all empty".into(),
            ));
        }
        // 1 KiB is far below any real message; 16 MiB bounds the memory one peer can pin.
        if !(1024..=16 * 1024 * 1024).contains(&s.max_message_bytes) {
            return Err(invalid(
                "sip.max_message_bytes",
                format!("{}: must be between 1024 and 16777216", s.max_message_bytes),
            ));
        }
        if s.max_messages_per_second == 0 {
            return Err(invalid(
                "sip.max_messages_per_second",
                "must be at least 1".into(),
            ));
        }
        if s.max_connections == 0 {
            return Err(invalid("sip.max_connections", "must be at least 1".into()));
        }
        // RFC 3261 §17.1.1.1 recommends 500 ms; below 10 ms retransmissions would flood a link,
        // above 60 s Timer B/F (64·T1) would exceed an hour.
        if !(10..=60_000).contains(&s.t1_ms) {
            return Err(invalid(
                "sip.t1_ms",
                format!("{}: must be between 10 and 60000", s.t1_ms),
            ));
        }
        if s.subscribe_expires_secs < 60 {
            return Err(invalid(
                "sip.subscribe_expires_secs",
                "must be at least 60 (RFC 6665 Min-Expires is commonly 60)".into(),
            ));
        }
        if s.max_dialogs_per_peer == 0 {
            return Err(invalid(
                "sip.max_dialogs_per_peer",
                "must be at least 1".into(),
            ));
        }
        if s.im_idle_secs == 0 {
            return Err(invalid("sip.im_idle_secs", "must be at least 1".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in s.peer.iter().enumerate() {
            let key = |k: &str| format!("sip.peer[{i}].{k}");
            p.validate(&format!("sip.peer[{i}]."), &self.domain)?;
            if !seen.insert(p.domain.to_ascii_lowercase()) {
                return Err(invalid(
                    &key("domain"),
                    format!("{} is listed twice", p.domain),
                ));
            }
            if self.peer(&p.domain).is_some() {
                return Err(invalid(
                    &key("domain"),
                    format!(
                        "{} is also an [[s2s.peer]]: a domain federates over SIP or XMPP, not both",
                        p.domain
                    ),
                ));
            }
        }
        let via = s.via_host(&self.domain);
        if entente_sip_proto::Host::parse(via).is_err() {
            return Err(invalid(
                "sip.via_host",
                format!("{via:?} is not a host name or IP address"),
            ));
        }
        Ok(())
    }

    /// The settings of a permitted foreign SIP domain, if `domain` is one, in this file alone
    /// (the running server reads `federation::FederationView`, which adds the admin API's
    /// changes).
    pub fn sip_peer(&self, domain: &str) -> Option<&SipPeerConfig> {
        let domain = domain.trim_end_matches('.');
        self.sip
            .peer
            .iter()
            .find(|p| p.domain.eq_ignore_ascii_case(domain))
    }

    /// The settings for one foreign domain, if any, in this file alone (see
    /// [`Config::sip_peer`]).
    pub fn peer(&self, domain: &str) -> Option<&PeerConfig> {
        self.s2s
            .peer
            .iter()
            .find(|p| p.domain.eq_ignore_ascii_case(domain))
    }

    /// Whether this file's federation policy allows `domain` (the running server asks
    /// `federation::FederationView::allowed`, which knows the admin API's policy).
    pub fn federation_allowed(&self, domain: &str) -> bool {
        let listed = self
            .s2s
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain.trim_end_matches('.')));
        match self.s2s.policy {
            FederationPolicy::Open => true,
            FederationPolicy::Allowlist => listed,
            FederationPolicy::Denylist => !listed,
        }
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("entente.db").display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.domain, "localhost");
        assert_eq!(c.c2s.listen, vec!["127.0.0.1:5222"]);
        assert!(c.c2s.require_tls);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[c2s]\nlisten = [\"nope\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c2s.listen[0]"), "{e}");
        let e = Config::parse("[c2s]\nlistn = []").unwrap_err().to_string();
        assert!(e.contains("listn"), "{e}");
        let e = Config::parse("domain = \"bad domain\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("domain"), "{e}");
        let e = Config::parse("[c2s]\nmax_stanza_bytes = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_stanza_bytes"), "{e}");
    }

    #[test]
    fn cluster_section() {
        let c = Config::parse("").unwrap();
        assert!(c.cluster.is_none());
        let pg = "[database]\nurl = \"postgres://u@127.0.0.1/e\"\n";
        let c = Config::parse(&format!(
            "{pg}[cluster]\nnode_id = \"n1\"\nnats_url = \"nats://127.0.0.1:4222\""
        ))
        .unwrap();
        let cl = c.cluster.unwrap();
        assert_eq!(cl.node_id, "n1");
        assert_eq!(cl.nats_url, "nats://127.0.0.1:4222");
        // SQLite (the default) cannot be shared.
        let e = Config::parse("[cluster]\nnode_id = \"n1\"\nnats_url = \"nats://h:4222\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("database.url") && e.contains("postgres"), "{e}");
        let e = Config::parse(&format!(
            "{pg}[cluster]\nnode_id = \"a.b\"\nnats_url = \"nats://h:4222\""
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("cluster.node_id"), "{e}");
        let e = Config::parse(&format!(
            "{pg}[cluster]\nnode_id = \"n1\"\nnats_url = \"http://h\""
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("cluster.nats_url"), "{e}");
        let e = Config::parse(&format!("{pg}[cluster]\nnode_id = \"n1\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nats_url"), "{e}");
    }

    #[test]
    fn cluster_federation_settings() {
        let pg = "[database]\nurl = \"postgres://u@127.0.0.1/e\"\n";
        let base = "[cluster]\nnode_id = \"n1\"\nnats_url = \"nats://h:4222\"\n";
        let c = Config::parse(&format!("{pg}{base}")).unwrap();
        let cl = c.cluster.unwrap();
        assert!(cl.federation, "federation is on by default");
        assert!(cl.federation_nodes.is_empty());
        let c = Config::parse(&format!(
            "{pg}{base}federation = false\nfederation_nodes = [\"n1.example.net\", \"n2.example.net:5270\", \"n3.example.net.\"]\n"
        ))
        .unwrap();
        let cl = c.cluster.unwrap();
        assert!(!cl.federation);
        assert_eq!(
            cl.federation_hosts(5269),
            [
                ("n1.example.net".to_string(), 5269),
                ("n2.example.net".to_string(), 5270),
                ("n3.example.net".to_string(), 5269)
            ]
        );
        for bad in [
            "",
            "n1:0",
            "n1:x",
            "a b",
            "n1:99999",
            "u@n1",
            "10.0.0.2",
            "[::1]:5269",
            "::1",
        ] {
            let e = Config::parse(&format!("{pg}{base}federation_nodes = [\"{bad}\"]\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("cluster.federation_nodes[0]"), "{bad}: {e}");
        }
    }

    #[test]
    fn s2s_write_timeout() {
        assert_eq!(Config::parse("").unwrap().s2s.write_timeout_secs, 30);
        let c = Config::parse("[s2s]\nwrite_timeout_secs = 5").unwrap();
        assert_eq!(c.s2s.write_timeout_secs, 5);
        assert!(Config::parse("[s2s]\nwrite_timeout_secs = -1").is_err());
    }

    #[test]
    fn admin_section() {
        let c = Config::parse("").unwrap();
        assert!(!c.admin.enabled);
        assert_eq!(c.admin.listen, "127.0.0.1:5280");
        assert!(c.admin.token_file.is_none());
        let c = Config::parse(
            "[admin]\nenabled = true\nlisten = \"127.0.0.1:0\"\ntoken_file = \"/etc/entente/token\"",
        )
        .unwrap();
        assert!(c.admin.enabled);
        for (text, key) in [
            ("[admin]\nenabled = true", "admin.token_file"),
            ("[admin]\nlisten = \"nope\"", "admin.listen"),
            ("[admin]\ntoken = \"x\"", "token"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn sip_section() {
        let c = Config::parse("").unwrap();
        assert!(!c.sip.enabled);
        assert_eq!(c.sip.listen_tls, vec!["0.0.0.0:5061"]);
        assert_eq!(c.sip.max_message_bytes, 65536);
        assert_eq!(c.sip.t1_ms, 500);
        assert_eq!(c.sip.via_host(&c.domain), "localhost");
        let c = Config::parse(
            "[sip]\nenabled = true\nlisten_udp = [\"127.0.0.1:0\"]\nlisten_tcp = []\nlisten_tls = []\nt1_ms = 50\nvia_host = \"sip.example.com\"",
        )
        .unwrap();
        assert_eq!(c.sip.t1_ms, 50);
        assert_eq!(c.sip.via_host(&c.domain), "sip.example.com");
        for (text, key) in [
            ("[sip]\nlisten_tcp = [\"x\"]", "sip.listen_tcp[0]"),
            ("[sip]\nmax_message_bytes = 10", "sip.max_message_bytes"),
            ("[sip]\nt1_ms = 0", "sip.t1_ms"),
            (
                "[sip]\nmax_messages_per_second = 0",
                "sip.max_messages_per_second",
            ),
            ("[sip]\nvia_host = \"a b\"", "sip.via_host"),
            (
                "[sip]\nenabled = true\nlisten_udp = []\nlisten_tcp = []\nlisten_tls = []",
                "sip.listen_udp",
            ),
            ("[sip]\nlisten = []", "listen"),
            ("[[sip.peer]]\ndomain = \"a b\"", "sip.peer[0].domain"),
            ("[[sip.peer]]\ndomain = \"localhost\"", "sip.peer[0].domain"),
            (
                "[[sip.peer]]\ndomain = \"x.test\"\n[[sip.peer]]\ndomain = \"X.test\"",
                "sip.peer[1].domain",
            ),
            (
                "[[sip.peer]]\ndomain = \"x.test\"\nprofile = \"webex\"",
                "sip.peer[0].profile",
            ),
            (
                "[[sip.peer]]\ndomain = \"x.test\"\nprofile = \"nope\"",
                "sip.peer[0].profile",
            ),
            (
                "[[sip.peer]]\ndomain = \"x.test\"\nroutes = [\"ftp://x\"]",
                "sip.peer[0].routes[0]",
            ),
            (
                "[[sip.peer]]\ndomain = \"x.test\"\ntransport = \"tcp\"",
                "sip.peer[0].source_addrs",
            ),
            (
                "[[sip.peer]]\ndomain = \"x.test\"\ntransport = \"tcp\"\nsource_addrs = [\"127.0.0.1\"]\nmutual_tls = true",
                "sip.peer[0].mutual_tls",
            ),
            (
                "[[sip.peer]]\ndomain = \"x.test\"\n[[s2s.peer]]\ndomain = \"x.test\"",
                "sip.peer[0].domain",
            ),
            ("[sip]\nsubscribe_expires_secs = 10", "sip.subscribe_expires_secs"),
            ("[sip]\nmax_dialogs_per_peer = 0", "sip.max_dialogs_per_peer"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn sip_peer_defaults() {
        let c = Config::parse(
            "[sip]\nenabled = true\n[[sip.peer]]\ndomain = \"lync.test\"\nprofile = \"lync\"\n\
             [[sip.peer]]\ndomain = \"s.test\"\ntransport = \"tcp\"\nsource_addrs = [\"127.0.0.9\"]",
        )
        .unwrap();
        let l = c.sip_peer("LYNC.test.").unwrap();
        assert!(l.requires_mutual_tls());
        assert_eq!(l.im_mode(), ImMode::Session);
        assert!(!l.aol_names());
        let s = c.sip_peer("s.test").unwrap();
        assert_eq!(s.profile, "simple");
        assert!(!s.requires_mutual_tls());
        assert_eq!(s.im_mode(), ImMode::Page);
        assert!(c.sip_peer("other.test").is_none());
    }
}
