//! The scenarios: federated one-to-one messages (fixed offered rate, ramp), presence fan-out to
//! federated watchers, and idle sessions' memory. Each prints JSON lines (see `stats::Json`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::sleep_until;

use crate::client::{bare, Client, Target};
use crate::stats::{cpu_secs, ms, quantile, rss_kib, Json};

/// The process-wide time origin for send stamps (sender and receiver share one clock).
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn since_base(t: Instant) -> u64 {
    t.saturating_duration_since(base()).as_nanos() as u64
}

/// Logs in `users` on `t`, at most `concurrency` handshakes at a time, in order. With
/// `presence`, each sends initial presence (becomes available) after binding.
pub async fn connect_many(
    t: &Target,
    users: &[String],
    password: &str,
    concurrency: usize,
    presence: bool,
) -> Result<(Vec<Client>, Duration)> {
    let start = Instant::now();
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (i, u) in users.iter().enumerate() {
        let (t, u, pw, sem) = (t.clone(), u.clone(), password.to_string(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            let mut last = None;
            // A refused or reset connection during a login storm is retried a few times.
            for attempt in 0..3u64 {
                match Client::login(&t, &u, &pw, "bench").await {
                    Ok(mut c) => {
                        if presence {
                            c.send("<presence/>").await?;
                        }
                        return Ok((i, c));
                    }
                    Err(e) => {
                        last = Some(e);
                        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                    }
                }
            }
            Err(last
                .expect("an error")
                .context(format!("login of {u}@{}", t.domain)))
        });
    }
    let mut out: Vec<Option<Client>> = (0..users.len()).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        let (i, c) = r??;
        out[i] = Some(c);
    }
    Ok((
        out.into_iter().map(|c| c.expect("every login")).collect(),
        start.elapsed(),
    ))
}

/// A task that writes what it is sent and reads (and drops) whatever the server sends.
pub fn spawn_driven(mut c: Client) -> mpsc::UnboundedSender<String> {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => if c.send(&m).await.is_err() { break },
                    None => break,
                },
                r = c.next() => if r.is_err() { break },
            }
        }
    });
    tx
}

// ---------------------------------------------------------------------------------------------
// a. Messages

pub struct MsgOpts {
    pub a: Target,
    pub b: Target,
    pub password: String,
    pub pairs: usize,
    pub rates: Vec<u32>,
    pub step: Duration,
    pub grace: Duration,
    pub p99_limit_ms: f64,
    pub min_delivered: f64,
    /// Server processes whose CPU use is reported per step.
    pub pids: Vec<u32>,
}

struct StepCmd {
    id: u32,
    period: Duration,
    phase: Duration,
    start: Instant,
    end: Instant,
    done: oneshot::Sender<u64>,
}

const PAD: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.";

async fn sender_task(mut c: Client, to: String, mut rx: mpsc::UnboundedReceiver<StepCmd>) {
    while let Some(cmd) = {
        // Drain what the server sends while waiting for the next step.
        let mut cmd = None;
        loop {
            tokio::select! {
                m = rx.recv() => { cmd = m; break; }
                r = c.next() => if r.is_err() { break },
            }
        }
        cmd
    } {
        let mut k: u64 = 0;
        loop {
            let intended = cmd.start + cmd.phase + cmd.period * k as u32;
            if intended >= cmd.end {
                break;
            }
            // Sleep until the intended time, reading meanwhile; when late, send at once.
            let mut broken = false;
            while Instant::now() < intended {
                tokio::select! {
                    _ = sleep_until(intended.into()) => {}
                    r = c.next() => if r.is_err() { broken = true; break },
                }
            }
            if broken {
                break;
            }
            let msg = format!(
                "<message to='{to}' type='chat' id='m{}-{k}'><body>bench {} {} {PAD}</body></message>",
                cmd.id,
                cmd.id,
                since_base(intended)
            );
            if c.send(&msg).await.is_err() {
                break;
            }
            k += 1;
        }
        let _ = cmd.done.send(k);
    }
}

#[derive(Default)]
struct Recorder {
    lat: Mutex<HashMap<u32, Vec<u64>>>,
    received: AtomicU64,
}

async fn receiver_task(mut c: Client, rec: Arc<Recorder>) {
    while let Ok(el) = c.next().await {
        if el.name != "message" {
            continue;
        }
        let Some(body) = el.elements().find(|e| e.name == "body") else {
            continue;
        };
        let now = since_base(Instant::now());
        let text = body.text_content();
        let mut it = text.split_whitespace();
        if it.next() != Some("bench") {
            continue;
        }
        let (Some(step), Some(ns)) = (
            it.next().and_then(|s| s.parse::<u32>().ok()),
            it.next().and_then(|s| s.parse::<u64>().ok()),
        ) else {
            continue;
        };
        rec.lat
            .lock()
            .expect("recorder lock")
            .entry(step)
            .or_default()
            .push(now.saturating_sub(ns));
        rec.received.fetch_add(1, Ordering::Relaxed);
    }
}

