//! `ringcast-bench storm`: a reconnect storm. N clients connect to a ringcast this command
//! starts; the server is then SIGKILLed (no drain, no hand-over) and started again on the same
//! port, and every client comes back at once, as fast as the server lets it: after the
//! `Retry-After` of a 503 (plus up to a second of jitter), else after a jittered back-off.
//! Measured: the time until all N are back, the tries and 503s it took, and how fast the admin
//! socket's `/healthz` answered throughout (curl every 100 ms, see `probe_healthz`).
//!
//! With `--nodes 3 --redis URL` the nodes form a cluster; the clients connect to the first,
//! which is killed and not restarted, and come back on the others. With `--before K --missed
//! M` (STOMP, history kept for `/topic/storm`), K messages reach every session before the kill
//! and M go out while they are away; each comes back with `x-recover-since` and counts as
//! recovered once it has all K + M, and the Redis reads the other nodes made are reported.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::{self, Resume};
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
    /// Nodes; above 1 a cluster on `--redis` (which the caller runs).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    #[arg(long)]
    redis: Option<String>,
    /// Messages published before the kill (every session must have them all first).
    #[arg(long, default_value_t = 0)]
    before: usize,
    /// Messages published while the sessions are away, to be recovered (`x-recover-since`).
    #[arg(long, default_value_t = 0)]
    missed: usize,
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

