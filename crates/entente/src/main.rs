//! The `entente` command: run the server and administer it.

mod admin_cmd;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use entente_server::config::Config;
use entente_xmpp_proto::scram::{Credentials, DEFAULT_ITERATIONS};

#[derive(Parser)]
#[command(
    name = "entente",
    version,
    about = "Presence and IM federation server (XMPP and SIP/SIMPLE)"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct Global {
    /// Configuration file (TOML). Without one, built-in defaults apply.
    #[arg(long, short = 'c', global = true, env = "ENTENTE_CONFIG")]
    config: Option<PathBuf>,
    /// The domain to serve (overrides `domain` in the file).
    #[arg(long, global = true)]
    domain: Option<String>,
    /// The data directory (overrides `data_dir` in the file).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve,
    /// Check or show configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Manage local user accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Presence tools.
    #[command(subcommand)]
    Presence(PresenceCmd),
    /// Presence policy: the admin layer and each user's allow / deny / block list.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Check a foreign domain step by step (DNS, TCP, TLS and certificate, XMPP stream
    /// features, SIP OPTIONS) and say what to fix. Exits non-zero when a step fails.
    CheckFederation {
        /// The foreign domain.
        #[arg(value_name = "DOMAIN")]
        target: String,
        /// Check XMPP only.
        #[arg(long, conflicts_with = "sip_only")]
        xmpp_only: bool,
        /// Check SIP only.
        #[arg(long)]
        sip_only: bool,
    },
    /// Talk to the running server through its admin HTTP API (`[admin]` in the
    /// configuration): federation links, draining them, metrics.
    Admin(admin_cmd::AdminArgs),
    /// Print the DNS records to publish for federation, as zone-file lines.
    DnsRecords {
        /// Time to live of the records, in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u32,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Show the admin layer (federation policy and the default for undecided watchers).
    Admin,
    /// Show a user's list: their rules and their XEP-0191 block list.
    Show { user: String },
    /// Set a rule. TARGET is user@domain, domain, or *.domain (with its subdomains); RULE is
    /// allow, deny (no presence, told nothing) or block (no presence and no messages).
    Set {
        user: String,
        target: String,
        rule: String,
    },
    /// Remove a rule.
    Remove { user: String, target: String },
    /// Show what a watcher would get: refuse, allow, ask or polite-deny.
    Decide { user: String, watcher: String },
}

#[derive(Subcommand)]
enum PresenceCmd {
    /// Print how every availability state of one profile appears to another (the seed's
    /// tables 1-1 to 1-15, and the documented rules where they are silent).
    Map {
        /// Source profile: xmpp, cupc7, cupc8, moc, lync, aol, sametime, webex, simple,
        /// fed-cupc7, fed-cupc8, fed-xmpp.
        #[arg(long)]
        from: String,
        /// Target profile (same names).
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a configuration file; names the key and the problem on error.
    Check {
        /// The file to check (defaults to --config).
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create an account. The password is read from a prompt, or from standard input when it is
    /// not a terminal.
    Add { name: String },
    /// Delete an account and everything stored for it.
    Remove { name: String },
    /// List accounts.
    List,
    /// Change an account's password (prompt or standard input).
    Passwd { name: String },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("entente: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load_config(g: &Global) -> Result<Config> {
    let mut cfg = match &g.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(d) = &g.domain {
        cfg.domain = d.trim_end_matches('.').to_ascii_lowercase();
    }
    if let Some(d) = &g.data_dir {
        cfg.data_dir = d.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Config(ConfigCmd::Check { file }) => {
            let Some(path) = file.or(cli.global.config.clone()) else {
                bail!("name a file: entente config check FILE");
            };
            Config::load(&path)?;
            println!("{}: OK", path.display());
            Ok(())
        }
        Cmd::Serve => {
            let cfg = load_config(&cli.global)?;
            init_logging(&cfg)?;
            runtime()?.block_on(serve(cfg))
        }
        Cmd::Presence(PresenceCmd::Map { from, to }) => {
            use entente_model::availability::{render_matrix, Profile};
            let names = || {
                Profile::ALL
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let from: Profile = from.parse().map_err(|_| {
                anyhow::anyhow!("--from {from:?}: unknown profile; use one of {}", names())
            })?;
            let to: Profile = to.parse().map_err(|_| {
                anyhow::anyhow!("--to {to:?}: unknown profile; use one of {}", names())
            })?;
            print!("{}", render_matrix(from, to));
            Ok(())
        }
        Cmd::CheckFederation {
            target: domain,
            xmpp_only,
            sip_only,
        } => {
            let cfg = load_config(&cli.global)?;
            let which = entente_server::check::Which {
                xmpp: !sip_only,
                sip: !xmpp_only,
            };
            let rt = runtime()?;
            let view = rt.block_on(effective_federation(&cfg));
            let steps = rt.block_on(entente_server::check::check_federation(
                &cfg,
                &view,
                &domain,
                which,
                |s| {
                    println!("{s}");
                },
            ))?;
            let failed = steps
                .iter()
                .filter(|s| s.verdict == entente_server::check::Verdict::Fail)
                .count();
            if failed > 0 {
                bail!("{failed} step(s) failed for {domain}");
            }
            println!("{domain}: no step failed");
            Ok(())
        }
        Cmd::DnsRecords { ttl } => {
            let cfg = load_config(&cli.global)?;
            print!("{}", dns_records(&cfg, ttl)?);
            Ok(())
        }
        Cmd::Policy(p) => {
            let cfg = load_config(&cli.global)?;
            runtime()?.block_on(policy_cmd(cfg, p))
        }
        Cmd::User(u) => {
            let cfg = load_config(&cli.global)?;
            runtime()?.block_on(user_cmd(cfg, u))
        }
        Cmd::Admin(a) => {
            let cfg = load_config(&cli.global)?;
            runtime()?.block_on(admin_cmd::run(&cfg, a))
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn init_logging(cfg: &Config) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .with_context(|| format!("log.level: {:?} is not a valid filter", cfg.log.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if cfg.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

async fn serve(cfg: Config) -> Result<()> {
    let server = entente_server::Server::start(cfg).await?;
    tracing::info!("Entente is running; press Ctrl-C to stop");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// The SRV records of RFC 6120 §3.2 (and XEP-0368 for direct TLS): one per federation host,
/// all with the same priority and weight, so peers spread their connections and fail over
/// (the seed's "High Availability for XMPP Federation"). In a cluster with
/// `[cluster] federation_nodes`, the XMPP server-to-server records name those nodes, each with
/// its own port: they are the nodes that accept federation (the others open no s2s listener).
fn dns_records(cfg: &Config, ttl: u32) -> Result<String> {
    use std::fmt::Write as _;
    let domain = &cfg.domain;
    let hosts: Vec<String> = if cfg.s2s.public_hosts.is_empty() {
        vec![domain.clone()]
    } else {
        cfg.s2s.public_hosts.clone()
    };
    let port_of = |addrs: &[String]| -> Option<u16> {
        addrs
            .iter()
            .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.port())
            .next()
    };
    let mut out = String::new();
    writeln!(out, "; DNS records for federation with {domain}")?;
    if !cfg.s2s.enabled {
        writeln!(
            out,
            "; note: XMPP federation is disabled in this configuration ([s2s] enabled = false)"
        )?;
    }
    let fed_nodes = cfg
        .cluster
        .as_ref()
        .map(|c| c.federation_hosts(port_of(&cfg.s2s.listen).unwrap_or(5269)))
        .unwrap_or_default();
    if !fed_nodes.is_empty() {
        writeln!(
            out,
            "; XMPP server-to-server, STARTTLS (RFC 6120 section 3.2): the federation-enabled\n; nodes of the cluster ([cluster] federation_nodes)"
        )?;
        for (h, port) in &fed_nodes {
            writeln!(
                out,
                "_xmpp-server._tcp.{domain}. {ttl} IN SRV 10 50 {port} {h}."
            )?;
        }
    } else {
        if cfg.cluster.is_some() {
            writeln!(
                out,
                "; note: cluster mode without [cluster] federation_nodes: the server-to-server\n; records below name {}, not the federation-enabled nodes; list those in\n; [cluster] federation_nodes",
                if cfg.s2s.public_hosts.is_empty() {
                    "the domain"
                } else {
                    "s2s.public_hosts"
                },
            )?;
        }
        if let Some(port) = port_of(&cfg.s2s.listen) {
            writeln!(
                out,
                "; XMPP server-to-server, STARTTLS (RFC 6120 section 3.2)"
            )?;
            for h in &hosts {
                writeln!(
                    out,
                    "_xmpp-server._tcp.{domain}. {ttl} IN SRV 10 50 {port} {h}."
                )?;
            }
        }
    }
    if let Some(port) = port_of(&cfg.s2s.direct_tls_listen) {
        writeln!(out, "; XMPP server-to-server, direct TLS (XEP-0368)")?;
        let direct: Vec<&String> = if fed_nodes.is_empty() {
            hosts.iter().collect()
        } else {
            fed_nodes.iter().map(|(h, _)| h).collect()
        };
        for h in direct {
            writeln!(
                out,
                "_xmpps-server._tcp.{domain}. {ttl} IN SRV 10 50 {port} {h}."
            )?;
        }
    }
    if cfg.sip.enabled {
        if let Some(port) = port_of(&cfg.sip.listen_tls) {
            writeln!(
                out,
                "; SIP federation over TLS (the record OCS/Lync edges look up, and RFC 3263)"
            )?;
            for h in &hosts {
                writeln!(
                    out,
                    "_sipfederationtls._tcp.{domain}. {ttl} IN SRV 10 50 {port} {h}."
                )?;
            }
            for h in &hosts {
                writeln!(out, "_sips._tcp.{domain}. {ttl} IN SRV 10 50 {port} {h}.")?;
            }
        }
        if let Some(port) = port_of(&cfg.sip.listen_tcp) {
            writeln!(out, "; SIP over TCP (RFC 3263)")?;
            for h in &hosts {
                writeln!(out, "_sip._tcp.{domain}. {ttl} IN SRV 10 50 {port} {h}.")?;
            }
        }
    }
    if let Some(port) = port_of(&cfg.c2s.listen) {
        writeln!(out, "; XMPP clients (RFC 6120 section 3.2)")?;
        for h in &hosts {
            writeln!(
                out,
                "_xmpp-client._tcp.{domain}. {ttl} IN SRV 10 50 {port} {h}."
            )?;
        }
    }
    writeln!(
        out,
        "; each host above needs A and/or AAAA records for its public address, and a certificate\n; whose subjectAltName contains {domain}"
    )?;
    Ok(out)
}

/// The federation in effect for `check-federation`: the file's with the admin API's changes
/// from the store, or the file's alone (with a note) when the store cannot be read. A SQLite
/// database that does not exist yet is not created: nothing was changed through the API.
async fn effective_federation(cfg: &Config) -> entente_server::federation::FederationView {
    use entente_server::federation::{Federation, FederationView};
    let url = cfg.database_url();
    let file_only = |why: String| {
        println!("note: using the configuration file's federation settings only ({why})");
        FederationView::from_config(cfg)
    };
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.trim_start_matches("//");
        let path = path.split('?').next().unwrap_or(path);
        if !path.contains(":memory:") && !std::path::Path::new(path).exists() {
            return file_only(format!("no database at {path}"));
        }
    }
    let store = match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        entente_store::Store::open(&url),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return file_only(format!("the database cannot be read: {e}")),
        Err(_) => return file_only("the database did not answer in 10 s".to_string()),
    };
    let fed = Federation::new(std::sync::Arc::new(cfg.clone()), store.clone());
    let view = match fed.reload().await {
        Ok(v) => (*v).clone(),
        Err(e) => file_only(format!("reading the admin API's changes: {e}")),
    };
    store.close().await;
    view
}

async fn open_store(cfg: &Config) -> Result<entente_store::Store> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    entente_store::Store::open(&cfg.database_url())
        .await
        .with_context(|| format!("opening the database {}", cfg.database_url()))
}

fn user_jid(cfg: &Config, name: &str) -> Result<String> {
    // Accept both "alice" and "alice@domain".
    let local = match name.split_once('@') {
        Some((l, d)) => {
            if !d.eq_ignore_ascii_case(&cfg.domain) {
                bail!("{name}: this server hosts {}, not {d}", cfg.domain);
            }
            l
        }
        None => name,
    };
    let local = entente_model::jid::validate_username(local)
        .map_err(|e| anyhow::anyhow!("{name:?} is not a valid user name: {e}"))?;
    Ok(format!("{local}@{}", cfg.domain))
}

fn read_password(confirm: bool) -> Result<String> {
    let pw = if std::io::stdin().is_terminal() {
        let pw = rpassword::prompt_password("Password: ").context("reading the password")?;
        if confirm {
            let again = rpassword::prompt_password("Again: ").context("reading the password")?;
            if again != pw {
                bail!("the passwords differ");
            }
        }
        pw
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if pw.is_empty() {
        bail!("the password is empty");
    }
    Ok(pw)
}

async fn policy_cmd(cfg: Config, cmd: PolicyCmd) -> Result<()> {
    use entente_model::policy::{Rule, Target};
    let store = open_store(&cfg).await?;
    let hub = entente_server::Hub::new(std::sync::Arc::new(cfg.clone()), store.clone());
    // The federation policy set through the admin API, if any, is in the store.
    hub.federation
        .reload()
        .await
        .context("reading the federation settings made through the admin API")?;
    match cmd {
        PolicyCmd::Admin => {
            let a = hub.admin_policy();
            println!("local domain: {}", cfg.domain);
            println!("federation:   {:?}", a.federation);
            println!(
                "default:      {:?} (for watchers no rule decides)",
                a.default
            );
        }
        PolicyCmd::Show { user } => {
            let jid = user_jid(&cfg, &user)?;
            let rules = store.policy_rules(&jid).await?;
            let blocks = store.block_list(&jid).await?;
            if rules.is_empty() && blocks.is_empty() {
                println!("{jid}: no rules; the admin default applies");
            }
            for (t, r) in rules {
                println!("{r:<6} {t}");
            }
            for b in blocks {
                println!("block  {b}   (XEP-0191)");
            }
        }
        PolicyCmd::Set { user, target, rule } => {
            let jid = user_jid(&cfg, &user)?;
            let t = Target::parse(&target).map_err(|e| anyhow::anyhow!("target {e}"))?;
            let r: Rule = rule.parse().map_err(|e| anyhow::anyhow!("rule {e}"))?;
            if !store.user_exists(&jid).await? {
                bail!("{jid} does not exist");
            }
            store.policy_set(&jid, &t.to_string(), r.as_str()).await?;
            println!("{jid}: {} {t}", r.as_str());
        }
        PolicyCmd::Remove { user, target } => {
            let jid = user_jid(&cfg, &user)?;
            let t = Target::parse(&target).map_err(|e| anyhow::anyhow!("target {e}"))?;
            if !store.policy_remove(&jid, &t.to_string()).await? {
                bail!("{jid} has no rule for {t}");
            }
            println!("{jid}: removed the rule for {t}");
        }
        PolicyCmd::Decide { user, watcher } => {
            let jid = user_jid(&cfg, &user)?;
            let u = entente_model::jid::Jid::parse(&jid)?;
            let w = entente_model::jid::Jid::parse(&watcher)
                .map_err(|e| anyhow::anyhow!("{watcher:?}: {e}"))?;
            let d = hub.presence_decision(&u, &w).await?;
            println!("{watcher} -> {jid}: {d:?}");
        }
    }
    store.close().await;
    Ok(())
}

async fn user_cmd(cfg: Config, cmd: UserCmd) -> Result<()> {
    let store = open_store(&cfg).await?;
    match cmd {
        UserCmd::Add { name } => {
            let jid = user_jid(&cfg, &name)?;
            if store.user_exists(&jid).await? {
                bail!("{jid} already exists");
            }
            let pw = read_password(true)?;
            let creds = Credentials::derive(&pw, DEFAULT_ITERATIONS);
            store
                .user_create(&entente_server::c2s::to_record(&jid, &creds))
                .await?;
            println!("created {jid}");
        }
        UserCmd::Remove { name } => {
            let jid = user_jid(&cfg, &name)?;
            store.user_delete(&jid).await?;
            println!("removed {jid}");
        }
        UserCmd::List => {
            for u in store.user_list(&cfg.domain).await? {
                println!("{u}");
            }
        }
        UserCmd::Passwd { name } => {
            let jid = user_jid(&cfg, &name)?;
            if !store.user_exists(&jid).await? {
                bail!("{jid} does not exist");
            }
            let pw = read_password(true)?;
            let creds = Credentials::derive(&pw, DEFAULT_ITERATIONS);
            store
                .user_set_credentials(&entente_server::c2s::to_record(&jid, &creds))
                .await?;
            println!("changed the password of {jid}");
        }
    }
    store.close().await;
    Ok(())
}