pub async fn messages(o: MsgOpts) -> Result<()> {
    base();
    let recipients: Vec<String> = (0..o.pairs).map(|i| format!("r{i}")).collect();
    let senders: Vec<String> = (0..o.pairs).map(|i| format!("s{i}")).collect();
    let (rcv, t_r) = connect_many(&o.b, &recipients, &o.password, 32, true).await?;
    let (snd, t_s) = connect_many(&o.a, &senders, &o.password, 32, true).await?;
    Json::new("msg_setup")
        .n("pairs", o.pairs as f64)
        .n("login_s", (t_r + t_s).as_secs_f64())
        .emit();
    let rec = Arc::new(Recorder::default());
    for c in rcv {
        tokio::spawn(receiver_task(c, rec.clone()));
    }
    let mut ctl = Vec::new();
    for (i, c) in snd.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(sender_task(c, format!("r{i}@{}", o.b.domain), rx));
        ctl.push(tx);
    }

    // Step 0 is the warm-up (establishes the federation links); not reported as a rate step.
    let mut steps: Vec<u32> = vec![(o.pairs as u32).max(10)];
    steps.extend(&o.rates);
    let mut best: Option<Json> = None;
    let mut best_rate = 0u32;
    for (id, &rate) in steps.iter().enumerate() {
        let id = id as u32;
        let warmup = id == 0;
        let dur = if warmup {
            Duration::from_secs(2)
        } else {
            o.step
        };
        let per_sender = rate as f64 / o.pairs as f64;
        let period = Duration::from_secs_f64(1.0 / per_sender);
        let start = Instant::now() + Duration::from_millis(50);
        let end = start + dur;
        let before_rx = rec.received.load(Ordering::Relaxed);
        let cpu0: Vec<Option<f64>> = o.pids.iter().map(|p| cpu_secs(*p)).collect();
        let self0 = cpu_secs(std::process::id());
        let mut dones = Vec::new();
        for (i, tx) in ctl.iter().enumerate() {
            let (done, wait) = oneshot::channel();
            let phase = Duration::from_secs_f64(i as f64 / rate as f64);
            tx.send(StepCmd {
                id,
                period,
                phase,
                start,
                end,
                done,
            })
            .ok()
            .context("a sender connection died")?;
            dones.push(wait);
        }
        let mut sent = 0u64;
        for d in dones {
            sent += d.await.context("a sender connection died")?;
        }
        let send_done = Instant::now();
        let grace = if warmup {
            Duration::from_secs(30)
        } else {
            o.grace
        };
        while rec.received.load(Ordering::Relaxed) - before_rx < sent && send_done.elapsed() < grace
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wall = start.elapsed().as_secs_f64();
        let cpu: Vec<f64> = o
            .pids
            .iter()
            .zip(&cpu0)
            .map(|(p, c0)| match (cpu_secs(*p), c0) {
                (Some(c1), Some(c0)) => ((c1 - c0) / wall * 1000.0).round() / 10.0,
                _ => f64::NAN,
            })
            .collect();
        let self_cpu = match (cpu_secs(std::process::id()), self0) {
            (Some(c1), Some(c0)) => ((c1 - c0) / wall * 1000.0).round() / 10.0,
            _ => f64::NAN,
        };
        let mut lat = rec
            .lat
            .lock()
            .expect("recorder lock")
            .remove(&id)
            .unwrap_or_default();
        lat.sort_unstable();
        let received = lat.len() as u64;
        if warmup {
            if received < sent {
                bail!("warm-up: only {received} of {sent} messages arrived within 30 s");
            }
            Json::new("msg_warmup")
                .n("sent", sent as f64)
                .n("p50_ms", ms(quantile(&lat, 0.5)))
                .n("max_ms", ms(quantile(&lat, 1.0)))
                .emit();
            continue;
        }
        let (p50, p99, p999) = (
            ms(quantile(&lat, 0.5)),
            ms(quantile(&lat, 0.99)),
            ms(quantile(&lat, 0.999)),
        );
        let delivered_ratio = if sent == 0 {
            0.0
        } else {
            received as f64 / sent as f64
        };
        let ok = p99 <= o.p99_limit_ms && delivered_ratio >= o.min_delivered;
        let line = Json::new("msg_step")
            .n("offered_rate", rate)
            .n("sent", sent as f64)
            .n("received", received as f64)
            .n(
                "delivered_rate",
                (received as f64 / dur.as_secs_f64()).round(),
            )
            .n("p50_ms", p50)
            .n("p99_ms", p99)
            .n("p999_ms", p999)
            .n("max_ms", ms(quantile(&lat, 1.0)))
            .list("server_cpu_pct", &cpu)
            .n("bench_cpu_pct", self_cpu)
            .b("ok", ok);
        let summary = Json::new("msg")
            .n("max_rate", rate)
            .n(
                "delivered_rate",
                (received as f64 / dur.as_secs_f64()).round(),
            )
            .n("p50_ms", p50)
            .n("p99_ms", p99)
            .n("p999_ms", p999);
        line.emit();
        if !ok {
            break;
        }
        best = Some(summary);
        best_rate = rate;
        // Let queues drain before the next step.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    match best {
        Some(j) => j.emit(),
        None => Json::new("msg").n("max_rate", 0).emit(),
    }
    let _ = best_rate;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// b. Presence fan-out

