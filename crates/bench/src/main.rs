//! `entente-bench`: a load tool for XMPP servers (Entente, Prosody, any RFC 6120 server).
//!
//! Real client connections over STARTTLS with SCRAM, against two federated domains A and B.
//! Subcommands: `seed` (write the fixture users and rosters into Entente's store or Prosody's
//! data files), `msg` (federated one-to-one messages at fixed offered rates, a ramp), `fanout`
//! (one user's presence to N federated watchers), `idle` (server memory per idle session),
//! `sip-msg` and `sip-notify` (page-mode MESSAGE and presence NOTIFY rates through the SIP
//! federation path, with sipp as the foreign SIP domain: see `sip.rs`).
//! Results are JSON lines on standard output; `scripts/bench` runs everything side by side.

mod client;
mod scenarios;
mod seed;
mod sip;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "entente-bench",
    about = "XMPP load tool (federated messages, presence fan-out, idle sessions; SIP federation \
             MESSAGE and NOTIFY rates with sipp)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Entente,
    Prosody,
}

#[derive(Args)]
struct Fx {
    /// Which side of the fixture this server is.
    #[arg(long, value_enum)]
    side: seed::Side,
    /// This server's domain.
    #[arg(long)]
    domain: String,
    /// The other side's domain.
    #[arg(long)]
    peer: String,
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Users u0.. on side A for the SIP scenarios.
    #[arg(long, default_value_t = 0)]
    sip_users: usize,
    #[arg(long, default_value = "bench-pw")]
    password: String,
}

#[derive(Args, Clone)]
struct SippArgs {
    /// The sipp binary (Debian package sip-tester).
    #[arg(long, default_value = "sipp")]
    sipp: PathBuf,
    /// Directory of the bench's sipp scenarios (bench_message.xml, bench_subscribe.xml).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/sipp"))]
    scenarios: PathBuf,
    /// The server's SIP TCP listener (ip:port).
    #[arg(long)]
    sip: SocketAddr,
    /// The address sipp binds: one of the peer's source_addrs in the server's [[sip.peer]].
    #[arg(long)]
    sipp_ip: std::net::IpAddr,
    /// The port sipp binds. sip-notify: the port of the server's route to the peer.
    /// sip-msg: the first of one port per step (warm-up, then each rate).
    #[arg(long)]
    sipp_port: u16,
    /// The foreign SIP domain sipp plays (a [[sip.peer]] with profile simple, transport tcp).
    #[arg(long)]
    peer_domain: String,
    /// Directory for sipp's files (statistics, logs, errors, screen output).
    #[arg(long)]
    workdir: PathBuf,
}

impl SippArgs {
    fn sipp(&self, domain: &str) -> sip::Sipp {
        sip::Sipp {
            bin: self.sipp.clone(),
            scenarios: self.scenarios.clone(),
            target: self.sip,
            ip: self.sipp_ip,
            port: self.sipp_port,
            domain: domain.to_string(),
            peer_domain: self.peer_domain.clone(),
            workdir: self.workdir.clone(),
        }
    }
}

#[derive(Args, Clone)]
struct Conn {
    /// c2s address (ip:port) of domain A's server.
    #[arg(long)]
    a: SocketAddr,
    #[arg(long)]
    a_domain: String,
    /// c2s address (ip:port) of domain B's server.
    #[arg(long)]
    b: Option<SocketAddr>,
    #[arg(long)]
    b_domain: Option<String>,
    /// PEM file with the CA (or certificates) to trust for c2s TLS.
    #[arg(long)]
    ca: PathBuf,
    #[arg(long, default_value = "bench-pw")]
    password: String,
}

