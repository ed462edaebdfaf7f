//! The admin HTTP API (`[admin]`, `docs/admin-api.md`): accounts, connected sessions,
//! presence policy and federation links over JSON, and Prometheus metrics, for operators and
//! their tooling.
//!
//! Every route but `/health` needs `Authorization: Bearer <token>`, the token being the content
//! of `admin.token_file` (`/metrics` may be opened with `admin.metrics_require_token = false`).
//! Errors are `{"error": "..."}` with a fitting status code.
//!
//! The request and response types of the routes the `entente admin` CLI calls are the serde
//! structs below ([`FederationLinks`], [`DrainResult`], [`ErrorBody`]), shared by both sides.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use entente_model::jid::Jid;
use entente_model::policy::{DefaultAction, FederationRule, Rule, Target};
use entente_store::StoreError;
use entente_xmpp_proto::scram::{Credentials, DEFAULT_ITERATIONS};
use entente_xmpp_proto::StreamErrorCondition;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::{Exposition, Type};
use crate::s2s::S2s;
use crate::sip::SipHandle;
use crate::Hub;

/// The parts of a running server the API reads and acts on.
pub struct Services {
    pub hub: Arc<Hub>,
    /// XMPP federation (links, drain, link gauges).
    pub s2s: Option<Arc<S2s>>,
    /// The SIP endpoint, when `[sip] enabled` (SIP gauges and counters).
    pub sip: Option<SipHandle>,
    /// The SIP federation gateway, when `[sip] enabled` (subscription and session gauges).
    pub gateway: Option<Arc<crate::sipfed::Gateway>>,
    /// This node's membership of a cluster, in cluster mode.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// What every handler sees.
struct AdminState {
    hub: Arc<Hub>,
    s2s: Option<Arc<S2s>>,
    sip: Option<SipHandle>,
    gateway: Option<Arc<crate::sipfed::Gateway>>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    token: Vec<u8>,
    metrics_require_token: bool,
}

// ---- types shared with the `entente admin` CLI ----

/// The path of the federation links (`GET`).
pub const LINKS_PATH: &str = "/api/federation/links";
/// The path of the configured federated domains (`GET`).
pub const DOMAINS_PATH: &str = "/api/federation/domains";
/// The path of the metrics page (`GET`).
pub const METRICS_PATH: &str = "/metrics";

/// The path that drains the links with `peer` (`POST`); `peer` is percent-encoded.
pub fn drain_path(peer: &str) -> String {
    format!("/api/federation/links/{}/drain", percent_encode(peer))
}

/// Every error answer's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// One live XMPP federation link (ours, `out`) or stream (the peer's, `in`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationLink {
    /// The peer's domain (empty for an inbound stream that has not said who it is yet).
    pub peer: String,
    /// Our domain on the link.
    pub local: String,
    /// `out` or `in`.
    pub direction: String,
    /// `connecting`, `established` or `closing`.
    pub state: String,
    /// `sasl-external`, `dialback` or `none` (not authenticated yet).
    pub auth: String,
    pub tls: bool,
    /// When the link was created, or became established (RFC 3339, UTC).
    pub since: String,
    /// Stanzas received on an inbound stream.
    pub stanzas_in: u64,
    /// Stanzas written to an outbound link.
    pub stanzas_out: u64,
    /// Stanzas waiting for an outbound link.
    pub queued: u64,
}

impl From<crate::s2s::LinkInfo> for FederationLink {
    fn from(l: crate::s2s::LinkInfo) -> FederationLink {
        FederationLink {
            peer: l.remote,
            local: l.local,
            direction: l.direction.to_string(),
            state: l.state.to_string(),
            auth: l.auth.map_or("none", |a| a.as_str()).to_string(),
            tls: l.tls,
            since: l.since,
            stanzas_in: l.stanzas_in,
            stanzas_out: l.stanzas_out,
            queued: l.queued,
        }
    }
}

/// `GET /api/federation/links`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationLinks {
    pub links: Vec<FederationLink>,
    /// The open SIP connections (TCP and TLS), when SIP is enabled.
    #[serde(default)]
    pub sip_connections: Vec<SipConnection>,
}

/// One open SIP connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipConnection {
    /// The peer's address, `ip:port`.
    pub remote: String,
    /// `tcp` or `tls`.
    pub transport: String,
    /// `out` (we opened it) or `in`.
    pub direction: String,
    /// For TLS: the names the peer's certificate is valid for (how it authenticated).
    pub tls_names: Vec<String>,
    /// When it was opened (RFC 3339, UTC).
    pub since: String,
}

/// One link or stream a drain closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainedLink {
    /// The link as it was when the drain began.
    pub link: FederationLink,
    /// Queued stanzas written to the stream before it was closed.
    pub flushed: u64,
    /// Queued stanzas bounced to their senders with an error (the link was not established
    /// yet, or broke while closing).
    pub bounced: u64,
    /// Whether the stream had ended when the answer was sent (false: still closing).
    pub closed: bool,
}

/// `POST /api/federation/links/{domain}/drain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainResult {
    pub peer: String,
    pub drained: Vec<DrainedLink>,
}

/// How long a drain waits for the streams to end before answering.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

type St = State<Arc<AdminState>>;

/// An error answer: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Exists(what) => ApiError(StatusCode::CONFLICT, format!("{what} exists")),
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} does not exist")),
            other => {
                tracing::error!(error = %other, "admin API: store error");
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the database did not answer; see the server log".into(),
                )
            }
        }
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

/// Reads the bearer token from `path` (surrounding whitespace ignored; it must not be empty).
pub fn read_token(path: &std::path::Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the admin token (admin.token_file) {}",
            path.display()
        )
    })?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "admin.token_file {} is empty",
        path.display()
    );
    Ok(token.as_bytes().to_vec())
}

/// Serves the API on `listener` until `shutdown` turns true.
pub async fn serve(
    services: Services,
    token: Vec<u8>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = router(services, token);
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, "the admin API stopped");
    }
}