pub struct FanoutOpts {
    pub a: Target,
    pub b: Target,
    pub password: String,
    pub watchers: usize,
    pub rounds: u32,
    pub timeout: Duration,
}

pub async fn fanout(o: FanoutOpts) -> Result<()> {
    base();
    let publisher_bare = format!("f0@{}", o.a.domain);
    let names: Vec<String> = (0..o.watchers).map(|i| format!("w{i}")).collect();
    let (ws, t_login) = connect_many(&o.b, &names, &o.password, 64, true).await?;
    Json::new("fanout_setup")
        .n("watchers", o.watchers as f64)
        .n("login_s", t_login.as_secs_f64())
        .emit();
    let (tx, mut rx) = mpsc::unbounded_channel::<(u32, Instant)>();
    for mut c in ws {
        let (tx, publisher_bare) = (tx.clone(), publisher_bare.clone());
        tokio::spawn(async move {
            while let Ok(el) = c.next().await {
                if el.name != "presence" || el.get_attr("type").is_some() {
                    continue;
                }
                if el.get_attr("from").map(bare) != Some(publisher_bare.as_str()) {
                    continue;
                }
                let status = el
                    .elements()
                    .find(|e| e.name == "status")
                    .map(|s| s.text_content())
                    .unwrap_or_default();
                if let Some(r) = status
                    .strip_prefix("fanout-")
                    .and_then(|r| r.parse::<u32>().ok())
                {
                    let _ = tx.send((r, Instant::now()));
                }
            }
        });
    }
    drop(tx);
    let (mut p, _) = connect_many(&o.a, &["f0".to_string()], &o.password, 1, false).await?;
    let publisher = spawn_driven(p.pop().expect("one client"));

    let mut finals = Vec::new();
    for round in 0..=o.rounds {
        let show = [
            "",
            "<show>away</show>",
            "<show>dnd</show>",
            "<show>xa</show>",
        ][round as usize % 4];
        let t0 = Instant::now();
        publisher
            .send(format!(
                "<presence>{show}<status>fanout-{round}</status></presence>"
            ))
            .ok()
            .context("the publisher's connection died")?;
        let mut times = Vec::with_capacity(o.watchers);
        let deadline = t0 + o.timeout;
        while times.len() < o.watchers {
            match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Ok(Some((r, t))) if r == round => {
                    times.push(t.duration_since(t0).as_nanos() as u64)
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        times.sort_unstable();
        let all = times.len() == o.watchers;
        let j = Json::new("fanout_round")
            .n("watchers", o.watchers as f64)
            .n("round", round)
            .b("initial", round == 0)
            .n("received", times.len() as f64)
            .n("p50_ms", ms(quantile(&times, 0.5)))
            .n("p99_ms", ms(quantile(&times, 0.99)))
            .n(
                "all_ms",
                if all {
                    ms(quantile(&times, 1.0))
                } else {
                    f64::NAN
                },
            );
        j.emit();
        if round > 0 {
            finals.push(if all {
                ms(quantile(&times, 1.0))
            } else {
                f64::INFINITY
            });
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let mut sorted = finals.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    Json::new("fanout")
        .n("watchers", o.watchers as f64)
        .n("all_ms_median", median)
        .list("all_ms_rounds", &finals)
        .emit();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// c. Idle sessions

pub struct IdleOpts {
    pub a: Target,
    pub password: String,
    pub levels: Vec<usize>,
    pub pid: u32,
    pub settle: Duration,
}

pub async fn idle(o: IdleOpts) -> Result<()> {
    let before = rss_kib(o.pid)?;
    let mut held: Vec<Client> = Vec::new();
    for &level in &o.levels {
        if level < held.len() {
            continue;
        }
        let names: Vec<String> = (held.len()..level).map(|i| format!("i{i}")).collect();
        let (cs, t) = connect_many(&o.a, &names, &o.password, 64, true).await?;
        let logins = cs.len();
        held.extend(cs);
        tokio::time::sleep(o.settle).await;
        let after = rss_kib(o.pid)?;
        Json::new("idle")
            .n("sessions", level as f64)
            .n("rss_before_kib", before as f64)
            .n("rss_after_kib", after as f64)
            .n(
                "kib_per_session",
                ((after as f64 - before as f64) / level as f64 * 10.0).round() / 10.0,
            )
            .n("logins_per_s", (logins as f64 / t.as_secs_f64()).round())
            .emit();
    }
    drop(held);
    Ok(())
}
