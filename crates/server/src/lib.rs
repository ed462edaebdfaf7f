//! Entente's I/O layer: listeners, TLS, connection tasks, the router between sessions, and the
//! IM/presence logic that ties them to the store.
//!
//! Protocol state machines live in the sans-IO crates (`entente-xmpp-proto`, `entente-sip-proto`);
//! this crate owns every socket, timer and task.

pub mod admin;
pub mod c2s;
pub mod cache;
pub mod check;
pub mod cluster;
pub mod config;
pub mod federation;
pub mod hub;
pub mod metrics;
pub mod presence_map;
pub mod relay;
pub mod router;
pub mod s2s;
pub mod sip;
pub mod sipfed;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use config::Config;
pub use hub::Hub;

/// The locator SIP federation uses: the `[dns]` settings (the SIP peers' static routes come
/// from [`federation::Federation::register_locator`]).
pub(crate) fn sip_locator(
    cfg: &Config,
    stats: Arc<entente_dns::LookupStats>,
) -> Result<entente_dns::Locator> {
    let mut lc = entente_dns::LocatorConfig::default();
    for n in &cfg.dns.nameservers {
        lc.nameservers
            .push(n.parse().with_context(|| format!("dns.nameservers: {n}"))?);
    }
    if let Some(t) = cfg.dns.timeout_secs {
        lc.query_timeout = std::time::Duration::from_secs(t.max(1));
    }
    Ok(entente_dns::Locator::new(lc)
        .context("setting up the DNS resolver for SIP")?
        .with_stats(stats))
}

