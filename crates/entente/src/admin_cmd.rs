//! `entente admin …`: calls the running server's admin HTTP API (`docs/admin-api.md`) with the
//! request and response types of `entente_server::admin`.
//!
//! The API speaks plain HTTP/1.1 on loopback or a management network, so a small client over a
//! TCP socket is all that is needed: one request per connection (`Connection: close`), bodies
//! by `Content-Length`, chunked, or up to the end of the connection.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use entente_server::admin::{self, DrainResult, ErrorBody, FederationLinks};
use entente_server::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Args)]
pub struct AdminArgs {
    /// The API's base URL, http://host:port (default: http:// and `admin.listen` from the
    /// configuration).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// A file holding the bearer token (default: `admin.token_file` from the configuration).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: AdminCmd,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// List the live XMPP federation links (ours, out) and streams (the peers', in).
    Links {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Close every link and stream with a peer domain gracefully: queued stanzas are written
    /// first (or bounced with an error when the link is not up), then the streams are ended.
    /// The next stanza for the domain opens a new link. Fails when nothing is open with it.
    Drain {
        /// The peer's domain.
        #[arg(value_name = "DOMAIN")]
        peer: String,
        /// Print the API's JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Print the server's Prometheus metrics (text exposition format).
    Metrics,
    /// List the connected client sessions (full JID, whether available, priority).
    Sessions {
        /// Print the API's JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Cluster mode: this node and the other nodes it sees alive, with their session counts.
    Cluster {
        /// Print the API's JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Disconnect one client session (its stream is closed with policy-violation).
    Kick {
        /// The session's full JID, user@domain/resource.
        #[arg(value_name = "JID")]
        jid: String,
    },
    /// List the federation in effect: the XMPP policy and every foreign domain (SIP peers
    /// are the permitted SIP domains), with profile, transport, TLS, routes and where the
    /// settings come from (the file or the API); or change a domain (`set`, `remove`, `reset`).
    Domains {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<DomainsAction>,
    },
    /// Show or change the XMPP federation policy (open, allowlist or denylist, and its
    /// domains). A policy set here replaces the configuration file's until `reset`.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
}

#[derive(Subcommand)]
enum DomainsAction {
    /// Set a foreign domain's settings (replacing the file's for that domain); in effect at
    /// once and kept across restarts. Fields not given take their defaults.
    Set {
        /// The foreign domain.
        #[arg(value_name = "DOMAIN")]
        name: String,
        /// `xmpp` or `sip`.
        #[arg(long)]
        protocol: String,
        /// XMPP: `required`, `optional` or `never`.
        #[arg(long)]
        tls: Option<String>,
        /// A static route (repeatable): `host:port`, `tls://host:port`, SIP also `tcp://…`.
        #[arg(long = "route", value_name = "ROUTE")]
        routes: Vec<String>,
        /// The presence profile (XMPP: `webex`, `sametime`, …; SIP: `lync`, `moc`, `aol`,
        /// `simple`).
        #[arg(long)]
        profile: Option<String>,
        /// SIP: `tls` or `tcp`.
        #[arg(long)]
        transport: Option<String>,
        /// SIP: whether a certificate for the domain is required (`true` or `false`).
        #[arg(long, value_name = "BOOL")]
        mutual_tls: Option<bool>,
        /// SIP: a source address that authenticates the peer (repeatable).
        #[arg(long = "source-addr", value_name = "IP")]
        source_addrs: Vec<String>,
        /// SIP: `session` or `page`.
        #[arg(long)]
        im: Option<String>,
    },
    /// Remove a foreign domain (also one the configuration file lists).
    Remove {
        /// The foreign domain.
        #[arg(value_name = "DOMAIN")]
        name: String,
    },
    /// Forget what `set` or `remove` did for a domain: the file's settings apply again.
    Reset {
        /// The foreign domain.
        #[arg(value_name = "DOMAIN")]
        name: String,
    },
}

#[derive(Subcommand)]
enum PolicyAction {
    /// Print the policy in effect.
    Get {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set the policy: `open`, `allowlist DOMAIN…` or `denylist DOMAIN…`.
    Set {
        /// `open`, `allowlist` or `denylist`.
        #[arg(value_name = "POLICY")]
        mode: String,
        /// The domains the policy names.
        #[arg(value_name = "DOMAINS")]
        names: Vec<String>,
    },
    /// Drop the policy set through the API: the file's applies again.
    Reset,
}

fn print_policy(p: &admin::FederationPolicyBody) {
    println!(
        "policy {}{} (from the {})",
        p.policy,
        if p.domains.is_empty() {
            String::new()
        } else {
            format!(": {}", p.domains.join(", "))
        },
        if p.source == "api" {
            "admin API"
        } else {
            "configuration file"
        }
    );
}

/// What the CLI needs to reach the API.
struct Target {
    host: String,
    port: u16,
    /// A path prefix from the URL (a reverse proxy's), without the final slash.
    base: String,
    token: Option<String>,
}

pub async fn run(cfg: &Config, args: AdminArgs) -> Result<()> {
    let target = target(cfg, &args)?;
    match args.cmd {
        AdminCmd::Sessions { json } => {
            let body = call(&target, "GET", "/api/sessions").await?;
            let v: serde_json::Value = serde_json::from_slice(&body)
                .context("the server's answer is not a list of sessions")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for s in v["sessions"].as_array().into_iter().flatten() {
                    println!(
                        "{}\t{}\tpriority={}",
                        s["jid"].as_str().unwrap_or("?"),
                        if s["available"].as_bool() == Some(true) {
                            "available"
                        } else {
                            "no presence"
                        },
                        s["priority"]
                    );
                }
            }
        }
        AdminCmd::Cluster { json } => {
            let body = call(&target, "GET", "/api/cluster").await?;
            let v: serde_json::Value = serde_json::from_slice(&body)
                .context("the server's answer is not a cluster status")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if v["enabled"].as_bool() != Some(true) {
                println!("not in cluster mode (no [cluster] section)");
            } else {
                println!(
                    "{}	this node	sessions={}",
                    v["node_id"].as_str().unwrap_or("?"),
                    v["sessions"]
                );
                for p in v["peers"].as_array().into_iter().flatten() {
                    println!(
                        "{}	alive	sessions={}",
                        p["node_id"].as_str().unwrap_or("?"),
                        p["sessions"]
                    );
                }
            }
        }
        AdminCmd::Kick { jid } => {
            let mut path = String::from("/api/sessions/");
            for b in jid.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b'@' | b'/')
                {
                    path.push(char::from(b));
                } else {
                    path.push_str(&format!("%{b:02X}"));
                }
            }
            call(&target, "DELETE", &path).await?;
            println!("disconnected {jid}");
        }
        AdminCmd::Domains {
            action: Some(action),
            ..
        } => match action {
            DomainsAction::Set {
                name,
                protocol,
                tls,
                routes,
                profile,
                transport,
                mutual_tls,
                source_addrs,
                im,
            } => {
                let mut m = serde_json::Map::new();
                m.insert("protocol".into(), protocol.into());
                let mut opt = |k: &str, v: Option<serde_json::Value>| {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                };
                opt("tls", tls.map(Into::into));
                opt("profile", profile.map(Into::into));
                opt("transport", transport.map(Into::into));
                opt("mutual_tls", mutual_tls.map(Into::into));
                opt("im", im.map(Into::into));
                opt("routes", (!routes.is_empty()).then(|| routes.into()));
                opt(
                    "source_addrs",
                    (!source_addrs.is_empty()).then(|| source_addrs.into()),
                );
                let body = serde_json::to_vec(&m)?;
                let answer = call_with(&target, "PUT", &admin::domain_path(&name), &body).await?;
                let d: admin::FederatedDomain = serde_json::from_slice(&answer)
                    .context("the server's answer is not a federated domain")?;
                println!(
                    "{} set: {} transport={} routes={}",
                    d.domain,
                    d.protocol,
                    d.transport,
                    if d.routes.is_empty() {
                        "dns".to_string()
                    } else {
                        d.routes.join(",")
                    }
                );
            }
            DomainsAction::Remove { name } => {
                call(&target, "DELETE", &admin::domain_path(&name)).await?;
                println!("removed {name}");
            }
            DomainsAction::Reset { name } => {
                call(&target, "DELETE", &admin::domain_override_path(&name)).await?;
                println!("{name}: the configuration file's settings apply again");
            }
        },
        AdminCmd::Policy { action } => match action {
            PolicyAction::Get { json } => {
                let body = call(&target, "GET", admin::FEDERATION_POLICY_PATH).await?;
                let p: admin::FederationPolicyBody = serde_json::from_slice(&body)
                    .context("the server's answer is not a federation policy")?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&p)?);
                } else {
                    print_policy(&p);
                }
            }
            PolicyAction::Set { mode, names } => {
                let body = serde_json::to_vec(&serde_json::json!({
                    "policy": mode,
                    "domains": names,
                }))?;
                let answer =
                    call_with(&target, "PUT", admin::FEDERATION_POLICY_PATH, &body).await?;
                let p: admin::FederationPolicyBody = serde_json::from_slice(&answer)
                    .context("the server's answer is not a federation policy")?;
                print_policy(&p);
            }
            PolicyAction::Reset => {
                let answer = call(&target, "DELETE", admin::FEDERATION_POLICY_PATH).await?;
                let p: admin::FederationPolicyBody = serde_json::from_slice(&answer)
                    .context("the server's answer is not a federation policy")?;
                print_policy(&p);
            }
        },
        AdminCmd::Domains { json, action: None } => {
            let body = call(&target, "GET", admin::DOMAINS_PATH).await?;
            let d: admin::FederatedDomains = serde_json::from_slice(&body)
                .context("the server's answer is not a list of federated domains")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                println!(
                    "XMPP federation: {} (policy {}{})",
                    if d.xmpp_enabled { "on" } else { "off" },
                    d.xmpp_policy,
                    if d.xmpp_policy_domains.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", d.xmpp_policy_domains.join(", "))
                    }
                );
                println!(
                    "SIP federation: {}",
                    if d.sip_enabled { "on" } else { "off" }
                );
                for x in &d.domains {
                    println!(
                        "{}\t{}\tprofile={}\ttransport={}{}\troutes={}\tsource={}",
                        x.domain,
                        x.protocol,
                        x.profile.as_deref().unwrap_or("-"),
                        x.transport,
                        x.mutual_tls
                            .map(|m| format!(" mutual_tls={m}"))
                            .unwrap_or_default(),
                        if x.routes.is_empty() {
                            "dns".to_string()
                        } else {
                            x.routes.join(",")
                        },
                        x.source
                    );
                }
                for r in &d.removed {
                    println!("{r}\tremoved through the admin API");
                }
            }
        }
        AdminCmd::Links { json } => {
            let body = call(&target, "GET", admin::LINKS_PATH).await?;
            let links: FederationLinks = serde_json::from_slice(&body)
                .context("the server's answer is not a list of links")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&links)?);
            } else {
                print!("{}", links_table(&links));
                for c in &links.sip_connections {
                    println!(
                        "SIP {} {} {}{} since {}",
                        c.direction,
                        c.transport,
                        c.remote,
                        if c.tls_names.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", c.tls_names.join(", "))
                        },
                        c.since
                    );
                }
            }
        }
        AdminCmd::Drain { peer, json } => {
            let body = call(&target, "POST", &admin::drain_path(&peer)).await?;
            let r: DrainResult = serde_json::from_slice(&body)
                .context("the server's answer is not a drain result")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for d in &r.drained {
                    let l = &d.link;
                    let what = if l.direction == "out" {
                        format!("outbound link {} -> {}", l.local, l.peer)
                    } else {
                        format!("inbound stream {} -> {}", l.peer, l.local)
                    };
                    let state = if d.closed { "closed" } else { "closing" };
                    println!(
                        "{state} {what}: {} queued stanza(s) flushed, {} bounced",
                        d.flushed, d.bounced
                    );
                }
            }
        }
        AdminCmd::Metrics => {
            let body = call(&target, "GET", admin::METRICS_PATH).await?;
            print!("{}", String::from_utf8_lossy(&body));
        }
    }
    Ok(())
}

