//! d. SIP federation, with sipp as the foreign SIP domain (profile `simple`, plain TCP from an
//! address the server lists in the peer's `source_addrs`):
//!
//! - `sip-msg`: sipp sends page-mode MESSAGEs (RFC 3428) to N local users at fixed offered rates
//!   (`sipp -r R -m M`, one step per rate); the users' XMPP clients (this tool's, TLS as in the
//!   other scenarios) time each delivery from the wall-clock time sipp wrote into the body.
//! - `sip-notify`: sipp subscribes to the presence of N local users (one dialog each, held
//!   open), then the users' clients change presence K times each, as fast as they can write;
//!   sipp answers every NOTIFY 200 and logs when it read it and which change it carries.
//!
//! The tool runs sipp itself (scenarios `crates/bench/sipp/*.xml`), reads sipp's statistics
//! file (`-trace_stat`) and its log (`-trace_logs`), and prints JSON lines like the XMPP
//! scenarios. sipp inherits the tool's CPU affinity (`taskset` in `scripts/bench`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

use crate::client::{Client, Target};
use crate::scenarios::{connect_many, spawn_driven};
use crate::stats::{cpu_secs, ms, quantile, Json};

/// Microseconds since the Unix epoch (the clock sipp's `gettimeofday` reads too).
fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// How to run sipp against the server.
#[derive(Clone)]
pub struct Sipp {
    /// The sipp binary.
    pub bin: PathBuf,
    /// The directory with `bench_message.xml` and `bench_subscribe.xml`.
    pub scenarios: PathBuf,
    /// The server's SIP TCP listener.
    pub target: SocketAddr,
    /// The address sipp binds (one of the peer's `source_addrs`).
    pub ip: IpAddr,
    /// The port sipp binds (`sip-notify`: the one the server's route for the peer names;
    /// `sip-msg`: the first of one port per step).
    pub port: u16,
    /// The server's domain (the users' domain).
    pub domain: String,
    /// The foreign SIP domain sipp plays.
    pub peer_domain: String,
    /// Where sipp's files go (statistics, logs, errors, screen output).
    pub workdir: PathBuf,
}

/// A running sipp.
struct Running {
    child: Child,
    pid: u32,
    name: String,
    cpu: Option<f64>,
}

/// A finished sipp run.
struct Finished {
    /// The last row of `-trace_stat`, by column name.
    stats: HashMap<String, String>,
    /// CPU seconds sipp used (last sample before it exited).
    cpu: Option<f64>,
}

impl Finished {
    fn count(&self, col: &str) -> u64 {
        self.stats
            .get(col)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Seconds from sipp's start to its last statistics dump (its exit), from the epoch
    /// times sipp writes in `StartTime` and `CurrentTime` ("date<TAB>time<TAB>epoch").
    fn elapsed(&self) -> Option<f64> {
        let epoch = |col: &str| -> Option<f64> {
            self.stats.get(col)?.split('\t').nth(2)?.trim().parse().ok()
        };
        Some(epoch("CurrentTime")? - epoch("StartTime")?)
    }
}

impl Sipp {
    fn file(&self, name: &str, ext: &str) -> PathBuf {
        self.workdir.join(format!("{name}.{ext}"))
    }