/// The routes, with authentication in front of everything but `/health` (and `/metrics` when
/// `admin.metrics_require_token` is off).
fn router(services: Services, token: Vec<u8>) -> Router {
    let metrics_require_token = services.hub.cfg.admin.metrics_require_token;
    let state = Arc::new(AdminState {
        hub: services.hub,
        s2s: services.s2s,
        sip: services.sip,
        gateway: services.gateway,
        cluster: services.cluster,
        token,
        metrics_require_token,
    });
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/openapi.json", get(openapi))
        .route(METRICS_PATH, get(metrics))
        .route(LINKS_PATH, get(links_list))
        .route(DOMAINS_PATH, get(domains_list))
        .route(
            "/api/federation/domains/{domain}",
            put(domain_put).delete(domain_delete),
        )
        .route(
            "/api/federation/domains/{domain}/override",
            delete(domain_override_delete),
        )
        .route(
            FEDERATION_POLICY_PATH,
            get(federation_policy_get)
                .put(federation_policy_put)
                .delete(federation_policy_delete),
        )
        .route("/api/federation/links/{domain}/drain", post(links_drain))
        .route("/api/users", get(users_list).post(user_create))
        .route("/api/users/{name}", delete(user_delete))
        .route("/api/users/{name}/password", put(user_password))
        .route(
            "/api/users/{name}/policy",
            get(user_policy_get).put(user_policy_set),
        )
        .route(
            "/api/users/{name}/policy/{target}",
            delete(user_policy_delete),
        )
        .route("/api/policy", get(admin_policy))
        .route("/api/sessions", get(sessions_list))
        .route("/api/cluster", get(cluster_status))
        .route("/api/sessions/{*jid}", delete(session_kick))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route".into(),
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(st): St, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/health" || (path == METRICS_PATH && !st.metrics_require_token) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), &st.token) => next.run(req).await,
        other => {
            let msg = if other.is_some() {
                "the bearer token is wrong"
            } else {
                "an Authorization: Bearer <token> header is needed"
            };
            let mut r = ApiError(StatusCode::UNAUTHORIZED, msg.into()).into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

// ---- request helpers ----

/// Parses a JSON object body.
fn body_object(body: &Bytes) -> ApiResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad(format!("the body is not valid JSON: {e}"))),
    }
}

/// A required, non-empty string field.
fn field<'a>(m: &'a Map<String, Value>, name: &str) -> ApiResult<&'a str> {
    match m.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(ApiError::bad(format!("{name}: must not be empty"))),
        Some(_) => Err(ApiError::bad(format!("{name}: must be a string"))),
        None => Err(ApiError::bad(format!("{name}: missing"))),
    }
}

/// The longest user name the API takes, in characters (the store's limit is 1023 bytes; 255
/// characters of at most 4 bytes always fit, and the OpenAPI document can say it).
const MAX_NAME_CHARS: usize = 255;

/// The bare JID of a local account, from `alice` or `alice@<domain>`.
fn user_jid(hub: &Hub, field_name: &str, name: &str) -> ApiResult<String> {
    let domain = &hub.cfg.domain;
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad(format!(
            "{field_name}: longer than {MAX_NAME_CHARS} characters"
        )));
    }
    let local = match name.split_once('@') {
        Some((l, d)) => {
            if !d.eq_ignore_ascii_case(domain) {
                return Err(ApiError::bad(format!(
                    "{field_name}: {name:?}: this server hosts {domain}, not {d}"
                )));
            }
            l
        }
        None => name,
    };
    // `.` and `..` are valid localparts, but a URL path cannot name them (clients remove dot
    // segments), so the API does not create or address such accounts.
    if local == "." || local == ".." {
        return Err(ApiError::bad(format!(
            "{field_name}: {name:?}: the API does not take the user names . and .."
        )));
    }
    let local = entente_model::jid::validate_username(local).map_err(|e| {
        ApiError::bad(format!(
            "{field_name}: {name:?} is not a valid user name: {e}"
        ))
    })?;
    Ok(format!("{local}@{domain}"))
}

async fn existing_user(hub: &Hub, name: &str) -> ApiResult<String> {
    let jid = user_jid(hub, "name", name)?;
    if !hub.store.user_exists(&jid).await? {
        return Err(ApiError::not_found(format!("user {jid} does not exist")));
    }
    Ok(jid)
}

fn parse_target(s: &str) -> ApiResult<Target> {
    if s.contains('/') {
        return Err(ApiError::bad(format!(
            "target: {s:?}: a rule names a user, a domain or *.domain, not a resource"
        )));
    }
    Target::parse(s).map_err(|e| ApiError::bad(format!("target: {e}")))
}

// ---- handlers ----

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(st): St) -> ApiResult<Json<Value>> {
    match st.hub.store.user_exists("").await {
        Ok(_) => Ok(Json(json!({ "status": "ready" }))),
        Err(e) => {
            tracing::warn!(error = %e, "admin API: readiness check failed");
            Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database does not answer".into(),
            ))
        }
    }
}

async fn users_list(State(st): St) -> ApiResult<Json<Value>> {
    let users = st.hub.store.user_list(&st.hub.cfg.domain).await?;
    Ok(Json(json!({ "users": users })))
}

async fn user_create(State(st): St, body: Bytes) -> ApiResult<Response> {
    let m = body_object(&body)?;
    let name = field(&m, "name")?;
    let password = field(&m, "password")?;
    let jid = user_jid(&st.hub, "name", name)?;
    if st.hub.store.user_exists(&jid).await? {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("user {jid} already exists"),
        ));
    }
    let pw = password.to_string();
    let creds = tokio::task::spawn_blocking(move || Credentials::derive(&pw, DEFAULT_ITERATIONS))
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "key derivation failed".into(),
            )
        })?;
    st.hub
        .store
        .user_create(&crate::c2s::to_record(&jid, &creds))
        .await?;
    tracing::info!(%jid, "admin API: created the account");
    Ok((StatusCode::CREATED, Json(json!({ "jid": jid }))).into_response())
}

async fn user_delete(State(st): St, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let jid = user_jid(&st.hub, "name", &name)?;
    st.hub.store.user_delete(&jid).await?;
    if let Ok(bare) = Jid::parse(&jid) {
        for s in st.hub.sessions.of(&bare) {
            s.handle.kick(
                StreamErrorCondition::PolicyViolation,
                "the account was deleted by an administrator",
            );
        }
    }
    tracing::info!(%jid, "admin API: deleted the account");
    Ok(StatusCode::NO_CONTENT)
}

async fn user_password(
    State(st): St,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let m = body_object(&body)?;
    let password = field(&m, "password")?.to_string();
    let jid = existing_user(&st.hub, &name).await?;
    let creds =
        tokio::task::spawn_blocking(move || Credentials::derive(&password, DEFAULT_ITERATIONS))
            .await
            .map_err(|_| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "key derivation failed".into(),
                )
            })?;
    st.hub
        .store
        .user_set_credentials(&crate::c2s::to_record(&jid, &creds))
        .await?;
    tracing::info!(%jid, "admin API: changed the password");
    Ok(StatusCode::NO_CONTENT)
}

async fn sessions_list(State(st): St) -> Json<Value> {
    let list: Vec<Value> = st
        .hub
        .sessions
        .all()
        .iter()
        .map(|s| {
            json!({
                "jid": s.handle.jid.to_string(),
                "available": s.presence.is_some(),
                "priority": s.priority,
            })
        })
        .collect();
    Json(json!({ "sessions": list }))
}

async fn cluster_status(State(st): St) -> Json<Value> {
    let Some(c) = &st.cluster else {
        return Json(json!({ "enabled": false }));
    };
    let nodes: Vec<Value> = c
        .alive_peers()
        .iter()
        .map(|n| {
            json!({
                "node_id": n,
                "sessions": st.hub.sessions.remote_of_node(n).len(),
            })
        })
        .collect();
    Json(json!({
        "enabled": true,
        "node_id": c.node_id(),
        "sessions": st.hub.sessions.count(),
        "peers": nodes,
    }))
}

