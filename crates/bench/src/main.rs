//! `entente-bench`: a load tool for XMPP servers (Entente, Prosody, any RFC 6120 server).
//!
//! Real client connections over STARTTLS with SCRAM, against two federated domains A and B.
//! Subcommands: `seed` (write the fixture users and rosters into Entente's store or Prosody's
//! data files), `msg` (federated one-to-one messages at fixed offered rates, a ramp), `fanout`
//! (one user's presence to N federated watchers), `idle` (server memory per idle session).
//! Results are JSON lines on standard output; `scripts/bench` runs everything side by side.

mod client;
mod scenarios;
mod seed;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "entente-bench",
    about = "XMPP load tool (federated messages, presence fan-out, idle sessions)"
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
    #[arg(long, default_value = "bench-pw")]
    password: String,
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
    }
    Ok(())
}
