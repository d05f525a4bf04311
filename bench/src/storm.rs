//! `ringcast-bench storm`: a reconnect storm. N clients connect to a ringcast this command
//! starts; the server is then SIGKILLed (no drain, no hand-over) and started again on the same
//! port, and every client comes back at once, as fast as the server lets it: after the
//! `Retry-After` of a 503 (plus up to a second of jitter), else after a jittered back-off.
//! Measured: the time until all N are back, the tries and 503s it took, and how fast the admin
//! socket's `/healthz` answered throughout (polled every 100 ms on its own thread).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client;
use crate::compare::{TempDir, free_port, root};
use crate::load::{Load, parse_sources, parse_url, raw_proto};

/// What `ringcast-bench storm` is told.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[arg(long, short = 'n', default_value_t = 10_000)]
    connections: usize,
    /// Source addresses: a range `127.0.0.2-127.0.0.40` or a comma list.
    #[arg(long, default_value = "127.0.0.2-127.0.0.41")]
    sources: String,
    /// Connects in flight per client shard.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// ringcast's configuration file (default: `--no-auth`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// STOMP sessions (CONNECT with a token minted from `--config`'s project, SUBSCRIBE with a
    /// receipt) instead of raw ones.
    #[arg(long)]
    stomp: bool,
    #[arg(long, default_value = "default")]
    project: String,
    /// More `ringcast serve` arguments (repeat it: `--server-arg=--shards --server-arg=4`).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Give up on connecting (first, then after the restart) after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Server {
    cmd: Vec<String>,
    sock: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Starts the server and waits until its admin socket answers. The socket file of a
    /// server that was killed is left in place, as a crash leaves it.
    fn start(&mut self) -> Result<(), String> {
        let child = Command::new(&self.cmd[0])
            .args(&self.cmd[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.cmd[0]))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while ringcast::admin::request(&self.sock, "GET", "/healthz", None).is_err() {
            if Instant::now() > deadline {
                return Err("the server's admin socket did not answer within 30 s".into());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("the server exited: {status}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            crate::compare::stop_within(c, Duration::from_secs(10));
        }
    }
}

/// `/healthz` answers: (seconds since the run's epoch, ms to answer, status; 0 = no answer).
type Probes = Arc<Mutex<Vec<(f64, f64, u16)>>>;

fn probe_healthz(sock: PathBuf, epoch: Instant, stop: Arc<AtomicBool>, out: Probes) {
    while !stop.load(Relaxed) {
        let t = Instant::now();
        let status = ringcast::admin::request(&sock, "GET", "/healthz", None)
            .map(|(s, _)| s)
            .unwrap_or(0);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        out.lock()
            .unwrap()
            .push((epoch.elapsed().as_secs_f64(), ms, status));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn open(shared: &client::Shared) -> u64 {
    shared
        .connected
        .load(Relaxed)
        .saturating_sub(shared.closed.load(Relaxed))
}

/// Waits until `n` clients are open; the seconds it took, or `None` at the deadline.
fn until_open(shared: &client::Shared, n: u64, timeout: Duration) -> Option<f64> {
    let t = Instant::now();
    while open(shared) < n {
        if t.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Some(t.elapsed().as_secs_f64())
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let i = ((sorted.len() as f64 * p).ceil() as usize).checked_sub(1)?;
    sorted.get(i.min(sorted.len() - 1)).copied()
}

pub(crate) fn run(a: &Args) -> Result<Value, String> {
    let dir = TempDir(std::env::temp_dir().join(format!("ringcast-storm-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let sock = dir.0.join("admin.sock");
    let bin = root().join("target/release/ringcast");
    let mut cmd: Vec<String> = vec![bin.display().to_string(), "serve".into()];
    cmd.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
    cmd.extend(["--admin-socket".into(), sock.display().to_string()]);
    let max = (a.connections + 1000).to_string();
    cmd.extend(["--max-connections".into(), max]);
    match &a.config {
        Some(c) => cmd.extend(["--config".into(), c.display().to_string()]),
        None => cmd.push("--no-auth".into()),
    }
    cmd.extend(a.server_args.iter().cloned());
    let mut server = Server {
        cmd,
        sock: sock.clone(),
        child: None,
    };
    server.start()?;

    let url = format!("ws://127.0.0.1:{port}/ws?topic=storm&project={}", a.project);
    let target = parse_url(&url)?;
    let load = <Load as clap::Parser>::parse_from(["load"]);
    let proto = if a.stomp {
        remembered(
            crate::drive::stomp_proto(&target, &load, a.config.as_deref(), 0, false)?,
            a.connections,
        )
    } else {
        raw_proto(&target, &load)
    };
    let sources = parse_sources(&a.sources)?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let per_table = ringcast::server::per_table(ringcast::server::raise_nofile()) as usize;
    let shards = a
        .connections
        .div_ceil(per_table)
        .max(cores.len().max(1))
        .min(a.connections.max(1));
    let shared = Arc::new(client::Shared::default());
    let epoch = Instant::now();
    let mut first = 0;
    let handles: Vec<_> = (0..shards)
        .map(|id| {
            let count = a.connections / shards + usize::from(id < a.connections % shards);
            first += count;
            client::spawn(client::Plan {
                id,
                first: first - count,
                count,
                target: target.addr,
                sources: sources.clone(),
                proto: proto.clone(),
                concurrency: a.concurrency,
                shared: shared.clone(),
                epoch,
                core: cores.get(id % cores.len().max(1)).copied(),
                tls: None,
                storm: true,
            })
        })
        .collect();
    let n = a.connections as u64;
    let timeout = Duration::from_secs(a.timeout);
    let result = (|| {
        let connect_s = until_open(&shared, n, timeout)
            .ok_or_else(|| format!("only {} of {n} connected at first", open(&shared)))?;
        eprintln!(
            "storm: {n} connected in {connect_s:.2} s ({:.0}/s); SIGKILL and restart",
            n as f64 / connect_s
        );
        let first_tries = shared.retries.load(Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let probes: Probes = Arc::default();
        let prober = {
            let (sock, stop, probes) = (sock.clone(), stop.clone(), probes.clone());
            std::thread::spawn(move || probe_healthz(sock, epoch, stop, probes))
        };
        let killed_at = epoch.elapsed().as_secs_f64();
        server.kill();
        server.start()?;
        let started_at = epoch.elapsed().as_secs_f64();
        let back = until_open(&shared, n, timeout);
        let back_at = epoch.elapsed().as_secs_f64();
        // A few more probes after the storm, then the prober stops.
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Relaxed);
        let _ = prober.join();
        let stats = crate::admin::server_stats(&sock).unwrap_or(Value::Null);
        let probes = probes.lock().unwrap().clone();
        let during: Vec<&(f64, f64, u16)> = probes
            .iter()
            .filter(|p| p.0 >= started_at && p.0 <= back_at)
            .collect();
        let mut ms: Vec<f64> = during.iter().filter(|p| p.2 == 200).map(|p| p.1).collect();
        ms.sort_by(f64::total_cmp);
        let unanswered = during.iter().filter(|p| p.2 != 200).count();
        let back_s = back.map(|_| back_at - killed_at);
        eprintln!(
            "storm: {} of {n} back {} after the kill ({:.2} s after the restart); {} tries, {} of them after a 503; /healthz {} probes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {unanswered} unanswered",
            open(&shared),
            back_s.map_or("not all".into(), |s| format!("in {s:.2} s")),
            back_at - started_at,
            shared.retries.load(Relaxed) - first_tries,
            shared.shed.load(Relaxed),
            ms.len(),
            percentile(&ms, 0.5).unwrap_or(0.0),
            percentile(&ms, 0.99).unwrap_or(0.0),
            ms.last().copied().unwrap_or(0.0),
        );
        Ok::<Value, String>(json!({
            "ok": back.is_some(),
            "connections": n,
            "stomp": a.stomp,
            "connect_s": connect_s,
            "back_s": back_s,
            "back_after_start_s": back_at - started_at,
            "still_out": n.saturating_sub(open(&shared)),
            "tries": shared.retries.load(Relaxed) - first_tries,
            "shed_seen": shared.shed.load(Relaxed),
            "server_shed": stats["shed"],
            "healthz": {
                "probes": ms.len(),
                "unanswered": unanswered,
                "p50_ms": percentile(&ms, 0.5),
                "p99_ms": percentile(&ms, 0.99),
                "max_ms": ms.last(),
            },
        }))
    })();
    shared.stop.store(true, Relaxed);
    for h in handles {
        let _ = h.join();
    }
    drop(server);
    let v = result?;
    if let Some(path) = &a.json {
        write(path, &v)?;
    }
    Ok(v)
}

/// Each session's CONNECT (its token signed once, on first use): a reconnect sends the same
/// token again, as a real client does, instead of the bench signing a new one (an RS256
/// signature costs the client about a millisecond).
fn remembered(proto: client::Proto, n: usize) -> client::Proto {
    let client::Proto::Stomp {
        request,
        frames,
        heartbeat_ms,
        sockjs,
        tcp,
    } = proto
    else {
        return proto;
    };
    let cache: Arc<Vec<std::sync::OnceLock<bytes::Bytes>>> =
        Arc::new((0..n).map(|_| std::sync::OnceLock::new()).collect());
    client::Proto::Stomp {
        request,
        frames: Arc::new(move |i| cache[i].get_or_init(|| frames(i)).clone()),
        heartbeat_ms,
        sockjs,
        tcp,
    }
}

fn write(path: &Path, v: &Value) -> Result<(), String> {
    std::fs::write(path, format!("{v:#}\n")).map_err(|e| format!("{}: {e}", path.display()))
}