async fn session_kick(State(st): St, Path(jid): Path<String>) -> ApiResult<StatusCode> {
    let full = Jid::parse(&jid).map_err(|e| ApiError::bad(format!("jid: {jid:?}: {e}")))?;
    if full.resource().is_none() {
        return Err(ApiError::bad(format!(
            "jid: {jid:?} is a bare JID; name one session (user@domain/resource)"
        )));
    }
    let s = st
        .hub
        .sessions
        .find(&full)
        .ok_or_else(|| ApiError::not_found(format!("no session is bound to {full}")))?;
    s.handle.kick(
        StreamErrorCondition::PolicyViolation,
        "disconnected by an administrator",
    );
    tracing::info!(jid = %full, "admin API: disconnected the session");
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_policy(State(st): St) -> Json<Value> {
    let a = st.hub.admin_policy();
    let federation = match &a.federation {
        FederationRule::Open => json!({ "policy": "open", "domains": [] }),
        FederationRule::Allowlist(d) => json!({ "policy": "allowlist", "domains": d }),
        FederationRule::Denylist(d) => json!({ "policy": "denylist", "domains": d }),
        other => json!({ "policy": format!("{other:?}").to_lowercase(), "domains": [] }),
    };
    let default = match a.default {
        DefaultAction::Ask => "ask".to_string(),
        DefaultAction::Allow => "allow".to_string(),
        DefaultAction::Deny => "deny".to_string(),
        other => format!("{other:?}").to_lowercase(),
    };
    Json(json!({
        "local_domains": a.local_domains,
        "federation": federation,
        "default": default,
    }))
}

async fn user_policy_get(State(st): St, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let jid = existing_user(&st.hub, &name).await?;
    let rules: Vec<Value> = st
        .hub
        .store
        .policy_rules(&jid)
        .await?
        .into_iter()
        .map(|(target, rule)| json!({ "target": target, "rule": rule }))
        .collect();
    let blocked = st.hub.store.block_list(&jid).await?;
    Ok(Json(
        json!({ "jid": jid, "rules": rules, "blocked": blocked }),
    ))
}

async fn user_policy_set(
    State(st): St,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let m = body_object(&body)?;
    let target = parse_target(field(&m, "target")?)?;
    let rule: Rule = field(&m, "rule")?
        .parse()
        .map_err(|e| ApiError::bad(format!("rule: {e}")))?;
    let jid = existing_user(&st.hub, &name).await?;
    st.hub
        .store
        .policy_set(&jid, &target.to_string(), rule.as_str())
        .await?;
    if let Ok(j) = entente_model::jid::Jid::parse(&jid) {
        st.hub.invalidate_policy(&j);
    }
    tracing::info!(%jid, %target, rule = rule.as_str(), "admin API: set a presence rule");
    Ok(StatusCode::NO_CONTENT)
}

async fn user_policy_delete(
    State(st): St,
    Path((name, target)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let t = parse_target(&target)?;
    let jid = existing_user(&st.hub, &name).await?;
    if !st.hub.store.policy_remove(&jid, &t.to_string()).await? {
        return Err(ApiError::not_found(format!("{jid} has no rule for {t}")));
    }
    if let Ok(j) = entente_model::jid::Jid::parse(&jid) {
        st.hub.invalidate_policy(&j);
    }
    tracing::info!(%jid, target = %t, "admin API: removed a presence rule");
    Ok(StatusCode::NO_CONTENT)
}

async fn metrics(State(st): St) -> Response {
    let mut e = Exposition::new();
    e.family(
        "entente_build_info",
        "The running version of Entente; always 1.",
        Type::Gauge,
    );
    e.sample(
        "entente_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    e.single(
        "entente_c2s_sessions",
        "Bound client sessions (connected resources).",
        Type::Gauge,
        st.hub.sessions.count() as f64,
    );
    if let Some(c) = &st.cluster {
        // Only in cluster mode: a single node's exposition stays as it was.
        e.single(
            "entente_cluster_nodes",
            "Cluster nodes this node sees alive, itself included.",
            Type::Gauge,
            (c.alive_peers().len() + 1) as f64,
        );
    }
    let (inbound, outbound) = st.s2s.as_ref().map_or((0, 0), |s| s.established_counts());
    e.family(
        "entente_s2s_links",
        "Established XMPP federation streams: ours to peers (out) and theirs to us (in).",
        Type::Gauge,
    );
    e.sample("entente_s2s_links", &[("direction", "in")], inbound as f64);
    e.sample(
        "entente_s2s_links",
        &[("direction", "out")],
        outbound as f64,
    );
    st.hub.metrics.write_counters(&mut e);
    if let Some(sip) = &st.sip {
        let stats = sip.stats();
        e.single(
            "entente_sip_connections",
            "Open SIP TCP and TLS connections.",
            Type::Gauge,
            sip.connection_count() as f64,
        );
        e.single(
            "entente_sip_bad_requests_total",
            "SIP requests that did not parse and were answered 400 (or 513).",
            Type::Counter,
            stats.bad_requests as f64,
        );
        e.single(
            "entente_sip_dropped_requests_total",
            "SIP requests that did not parse and could not be answered.",
            Type::Counter,
            stats.dropped_requests as f64,
        );
        e.single(
            "entente_sip_unparseable_responses_total",
            "SIP responses that did not parse (dropped).",
            Type::Counter,
            stats.unparseable_responses as f64,
        );
        e.single(
            "entente_sip_rate_limited_total",
            "SIP messages over the per-connection (per-source over UDP) rate.",
            Type::Counter,
            stats.rate_limited as f64,
        );
    }
    if let Some(gw) = &st.gateway {
        use std::sync::atomic::Ordering::Relaxed;
        let g = gw.stats();
        e.family(
            "entente_sip_subscriptions",
            "SIP presence subscriptions: foreign watchers of local users (in), local users watching SIP contacts (out).",
            Type::Gauge,
        );
        e.sample(
            "entente_sip_subscriptions",
            &[("direction", "in")],
            g.inbound_subscriptions.load(Relaxed) as f64,
        );
        e.sample(
            "entente_sip_subscriptions",
            &[("direction", "out")],
            g.outbound_subscriptions.load(Relaxed) as f64,
        );
        e.single(
            "entente_sip_im_sessions",
            "Session-mode IM dialogs with SIP contacts.",
            Type::Gauge,
            g.im_sessions.load(Relaxed) as f64,
        );
        e.family(
            "entente_sip_federation_requests_total",
            "SIP requests from foreign domains, by outcome of the gateway's first checks.",
            Type::Counter,
        );
        for (outcome, c) in [
            ("accepted", &g.accepted),
            ("domain-not-permitted", &g.refused_domain),
            ("unauthenticated", &g.refused_unauthenticated),
            ("not-local", &g.refused_not_local),
        ] {
            e.sample(
                "entente_sip_federation_requests_total",
                &[("outcome", outcome)],
                c.load(Relaxed) as f64,
            );
        }
    }
    if let Ok(n) = st.hub.store.offline_total().await {
        e.single(
            "entente_offline_messages",
            "Messages stored for users who were offline.",
            Type::Gauge,
            n as f64,
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        e.finish(),
    )
        .into_response()
}

async fn links_list(State(st): St) -> Json<FederationLinks> {
    let links = st
        .s2s
        .as_ref()
        .map(|s| s.links())
        .unwrap_or_default()
        .into_iter()
        .map(FederationLink::from)
        .collect();
    let sip_connections = st
        .sip
        .as_ref()
        .map(|s| s.connections())
        .unwrap_or_default()
        .into_iter()
        .map(|c| SipConnection {
            remote: c.remote.addr.to_string(),
            transport: c.remote.transport.via_token().to_ascii_lowercase(),
            direction: if c.outbound { "out" } else { "in" }.into(),
            tls_names: c
                .tls_names
                .map(|n| n.iter().cloned().collect())
                .unwrap_or_default(),
            since: crate::hub::rfc3339_at(c.since),
        })
        .collect();
    Json(FederationLinks {
        links,
        sip_connections,
    })
}

async fn links_drain(State(st): St, Path(domain): Path<String>) -> ApiResult<Json<DrainResult>> {
    let peer = Jid::domain_only(&domain)
        .map_err(|e| ApiError::bad(format!("domain: {domain:?}: {e}")))?
        .domain()
        .to_string();
    let drained = match &st.s2s {
        Some(s) => s.drain(&peer, DRAIN_WAIT).await,
        None => Vec::new(),
    };
    if drained.is_empty() {
        return Err(ApiError::not_found(format!(
            "no federation link with {peer} is open"
        )));
    }
    tracing::info!(%peer, streams = drained.len(), "admin API: drained federation links");
    let drained = drained
        .into_iter()
        .map(|d| DrainedLink {
            link: d.link.into(),
            flushed: d.flushed,
            bounced: d.bounced,
            closed: d.closed,
        })
        .collect();
    Ok(Json(DrainResult { peer, drained }))
}

/// One configured foreign domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederatedDomain {
    pub domain: String,
    /// `sip` or `xmpp`.
    pub protocol: String,
    /// The peer profile (`lync`, `moc`, `aol`, `simple`, `webex`, …), if any.
    pub profile: Option<String>,
    /// SIP: `tls` or `tcp`; XMPP: the `tls` setting (`required`, `optional`, `never`).
    pub transport: String,
    /// SIP: whether a certificate for the domain is required on its requests.
    pub mutual_tls: Option<bool>,
    /// Static routes, tried before DNS.
    pub routes: Vec<String>,
    /// SIP: the source addresses that authenticate the peer.
    pub source_addrs: Vec<String>,
    /// SIP: `session` or `page`.
    pub im: Option<String>,
    /// `config` (the file) or `api` (set through the admin API).
    pub source: String,
}

/// The federation settings: the XMPP policy and every configured domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederatedDomains {
    /// Whether XMPP server-to-server federation is on.
    pub xmpp_enabled: bool,
    /// `open`, `allowlist` or `denylist`.
    pub xmpp_policy: String,
    /// The allowlist or denylist.
    pub xmpp_policy_domains: Vec<String>,
    /// `config` or `api`: where the policy comes from.
    pub xmpp_policy_source: String,
    /// Whether SIP is on (only the SIP domains listed here are permitted).
    pub sip_enabled: bool,
    pub domains: Vec<FederatedDomain>,
    /// Domains the configuration file lists and the admin API removed.
    pub removed: Vec<String>,
}

/// The path of one federated domain (`PUT`, `DELETE`); `domain` is percent-encoded.
pub fn domain_path(domain: &str) -> String {
    format!("{DOMAINS_PATH}/{}", percent_encode(domain))
}

/// The path that drops the API's override of a domain (`DELETE`).
pub fn domain_override_path(domain: &str) -> String {
    format!("{}/override", domain_path(domain))
}

/// The path of the federation policy (`GET`, `PUT`, `DELETE`).
pub const FEDERATION_POLICY_PATH: &str = "/api/federation/policy";

fn percent_encode(s: &str) -> String {
    let mut p = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            p.push(char::from(b));
        } else {
            p.push_str(&format!("%{b:02X}"));
        }
    }
    p
}

