//! `entente-testdns`: serves a zone file over UDP and TCP on a loopback address, for end-to-end
//! tests written outside Rust.
//!
//! ```text
//! entente-testdns --listen 127.0.0.1:0 --zone tests/zones/federation.zone
//! ```
//!
//! The zone syntax is described in `entente_dns::testserver` (one record a line, e.g.
//! `_xmpp-server._tcp.b.test. SRV 10 50 5269 xmpp1.b.test.`). Once serving, it prints one line
//! `listening on 127.0.0.1:PORT` on standard output (useful with port 0) and runs until killed
//! or interrupted.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use entente_dns::testserver::{parse_zone, TestDns};

const USAGE: &str = "usage: entente-testdns --listen <loopback-ip:port> --zone <file>";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("entente-testdns: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut listen: Option<SocketAddr> = None;
    let mut zone: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" | "-l" => {
                let v = args.next().ok_or(USAGE)?;
                listen = Some(v.parse().map_err(|_| format!("bad address {v:?}"))?);
            }
            "--zone" | "-z" => zone = Some(args.next().ok_or(USAGE)?),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let listen = listen.ok_or(USAGE)?;
    let zone_path = zone.ok_or(USAGE)?;
    let text =
        std::fs::read_to_string(&zone_path).map_err(|e| format!("reading {zone_path}: {e}"))?;
    let records = parse_zone(&text).map_err(|e| format!("{zone_path}: {e}"))?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let dns = TestDns::start(listen, records)
            .await
            .map_err(|e| format!("starting on {listen}: {e}"))?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", dns.addr()).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        drop(out);
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
        dns.shutdown().await;
        Ok(())
    })
}