impl Conn {
    fn targets(&self) -> Result<(client::Target, Option<client::Target>)> {
        let tls = client::connector(&self.ca)?;
        let a = client::Target {
            addr: self.a,
            domain: self.a_domain.clone(),
            tls: tls.clone(),
        };
        let b = match (self.b, &self.b_domain) {
            (Some(addr), Some(d)) => Some(client::Target {
                addr,
                domain: d.clone(),
                tls,
            }),
            (None, None) => None,
            _ => anyhow::bail!("--b and --b-domain go together"),
        };
        Ok((a, b))
    }

    fn both(&self) -> Result<(client::Target, client::Target)> {
        match self.targets()? {
            (a, Some(b)) => Ok((a, b)),
            _ => anyhow::bail!("this scenario needs --b and --b-domain"),
        }
    }
}

fn list<T: std::str::FromStr>(s: &str) -> Result<Vec<T>> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{x:?} is not a number"))
        })
        .collect()
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the fixture (users, rosters) into a server's storage, before it starts.
    Seed {
        #[arg(long, value_enum)]
        kind: Kind,
        /// Entente: database URL (sqlite://DATA_DIR/entente.db). Prosody: its data_path.
        #[arg(long)]
        target: String,
        #[command(flatten)]
        fx: Fx,
    },
    /// Federated one-to-one messages (senders sN@A -> recipients rN@B) at fixed offered rates,
    /// one step per rate; stops at the first step over the p99 limit or losing messages.
    Msg {
        #[command(flatten)]
        conn: Conn,
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Offered rates (messages/s), comma-separated.
        #[arg(long, default_value = "250,500,1000,2000")]
        rates: String,
        #[arg(long, default_value_t = 10.0)]
        step_secs: f64,
        /// Time to wait for stragglers after a step's last send.
        #[arg(long, default_value_t = 3.0)]
        grace_secs: f64,
        #[arg(long, default_value_t = 50.0)]
        p99_ms: f64,
        /// Fraction of messages that must arrive for a step to count as sustained.
        #[arg(long, default_value_t = 0.999)]
        min_delivered: f64,
        /// Server PIDs whose CPU use to report per step (comma-separated).
        #[arg(long, default_value = "")]
        pids: String,
    },
    /// Presence fan-out: f0@A with N watchers wN@B changes presence; time until all have it.
    Fanout {
        #[command(flatten)]
        conn: Conn,
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        /// Measured rounds after the initial presence.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        #[arg(long, default_value_t = 60.0)]
        timeout_secs: f64,
    },
    /// Idle sessions: server RSS growth per connected, authenticated TLS client (iN@A).
    Idle {
        #[command(flatten)]
        conn: Conn,
        /// Session counts to measure at, cumulative, comma-separated.
        #[arg(long, default_value = "1000")]
        levels: String,
        /// PID of domain A's server process.
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 3.0)]
        settle_secs: f64,
    },
    /// SIP -> XMPP: sipp sends page-mode MESSAGEs to uN@A (logged in here) at fixed offered
    /// rates, one step per rate; stops at the first step with a failed transaction, a lost
    /// message, or 200s or deliveries falling behind the offered rate.
    SipMsg {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        sipp: SippArgs,
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Offered rates (MESSAGEs/s), comma-separated.
        #[arg(long, default_value = "100,250,500,1000")]
        rates: String,
        #[arg(long, default_value_t = 10.0)]
        step_secs: f64,
        /// Time to wait for deliveries after sipp's last call.
        #[arg(long, default_value_t = 3.0)]
        grace_secs: f64,
        /// Fraction of the offered rate that the 200s and the deliveries must reach.
        #[arg(long, default_value_t = 0.95)]
        min_pace: f64,
        /// Server PIDs whose CPU use to report per step (comma-separated).
        #[arg(long, default_value = "")]
        pids: String,
    },
    /// XMPP -> SIP: sipp subscribes to the presence of uN@A (one dialog each), then each user
    /// changes presence K times; NOTIFYs answered per second and the time until every
    /// subscription has the last state.
    SipNotify {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        sipp: SippArgs,
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Presence changes per user.
        #[arg(long, default_value_t = 10)]
        changes: u32,
        /// Pause between one user's changes (0: as fast as the client can write them).
        #[arg(long, default_value_t = 0.0)]
        interval_ms: f64,
        /// SUBSCRIBEs per second while setting up.
        #[arg(long, default_value_t = 200)]
        subscribe_rate: u32,
        /// Time limit of each phase (subscribing, beyond the time the rate needs; the changes).
        #[arg(long, default_value_t = 120.0)]
        timeout_secs: f64,
        #[arg(long, default_value = "")]
        pids: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Seed { kind, target, fx } => {
            let f = seed::Fixture {
                side: fx.side,
                domain: fx.domain,
                peer: fx.peer,
                pairs: fx.pairs,
                watchers: fx.watchers,
                idle: fx.idle,
                sip_users: fx.sip_users,
                password: fx.password,
            };
            let start = std::time::Instant::now();
            let (users, items) = match kind {
                Kind::Entente => seed::entente(&target, &f).await?,
                Kind::Prosody => seed::prosody(std::path::Path::new(&target), &f)?,
            };
            stats::Json::new("seed")
                .s("domain", &f.domain)
                .n("users", users as f64)
                .n("roster_items", items as f64)
                .n("secs", start.elapsed().as_secs_f64())
                .emit();
        }
        Cmd::Msg {
            conn,
            pairs,
            rates,
            step_secs,
            grace_secs,
            p99_ms,
            min_delivered,
            pids,
        } => {
            let (a, b) = conn.both()?;
            scenarios::messages(scenarios::MsgOpts {
                a,
                b,
                password: conn.password.clone(),
                pairs,
                rates: list(&rates)?,
                step: Duration::from_secs_f64(step_secs),
                grace: Duration::from_secs_f64(grace_secs),
                p99_limit_ms: p99_ms,
                min_delivered,
                pids: list(&pids)?,
            })
            .await?;
        }
        Cmd::Fanout {
            conn,
            watchers,
            rounds,
            timeout_secs,
        } => {
            let (a, b) = conn.both()?;
            scenarios::fanout(scenarios::FanoutOpts {
                a,
                b,
                password: conn.password.clone(),
                watchers,
                rounds,
                timeout: Duration::from_secs_f64(timeout_secs),
            })
            .await?;
        }
        Cmd::Idle {
            conn,
            levels,
            pid,
            settle_secs,
        } => {
            let (a, _) = conn.targets()?;
            scenarios::idle(scenarios::IdleOpts {
                a,
                password: conn.password.clone(),
                levels: list(&levels)?,
                pid,
                settle: Duration::from_secs_f64(settle_secs),
            })
            .await?;
        }
        Cmd::SipMsg {
            conn,
            sipp,
            users,
            rates,
            step_secs,
            grace_secs,
            min_pace,
            pids,
        } => {
            let (a, _) = conn.targets()?;
            let sipp = sipp.sipp(&a.domain);
            sip::messages(sip::SipMsgOpts {
                a,
                password: conn.password.clone(),
                users,
                rates: list(&rates)?,
                step: Duration::from_secs_f64(step_secs),
                grace: Duration::from_secs_f64(grace_secs),
                min_pace,
                sipp,
                pids: list(&pids)?,
            })
            .await?;
        }
        Cmd::SipNotify {
            conn,
            sipp,
            users,
            changes,
            interval_ms,
            subscribe_rate,
            timeout_secs,
            pids,
        } => {
            let (a, _) = conn.targets()?;
            let sipp = sipp.sipp(&a.domain);
            sip::notifies(sip::SipNotifyOpts {
                a,
                password: conn.password.clone(),
                users,
                changes: changes.max(1),
                interval: Duration::from_secs_f64(interval_ms / 1000.0),
                subscribe_rate: subscribe_rate.max(1),
                timeout: Duration::from_secs_f64(timeout_secs),
                sipp,
                pids: list(&pids)?,
            })
            .await?;
        }
    }
    Ok(())
}