/// `GET`/`PUT /api/federation/policy`: the XMPP federation policy in effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationPolicyBody {
    /// `open`, `allowlist` or `denylist`.
    pub policy: String,
    pub domains: Vec<String>,
    /// `config` (the file's) or `api` (set through the API).
    pub source: String,
}

fn sip_domain_entry(p: &crate::config::SipPeerConfig, source: &str) -> FederatedDomain {
    use crate::config::{ImMode, SipPeerTransport};
    FederatedDomain {
        domain: p.domain.clone(),
        protocol: "sip".into(),
        profile: Some(p.presence_profile().name().to_string()),
        transport: match p.transport {
            SipPeerTransport::Tls => "tls".into(),
            SipPeerTransport::Tcp => "tcp".into(),
        },
        mutual_tls: Some(p.requires_mutual_tls()),
        routes: p.routes.clone(),
        source_addrs: p.source_addrs.iter().map(ToString::to_string).collect(),
        im: Some(match p.im_mode() {
            ImMode::Session => "session".into(),
            ImMode::Page => "page".into(),
        }),
        source: source.into(),
    }
}

fn xmpp_domain_entry(p: &crate::config::PeerConfig, source: &str) -> FederatedDomain {
    use crate::config::PeerTls;
    FederatedDomain {
        domain: p.domain.clone(),
        protocol: "xmpp".into(),
        profile: p.profile.clone(),
        transport: match p.tls {
            PeerTls::Required => "required".into(),
            PeerTls::Optional => "optional".into(),
            PeerTls::Never => "never".into(),
        },
        mutual_tls: None,
        routes: p.routes.clone(),
        source_addrs: Vec::new(),
        im: None,
        source: source.into(),
    }
}

async fn domains_list(State(st): St) -> Json<FederatedDomains> {
    let cfg = &st.hub.cfg;
    let fed = st.hub.federation.view();
    let mut domains: Vec<FederatedDomain> = fed
        .sip
        .iter()
        .map(|(p, src)| sip_domain_entry(p, src.as_str()))
        .collect();
    domains.extend(
        fed.xmpp
            .iter()
            .map(|(p, src)| xmpp_domain_entry(p, src.as_str())),
    );
    domains.sort_by(|a, b| a.domain.cmp(&b.domain));
    Json(FederatedDomains {
        xmpp_enabled: cfg.s2s.enabled,
        xmpp_policy: crate::federation::policy_name(fed.policy).into(),
        xmpp_policy_domains: fed.policy_domains.clone(),
        xmpp_policy_source: fed.policy_source.as_str().into(),
        sip_enabled: cfg.sip.enabled,
        domains,
        removed: fed.removed.clone(),
    })
}