    /// Starts sipp with `scenario`, binding `self.ip:port`, with the common options
    /// (TCP, one connection, statistics, errors and log files named after `name`).
    fn spawn(&self, scenario: &str, name: &str, port: u16, extra: &[String]) -> Result<Running> {
        for ext in ["stat.csv", "log", "err", "out"] {
            let _ = std::fs::remove_file(self.file(name, ext));
        }
        let sf = self.scenarios.join(scenario);
        if !sf.exists() {
            bail!("no sipp scenario {}", sf.display());
        }
        let out = std::fs::File::create(self.file(name, "out"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-sf")
            .arg(&sf)
            .args(["-t", "t1", "-bind_local", "-nostdin"])
            .arg("-i")
            .arg(self.ip.to_string())
            .arg("-p")
            .arg(port.to_string())
            .args(["-trace_stat", "-stf"])
            .arg(self.file(name, "stat.csv"))
            .args(["-trace_err", "-error_file"])
            .arg(self.file(name, "err"))
            .args(["-trace_logs", "-log_file"])
            .arg(self.file(name, "log"))
            .args(["-key", "todomain", &self.domain])
            .args(["-key", "fromdomain", &self.peer_domain])
            .args(extra)
            .arg(self.target.to_string())
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let pid = child.id().context("sipp exited at once")?;
        Ok(Running {
            child,
            pid,
            name: name.to_string(),
            cpu: None,
        })
    }

    /// The tail of a run's screen output and error file, for error messages.
    fn tail(&self, name: &str) -> String {
        let mut s = String::new();
        for ext in ["out", "err"] {
            if let Ok(t) = std::fs::read_to_string(self.file(name, ext)) {
                let lines: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
                let from = lines.len().saturating_sub(8);
                s.push_str(&format!(
                    "--- sipp {ext} ---\n{}\n",
                    lines[from..].join("\n")
                ));
            }
        }
        s
    }

    fn finished(&self, r: &Running) -> Finished {
        Finished {
            stats: last_stats(&self.file(&r.name, "stat.csv")),
            cpu: r.cpu,
        }
    }
}

impl Running {
    /// Whether sipp is still running (sampling its CPU time meanwhile).
    fn alive(&mut self) -> Result<Option<Option<i32>>> {
        if let Some(c) = cpu_secs(self.pid) {
            self.cpu = Some(c);
        }
        Ok(self.child.try_wait()?.map(|s| s.code()))
    }

    /// Waits for sipp to exit, at most `timeout` (then kills it).
    async fn wait(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.alive()? {
                return Ok(code);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill().await;
                bail!("sipp ({}) still running after {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The last row of sipp's `-trace_stat` CSV (semicolon separated) by column name.
fn last_stats(path: &Path) -> HashMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let rows: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if rows.len() < 2 {
        return HashMap::new();
    }
    rows[0]
        .split(';')
        .zip(rows[rows.len() - 1].split(';'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// sipp's injection file: the local user names, taken in turn by successive calls.
fn users_csv(dir: &Path, users: &[String]) -> Result<PathBuf> {
    let path = dir.join("users.csv");
    let mut s = String::from("SEQUENTIAL\n");
    for u in users {
        s.push_str(u);
        s.push_str(";\n");
    }
    std::fs::write(&path, s)?;
    Ok(path)
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A sipp-printed number ("1795513855.000000") as an integer.
fn sipp_num(s: &str) -> Option<u64> {
    s.trim().parse::<f64>().ok().map(|v| v as u64)
}

fn pct(delta: Option<f64>, wall: f64) -> f64 {
    match delta {
        Some(d) if wall > 0.0 => (d / wall * 1000.0).round() / 10.0,
        _ => f64::NAN,
    }
}

fn cpu_now(pids: &[u32]) -> Vec<Option<f64>> {
    pids.iter().map(|p| cpu_secs(*p)).collect()
}

fn cpu_pct(pids: &[u32], before: &[Option<f64>], wall: f64) -> Vec<f64> {
    pids.iter()
        .zip(before)
        .map(|(p, c0)| pct(cpu_secs(*p).zip(*c0).map(|(a, b)| a - b), wall))
        .collect()
}

fn lat_ms(v: &[u64]) -> (f64, f64, f64, f64) {
    (
        ms(quantile(v, 0.5)),
        ms(quantile(v, 0.99)),
        ms(quantile(v, 0.999)),
        ms(quantile(v, 1.0)),
    )
}

// ---------------------------------------------------------------------------------------------
// MESSAGE, SIP -> XMPP

pub struct SipMsgOpts {
    pub a: Target,
    pub password: String,
    pub users: usize,
    pub rates: Vec<u32>,
    pub step: Duration,
    pub grace: Duration,
    /// Fraction of the offered rate the 200s (and the deliveries) must keep up with.
    pub min_pace: f64,
    pub sipp: Sipp,
    /// Server processes whose CPU use is reported per step.
    pub pids: Vec<u32>,
}

/// One step's deliveries: latencies (ns) and the time of the last one.
#[derive(Default)]
struct StepRec {
    lat: Vec<u64>,
    last: Option<Instant>,
}

#[derive(Default)]
struct MsgRecorder {
    steps: Mutex<HashMap<u32, StepRec>>,
}

async fn msg_receiver(mut c: Client, rec: Arc<MsgRecorder>) {
    while let Ok(el) = c.next().await {
        if el.name != "message" {
            continue;
        }
        let Some(body) = el.elements().find(|e| e.name == "body") else {
            continue;
        };
        let now = unix_us();
        let at = Instant::now();
        let text = body.text_content();
        let mut it = text.split_whitespace();
        if it.next() != Some("sipbench") {
            continue;
        }
        let (Some(step), Some(s), Some(us)) = (
            it.next().and_then(|s| s.parse::<u32>().ok()),
            it.next().and_then(sipp_num),
            it.next().and_then(sipp_num),
        ) else {
            continue;
        };
        let sent = s * 1_000_000 + us;
        let mut steps = rec.steps.lock().expect("recorder lock");
        let e = steps.entry(step).or_default();
        e.lat.push(now.saturating_sub(sent) * 1000);
        e.last = Some(at);
    }
}

pub async fn messages(o: SipMsgOpts) -> Result<()> {
    std::fs::create_dir_all(&o.sipp.workdir)?;
    let names: Vec<String> = (0..o.users).map(|i| format!("u{i}")).collect();
    let csv = users_csv(&o.sipp.workdir, &names)?;
    let (clients, t_login) = connect_many(&o.a, &names, &o.password, 32, true).await?;
    Json::new("sip_msg_setup")
        .n("users", o.users as f64)
        .n("login_s", t_login.as_secs_f64())
        .emit();
    let rec = Arc::new(MsgRecorder::default());
    for c in clients {
        tokio::spawn(msg_receiver(c, rec.clone()));
    }

    // Step 0: a short warm-up (the TCP connection, the code paths); not a rate step.
    let mut steps = vec![100u32];
    steps.extend(&o.rates);
    let mut best: Option<Json> = None;
    for (id, &rate) in steps.iter().enumerate() {
        let warmup = id == 0;
        let dur = if warmup {
            Duration::from_secs(2)
        } else {
            o.step
        };
        let calls = ((rate as f64 * dur.as_secs_f64()).round() as u64).max(1);
        let name = format!("sip-msg-{id}");
        // One local port per step: the previous step's connection may linger in TIME_WAIT.
        let port = o.sipp.port + id as u16;
        let extra = args(&[
            "-inf",
            &csv.to_string_lossy(),
            "-r",
            &rate.to_string(),
            "-rp",
            "1000",
            "-m",
            &calls.to_string(),
            // Up to 10 s of calls outstanding: a server that falls behind shows as late 200s
            // (missed pace) rather than as sipp quietly throttling.
            "-l",
            &(rate as u64 * 10).max(100).to_string(),
            "-recv_timeout",
            "10000",
            "-timeout",
            &(dur.as_secs() * 3 + 30).to_string(),
            "-timeout_error",
            "-key",
            "fromuser",
            "sam",
            "-key",
            "step",
            &id.to_string(),
        ]);
        let cpu0 = cpu_now(&o.pids);
        let self0 = cpu_secs(std::process::id());
        let t0 = Instant::now();
        let mut run = o.sipp.spawn("bench_message.xml", &name, port, &extra)?;
        let code = run
            .wait(dur * 3 + Duration::from_secs(60))
            .await
            .with_context(|| o.sipp.tail(&name))?;
        let fin = o.sipp.finished(&run);
        let sipp_done = Instant::now();
        let created = fin.count("OutgoingCall(C)");
        let answered = fin.count("SuccessfulCall(C)");
        let failed = fin.count("FailedCall(C)");
        if created == 0 {
            bail!(
                "sipp ({name}) made no call (exit {code:?})\n{}",
                o.sipp.tail(&name)
            );
        }
        let step_id = id as u32;
        let delivered = || {
            rec.steps
                .lock()
                .expect("recorder lock")
                .get(&step_id)
                .map(|e| e.lat.len() as u64)
                .unwrap_or(0)
        };
        let grace = if warmup {
            Duration::from_secs(30)
        } else {
            o.grace
        };
        while delivered() < created && sipp_done.elapsed() < grace {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wall = t0.elapsed().as_secs_f64();
        let StepRec { mut lat, last } = rec
            .steps
            .lock()
            .expect("recorder lock")
            .remove(&step_id)
            .unwrap_or_default();
        lat.sort_unstable();
        let received = lat.len() as u64;
        let (p50, p99, p999, max) = lat_ms(&lat);
        if warmup {
            if received < created || failed > 0 {
                bail!(
                    "warm-up: {answered} of {created} MESSAGEs answered 200 ({failed} failed), \
                     {received} delivered within 30 s (sipp exit {code:?})\n{}",
                    o.sipp.tail(&name)
                );
            }
            Json::new("sip_msg_warmup")
                .n("sent", created as f64)
                .n("p50_ms", p50)
                .n("max_ms", max)
                .emit();
            continue;
        }
        let elapsed = fin.elapsed().unwrap_or(f64::NAN);
        let answered_rate = answered as f64 / elapsed;
        // Deliveries per second: from sipp's start to the last delivery.
        let delivered_rate = match last {
            Some(l) => received as f64 / l.duration_since(t0).as_secs_f64(),
            None => 0.0,
        };
        let paced = |r: f64| r >= o.min_pace * rate as f64;
        let ok = failed == 0
            && answered == created
            && received == created
            && paced(answered_rate)
            && paced(delivered_rate);
        Json::new("sip_msg_step")
            .n("offered_rate", rate)
            .n("sent", created as f64)
            .n("answered_200", answered as f64)
            .n("failed", failed as f64)
            .n("answered_rate", answered_rate.round())
            .n("received", received as f64)
            .n("delivered_rate", delivered_rate.round())
            .n("p50_ms", p50)
            .n("p99_ms", p99)
            .n("p999_ms", p999)
            .n("max_ms", max)
            .list("server_cpu_pct", &cpu_pct(&o.pids, &cpu0, wall))
            .n(
                "bench_cpu_pct",
                pct(
                    cpu_secs(std::process::id()).zip(self0).map(|(a, b)| a - b),
                    wall,
                ),
            )
            .n("sipp_cpu_pct", pct(fin.cpu, wall))
            .n("sipp_exit", code.map(f64::from).unwrap_or(f64::NAN))
            .b("ok", ok)
            .emit();
        if !ok {
            break;
        }
        best = Some(
            Json::new("sip_msg")
                .n("users", o.users as f64)
                .n("max_rate", rate)
                .n("answered_rate", answered_rate.round())
                .n("delivered_rate", delivered_rate.round())
                .n("p50_ms", p50)
                .n("p99_ms", p99)
                .n("p999_ms", p999),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    match best {
        Some(j) => j.emit(),
        None => Json::new("sip_msg")
            .n("users", o.users as f64)
            .n("max_rate", 0)
            .emit(),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// NOTIFY, XMPP -> SIP

pub struct SipNotifyOpts {
    pub a: Target,
    pub password: String,
    pub users: usize,
    /// Presence changes per user.
    pub changes: u32,
    /// Pause between one user's successive changes (zero: as fast as the client writes).
    pub interval: Duration,
    /// SUBSCRIBEs per second (sipp -r).
    pub subscribe_rate: u32,
    pub timeout: Duration,
    pub sipp: Sipp,
    pub pids: Vec<u32>,
}

/// One NOTIFY as sipp logged it.
#[derive(Debug, PartialEq)]
struct NotifyLine {
    call: u64,
    /// The presence change it carried (1..=K) and when the client sent it (µs since the epoch).
    change: Option<(u32, u64)>,
    /// When sipp read it (µs since the epoch).
    at: u64,
    last: bool,
}

/// Parses "notify CALL SECONDS MICROSECONDS [nb K SENT_US [end]]".
fn parse_notify(line: &str) -> Option<NotifyLine> {
    let rest = line.strip_prefix("notify ")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.len() < 3 {
        return None;
    }
    let call = f[0].parse().ok()?;
    let at = sipp_num(f[1])? * 1_000_000 + sipp_num(f[2])?;
    let change = match (f.get(3), f.get(4), f.get(5)) {
        (Some(&"nb"), Some(k), Some(sent)) => k.parse().ok().zip(sent.parse().ok()),
        _ => None,
    };
    let last = change.is_some() && f.get(6) == Some(&"end");
    Some(NotifyLine {
        call,
        change,
        at,
        last,
    })
}

fn count_lines(path: &Path, prefix: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| l.starts_with(prefix)).count())
        .unwrap_or(0)
}

pub async fn notifies(o: SipNotifyOpts) -> Result<()> {
    std::fs::create_dir_all(&o.sipp.workdir)?;
    let names: Vec<String> = (0..o.users).map(|i| format!("u{i}")).collect();
    let csv = users_csv(&o.sipp.workdir, &names)?;
    let (clients, t_login) = connect_many(&o.a, &names, &o.password, 32, true).await?;
    let drivers: Vec<_> = clients.into_iter().map(spawn_driven).collect();

    // Subscriptions: one sipp call per user, held open. The time limit is for each phase
    // (subscribing, then the changes), on top of the time sipp's rate needs to subscribe.
    let name = "sip-notify";
    let n = o.users.to_string();
    let pacing = Duration::from_secs_f64(o.users as f64 / o.subscribe_rate as f64);
    let total = pacing + o.timeout * 2;
    let extra = args(&[
        "-inf",
        &csv.to_string_lossy(),
        "-r",
        &o.subscribe_rate.to_string(),
        "-m",
        &n,
        "-l",
        &n,
        "-timeout",
        &total.as_secs().max(1).to_string(),
        "-timeout_error",
    ]);
    let t_sub = Instant::now();
    let mut run = o
        .sipp
        .spawn("bench_subscribe.xml", name, o.sipp.port, &extra)?;
    let log = o.sipp.file(name, "log");
    let deadline = t_sub + pacing + o.timeout;
    loop {
        if count_lines(&log, "subscribed ") >= o.users {
            break;
        }
        if let Some(code) = run.alive()? {
            bail!(
                "sipp exited (code {code:?}) after {} of {} subscriptions\n{}",
                count_lines(&log, "subscribed "),
                o.users,
                o.sipp.tail(name)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "only {} of {} subscriptions within {:?}\n{}",
                count_lines(&log, "subscribed "),
                o.users,
                pacing + o.timeout,
                o.sipp.tail(name)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let subscribe_s = t_sub.elapsed().as_secs_f64();
    Json::new("sip_notify_setup")
        .n("users", o.users as f64)
        .n("login_s", t_login.as_secs_f64())
        .n("subscribe_s", subscribe_s)
        .n("subscribe_rate", o.subscribe_rate)
        .emit();
    // Let the last initial NOTIFYs' transactions finish.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The changes: "nb K SENT_US" in the status, "end" on the last.
    let cpu0 = cpu_now(&o.pids);
    let _ = run.alive()?; // samples sipp's CPU time: the baseline for the changes
    let sipp_cpu0 = run.cpu;
    let t0 = Instant::now();
    let t0_us = unix_us();
    let shows = ["away", "dnd", "xa", "chat"];
    for k in 1..=o.changes {
        for d in &drivers {
            let end = if k == o.changes { " end" } else { "" };
            let show = shows[k as usize % shows.len()];
            d.send(format!(
                "<presence><show>{show}</show><status>nb {k} {}{end}</status></presence>",
                unix_us()
            ))
            .ok()
            .context("a client connection died")?;
        }
        if !o.interval.is_zero() && k < o.changes {
            tokio::time::sleep(o.interval).await;
        }
        tokio::task::yield_now().await;
    }
    let remaining = total.saturating_sub(t_sub.elapsed()) + Duration::from_secs(5);
    let code = run
        .wait(remaining)
        .await
        .with_context(|| o.sipp.tail(name))?;
    let wall = t0.elapsed().as_secs_f64();
    let server_cpu = cpu_pct(&o.pids, &cpu0, wall);
    let fin = o.sipp.finished(&run);

    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<NotifyLine> = text.lines().filter_map(parse_notify).collect();
    let mut lat: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.change.map(|(_, sent)| l.at.saturating_sub(sent) * 1000))
        .collect();
    lat.sort_unstable();
    let mut final_lat: Vec<u64> = lines
        .iter()
        .filter(|l| l.last)
        .filter_map(|l| l.change.map(|(_, sent)| l.at.saturating_sub(sent) * 1000))
        .collect();
    final_lat.sort_unstable();
    let finals = lines.iter().filter(|l| l.last).count();
    let calls: std::collections::HashSet<u64> = lines.iter().map(|l| l.call).collect();
    let last_at = lines.iter().map(|l| l.at).max().unwrap_or(t0_us);
    let all_s = last_at.saturating_sub(t0_us) as f64 / 1e6;
    let notifies = lines.len();
    let failed = fin.count("FailedCall(C)");
    let ok = finals == o.users && failed == 0 && code == Some(0);
    let (p50, p99, p999, max) = lat_ms(&lat);
    let (f50, f99, _, fmax) = lat_ms(&final_lat);
    Json::new("sip_notify")
        .n("users", o.users as f64)
        .n("changes", o.changes)
        .n("interval_ms", o.interval.as_secs_f64() * 1000.0)
        .n("presence_sent", (o.users as u64 * o.changes as u64) as f64)
        .n("initial_notifies", o.users as f64)
        .n("notifies", notifies as f64)
        .n("subscriptions_notified", calls.len() as f64)
        .n("subscriptions_final", finals as f64)
        .n(
            "notify_rate",
            if all_s > 0.0 {
                (notifies as f64 / all_s).round()
            } else {
                f64::NAN
            },
        )
        .n(
            "all_ms",
            if finals == o.users {
                ms((all_s * 1e9) as u64)
            } else {
                f64::NAN
            },
        )
        .n("p50_ms", p50)
        .n("p99_ms", p99)
        .n("p999_ms", p999)
        .n("max_ms", max)
        .n("final_p50_ms", f50)
        .n("final_p99_ms", f99)
        .n("final_max_ms", fmax)
        .n("failed_calls", failed as f64)
        .list("server_cpu_pct", &server_cpu)
        .n(
            "sipp_cpu_pct",
            pct(fin.cpu.zip(sipp_cpu0).map(|(a, b)| a - b), wall),
        )
        .n("sipp_exit", code.map(f64::from).unwrap_or(f64::NAN))
        .b("ok", ok)
        .emit();
    if !ok {
        eprintln!("{}", o.sipp.tail(name));
    }
    drop(drivers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_log_lines() {
        assert_eq!(
            parse_notify("notify 12 1795513855.000000 762370.000000 nb 3 1795513855123456 end"),
            Some(NotifyLine {
                call: 12,
                change: Some((3, 1795513855123456)),
                at: 1795513855762370,
                last: true,
            })
        );
        assert_eq!(
            parse_notify("notify 1 1795513855.000000 5.000000 nb 2 17"),
            Some(NotifyLine {
                call: 1,
                change: Some((2, 17)),
                at: 1795513855000005,
                last: false,
            })
        );
        assert_eq!(
            parse_notify("notify 1 1795513855.000000 5.000000 "),
            Some(NotifyLine {
                call: 1,
                change: None,
                at: 1795513855000005,
                last: false,
            })
        );
        assert_eq!(parse_notify("subscribed 4"), None);
    }

    #[test]
    fn sipp_statistics() {
        let dir = std::env::temp_dir().join(format!("entente-bench-sip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.csv");
        std::fs::write(
            &p,
            "StartTime;CurrentTime;SuccessfulCall(C);FailedCall(C);\n\
             2026-11-24\t09:51:57.070393\t1795513917.070393;2026-11-24\t09:51:58.070393\t1795513918.070393;1;0;\n\
             2026-11-24\t09:51:57.070393\t1795513917.070393;2026-11-24\t09:51:59.570393\t1795513919.570393;20;1;\n",
        )
        .unwrap();
        let f = Finished {
            stats: last_stats(&p),
            cpu: None,
        };
        assert_eq!(f.count("SuccessfulCall(C)"), 20);
        assert_eq!(f.count("FailedCall(C)"), 1);
        assert!((f.elapsed().unwrap() - 2.5).abs() < 1e-6);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