/// A running server.
pub struct Server {
    pub hub: Arc<Hub>,
    /// The addresses the client listeners are bound to.
    pub c2s_addrs: Vec<SocketAddr>,
    /// The addresses the server-to-server listeners are bound to.
    pub s2s_addrs: Vec<SocketAddr>,
    /// The addresses the SIP listeners are bound to, with their transports.
    pub sip_addrs: Vec<(entente_sip_proto::Transport, SocketAddr)>,
    /// The SIP endpoint, when `[sip] enabled`.
    pub sip: Option<sip::SipHandle>,
    /// The address the admin HTTP API is bound to, when `[admin] enabled`.
    pub admin_addr: Option<SocketAddr>,
    /// This node's membership of the cluster, in cluster mode.
    pub cluster: Option<Arc<cluster::Cluster>>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Server {
    /// Opens the store, prepares TLS and binds every listener.
    pub async fn start(cfg: Config) -> Result<Server> {
        let cfg = Arc::new(cfg);
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating the data directory {}", cfg.data_dir.display()))?;
        let store = entente_store::Store::open(&cfg.database_url())
            .await
            .with_context(|| format!("opening the database {}", cfg.database_url()))?;
        let paths = tls::ensure_certificate(
            cfg.tls.cert.as_deref(),
            cfg.tls.key.as_deref(),
            &cfg.data_dir,
            &cfg.domain,
        )?;
        if paths.generated {
            tracing::info!(cert = %paths.cert.display(), "generated a self-signed certificate");
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(&paths)?);
        // Whether this node makes s2s connections itself: always on a single node; in a
        // cluster, unless `[cluster] federation = false` (its stanzas for foreign XMPP domains
        // then go to the nodes that federate, through NATS: `relay`).
        let federates = cfg.cluster.as_ref().is_none_or(|c| c.federation);
        let cluster = match &cfg.cluster {
            Some(cc) => Some(
                cluster::Cluster::connect(cc, &cfg.domain, federates && cfg.s2s.enabled).await?,
            ),
            None => None,
        };
        // Every node of a cluster signs dialback keys with the same secret, kept in the shared
        // database (the first node to start creates it).
        let secret = match &cluster {
            Some(_) => Some(
                store
                    .shared_secret("s2s-dialback", &s2s::random_secret())
                    .await
                    .context("reading the cluster's shared dialback secret")?,
            ),
            None => None,
        };
        let mut hub = Hub::new(cfg.clone(), store);
        let federation = hub.federation.clone();
        federation
            .reload()
            .await
            .context("reading the federation settings made through the admin API")?;
        let s2s = s2s::S2s::new(
            cfg.clone(),
            federation.clone(),
            tls::Identity::load(&paths)?,
            secret,
            hub.metrics.dns.clone(),
        )?;
        let gateway = cfg
            .sip
            .enabled
            .then(|| sipfed::Gateway::new(cfg.clone(), federation.clone()));
        let relay = match &cluster {
            Some(c) if !federates => Some(relay::FederationRelay::new(
                cfg.clone(),
                federation.clone(),
                c.clone(),
            )),
            _ => None,
        };
        let xmpp: Arc<dyn router::RemoteRouter> = match &relay {
            Some(r) => {
                tracing::info!("this node does not federate ([cluster] federation = false): stanzas for foreign XMPP domains go to the federation nodes through NATS");
                r.clone()
            }
            None => s2s.clone(),
        };
        // A cluster node without SIP hands SIP-bound stanzas to the nodes with SIP.
        let sip_elsewhere = match (&gateway, &cluster) {
            (None, Some(c)) => Some(sipfed::RemoteGateways::new(c.clone(), cfg.domain.clone())),
            _ => None,
        };
        hub.set_remote(Arc::new(sipfed::FederationRouter {
            federation: federation.clone(),
            xmpp,
            sip: gateway.clone(),
            sip_elsewhere: sip_elsewhere.clone(),
        }));
        let hub = Arc::new(hub);
        s2s.set_hub(&hub);
        if let Some(r) = &relay {
            r.set_hub(&hub);
        }
        if let Some(r) = &sip_elsewhere {
            r.set_hub(&hub);
        }
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(federation.clone().run_poller(rx.clone()));
        tasks.spawn(hub.clone().watch_store_changes(rx.clone()));
        tasks.spawn(s2s.clone().follow_federation(rx.clone()));
        if let Some(c) = &cluster {
            let takes = c
                .federates()
                .then(|| s2s.clone() as Arc<dyn router::RemoteRouter>);
            c.run(&hub, takes, rx.clone(), &mut tasks).await?;
        }
        let mut c2s_addrs = Vec::new();
        for addr in &cfg.c2s.listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for clients on {addr} (c2s.listen)"))?;
            let local = listener.local_addr()?;
            tracing::info!(addr = %local, domain = %cfg.domain, "accepting XMPP clients");
            c2s_addrs.push(local);
            tasks.spawn(c2s::listen(
                hub.clone(),
                listener,
                acceptor.clone(),
                rx.clone(),
            ));
        }
        let mut s2s_addrs = Vec::new();
        if cfg.s2s.enabled && federates {
            let plain = cfg.s2s.listen.iter().map(|a| (a, false));
            let direct = cfg.s2s.direct_tls_listen.iter().map(|a| (a, true));
            for (addr, direct_tls) in plain.chain(direct) {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening for federation on {addr} (s2s.listen)"))?;
                let local = listener.local_addr()?;
                tracing::info!(addr = %local, direct_tls, "accepting XMPP federation");
                s2s_addrs.push(local);
                tasks.spawn(s2s.clone().listen(listener, direct_tls, rx.clone()));
            }
        }
        let mut sip_addrs = Vec::new();
        let mut sip = None;
        if let Some(gateway) = gateway.clone() {
            let locator = Arc::new(sip_locator(&cfg, hub.metrics.dns.clone())?);
            federation.register_locator(federation::RouteKind::Sip, locator.clone());
            let started = sip::start(
                &cfg,
                Some(tls::Identity::load(&paths)?),
                Some(locator),
                gateway.clone(),
                rx.clone(),
                &mut tasks,
            )
            .await?;
            gateway
                .run(
                    &hub,
                    started.handle.clone(),
                    rx.clone(),
                    &mut tasks,
                    cluster.clone(),
                )
                .await?;
            sip_addrs = started.addrs;
            sip = Some(started.handle);
        }
        let mut admin_addr = None;
        if cfg.admin.enabled {
            let token_file = cfg
                .admin
                .token_file
                .as_deref()
                .context("admin.token_file: required when the admin API is enabled")?;
            let token = admin::read_token(token_file)?;
            let addr = &cfg.admin.listen;
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for the admin API on {addr} (admin.listen)"))?;
            let local = listener.local_addr()?;
            tracing::info!(addr = %local, "serving the admin HTTP API");
            admin_addr = Some(local);
            let services = admin::Services {
                hub: hub.clone(),
                s2s: Some(s2s.clone()),
                sip: sip.clone(),
                gateway: gateway.clone(),
                cluster: cluster.clone(),
            };
            tasks.spawn(admin::serve(services, token, listener, rx.clone()));
        }
        Ok(Server {
            hub,
            c2s_addrs,
            s2s_addrs,
            sip_addrs,
            sip,
            admin_addr,
            cluster,
            shutdown,
            tasks,
        })
    }

    /// Stops accepting, tells every client the server is shutting down, and waits a moment for
    /// the streams to close.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        // Give connection tasks a moment to write their stream errors.
        for _ in 0..20 {
            if self.hub.sessions.count() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if let Some(c) = &self.cluster {
            c.flush().await;
        }
        self.hub.store.close().await;
    }
}