impl From<crate::federation::FederationError> for ApiError {
    fn from(e: crate::federation::FederationError) -> ApiError {
        use crate::federation::FederationError as E;
        match e {
            E::Invalid(m) => ApiError::bad(m),
            E::NotFound(m) => ApiError::not_found(m),
            E::Store(s) => s.into(),
        }
    }
}

async fn domain_put(
    State(st): St,
    Path(domain): Path<String>,
    body: Bytes,
) -> ApiResult<Json<FederatedDomain>> {
    let m = body_object(&body)?;
    let (domain, view) = st.hub.federation.set_domain(&domain, m).await?;
    let same = |d: &str| d.trim_end_matches('.').eq_ignore_ascii_case(&domain);
    let entry = view
        .xmpp
        .iter()
        .find(|(p, _)| same(&p.domain))
        .map(|(p, s)| xmpp_domain_entry(p, s.as_str()))
        .or_else(|| {
            view.sip
                .iter()
                .find(|(p, _)| same(&p.domain))
                .map(|(p, s)| sip_domain_entry(p, s.as_str()))
        })
        .ok_or_else(|| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the settings were stored but are not in effect; see the server log".into(),
            )
        })?;
    tracing::info!(domain = %entry.domain, protocol = %entry.protocol, "admin API: set a federated domain");
    Ok(Json(entry))
}

async fn domain_delete(State(st): St, Path(domain): Path<String>) -> ApiResult<StatusCode> {
    st.hub.federation.remove_domain(&domain).await?;
    tracing::info!(%domain, "admin API: removed a federated domain");
    Ok(StatusCode::NO_CONTENT)
}

async fn domain_override_delete(
    State(st): St,
    Path(domain): Path<String>,
) -> ApiResult<StatusCode> {
    st.hub.federation.clear_domain(&domain).await?;
    tracing::info!(%domain, "admin API: dropped a federated domain's override");
    Ok(StatusCode::NO_CONTENT)
}

fn policy_body(view: &crate::federation::FederationView) -> FederationPolicyBody {
    FederationPolicyBody {
        policy: crate::federation::policy_name(view.policy).into(),
        domains: view.policy_domains.clone(),
        source: view.policy_source.as_str().into(),
    }
}

async fn federation_policy_get(State(st): St) -> Json<FederationPolicyBody> {
    Json(policy_body(&st.hub.federation.view()))
}

async fn federation_policy_put(
    State(st): St,
    body: Bytes,
) -> ApiResult<Json<FederationPolicyBody>> {
    let m = body_object(&body)?;
    let view = st.hub.federation.set_policy(&m).await?;
    tracing::info!(policy = crate::federation::policy_name(view.policy), domains = ?view.policy_domains, "admin API: set the federation policy");
    Ok(Json(policy_body(&view)))
}

async fn federation_policy_delete(State(st): St) -> ApiResult<Json<FederationPolicyBody>> {
    let view = st.hub.federation.clear_policy().await?;
    tracing::info!("admin API: the federation policy is the file's again");
    Ok(Json(policy_body(&view)))
}

async fn openapi(State(st): St) -> Json<Value> {
    Json(openapi_document(&st.hub.cfg.domain))
}

// ---- patterns of the OpenAPI document ----
//
// The path and body strings are described by regular expressions that accept exactly what the
// handlers accept (checked by schemathesis in tests/e2e/test_schemathesis.py, which sends
// strings that match, and strings that do not, and expects them accepted and refused). They use
// the common subset of ECMA 262 and Python regular expressions, except `\w`, which is meant in
// its Unicode sense (letters, digits and `_`, as `char::is_alphanumeric` in the JID parser).

/// One character of a localpart: not a control character, not white space, none of RFC 7622
/// §3.3.1's `"&'/:<>@` (the set `entente_model::jid` refuses).
const LOCAL_CHAR: &str =
    r#"[^\x00-\x20\x7f-\xa0"&'/:<>@\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"#;
/// The same without `.`.
const LOCAL_CHAR_NO_DOT: &str =
    r#"[^.\x00-\x20\x7f-\xa0"&'/:<>@\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"#;
/// A domain: labels of letters, digits, `_` and inner `-`, with an optional final dot. (A label
/// is at most 63 bytes in UTF-8; the pattern allows 63 characters, the server refuses more
/// bytes with 400.)
const DOMAIN: &str = r"\w(?:[\w-]{0,61}\w)?(?:\.\w(?:[\w-]{0,61}\w)?)*\.?";
/// A port number, 0 to 65535, in ASCII digits.
const PORT: &str =
    r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})";
/// An IPv4 address as Rust reads one (no leading zeros).
const IPV4: &str = r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";

/// A localpart of 1 to `MAX_NAME_CHARS` characters, but not `.` or `..`.
fn local_pattern() -> String {
    let (c, n) = (LOCAL_CHAR, LOCAL_CHAR_NO_DOT);
    format!(r"(?:{n}{c}{{0,254}}|\.{n}{c}{{0,253}}|\.\.{c}{{1,253}})")
}

/// A user name of the API: a localpart, or a bare JID of `domain`.
fn user_name_pattern(domain: &str) -> String {
    format!("^{}(?:@{})?$", local_pattern(), domain.replace('.', r"\."))
}

