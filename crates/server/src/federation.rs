//! The federation in effect: the configuration file's `[s2s] policy`/`domains`,
//! `[[s2s.peer]]` and `[[sip.peer]]`, with the overrides made through the admin API (kept in
//! the store) on top. The store wins: a domain set through the API replaces whatever the file
//! says about that domain (in either protocol), a domain removed through the API is hidden even
//! if the file lists it, and a policy set through the API replaces the file's.
//!
//! Everything that needs a foreign domain's settings or the policy reads one immutable
//! [`FederationView`] from [`Federation::view`] (a cheap `Arc` clone), so a decision never
//! sees half of a change. A change through the API reloads the view at once; a poller reads
//! the store's federation version every [`POLL_INTERVAL`] and reloads when another process
//! (the CLI on another server, a cluster node) changed it. Locators registered with
//! [`Federation::register_locator`] get the static routes of the new view; other parts
//! (XMPP links that must be drained) subscribe with [`Federation::subscribe`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use entente_dns::{Locator, StaticRoute};
use entente_store::{FederationOverride, FederationPolicyRow, Store, StoreError};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::config::{Config, FederationPolicy, PeerConfig, SipPeerConfig};

/// How often the store's federation version is read.
pub const POLL_INTERVAL: Duration = Duration::from_secs(3);

/// Where a setting comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The configuration file.
    Config,
    /// The admin API (the store).
    Api,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Api => "api",
        }
    }
}

/// Which protocol a locator serves (whose static routes it gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Xmpp,
    Sip,
}

/// One consistent state of the effective federation.
#[derive(Debug, Clone)]
pub struct FederationView {
    /// The store's federation version this view was read at (0: file only, never read).
    pub version: i64,
    pub policy: FederationPolicy,
    /// The domains the policy names.
    pub policy_domains: Vec<String>,
    pub policy_source: Source,
    /// Foreign XMPP domains with settings, with where each comes from, sorted by domain.
    pub xmpp: Vec<(PeerConfig, Source)>,
    /// Permitted foreign SIP domains, with where each comes from, sorted by domain.
    pub sip: Vec<(SipPeerConfig, Source)>,
    /// Domains the file lists and the API removed, sorted.
    pub removed: Vec<String>,
}