/// Probes with curl at `nice -10` (where the bench may raise a priority, as root): what is
/// timed is then the server's answer, not this process's own turn on cores its client shards
/// keep busy. curl's `time_total` excludes starting the process.
fn probe_healthz(sock: PathBuf, epoch: Instant, stop: Arc<AtomicBool>, out: Probes) {
    while !stop.load(Relaxed) {
        let at = epoch.elapsed().as_secs_f64();
        let answer = Command::new("nice")
            .args([
                "-n",
                "-10",
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "5",
            ])
            .args(["-w", "%{http_code} %{time_total}", "--unix-socket"])
            .arg(&sock)
            .arg("http://ringcast/healthz")
            .stderr(Stdio::null())
            .output();
        let (status, ms) = match answer
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        {
            Some(text) => {
                let mut f = text.split_whitespace();
                let status = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let secs: f64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
                (status, secs * 1000.0)
            }
            None => (0, 0.0),
        };
        out.lock().unwrap().push((at, ms, status));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn open(shared: &client::Shared) -> u64 {
    shared
        .connected
        .load(Relaxed)
        .saturating_sub(shared.closed.load(Relaxed))
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let i = ((sorted.len() as f64 * p).ceil() as usize).checked_sub(1)?;
    sorted.get(i.min(sorted.len() - 1)).copied()
}

fn node_cmd(a: &Args, port: u16, sock: &Path) -> Vec<String> {
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
    if let Some(r) = &a.redis {
        cmd.extend(["--redis".into(), r.clone()]);
    }
    cmd.extend(a.server_args.iter().cloned());
    cmd
}

/// Publishes `count` numbered bodies to `/topic/storm` through `sock`.
fn publish(sock: &Path, project: &str, tag: &str, count: usize) -> Result<(), String> {
    for i in 0..count {
        crate::admin::admin_publish(sock, project, "storm", &format!("{tag}-{i}"))?;
    }
    Ok(())
}

/// Waits until `cond` holds; the seconds it took, or `None` at the deadline.
fn until(cond: impl Fn() -> bool, timeout: Duration) -> Option<f64> {
    let t = Instant::now();
    while !cond() {
        if t.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Some(t.elapsed().as_secs_f64())
}

pub(crate) fn run(a: &Args) -> Result<Value, String> {
    if a.nodes > 1 && a.redis.is_none() {
        return Err("--nodes above 1 needs --redis URL (a running redis-server)".into());
    }
    let recover = a.missed > 0 || a.before > 0;
    if recover && !a.stomp {
        return Err("--before/--missed need --stomp (recovery with x-recover-since)".into());
    }
    let dir = TempDir(std::env::temp_dir().join(format!("ringcast-storm-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).map_err(|e| e.to_string())?;
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for k in 0..a.nodes.max(1) {
        let port = free_port()?;
        let sock = dir.0.join(format!("admin-{k}.sock"));
        let mut s = Server {
            cmd: node_cmd(a, port, &sock),
            sock,
            child: None,
        };
        s.start()?;
        servers.push(s);
        addrs.push(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let socks: Vec<PathBuf> = servers.iter().map(|s| s.sock.clone()).collect();
    let url = format!(
        "ws://127.0.0.1:{}/ws?topic=storm&project={}",
        addrs[0].port(),
        a.project
    );
    let target = parse_url(&url)?;
    let (proto, resume) = if a.stomp {
        stomp(&target, a.config.as_deref(), a.connections, recover)?
    } else {
        (
            raw_proto(&target, &<Load as clap::Parser>::parse_from(["load"])),
            None,
        )
    };
    let sources = parse_sources(&a.sources)?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let shards = crate::drive::client_shards(a.connections, 0, 1);
    let shared = Arc::new(client::Shared::default());
    let epoch = Instant::now();
    let handles: Vec<_> = (0..shards)
        .map(|id| {
            let (first, count) = crate::drive::share(a.connections, shards, id);
            client::spawn(client::Plan {
                id,
                first,
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
                fallbacks: addrs[1..].to_vec(),
                resume: resume.clone(),
            })
        })
        .collect();
    let n = a.connections as u64;
    let timeout = Duration::from_secs(a.timeout);
    let result = (|| {
        let connect_s = until(|| open(&shared) >= n, timeout)
            .ok_or_else(|| format!("only {} of {n} connected at first", open(&shared)))?;
        eprintln!(
            "storm: {n} connected in {connect_s:.2} s ({:.0}/s)",
            n as f64 / connect_s
        );
        if a.before > 0 {
            publish(&socks[0], &a.project, "before", a.before)?;
            let all = n * a.before as u64;
            until(|| shared.received.load(Relaxed) >= all, timeout)
                .ok_or("the messages before the kill did not reach every session")?;
        }
        let received_before = shared.received.load(Relaxed);
        // What the storm took, not the first connect: counted from the kill on.
        let (first_tries, first_shed) = (shared.retries.load(Relaxed), shared.shed.load(Relaxed));
        let stop = Arc::new(AtomicBool::new(false));
        let probes: Probes = Arc::default();
        // The node the clients come back to answers the probes.
        let probed = socks[if a.nodes > 1 { 1 } else { 0 }].clone();
        let prober = {
            let (stop, probes) = (stop.clone(), probes.clone());
            std::thread::spawn(move || probe_healthz(probed, epoch, stop, probes))
        };
        eprintln!("storm: SIGKILL the first node");
        let killed_at = epoch.elapsed().as_secs_f64();
        servers[0].kill();
        if a.nodes <= 1 {
            servers[0].start()?;
        } else if a.missed > 0 {
            publish(&socks[1], &a.project, "missed", a.missed)?;
        }
        let started_at = epoch.elapsed().as_secs_f64();
        let expected = received_before + n * a.missed as u64;
        let back = until(
            || {
                open(&shared) >= n
                    && shared.received.load(Relaxed) >= expected
                    && (!recover || shared.recovered.load(Relaxed) >= n)
            },
            timeout,
        );
        let back_at = epoch.elapsed().as_secs_f64();
        // A few more probes after the storm, then the prober stops.
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Relaxed);
        let _ = prober.join();
        let live = &socks[usize::from(a.nodes > 1)..];
        let stats: Vec<Value> = live
            .iter()
            .map(|s| crate::admin::server_stats(s).unwrap_or(Value::Null))
            .collect();
        let sum = |f: &dyn Fn(&Value) -> Option<u64>| stats.iter().filter_map(f).sum::<u64>();
        let redis_reads = sum(&|v| v["history"]["redis_reads"].as_u64());
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
            "storm: {} of {n} back{} {} after the kill; {} tries, {} of them after a 503; recovered {}, Redis reads {redis_reads}; /healthz {} probes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {unanswered} unanswered",
            open(&shared),
            if recover { " and recovered" } else { "" },
            back_s.map_or("not all".into(), |s| format!("in {s:.2} s")),
            shared.retries.load(Relaxed) - first_tries,
            shared.shed.load(Relaxed) - first_shed,
            shared.recovered.load(Relaxed),
            ms.len(),
            percentile(&ms, 0.5).unwrap_or(0.0),
            percentile(&ms, 0.99).unwrap_or(0.0),
            ms.last().copied().unwrap_or(0.0),
        );
        Ok::<Value, String>(json!({
            "ok": back.is_some(),
            "connections": n,
            "stomp": a.stomp,
            "nodes": a.nodes,
            "connect_s": connect_s,
            "back_s": back_s,
            "back_after_start_s": back_at - started_at,
            "still_out": n.saturating_sub(open(&shared)),
            "tries": shared.retries.load(Relaxed) - first_tries,
            "shed_seen": shared.shed.load(Relaxed) - first_shed,
            "server_shed": sum(&|v| v["shed"].as_u64()),
            "before": a.before,
            "missed": a.missed,
            "recovered": shared.recovered.load(Relaxed),
            "redis_reads": redis_reads,
            "redis_reads_per_session": redis_reads as f64 / n.max(1) as f64,
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
    drop(servers);
    let v = result?;
    if let Some(path) = &a.json {
        write(path, &v)?;
    }
    Ok(v)
}

/// STOMP sessions on `/topic/storm`: each CONNECTs (its token signed once, on first use, and
/// sent again on every reconnect as a real client does; an RS256 signature costs the bench
/// about a millisecond) and SUBSCRIBEs with a receipt; with `recover`, a session coming back
/// with a position SUBSCRIBEs with `x-recover-since`.
fn stomp(
    target: &crate::load::Target,
    config: Option<&Path>,
    n: usize,
    recover: bool,
) -> Result<(client::Proto, Option<Resume>), String> {
    let auth = crate::drive::minting(config)?;
    let project = target.project.clone();
    let connects: Vec<std::sync::OnceLock<String>> =
        (0..n).map(|_| std::sync::OnceLock::new()).collect();
    let connect = Arc::new(move |i: usize| {
        connects[i]
            .get_or_init(|| crate::drive::stomp_connect(auth.as_ref(), &project, i, 0))
            .clone()
    });
    let subscribe = "SUBSCRIBE\nid:sub-0\ndestination:/topic/storm\nreceipt:s\n\n\0";
    let c = connect.clone();
    let frames = Arc::new(move |i: usize| crate::drive::masked_frames(&[&c(i), subscribe], false));
    let resume: Option<Resume> = recover.then(|| {
        Arc::new(move |i: usize, pos: &str| {
            let sub = format!(
                "SUBSCRIBE\nid:sub-0\ndestination:/topic/storm\nx-recover-since:{pos}\nreceipt:s\n\n\0"
            );
            crate::drive::masked_frames(&[&connect(i), &sub], false)
        }) as Resume
    });
    let proto = client::Proto::Stomp {
        request: crate::load::upgrade_request(target, &target.path, Some("v12.stomp")),
        frames,
        heartbeat_ms: 0,
        sockjs: false,
        tcp: false,
    };
    Ok((proto, resume))
}

fn write(path: &Path, v: &Value) -> Result<(), String> {
    std::fs::write(path, format!("{v:#}\n")).map_err(|e| format!("{}: {e}", path.display()))
}