fn target(cfg: &Config, args: &AdminArgs) -> Result<Target> {
    let url = match &args.url {
        Some(u) => u.clone(),
        None => {
            let listen: std::net::SocketAddr = cfg
                .admin
                .listen
                .parse()
                .with_context(|| format!("admin.listen: {:?}", cfg.admin.listen))?;
            // A wildcard listener is reached on loopback.
            let ip = match listen.ip() {
                std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                }
                std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                    std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
                }
                ip => ip,
            };
            format!("http://{}", std::net::SocketAddr::new(ip, listen.port()))
        }
    };
    let (host, port, base) = parse_url(&url)?;
    let token = match args
        .token_file
        .as_deref()
        .or(cfg.admin.token_file.as_deref())
    {
        Some(p) => Some(
            String::from_utf8(entente_server::admin::read_token(p)?)
                .map_err(|_| anyhow!("{}: the token is not UTF-8", p.display()))?,
        ),
        None => None,
    };
    Ok(Target {
        host,
        port,
        base,
        token,
    })
}

/// Splits `http://host[:port][/base]` (host may be `[v6]`).
fn parse_url(url: &str) -> Result<(String, u16, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        if url.starts_with("https://") {
            bail!("--url {url}: the CLI speaks plain HTTP only; reach the API directly, not through the TLS proxy");
        }
        bail!("--url {url}: must start with http://");
    };
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| anyhow!("--url {url}: unclosed [ in the host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p,
            None if after.is_empty() => "80",
            None => bail!("--url {url}: bad port"),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), "80"),
        }
    };
    if host.is_empty() {
        bail!("--url {url}: no host");
    }
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("--url {url}: {port:?} is not a port"))?;
    Ok((host, port, base.to_string()))
}