pub(crate) fn same_domain(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

impl FederationView {
    /// The file's federation alone.
    pub fn from_config(cfg: &Config) -> FederationView {
        Self::combine(cfg, 0, None, &[])
    }

    /// The file's federation with the store's overrides on top. Overrides that do not parse
    /// or validate (written by a newer version, or by hand) are skipped with a warning.
    fn combine(
        cfg: &Config,
        version: i64,
        policy: Option<&FederationPolicyRow>,
        overrides: &[(String, FederationOverride)],
    ) -> FederationView {
        let mut xmpp: Vec<(PeerConfig, Source)> = cfg
            .s2s
            .peer
            .iter()
            .map(|p| (p.clone(), Source::Config))
            .collect();
        let mut sip: Vec<(SipPeerConfig, Source)> = cfg
            .sip
            .peer
            .iter()
            .map(|p| (p.clone(), Source::Config))
            .collect();
        let mut removed = Vec::new();
        for (domain, o) in overrides {
            let in_file = xmpp.iter().any(|(p, _)| same_domain(&p.domain, domain))
                || sip.iter().any(|(p, _)| same_domain(&p.domain, domain));
            let parsed = match o {
                FederationOverride::Removed => None,
                FederationOverride::Set { protocol, settings } => {
                    match parse_stored(cfg, protocol, settings) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            tracing::warn!(%domain, error = %e, "ignoring an unreadable federation override");
                            continue;
                        }
                    }
                }
            };
            xmpp.retain(|(p, _)| !same_domain(&p.domain, domain));
            sip.retain(|(p, _)| !same_domain(&p.domain, domain));
            match parsed {
                None => {
                    if in_file {
                        removed.push(domain.clone());
                    }
                }
                Some(DomainSettings::Xmpp(p)) => xmpp.push((p, Source::Api)),
                Some(DomainSettings::Sip(p)) => sip.push((p, Source::Api)),
            }
        }
        xmpp.sort_by(|a, b| a.0.domain.cmp(&b.0.domain));
        sip.sort_by(|a, b| a.0.domain.cmp(&b.0.domain));
        removed.sort();
        let (policy, policy_domains, policy_source) = match policy.and_then(|p| {
            parse_policy_mode(&p.mode)
                .map(|m| (m, p.domains.clone()))
                .map_err(|e| tracing::warn!(error = %e, "ignoring an unreadable federation policy"))
                .ok()
        }) {
            Some((m, d)) => (m, d, Source::Api),
            None => (cfg.s2s.policy, cfg.s2s.domains.clone(), Source::Config),
        };
        FederationView {
            version,
            policy,
            policy_domains,
            policy_source,
            xmpp,
            sip,
            removed,
        }
    }

    /// The settings of a foreign XMPP domain, if it has any.
    pub fn peer(&self, domain: &str) -> Option<&PeerConfig> {
        self.xmpp
            .iter()
            .map(|(p, _)| p)
            .find(|p| same_domain(&p.domain, domain))
    }

    /// The settings of a permitted foreign SIP domain, if `domain` is one.
    pub fn sip_peer(&self, domain: &str) -> Option<&SipPeerConfig> {
        self.sip
            .iter()
            .map(|(p, _)| p)
            .find(|p| same_domain(&p.domain, domain))
    }

    /// Whether the federation policy allows XMPP federation with `domain`.
    pub fn allowed(&self, domain: &str) -> bool {
        let listed = self.policy_domains.iter().any(|d| same_domain(d, domain));
        match self.policy {
            FederationPolicy::Open => true,
            FederationPolicy::Allowlist => listed,
            FederationPolicy::Denylist => !listed,
        }
    }

    /// The static routes of every domain of one protocol.
    pub(crate) fn routes(&self, kind: RouteKind) -> HashMap<String, Vec<StaticRoute>> {
        let parse = |domain: &str, routes: &[String]| -> (String, Vec<StaticRoute>) {
            let r = routes
                .iter()
                .filter_map(|r| match r.parse::<StaticRoute>() {
                    Ok(r) => Some(r),
                    Err(e) => {
                        // Validated on load and on input; only a hand-edited store gets here.
                        tracing::warn!(%domain, route = %r, error = %e, "ignoring a static route");
                        None
                    }
                })
                .collect();
            (domain.to_string(), r)
        };
        match kind {
            RouteKind::Xmpp => self
                .xmpp
                .iter()
                .map(|(p, _)| parse(&p.domain, &p.routes))
                .collect(),
            RouteKind::Sip => self
                .sip
                .iter()
                .map(|(p, _)| parse(&p.domain, &p.routes))
                .collect(),
        }
    }
}

/// One domain's settings, as the API takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainSettings {
    Xmpp(PeerConfig),
    Sip(SipPeerConfig),
}

impl DomainSettings {
    fn protocol(&self) -> &'static str {
        match self {
            DomainSettings::Xmpp(_) => "xmpp",
            DomainSettings::Sip(_) => "sip",
        }
    }
}

/// Parses a stored override (the JSON the API wrote) and validates it again.
fn parse_stored(cfg: &Config, protocol: &str, settings: &str) -> Result<DomainSettings, String> {
    let v: Value = serde_json::from_str(settings).map_err(|e| e.to_string())?;
    let Value::Object(mut m) = v else {
        return Err("the settings are not a JSON object".into());
    };
    m.insert("protocol".into(), Value::String(protocol.into()));
    let domain = match m.remove("domain") {
        Some(Value::String(d)) => d,
        _ => return Err("the settings have no domain".into()),
    };
    parse_domain_settings(cfg, &domain, m)
}