/// The OpenAPI 3.0 description of exactly the routes above, for the server of `domain`.
pub fn openapi_document(domain: &str) -> Value {
    let name_pattern = user_name_pattern(domain);
    let domain_pattern = format!("^{DOMAIN}$");
    let target_pattern = format!(r"^(?:\*\.{DOMAIN}|(?:{}@)?{DOMAIN})$", local_pattern());
    let full_jid_pattern = format!(
        r"^(?:{}@)?{DOMAIN}/[^\x00-\x1f\x7f-\x9f]{{1,255}}$",
        local_pattern()
    );
    let err = |desc: &str| {
        json!({
            "description": desc,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
        })
    };
    let ok_json = |desc: &str, schema: Value| json!({ "description": desc, "content": { "application/json": { "schema": schema } } });
    let no_content = |desc: &str| json!({ "description": desc });
    let body = |schema: Value| json!({ "required": true, "content": { "application/json": { "schema": schema } } });
    let name_param = json!({
        "name": "name", "in": "path", "required": true,
        "description": "the user name (`alice`) or bare JID (`alice@domain`)",
        "schema": { "type": "string", "pattern": name_pattern, "maxLength": 1000 }
    });
    let unauthorized = err("no or a wrong bearer token");
    let cluster_schema = json!({
        "type": "object",
        "properties": {
            "enabled": { "type": "boolean" },
            "node_id": { "type": "string" },
            "sessions": { "type": "integer" },
            "peers": { "type": "array", "items": {
                "type": "object",
                "properties": {
                    "node_id": { "type": "string" },
                    "sessions": { "type": "integer" }
                }
            } }
        }
    });
    let domains_schema = json!({
        "type": "object",
        "required": ["xmpp_enabled", "xmpp_policy", "xmpp_policy_domains", "xmpp_policy_source",
                     "sip_enabled", "domains", "removed"],
        "properties": {
            "xmpp_enabled": { "type": "boolean" },
            "xmpp_policy": { "type": "string", "enum": ["open", "allowlist", "denylist"] },
            "xmpp_policy_domains": { "type": "array", "items": { "type": "string" } },
            "xmpp_policy_source": { "type": "string", "enum": ["config", "api"] },
            "sip_enabled": { "type": "boolean" },
            "domains": { "type": "array", "items": { "$ref": "#/components/schemas/FederatedDomain" } },
            "removed": {
                "type": "array", "items": { "type": "string" },
                "description": "domains the configuration file lists and the API removed"
            }
        }
    });
    let domain_param = json!({
        "name": "domain", "in": "path", "required": true,
        "description": "the foreign domain",
        "schema": { "type": "string", "pattern": domain_pattern.clone(), "maxLength": 1000 }
    });
    // A foreign domain to set: not this server's own.
    let foreign_domain_param = json!({
        "name": "domain", "in": "path", "required": true,
        "description": "the foreign domain (not this server's)",
        "schema": {
            "type": "string", "maxLength": 1000,
            "pattern": format!(r"^(?!{}\.?$){DOMAIN}$", domain.replace('.', r"\."))
        }
    });
    let domain_list = json!({ "type": "array", "items": { "type": "string", "pattern": domain_pattern.clone(), "maxLength": 1000 } });
    let ip_list = |min: u64| {
        json!({
            "type": "array", "minItems": min,
            "items": { "anyOf": [
                { "type": "string", "pattern": format!("^{IPV4}$") },
                { "type": "string", "format": "ipv6" }
            ] },
            "description": "IP addresses the peer's requests come from"
        })
    };
    // Any presence profile names an XMPP peer's; SIP peers take the non-XMPP ones.
    let mut xmpp_profiles: Vec<Value> = entente_model::availability::Profile::ALL
        .iter()
        .map(|p| Value::from(p.name()))
        .collect();
    let sip_profiles: Vec<Value> = entente_model::availability::Profile::ALL
        .iter()
        .filter(|p| !p.is_xmpp())
        .map(|p| Value::from(p.name()))
        .collect();
    xmpp_profiles.push(Value::Null);
    let routes_schema = json!({
        "type": "array",
        "items": { "type": "string", "maxLength": 1000, "pattern": format!("^(?:tls://)?{DOMAIN}:{PORT}$") },
        "description": "static routes tried before DNS: host:port or tls://host:port (the configuration file also takes [IPv6]:port, and for SIP tcp://host:port)"
    });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Entente admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Accounts, connected sessions, presence policy, federation links and metrics of one Entente server."
        },
        "security": [ { "bearer": [] } ],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": { "error": { "type": "string" } }
                },
                "FederatedDomain": {
                    "type": "object",
                    "required": ["domain", "protocol", "transport", "routes", "source_addrs", "source"],
                    "properties": {
                        "domain": { "type": "string" },
                        "protocol": { "type": "string", "enum": ["sip", "xmpp"] },
                        "profile": { "type": "string", "nullable": true },
                        "transport": { "type": "string", "enum": ["tls", "tcp", "required", "optional", "never"], "description": "SIP: tls or tcp; XMPP: the tls setting" },
                        "mutual_tls": { "type": "boolean", "nullable": true },
                        "routes": { "type": "array", "items": { "type": "string" } },
                        "source_addrs": { "type": "array", "items": { "type": "string" } },
                        "im": { "type": "string", "nullable": true, "enum": ["session", "page", null] },
                        "source": { "type": "string", "enum": ["config", "api"] }
                    }
                },
                "XmppDomainSettings": {
                    "type": "object", "required": ["protocol"], "additionalProperties": false,
                    "description": "the fields of [[s2s.peer]]",
                    "properties": {
                        "protocol": { "type": "string", "enum": ["xmpp"] },
                        "tls": { "type": "string", "enum": ["required", "optional", "never"] },
                        "routes": routes_schema.clone(),
                        "profile": { "type": "string", "nullable": true, "enum": xmpp_profiles }
                    }
                },
                "SipDomainSettings": {
                    "description": "the fields of [[sip.peer]]; only when [sip] enabled",
                    "oneOf": [
                        { "$ref": "#/components/schemas/SipTlsDomainSettings" },
                        { "$ref": "#/components/schemas/SipTcpDomainSettings" }
                    ]
                },
                "SipTlsDomainSettings": {
                    "type": "object", "required": ["protocol"], "additionalProperties": false,
                    "description": "a SIP peer over TLS (the default transport)",
                    "properties": {
                        "protocol": { "type": "string", "enum": ["sip"] },
                        "profile": { "type": "string", "enum": sip_profiles.clone(), "description": "default simple" },
                        "transport": { "type": "string", "enum": ["tls"] },
                        "mutual_tls": { "type": "boolean", "nullable": true },
                        "routes": routes_schema.clone(),
                        "source_addrs": ip_list(0),
                        "im": { "type": "string", "nullable": true, "enum": ["session", "page", null] }
                    }
                },
                "SipTcpDomainSettings": {
                    "type": "object", "required": ["protocol", "transport", "source_addrs"], "additionalProperties": false,
                    "description": "a SIP peer over plain TCP, authenticated by its source addresses",
                    "properties": {
                        "protocol": { "type": "string", "enum": ["sip"] },
                        "profile": { "type": "string", "enum": sip_profiles, "description": "default simple" },
                        "transport": { "type": "string", "enum": ["tcp"] },
                        "mutual_tls": { "type": "boolean", "nullable": true, "enum": [false, null] },
                        "routes": routes_schema,
                        "source_addrs": ip_list(1),
                        "im": { "type": "string", "nullable": true, "enum": ["session", "page", null] }
                    }
                },
                "FederationPolicy": {
                    "type": "object", "required": ["policy", "domains", "source"],
                    "properties": {
                        "policy": { "type": "string", "enum": ["open", "allowlist", "denylist"] },
                        "domains": { "type": "array", "items": { "type": "string" } },
                        "source": { "type": "string", "enum": ["config", "api"] }
                    }
                },
                "Rule": {
                    "type": "object", "required": ["target", "rule"],
                    "properties": {
                        "target": { "type": "string", "description": "user@domain, domain or *.domain", "pattern": target_pattern.clone(), "maxLength": 1000 },
                        "rule": { "type": "string", "enum": ["allow", "deny", "block"] }
                    }
                },
                "SipConnection": {
                    "type": "object",
                    "required": ["remote", "transport", "direction", "tls_names", "since"],
                    "properties": {
                        "remote": { "type": "string" },
                        "transport": { "type": "string", "enum": ["tcp", "tls"] },
                        "direction": { "type": "string", "enum": ["in", "out"] },
                        "tls_names": { "type": "array", "items": { "type": "string" } },
                        "since": { "type": "string", "format": "date-time" }
                    }
                },
                "FederationLink": {
                    "type": "object",
                    "required": ["peer", "local", "direction", "state", "auth", "tls", "since",
                                 "stanzas_in", "stanzas_out", "queued"],
                    "properties": {
                        "peer": { "type": "string", "description": "the peer's domain (empty for an inbound stream that has not named itself yet)" },
                        "local": { "type": "string", "description": "our domain on the link" },
                        "direction": { "type": "string", "enum": ["in", "out"] },
                        "state": { "type": "string", "enum": ["connecting", "established", "closing"] },
                        "auth": { "type": "string", "enum": ["sasl-external", "dialback", "none"] },
                        "tls": { "type": "boolean" },
                        "since": { "type": "string", "format": "date-time", "description": "when the link was created or became established" },
                        "stanzas_in": { "type": "integer", "description": "stanzas received on an inbound stream" },
                        "stanzas_out": { "type": "integer", "description": "stanzas written to an outbound link" },
                        "queued": { "type": "integer", "description": "stanzas waiting for an outbound link" }
                    }
                }
            }
        },
        "paths": {
            "/health": { "get": {
                "summary": "Liveness; needs no token",
                "security": [],
                "responses": { "200": ok_json("the server runs", json!({
                    "type": "object", "properties": { "status": { "type": "string", "enum": ["ok"] } }
                })) }
            }},
            "/ready": { "get": {
                "summary": "Readiness: the database answers",
                "responses": {
                    "200": ok_json("ready", json!({ "type": "object", "properties": { "status": { "type": "string" } } })),
                    "401": unauthorized.clone(),
                    "503": err("the database does not answer")
                }
            }},
            "/openapi.json": { "get": {
                "summary": "This document",
                "responses": { "200": ok_json("the OpenAPI document", json!({ "type": "object" })), "401": unauthorized.clone() }
            }},
            "/metrics": { "get": {
                "summary": "Prometheus metrics (text exposition format 0.0.4); needs the token unless admin.metrics_require_token is false",
                "responses": {
                    "200": {
                        "description": "the metrics",
                        "content": { "text/plain; version=0.0.4": { "schema": { "type": "string" } } }
                    },
                    "401": unauthorized.clone()
                }
            }},
            "/api/federation/domains": { "get": {
                "summary": "The federation in effect: the XMPP policy and every foreign domain with settings (SIP peers are the permitted SIP domains): the configuration file's, with the changes made through this API on top",
                "responses": {
                    "200": ok_json("the federation settings", domains_schema),
                    "401": unauthorized.clone()
                }
            }},
            "/api/federation/domains/{domain}": {
                "put": {
                    "summary": "Set a foreign domain's settings (replacing the file's for that domain, in either protocol); in effect at once, and kept across restarts. Links with an XMPP domain whose settings changed are drained.",
                    "parameters": [foreign_domain_param],
                    "requestBody": body(json!({ "oneOf": [
                        { "$ref": "#/components/schemas/XmppDomainSettings" },
                        { "$ref": "#/components/schemas/SipDomainSettings" }
                    ] })),
                    "responses": {
                        "200": ok_json("the domain's settings now", json!({ "$ref": "#/components/schemas/FederatedDomain" })),
                        "400": err("invalid domain, body or field (the message names it)"),
                        "401": unauthorized.clone()
                    }
                },
                "delete": {
                    "summary": "Remove a foreign domain (hides the file's entry too). A SIP domain is no longer permitted; an XMPP domain loses its settings (its permission is the policy's).",
                    "parameters": [domain_param.clone()],
                    "responses": {
                        "204": no_content("removed"),
                        "400": err("not a valid domain"),
                        "401": unauthorized.clone(),
                        "404": err("the domain has no settings")
                    }
                }
            },
            "/api/federation/domains/{domain}/override": { "delete": {
                "summary": "Drop what the API set or removed for a domain: the file's settings (or none) apply again",
                "parameters": [domain_param],
                "responses": {
                    "204": no_content("dropped"),
                    "400": err("not a valid domain"),
                    "401": unauthorized.clone(),
                    "404": err("the API changed nothing for this domain")
                }
            }},
            "/api/federation/policy": {
                "get": {
                    "summary": "The XMPP federation policy in effect, and where it comes from",
                    "responses": {
                        "200": ok_json("the policy", json!({ "$ref": "#/components/schemas/FederationPolicy" })),
                        "401": unauthorized.clone()
                    }
                },
                "put": {
                    "summary": "Set the federation policy (replacing the file's); in effect at once, and kept across restarts. Links with domains no longer permitted are drained.",
                    "requestBody": body(json!({
                        "type": "object", "required": ["policy"], "additionalProperties": false,
                        "properties": {
                            "policy": { "type": "string", "enum": ["open", "allowlist", "denylist"] },
                            "domains": domain_list
                        }
                    })),
                    "responses": {
                        "200": ok_json("the policy now", json!({ "$ref": "#/components/schemas/FederationPolicy" })),
                        "400": err("invalid body, policy or domain"),
                        "401": unauthorized.clone()
                    }
                },
                "delete": {
                    "summary": "Drop the policy set through the API: the file's applies again",
                    "responses": {
                        "200": ok_json("the policy now", json!({ "$ref": "#/components/schemas/FederationPolicy" })),
                        "401": unauthorized.clone(),
                        "404": err("no policy was set through the API")
                    }
                }
            },
            "/api/federation/links": { "get": {
                "summary": "The live XMPP federation links (ours, out) and streams (the peers', in), and the open SIP connections",
                "responses": {
                    "200": ok_json("the links, sorted by peer then direction", json!({
                        "type": "object", "required": ["links", "sip_connections"],
                        "properties": {
                            "links": { "type": "array", "items": { "$ref": "#/components/schemas/FederationLink" } },
                            "sip_connections": { "type": "array", "items": { "$ref": "#/components/schemas/SipConnection" } }
                        }
                    })),
                    "401": unauthorized.clone()
                }
            }},
            "/api/federation/links/{domain}/drain": { "post": {
                "summary": "Close every link and stream with a domain gracefully: queued stanzas are written first (or bounced with an error when the link is not established), then </stream:stream>. The next stanza for the domain opens a new link.",
                "parameters": [{
                    "name": "domain", "in": "path", "required": true,
                    "description": "the peer's domain",
                    "schema": { "type": "string", "pattern": domain_pattern, "maxLength": 1000 }
                }],
                "responses": {
                    "200": ok_json("what was closed", json!({
                        "type": "object", "required": ["peer", "drained"],
                        "properties": {
                            "peer": { "type": "string" },
                            "drained": { "type": "array", "items": {
                                "type": "object", "required": ["link", "flushed", "bounced", "closed"],
                                "properties": {
                                    "link": { "$ref": "#/components/schemas/FederationLink" },
                                    "flushed": { "type": "integer", "description": "queued stanzas written before the stream was closed" },
                                    "bounced": { "type": "integer", "description": "queued stanzas returned to their senders with an error" },
                                    "closed": { "type": "boolean", "description": "the stream had ended when the answer was sent (false: still closing)" }
                                }
                            } }
                        }
                    })),
                    "400": err("not a valid domain"),
                    "401": unauthorized.clone(),
                    "404": err("no link or stream with that domain is open")
                }
            }},
            "/api/users": {
                "get": {
                    "summary": "List the accounts",
                    "responses": {
                        "200": ok_json("the bare JIDs, sorted", json!({
                            "type": "object",
                            "properties": { "users": { "type": "array", "items": { "type": "string" } } }
                        })),
                        "401": unauthorized.clone()
                    }
                },
                "post": {
                    "summary": "Create an account",
                    "requestBody": body(json!({
                        "type": "object", "required": ["name", "password"],
                        "properties": {
                            "name": { "type": "string", "pattern": name_pattern, "maxLength": 1000 },
                            "password": { "type": "string", "minLength": 1 }
                        }
                    })),
                    "responses": {
                        "201": ok_json("created", json!({ "type": "object", "properties": { "jid": { "type": "string" } } })),
                        "400": err("a field is missing or invalid"),
                        "401": unauthorized.clone(),
                        "409": err("the account exists")
                    }
                }
            },
            "/api/users/{name}": { "delete": {
                "summary": "Delete an account (roster, offline messages, rules and block list too) and disconnect its sessions",
                "parameters": [name_param.clone()],
                "responses": {
                    "204": no_content("deleted"),
                    "400": err("invalid user name"),
                    "401": unauthorized.clone(),
                    "404": err("no such account")
                }
            }},
            "/api/users/{name}/password": { "put": {
                "summary": "Change an account's password",
                "parameters": [name_param.clone()],
                "requestBody": body(json!({
                    "type": "object", "required": ["password"],
                    "properties": { "password": { "type": "string", "minLength": 1 } }
                })),
                "responses": {
                    "204": no_content("changed"),
                    "400": err("a field is missing or invalid"),
                    "401": unauthorized.clone(),
                    "404": err("no such account")
                }
            }},
            "/api/users/{name}/policy": {
                "get": {
                    "summary": "A user's presence rules and XEP-0191 block list",
                    "parameters": [name_param.clone()],
                    "responses": {
                        "200": ok_json("the rules", json!({
                            "type": "object",
                            "properties": {
                                "jid": { "type": "string" },
                                "rules": { "type": "array", "items": { "$ref": "#/components/schemas/Rule" } },
                                "blocked": { "type": "array", "items": { "type": "string" } }
                            }
                        })),
                        "400": err("invalid user name"),
                        "401": unauthorized.clone(),
                        "404": err("no such account")
                    }
                },
                "put": {
                    "summary": "Set (add or replace) one presence rule",
                    "parameters": [name_param.clone()],
                    "requestBody": body(json!({ "$ref": "#/components/schemas/Rule" })),
                    "responses": {
                        "204": no_content("set"),
                        "400": err("a field is missing or invalid"),
                        "401": unauthorized.clone(),
                        "404": err("no such account")
                    }
                }
            },
            "/api/users/{name}/policy/{target}": { "delete": {
                "summary": "Remove one presence rule",
                "parameters": [name_param, {
                    "name": "target", "in": "path", "required": true,
                    "description": "user@domain, domain or *.domain",
                    "schema": { "type": "string", "pattern": target_pattern, "maxLength": 1000 }
                }],
                "responses": {
                    "204": no_content("removed"),
                    "400": err("invalid user name or target"),
                    "401": unauthorized.clone(),
                    "404": err("no such account, or no rule for that target")
                }
            }},
            "/api/policy": { "get": {
                "summary": "The admin layer: federation rule and the default for undecided watchers",
                "responses": {
                    "200": ok_json("the admin policy", json!({
                        "type": "object",
                        "properties": {
                            "local_domains": { "type": "array", "items": { "type": "string" } },
                            "federation": {
                                "type": "object",
                                "properties": {
                                    "policy": { "type": "string", "enum": ["open", "allowlist", "denylist"] },
                                    "domains": { "type": "array", "items": { "type": "string" } }
                                }
                            },
                            "default": { "type": "string", "enum": ["ask", "allow", "deny"] }
                        }
                    })),
                    "401": unauthorized.clone()
                }
            }},
            "/api/sessions": { "get": {
                "summary": "The connected resources",
                "responses": {
                    "200": ok_json("the sessions, sorted by JID", json!({
                        "type": "object",
                        "properties": { "sessions": { "type": "array", "items": {
                            "type": "object",
                            "properties": {
                                "jid": { "type": "string" },
                                "available": { "type": "boolean" },
                                "priority": { "type": "integer" }
                            }
                        } } }
                    })),
                    "401": unauthorized.clone()
                }
            }},
            "/api/cluster": { "get": {
                "summary": "Cluster mode: this node and the other nodes it sees alive",
                "responses": {
                    "200": ok_json("`enabled` false without [cluster]", cluster_schema),
                    "401": unauthorized.clone()
                }
            }},
            "/api/sessions/{jid}": { "delete": {
                "summary": "Disconnect one session (stream error policy-violation)",
                "parameters": [{
                    "name": "jid", "in": "path", "required": true,
                    "description": "the full JID, user@domain/resource (the slash may be sent as %2F)",
                    "schema": { "type": "string", "pattern": full_jid_pattern, "maxLength": 1000 }
                }],
                "responses": {
                    "204": no_content("disconnected"),
                    "400": err("not a full JID"),
                    "401": unauthorized,
                    "404": err("no such session")
                }
            }}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn openapi_lists_every_route() {
        let doc = openapi_document("a.test");
        let paths = doc["paths"].as_object().map(|m| m.len()).unwrap_or(0);
        assert_eq!(paths, 19);
    }

    #[test]
    fn drain_paths_are_percent_encoded() {
        assert_eq!(
            drain_path("b.example"),
            "/api/federation/links/b.example/drain"
        );
        assert_eq!(drain_path("a/b c"), "/api/federation/links/a%2Fb%20c/drain");
    }

    #[test]
    fn shared_types_round_trip() {
        let r = DrainResult {
            peer: "b.test".into(),
            drained: vec![DrainedLink {
                link: FederationLink {
                    peer: "b.test".into(),
                    local: "a.test".into(),
                    direction: "out".into(),
                    state: "established".into(),
                    auth: "sasl-external".into(),
                    tls: true,
                    since: "2025-01-01T00:00:00Z".into(),
                    stanzas_in: 0,
                    stanzas_out: 3,
                    queued: 1,
                },
                flushed: 1,
                bounced: 0,
                closed: true,
            }],
        };
        let text = serde_json::to_string(&r).unwrap_or_default();
        assert!(text.contains("\"direction\":\"out\""), "{text}");
        assert_eq!(serde_json::from_str::<DrainResult>(&text).ok(), Some(r));
    }
}