/// One request without a body; returns the body of a 2xx answer, or fails with the API's
/// error message.
async fn call(t: &Target, method: &str, path: &str) -> Result<Vec<u8>> {
    call_with(t, method, path, &[]).await
}

/// One request with a JSON body (none when empty).
async fn call_with(t: &Target, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>> {
    let where_ = format!("{}:{}", t.host, t.port);
    let exchange = async {
        let mut sock = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
            .await
            .with_context(|| {
                format!("connecting to the admin API at {where_} (is the server running with [admin] enabled?)")
            })?;
        let host_header = if t.host.contains(':') {
            format!("[{}]:{}", t.host, t.port)
        } else {
            where_.clone()
        };
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: entente-cli\r\nAccept: */*\r\nConnection: close\r\nContent-Length: {}\r\n",
            t.base,
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        if let Some(tok) = &t.token {
            req.push_str(&format!("Authorization: Bearer {tok}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        sock.write_all(&bytes).await?;
        let mut raw = Vec::new();
        sock.read_to_end(&mut raw).await?;
        Ok::<_, anyhow::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .map_err(|_| anyhow!("the admin API at {where_} did not answer within 60 s"))??;
    let (status, body) = parse_response(&raw)?;
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let msg = serde_json::from_slice::<ErrorBody>(&body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_string());
    if status == 401 && t.token.is_none() {
        bail!("{status}: {msg} (set admin.token_file in the configuration or pass --token-file)");
    }
    bail!("{status}: {msg}")
}

/// Parses a whole HTTP/1.1 response: (status, body).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("the admin API's answer has no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end])
        .map_err(|_| anyhow!("the admin API's answer has non-UTF-8 headers"))?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| anyhow!("bad status line from the admin API: {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<usize>()
                    .map_err(|_| anyhow!("bad Content-Length {v:?}"))?,
            );
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| anyhow!("the admin API's answer is shorter than its Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        let size_text = std::str::from_utf8(&data[..eol]).unwrap_or("");
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data
            .get(..size)
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

fn links_table(links: &FederationLinks) -> String {
    if links.links.is_empty() {
        return "no federation links are open\n".to_string();
    }
    let mut rows: Vec<[String; 9]> = vec![[
        "PEER".into(),
        "DIR".into(),
        "STATE".into(),
        "AUTH".into(),
        "TLS".into(),
        "SINCE".into(),
        "IN".into(),
        "OUT".into(),
        "QUEUED".into(),
    ]];
    for l in &links.links {
        rows.push([
            if l.peer.is_empty() {
                "?".into()
            } else {
                l.peer.clone()
            },
            l.direction.clone(),
            l.state.clone(),
            l.auth.clone(),
            if l.tls { "yes" } else { "no" }.into(),
            l.since.clone(),
            l.stanzas_in.to_string(),
            l.stanzas_out.to_string(),
            l.queued.to_string(),
        ]);
    }
    let mut widths = [0usize; 9];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:5280").ok(),
            Some(("127.0.0.1".into(), 5280, String::new()))
        );
        assert_eq!(
            parse_url("http://[::1]:99/admin/").ok(),
            Some(("::1".into(), 99, "/admin".into()))
        );
        assert_eq!(
            parse_url("http://example.com").ok(),
            Some(("example.com".into(), 80, String::new()))
        );
        assert!(parse_url("https://example.com").is_err());
        assert!(parse_url("http://h:notaport").is_err());
        assert!(parse_url("ftp://x").is_err());
    }

    #[test]
    fn responses() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloextra";
        assert_eq!(parse_response(r).ok(), Some((200, b"hello".to_vec())));
        let r = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(r).ok(), Some((404, b"abcde".to_vec())));
        let r = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(r).ok(), Some((204, Vec::new())));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
        assert!(parse_response(b"SIP/2.0 200 OK\r\n\r\n").is_err());
    }

    #[test]
    fn table() {
        assert_eq!(
            links_table(&FederationLinks {
                links: vec![],
                sip_connections: vec![]
            }),
            "no federation links are open\n"
        );
        let l = entente_server::admin::FederationLink {
            peer: "b.test".into(),
            local: "a.test".into(),
            direction: "out".into(),
            state: "established".into(),
            auth: "dialback".into(),
            tls: true,
            since: "2025-01-01T00:00:00Z".into(),
            stanzas_in: 0,
            stanzas_out: 12,
            queued: 0,
        };
        let t = links_table(&FederationLinks {
            links: vec![l],
            sip_connections: vec![],
        });
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("PEER    DIR  STATE"), "{t}");
        assert!(
            lines[1].starts_with("b.test  out  established  dialback  yes"),
            "{t}"
        );
    }
}