/// Parses and validates the settings of `domain` from an API body (`protocol` plus the fields
/// of `[[s2s.peer]]` or `[[sip.peer]]`), with the configuration file's rules. The error says
/// which field is wrong and why.
pub fn parse_domain_settings(
    cfg: &Config,
    domain: &str,
    mut body: Map<String, Value>,
) -> Result<DomainSettings, String> {
    let protocol = match body.remove("protocol") {
        Some(Value::String(p)) => p,
        Some(_) => return Err("protocol: must be a string, \"xmpp\" or \"sip\"".into()),
        None => return Err("protocol: missing (\"xmpp\" or \"sip\")".into()),
    };
    if body.contains_key("domain") {
        return Err("domain: give the domain in the path only, not in the body".into());
    }
    let domain = entente_model::jid::Jid::domain_only(domain)
        .map_err(|e| format!("domain: {domain:?} is not a valid domain: {e}"))?
        .domain()
        .to_string();
    if same_domain(&domain, &cfg.domain) {
        return Err(format!(
            "domain: {domain} is this server's own domain, not a foreign one"
        ));
    }
    body.insert("domain".into(), Value::String(domain.clone()));
    let settings = match protocol.as_str() {
        "xmpp" => {
            let p: PeerConfig = from_body(body)?;
            p.validate("").map_err(|e| e.to_string())?;
            DomainSettings::Xmpp(p)
        }
        "sip" => {
            if !cfg.sip.enabled {
                return Err(
                    "protocol: SIP is not enabled on this server ([sip] enabled = false)".into(),
                );
            }
            let p: SipPeerConfig = from_body(body)?;
            p.validate("", &cfg.domain).map_err(|e| e.to_string())?;
            DomainSettings::Sip(p)
        }
        other => return Err(format!("protocol: {other:?}: use \"xmpp\" or \"sip\"")),
    };
    Ok(settings)
}

/// Deserializes peer settings; a type error names its field (serde's message alone does not
/// say which field an "invalid type" is about), found by trying each field on its own.
fn from_body<T: serde::de::DeserializeOwned>(body: Map<String, Value>) -> Result<T, String> {
    match serde_json::from_value::<T>(Value::Object(body.clone())) {
        Ok(t) => Ok(t),
        Err(e) => {
            let domain = body.get("domain").cloned().unwrap_or(Value::Null);
            for (k, v) in &body {
                if k == "domain" {
                    continue;
                }
                let mut one = Map::new();
                one.insert("domain".into(), domain.clone());
                one.insert(k.clone(), v.clone());
                if let Err(e) = serde_json::from_value::<T>(Value::Object(one)) {
                    return Err(format!("{k}: {e}"));
                }
            }
            Err(e.to_string())
        }
    }
}

/// `open`, `allowlist` or `denylist`.
pub fn parse_policy_mode(s: &str) -> Result<FederationPolicy, String> {
    match s {
        "open" => Ok(FederationPolicy::Open),
        "allowlist" => Ok(FederationPolicy::Allowlist),
        "denylist" => Ok(FederationPolicy::Denylist),
        other => Err(format!(
            "policy: {other:?}: use \"open\", \"allowlist\" or \"denylist\""
        )),
    }
}

pub fn policy_name(p: FederationPolicy) -> &'static str {
    match p {
        FederationPolicy::Open => "open",
        FederationPolicy::Allowlist => "allowlist",
        FederationPolicy::Denylist => "denylist",
    }
}

/// Parses and validates a policy from an API body: `{"policy": …, "domains": [...]}`. Domains
/// are lower-cased, without a trailing dot, each once.
pub fn parse_policy_body(body: &Map<String, Value>) -> Result<FederationPolicyRow, String> {
    if let Some(k) = body.keys().find(|k| *k != "policy" && *k != "domains") {
        return Err(format!(
            "{k}: unknown field; the fields are policy and domains"
        ));
    }
    let mode = match body.get("policy") {
        Some(Value::String(s)) => parse_policy_mode(s)?,
        Some(_) => return Err("policy: must be a string".into()),
        None => return Err("policy: missing".into()),
    };
    let list = match body.get("domains") {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err("domains: must be an array of domains".into()),
    };
    let mut domains: Vec<String> = Vec::new();
    for (i, d) in list.iter().enumerate() {
        let Value::String(d) = d else {
            return Err(format!("domains[{i}]: must be a string"));
        };
        let j = entente_model::jid::Jid::domain_only(d)
            .map_err(|e| format!("domains[{i}]: {d:?} is not a valid domain: {e}"))?;
        let d = j.domain().trim_end_matches('.').to_ascii_lowercase();
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    Ok(FederationPolicyRow {
        mode: policy_name(mode).to_string(),
        domains,
    })
}

/// An error changing the federation.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The input breaks a rule (the message says which field and why).
    #[error("{0}")]
    Invalid(String),
    /// Nothing to remove.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The shared handle on the effective federation.
pub struct Federation {
    cfg: Arc<Config>,
    store: Store,
    current: watch::Sender<Arc<FederationView>>,
    locators: Mutex<Vec<(RouteKind, Arc<Locator>)>>,
    /// Serializes reloads, so an older read never replaces a newer view.
    reload_lock: tokio::sync::Mutex<()>,
}

impl Federation {
    /// A handle holding the file's federation; [`Federation::reload`] adds the store's.
    pub fn new(cfg: Arc<Config>, store: Store) -> Arc<Federation> {
        let view = Arc::new(FederationView::from_config(&cfg));
        Arc::new(Federation {
            cfg,
            store,
            current: watch::Sender::new(view),
            locators: Mutex::new(Vec::new()),
            reload_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The federation in effect now.
    pub fn view(&self) -> Arc<FederationView> {
        self.current.borrow().clone()
    }

    /// A receiver that sees every new view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<FederationView>> {
        self.current.subscribe()
    }

    /// Gives `locator` the static routes of `kind`'s domains, now and after every change.
    pub fn register_locator(&self, kind: RouteKind, locator: Arc<Locator>) {
        locator.set_static_routes(self.view().routes(kind));
        self.locators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((kind, locator));
    }

    /// Reads the store's overrides and installs the new view (even if nothing changed).
    pub async fn reload(&self) -> Result<Arc<FederationView>, StoreError> {
        let _guard = self.reload_lock.lock().await;
        // The version first: a change made while the rest is read bumps it again, so the
        // poller reloads once more.
        let version = self.store.federation_version().await?;
        let policy = self.store.federation_policy().await?;
        let overrides = self.store.federation_domains().await?;
        let view = Arc::new(FederationView::combine(
            &self.cfg,
            version,
            policy.as_ref(),
            &overrides,
        ));
        self.install(view.clone());
        Ok(view)
    }

    fn install(&self, view: Arc<FederationView>) {
        {
            let locators = self.locators.lock().unwrap_or_else(|e| e.into_inner());
            for (kind, l) in locators.iter() {
                l.set_static_routes(view.routes(*kind));
            }
        }
        self.current.send_replace(view);
    }

    /// Reloads when the store's version differs from the view's.
    pub async fn poll(&self) -> Result<bool, StoreError> {
        let version = self.store.federation_version().await?;
        if version == self.view().version {
            return Ok(false);
        }
        let v = self.reload().await?;
        tracing::info!(
            version = v.version,
            "the federation settings changed; reloaded"
        );
        Ok(true)
    }

    /// Polls the store until `shutdown` turns true.
    pub async fn run_poller(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.poll().await {
                        tracing::warn!(error = %e, "could not read the federation version");
                    }
                }
                _ = stopped(&mut shutdown) => return,
            }
        }
    }

    /// Sets a domain's settings (API), then reloads; returns the domain as stored (validated,
    /// lower case) and the new view.
    pub async fn set_domain(
        &self,
        domain: &str,
        body: Map<String, Value>,
    ) -> Result<(String, Arc<FederationView>), FederationError> {
        let settings =
            parse_domain_settings(&self.cfg, domain, body).map_err(FederationError::Invalid)?;
        let (domain, json) = match &settings {
            DomainSettings::Xmpp(p) => (p.domain.clone(), serde_json::to_string(p)),
            DomainSettings::Sip(p) => (p.domain.clone(), serde_json::to_string(p)),
        };
        let json = json.map_err(|e| FederationError::Invalid(e.to_string()))?;
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.store
            .federation_domain_set(
                &domain,
                &FederationOverride::Set {
                    protocol: settings.protocol().to_string(),
                    settings: json,
                },
            )
            .await?;
        Ok((domain, self.reload().await?))
    }

    /// Removes a domain from the federation (API): hides the file's entry, or drops the
    /// API's. Fails with `NotFound` when the domain has no settings.
    pub async fn remove_domain(&self, domain: &str) -> Result<(), FederationError> {
        let d = normalize(domain)?;
        let in_file = self.cfg.s2s.peer.iter().any(|p| same_domain(&p.domain, &d))
            || self.cfg.sip.peer.iter().any(|p| same_domain(&p.domain, &d));
        let view = self.view();
        if view.peer(&d).is_none() && view.sip_peer(&d).is_none() {
            return Err(FederationError::NotFound(format!(
                "{d} is not a federated domain (or was removed already)"
            )));
        }
        if in_file {
            self.store
                .federation_domain_set(&d, &FederationOverride::Removed)
                .await?;
        } else {
            self.store.federation_domain_clear(&d).await?;
        }
        self.reload().await?;
        Ok(())
    }

    /// Drops the API's override of a domain: the file's settings (or none) apply again.
    pub async fn clear_domain(&self, domain: &str) -> Result<(), FederationError> {
        let d = normalize(domain)?;
        if !self.store.federation_domain_clear(&d).await? {
            return Err(FederationError::NotFound(format!(
                "{d} has no override made through the API"
            )));
        }
        self.reload().await?;
        Ok(())
    }

    /// Sets the policy (API), then reloads.
    pub async fn set_policy(
        &self,
        body: &Map<String, Value>,
    ) -> Result<Arc<FederationView>, FederationError> {
        let row = parse_policy_body(body).map_err(FederationError::Invalid)?;
        self.store.federation_policy_set(&row).await?;
        Ok(self.reload().await?)
    }

    /// Drops the API's policy: the file's applies again.
    pub async fn clear_policy(&self) -> Result<Arc<FederationView>, FederationError> {
        if !self.store.federation_policy_clear().await? {
            return Err(FederationError::NotFound(
                "no federation policy was set through the API".into(),
            ));
        }
        Ok(self.reload().await?)
    }
}

/// Resolves when `rx` turns true (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// A domain from a path, validated, lower case, without a trailing dot.
fn normalize(domain: &str) -> Result<String, FederationError> {
    let j = entente_model::jid::Jid::domain_only(domain).map_err(|e| {
        FederationError::Invalid(format!("domain: {domain:?} is not a valid domain: {e}"))
    })?;
    Ok(j.domain().trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::parse(
            "domain = \"a.test\"\n[s2s]\npolicy = \"allowlist\"\ndomains = [\"b.test\"]\n\
             [[s2s.peer]]\ndomain = \"b.test\"\ntls = \"never\"\n\
             [[s2s.peer]]\ndomain = \"c.test\"\n\
             [sip]\nenabled = true\n[[sip.peer]]\ndomain = \"s.test\"\nprofile = \"lync\"",
        )
        .unwrap()
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn input_is_validated_like_the_file() {
        let c = cfg();
        let ok = parse_domain_settings(
            &c,
            "D.test",
            obj(serde_json::json!({"protocol": "xmpp", "routes": ["127.0.0.1:5269"]})),
        )
        .unwrap();
        let DomainSettings::Xmpp(p) = ok else {
            panic!("not xmpp")
        };
        assert_eq!(p.domain, "d.test");
        assert_eq!(p.tls, crate::config::PeerTls::Required);
        for (domain, body, needle) in [
            ("d.test", serde_json::json!({}), "protocol: missing"),
            ("d.test", serde_json::json!({"protocol": "irc"}), "protocol"),
            ("d.test", serde_json::json!({"protocol": 1}), "protocol"),
            (
                "bad domain",
                serde_json::json!({"protocol": "xmpp"}),
                "domain",
            ),
            (
                "a.test",
                serde_json::json!({"protocol": "xmpp"}),
                "own domain",
            ),
            (
                "d.test",
                serde_json::json!({"protocol": "xmpp", "domain": "d.test"}),
                "in the path only",
            ),
            (
                "d.test",
                serde_json::json!({"protocol": "xmpp", "tls": "sometimes"}),
                "sometimes",
            ),
            (
                "d.test",
                serde_json::json!({"protocol": "xmpp", "routes": ["ftp://x"]}),
                "routes[0]",
            ),
            (
                "d.test",
                serde_json::json!({"protocol": "xmpp", "profile": "lyncish"}),
                "profile",
            ),
            (
                "d.test",
                serde_json::json!({"protocol": "xmpp", "colour": "red"}),
                "colour",
            ),
            (
                "d.test",
                serde_json::json!({"protocol": "sip", "profile": "webex"}),
                "profile",
            ),
            (
                "d.test",
                serde_json::json!({"protocol": "sip", "source_addrs": ["1.2.3.4", "nope"]}),
                "source_addrs: invalid IP",
            ),
            (
                "d.test",
                serde_json::json!({"protocol": "xmpp", "tls": 3}),
                "tls: invalid type",
            ),
            (
                "d.test",
                serde_json::json!({"protocol": "sip", "transport": "tcp"}),
                "source_addrs",
            ),
        ] {
            let e = parse_domain_settings(&c, domain, obj(body.clone()))
                .err()
                .unwrap_or_default();
            assert!(e.contains(needle), "{body}: {e:?}");
        }
        let mut off = cfg();
        off.sip.enabled = false;
        let e = parse_domain_settings(&off, "d.test", obj(serde_json::json!({"protocol": "sip"})))
            .err()
            .unwrap_or_default();
        assert!(e.contains("not enabled"), "{e}");
    }

    #[test]
    fn policy_bodies() {
        let p = parse_policy_body(&obj(
            serde_json::json!({"policy": "denylist", "domains": ["X.test.", "x.test", "y.test"]}),
        ))
        .unwrap();
        assert_eq!(p.mode, "denylist");
        assert_eq!(p.domains, vec!["x.test", "y.test"]);
        for (body, needle) in [
            (serde_json::json!({}), "policy: missing"),
            (serde_json::json!({"policy": "closed"}), "closed"),
            (
                serde_json::json!({"policy": "open", "domains": "x"}),
                "domains",
            ),
            (
                serde_json::json!({"policy": "open", "domains": ["a b"]}),
                "domains[0]",
            ),
            (serde_json::json!({"policy": "open", "extra": 1}), "extra"),
        ] {
            let e = parse_policy_body(&obj(body.clone()))
                .err()
                .unwrap_or_default();
            assert!(e.contains(needle), "{body}: {e:?}");
        }
    }

    #[test]
    fn the_store_wins_over_the_file() {
        let c = cfg();
        let file = FederationView::from_config(&c);
        assert!(file.allowed("b.test") && !file.allowed("d.test"));
        assert_eq!(
            file.peer("B.TEST.").map(|p| p.tls),
            Some(crate::config::PeerTls::Never)
        );
        let set = |protocol: &str, settings: Value| FederationOverride::Set {
            protocol: protocol.into(),
            settings: settings.to_string(),
        };
        let overrides = vec![
            // b.test moves to SIP, c.test is removed, d.test is new, e.test is garbage.
            (
                "b.test".to_string(),
                set(
                    "sip",
                    serde_json::json!({"domain": "b.test", "profile": "simple"}),
                ),
            ),
            ("c.test".to_string(), FederationOverride::Removed),
            (
                "d.test".to_string(),
                set(
                    "xmpp",
                    serde_json::json!({"domain": "d.test", "routes": ["127.0.0.9"]}),
                ),
            ),
            (
                "e.test".to_string(),
                set("xmpp", serde_json::json!({"tls": 3})),
            ),
            ("f.test".to_string(), FederationOverride::Removed),
        ];
        let policy = FederationPolicyRow {
            mode: "allowlist".into(),
            domains: vec!["d.test".into()],
        };
        let v = FederationView::combine(&c, 7, Some(&policy), &overrides);
        assert_eq!(v.version, 7);
        assert!(v.peer("b.test").is_none());
        assert!(v.sip_peer("b.test").is_some());
        assert!(v.peer("c.test").is_none());
        assert_eq!(v.removed, vec!["c.test"]);
        assert_eq!(v.peer("d.test").map(|p| p.routes.len()), Some(1));
        assert!(v.peer("e.test").is_none());
        assert!(v.allowed("d.test") && !v.allowed("b.test"));
        assert_eq!(v.policy_source, Source::Api);
        assert_eq!(
            v.xmpp
                .iter()
                .map(|(p, s)| (p.domain.as_str(), *s))
                .collect::<Vec<_>>(),
            vec![("d.test", Source::Api)]
        );
        assert_eq!(v.routes(RouteKind::Xmpp).len(), 1);
        assert_eq!(v.routes(RouteKind::Sip).len(), 2);
    }

    #[tokio::test]
    async fn changes_reach_the_view_the_locator_and_other_processes() {
        let dir = std::env::temp_dir().join(format!("entente-fed-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let url = format!("sqlite://{}", dir.join("fed.db").display());
        let store = Store::open(&url).await.unwrap();
        let c = Arc::new(cfg());
        let fed = Federation::new(c.clone(), store.clone());
        fed.reload().await.unwrap();
        let mut lc = entente_dns::LocatorConfig::default();
        lc.nameservers.push("127.0.0.1:9".parse().unwrap());
        let loc = Arc::new(Locator::new(lc).unwrap());
        fed.register_locator(RouteKind::Xmpp, loc.clone());
        let rx = fed.subscribe();
        // Another process (a second handle on the same database).
        let other = Federation::new(c.clone(), Store::open(&url).await.unwrap());
        other.reload().await.unwrap();
        fed.set_domain(
            "d.test",
            obj(serde_json::json!({"protocol": "xmpp", "routes": ["127.0.0.9:7000"]})),
        )
        .await
        .unwrap();
        assert!(rx.has_changed().unwrap());
        let ports: Vec<u16> = loc
            .xmpp_server("d.test")
            .await
            .map(|c| c.iter().map(|c| c.port).collect())
            .unwrap_or_default();
        assert_eq!(ports, vec![7000]);
        assert!(other.view().peer("d.test").is_none());
        assert!(other.poll().await.unwrap());
        assert!(other.view().peer("d.test").is_some());
        assert!(!other.poll().await.unwrap());
        // Remove a file domain, then bring it back.
        fed.remove_domain("C.test").await.unwrap();
        assert!(fed.view().peer("c.test").is_none());
        assert!(matches!(
            fed.remove_domain("c.test").await,
            Err(FederationError::NotFound(_))
        ));
        fed.clear_domain("c.test").await.unwrap();
        assert!(fed.view().peer("c.test").is_some());
        // Policy.
        fed.set_policy(&obj(serde_json::json!({"policy": "open"})))
            .await
            .unwrap();
        assert!(fed.view().allowed("zzz.test"));
        fed.clear_policy().await.unwrap();
        assert!(!fed.view().allowed("zzz.test"));
        assert!(matches!(
            fed.clear_policy().await,
            Err(FederationError::NotFound(_))
        ));
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
