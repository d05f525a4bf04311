//! `ringcast-bench compare`: ringcast and the servers users would pick instead, one after
//! another on this machine, driven by the same load generator in the same run, plus the
//! kernel floor, so every figure can be read as a ratio.
//!
//! Each server runs as its own process, fresh for each scenario: (a)+(b) N idle connections
//! (connect rate, RSS per connection) then one 64 B broadcast to all of them (time to last
//! delivery); (c) a sustained publish rate spread over topics (per-delivery latency, server
//! CPU seconds). Peers publish through a loopback HTTP endpoint, ringcast through its admin
//! socket. Peers are single processes, so they stop at the per-process fd cap (`nofile`); the
//! table says when a server ran with fewer connections than asked.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Load, Target, admin_publish, drive, floor_measure, pid_cpu_s, raw_proto};

#[derive(clap::Parser, Clone)]
pub struct Args {
    /// Connections for the idle + broadcast scenario.
    #[arg(long, short = 'n', default_value_t = 19_000)]
    pub(crate) connections: usize,
    /// Subscribers for the sustained scenario.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) sustained_connections: usize,
    /// Topics the sustained subscribers are spread over (publishes go round-robin).
    #[arg(long, default_value_t = 100)]
    pub(crate) topics: usize,
    /// Publishes per second in the sustained scenario.
    #[arg(long, default_value_t = 1000)]
    pub(crate) rate: u32,
    #[arg(long, default_value_t = 30)]
    pub(crate) duration: u64,
    /// STOMP sessions instead of raw connections, against the brokers (`--stomp-servers`),
    /// with a unicast scenario besides (see `brokers.rs`).
    #[arg(long)]
    pub(crate) stomp: bool,
    /// Servers of the STOMP comparison, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "floor,ringcast,rabbitmq,activemq"
    )]
    pub(crate) stomp_servers: Vec<String>,
    /// Servers to run, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "floor,ringcast,tokio-tungstenite,node-ws,netty"
    )]
    servers: Vec<String>,
    /// Folder for compare.json, compare.md, per-run JSON and PNG charts.
    #[arg(long)]
    pub(crate) out: PathBuf,
    #[arg(long, default_value = "127.0.0.2-127.0.0.41")]
    pub(crate) sources: String,
    /// Give up on connecting or on deliveries after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub(crate) timeout: u64,
    /// Runs of the idle + broadcast scenario per server (a fresh process each); the table
    /// takes the median of each figure, since connect bursts on a shared 2-core box are noisy.
    #[arg(long, default_value_t = 3)]
    pub(crate) repeat: usize,
}

/// Lets the previous run's sockets finish closing before the next run connects.
pub(crate) const SETTLE: Duration = Duration::from_secs(2);

/// The run with the median connect rate; the last delivery and memory figures are replaced by
/// their medians over all runs (each figure is a median of its own).
pub(crate) fn median_run(mut runs: Vec<Value>) -> Value {
    if runs.iter().any(|r| r["ok"].as_bool() != Some(true)) || runs.is_empty() {
        return runs
            .into_iter()
            .find(|r| r["ok"].as_bool() != Some(true))
            .unwrap_or_else(|| json!({"ok": false, "error": "no run"}));
    }
    let median = |get: &dyn Fn(&Value) -> Option<f64>| -> Option<f64> {
        let mut v: Vec<f64> = runs.iter().filter_map(get).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let last = median(&|r| r["messages"][0]["last_delivery_s"].as_f64());
    let rss = median(&|r| r["server_rss_per_connection"].as_f64());
    let all: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({"connect_rate": r["connect_rate"], "last_delivery_s": r["messages"][0]["last_delivery_s"],
                   "server_rss_per_connection": r["server_rss_per_connection"]})
        })
        .collect();
    runs.sort_by(|a, b| {
        a["connect_rate"]
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&b["connect_rate"].as_f64().unwrap_or(0.0))
    });
    let n = runs.len();
    let mut m = runs.swap_remove(n / 2);
    m["messages"][0]["last_delivery_s"] = json!(last);
    m["server_rss_per_connection"] = json!(rss);
    m["runs"] = json!(all);
    m
}

/// How a publish reaches a server.
enum Via {
    Admin(PathBuf),
    Http(SocketAddr),
}

struct Running {
    child: Child,
    /// A second process the server needs (ringcast behind nginx), stopped after `child`.
    behind: Option<Child>,
    ws: SocketAddr,
    via: Via,
    _dir: TempDir,
}

/// A scratch folder removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// The repository root (peers and binaries are found from it).
pub(crate) fn root() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/release/ringcast-bench → the workspace root.
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Netty's jars as the distribution installs them (its netty-all.jar is empty).
const NETTY_JARS: &[&str] = &[
    "common",
    "buffer",
    "transport",
    "codec",
    "codec-http",
    "handler",
    "resolver",
    "transport-native-epoll",
    "transport-native-unix-common",
];

fn start(name: &str, connections: usize) -> Result<Running, String> {
    let root = root();
    let dir = std::env::temp_dir().join(format!("ringcast-compare-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let dir = TempDir(dir);
    let (ws_port, pub_port) = (free_port()?, free_port()?);
    let ws: SocketAddr = ([127, 0, 0, 1], ws_port).into();
    let publish: SocketAddr = ([127, 0, 0, 1], pub_port).into();
    let (ws_s, pub_s) = (ws_port.to_string(), pub_port.to_string());
    let (cert, key) = (
        root.join("tests/tls/server.pem"),
        root.join("tests/tls/server.key"),
    );
    let ringcast = |listen: SocketAddr, sock: &Path| {
        let mut c = Command::new(root.join("target/release/ringcast"));
        c.args(["serve", "--no-auth", "--listen", &listen.to_string()])
            .arg("--admin-socket")
            .arg(sock)
            .args(["--max-connections", &(connections + 1000).to_string()]);
        c
    };
    let mut behind = None;
    let (mut cmd, via) = match name {
        "ringcast" => {
            let sock = dir.0.join("admin.sock");
            (ringcast(ws, &sock), Via::Admin(sock))
        }
        "ringcast-tls" => {
            let sock = dir.0.join("admin.sock");
            let mut c = ringcast(ws, &sock);
            c.arg("--tls-cert").arg(&cert).arg("--tls-key").arg(&key);
            (c, Via::Admin(sock))
        }
        "nginx-tls" => {
            // nginx terminates TLS and proxies the upgrade to a plain ringcast (its
            // documented WebSocket setup); memory counts both.
            let sock = dir.0.join("admin.sock");
            let inner: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
            let log =
                std::fs::File::create(dir.0.join("ringcast.log")).map_err(|e| e.to_string())?;
            behind = Some(
                ringcast(inner, &sock)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .map_err(|e| format!("starting ringcast behind nginx: {e}"))?,
            );
            let conf = dir.0.join("nginx.conf");
            std::fs::write(&conf, nginx_conf(&dir.0, ws, inner, &cert, &key))
                .map_err(|e| e.to_string())?;
            let mut c = Command::new(if Path::new("/usr/sbin/nginx").exists() {
                "/usr/sbin/nginx"
            } else {
                "nginx"
            });
            c.arg("-c").arg(&conf).arg("-p").arg(&dir.0);
            (c, Via::Admin(sock))
        }
        "node-ws-tls" => {
            let mut c = Command::new("node");
            c.arg(root.join("bench/peers/node-ws/server.mjs"))
                .args([&ws_s, &pub_s])
                .arg(&cert)
                .arg(&key);
            (c, Via::Http(publish))
        }
        "tokio-tungstenite" => {
            let mut c = Command::new(root.join("target/release/peer-tokio-tungstenite"));
            c.args([ws.to_string(), publish.to_string()]);
            (c, Via::Http(publish))
        }
        "node-ws" => {
            let mut c = Command::new("node");
            c.arg(root.join("bench/peers/node-ws/server.mjs"))
                .args([&ws_s, &pub_s]);
            (c, Via::Http(publish))
        }
        "netty" => {
            let mut cp = root.join("bench/peers/netty/build").display().to_string();
            for j in NETTY_JARS {
                cp.push_str(&format!(":/usr/share/java/netty-{j}.jar"));
            }
            let mut c = Command::new("java");
            c.args(["-cp", &cp, "Peer", &ws_s, &pub_s]);
            (c, Via::Http(publish))
        }
        other => return Err(format!("unknown server {other:?}")),
    };
    let log = std::fs::File::create(dir.0.join("server.log")).map_err(|e| e.to_string())?;
    let child = cmd
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {name}: {e} (run `make peers` first)"))?;
    let mut running = Running {
        child,
        behind,
        ws,
        via,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = TcpStream::connect(ws).is_ok()
            && match &running.via {
                Via::Admin(sock) => sock.exists(),
                Via::Http(a) => TcpStream::connect(a).is_ok(),
            };
        if ready {
            return Ok(running);
        }
        if Instant::now() > deadline || running.child.try_wait().ok().flatten().is_some() {
            let log =
                std::fs::read_to_string(running._dir.0.join("server.log")).unwrap_or_default();
            stop(&mut running);
            return Err(format!("{name} did not start:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(r: &mut Running) {
    stop_child(&mut r.child);
    if let Some(c) = r.behind.as_mut() {
        stop_child(c);
    }
}

pub(crate) fn stop_child(child: &mut Child) {
    stop_within(child, Duration::from_secs(5));
}

/// SIGTERM, then SIGKILL if `child` has not exited within `grace`.
pub(crate) fn stop_within(child: &mut Child, grace: Duration) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// nginx as its WebSocket proxying guide sets it up, terminating TLS 1.2/1.3 with the same
/// certificate: no access log, no proxy buffering, enough connections per worker for both sides
/// of each proxied connection. Four workers, not one per core: each proxied connection holds
/// two descriptors, and with this box's 20,000-per-process cap two workers stop short of 19,000.
fn nginx_conf(
    dir: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    cert: &Path,
    key: &Path,
) -> String {
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 4;\nworker_rlimit_nofile 20000;\n\
         pid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
         events {{ worker_connections 20000; multi_accept on; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
           fastcgi_temp_path {dir}/fcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
           server {{\n    listen {listen} ssl reuseport backlog=65535;\n\
             ssl_certificate {cert};\n    ssl_certificate_key {key};\n    ssl_protocols TLSv1.2 TLSv1.3;\n\
             location / {{\n      proxy_pass http://{upstream};\n      proxy_http_version 1.1;\n\
               proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection \"upgrade\";\n\
               proxy_buffering off;\n      proxy_read_timeout 3600s;\n    }}\n  }}\n}}\n",
        dir = dir.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

/// A process and everything it started (nginx's workers), for memory and CPU.
pub(crate) fn family(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        let children =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        all.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
        i += 1;
    }
    all
}

fn http_publish(addr: SocketAddr, topic: &str, body: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("publish: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "POST /publish?topic={topic} HTTP/1.1\r\nHost: peer\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("publish: {e}"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| format!("publish: {e}"))?;
    if answer.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "publish: {}",
            answer.lines().next().unwrap_or("no answer")
        ))
    }
}

/// One scenario against a fresh process of `name`.
fn measure(name: &str, load: &Load) -> Result<Value, String> {
    let mut r = start(name, load.connections)?;
    let mut pids = vec![r.child.id()];
    pids.extend(r.behind.as_ref().map(Child::id));
    let tls = name.ends_with("-tls");
    let load = &Load {
        tls,
        ..load.clone()
    };
    let target = Target {
        addr: r.ws,
        host: r.ws.to_string(),
        path: "/ws?topic=cmp".into(),
        topic: "cmp".into(),
        project: "default".into(),
        tls,
        deflate: false,
    };
    let publish = |topic: &str, body: &str| match &r.via {
        Via::Admin(sock) => admin_publish(sock, &target.project, topic, body),
        Via::Http(addr) => http_publish(*addr, topic, body),
    };
    let every = || pids.iter().flat_map(|&p| family(p)).collect::<Vec<u32>>();
    let rss = || {
        every()
            .iter()
            .map(|p| ringcast::stats::rss_bytes_of(&p.to_string()))
            .sum::<Option<u64>>()
    };
    let cpu = || {
        every()
            .iter()
            .map(|&p| pid_cpu_s(u64::from(p)))
            .sum::<Option<f64>>()
    };
    let result = drive(
        load,
        &[r.ws],
        "cmp",
        raw_proto(&target, load),
        (&publish, None),
        &rss,
        &cpu,
    );
    stop(&mut r);
    result
}

pub(crate) fn load(a: &Args, connections: usize, sustained: bool) -> Load {
    Load {
        connections,
        shards: 0,
        sources: a.sources.clone(),
        concurrency: 256,
        messages: usize::from(!sustained),
        size: 64,
        interval_ms: 500,
        timeout: a.timeout,
        hold: 0,
        topics: if sustained { a.topics } else { 1 },
        rate: if sustained { a.rate } else { 0 },
        duration: a.duration,
        unicast: false,
        batch: 1,
        json: None,
        tls_ca: PathBuf::from("tests/tls/ca.pem"),
        deflate: false,
        json_body: false,
        tls: false,
    }
}

pub fn run(a: &Args) -> Result<Value, String> {
    if a.stomp {
        return crate::brokers::run(a);
    }
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    // What one process can hold: the fd table minus what a runtime keeps open.
    let cap = ringcast::server::raise_nofile().saturating_sub(1000) as usize;
    let mut rows = Vec::new();
    for name in &a.servers {
        // Peers are single processes; ringcast and the floor shard over fd tables.
        let capped = !matches!(name.as_str(), "ringcast" | "ringcast-tls" | "floor");
        let fit = |want: usize| if capped { want.min(cap) } else { want };
        let (n, sn) = (fit(a.connections), fit(a.sustained_connections));
        let mut runs = Vec::new();
        for i in 0..a.repeat.max(1) {
            eprintln!(
                "== {name}: {n} idle connections + one 64 B broadcast (run {} of {})",
                i + 1,
                a.repeat.max(1)
            );
            std::thread::sleep(SETTLE);
            let r = if name == "floor" {
                floor_measure("127.0.0.1:0".parse().unwrap(), &load(a, n, false))
            } else {
                measure(name, &load(a, n, false))
            };
            runs.push(r.unwrap_or_else(|e| json!({"ok": false, "error": e})));
        }
        let broadcast = median_run(runs);
        let sustained = if name == "floor" {
            json!({"ok": false, "error": "not measured: the floor has no topics"})
        } else {
            eprintln!(
                "== {name}: {} publishes/s to {sn} subscribers over {} topics for {} s",
                a.rate, a.topics, a.duration
            );
            std::thread::sleep(SETTLE);
            measure(name, &load(a, sn, true)).unwrap_or_else(|e| json!({"ok": false, "error": e}))
        };
        for (kind, v) in [("broadcast", &broadcast), ("sustained", &sustained)] {
            let p = a.out.join(format!("{name}-{kind}.json"));
            std::fs::write(&p, serde_json::to_string_pretty(v).unwrap_or_default())
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
        rows.push(
            json!({"server": name, "connections_asked": a.connections, "capped": n < a.connections,
            "broadcast": broadcast, "sustained": sustained}),
        );
    }
    charts(&rows, &a.out)?;
    let ok = rows.iter().all(|r| {
        r["broadcast"]["ok"].as_bool() == Some(true)
            && (r["server"] == "floor" || r["sustained"]["ok"].as_bool() == Some(true))
    });
    write_results(&a.out, "compare", &table(&rows), rows, ok)
}

/// `v` as a multiple of `base`, or a dash.
pub(crate) fn ratio(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}×", v / b),
        _ => "–".into(),
    }
}

/// The cells every comparison table starts with, from figures whose first three are the
/// connect rate, the memory per connection and the broadcast's last delivery: each, and its
/// ratio to the floor's (rate, delivery) or to ringcast's (memory).
pub(crate) fn connect_memory_broadcast(
    x: &[Option<f64>],
    floor: Option<&[Option<f64>]>,
    ours: Option<&[Option<f64>]>,
) -> String {
    format!(
        "{} | {} | {} | {} | {} | {}",
        figure(x[0], 0, ""),
        ratio(x[0], floor.and_then(|f| f[0])),
        figure(x[1], 0, " B"),
        ratio(x[1], ours.and_then(|o| o[1])),
        figure(x[2], 3, " s"),
        ratio(x[2], floor.and_then(|f| f[2])),
    )
}

/// `v` with `digits` decimals and `unit`, or "not measured".
pub(crate) fn figure(v: Option<f64>, digits: usize, unit: &str) -> String {
    v.map_or("not measured".into(), |v| format!("{v:.digits$}{unit}"))
}

/// p50 / p99 / p99.9 in ms, or "not measured".
pub(crate) fn percentiles(p: &[Option<f64>]) -> String {
    match p {
        [Some(a), Some(b), Some(c)] => format!("{a:.2} / {b:.2} / {c:.2} ms"),
        _ => "not measured".into(),
    }
}

/// Prints the table, and writes it (`STEM.md`), the charts' data and every run
/// (`STEM.json`) into `out`.
pub(crate) fn write_results(
    out: &Path,
    stem: &str,
    table: &str,
    rows: Vec<Value>,
    ok: bool,
) -> Result<Value, String> {
    println!("{table}");
    std::fs::write(out.join(format!("{stem}.md")), table).map_err(|e| e.to_string())?;
    let v = json!({"ok": ok, "runs": rows});
    std::fs::write(
        out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&v).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    Ok(v)
}

/// Per server: connect rate, bytes per connection, last delivery, sustained latency and CPU.
fn figures(r: &Value) -> [Option<f64>; 7] {
    let b = &r["broadcast"];
    let s = &r["sustained"];
    let ok = |v: &Value| v["ok"].as_bool() == Some(true);
    let b_ok = ok(b);
    let s_ok = ok(s);
    [
        b["connect_rate"].as_f64().filter(|_| b_ok),
        b["server_rss_per_connection"].as_f64().filter(|_| b_ok),
        b["messages"][0]["last_delivery_s"]
            .as_f64()
            .filter(|_| b_ok),
        s["latency_ms"]["p50"].as_f64().filter(|_| s_ok),
        s["latency_ms"]["p99"].as_f64().filter(|_| s_ok),
        s["latency_ms"]["p999"].as_f64().filter(|_| s_ok),
        s["sustained"]["server_cpu_seconds"]
            .as_f64()
            .filter(|_| s_ok),
    ]
}

fn table(rows: &[Value]) -> String {
    let find = |name: &str| rows.iter().find(|r| r["server"] == name).map(figures);
    let floor = find("floor");
    let ours = find("ringcast");
    let f = figure;
    let latency = |x: &[Option<f64>; 7]| percentiles(&x[3..6]);
    let mut t = String::from(
        "| server | connections | connect rate (/s) | vs floor | RSS per connection | vs ringcast | last delivery of one 64 B broadcast | vs floor | sustained p50 / p99 / p99.9 | server CPU (sustained) |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let x = figures(r);
        let conns = r["broadcast"]["connected"]
            .as_u64()
            .map_or("–".into(), |c| {
                let mut s = c.to_string();
                if r["capped"].as_bool() == Some(true) {
                    s.push_str(" (fd cap)");
                }
                s
            });
        let error = r["broadcast"]["error"]
            .as_str()
            .or(r["sustained"]["error"].as_str())
            .filter(|e| !e.starts_with("not measured"));
        t.push_str(&format!(
            "| {}{} | {conns} | {} | {} | {} |\n",
            r["server"].as_str().unwrap_or("?"),
            error.map_or(String::new(), |e| format!(
                " (failed: {})",
                e.lines().next().unwrap_or("")
            )),
            connect_memory_broadcast(
                &x,
                floor.as_ref().map(|f| &f[..]),
                ours.as_ref().map(|o| &o[..])
            ),
            latency(&x),
            f(x[6], 1, " s"),
        ));
    }
    t
}

fn charts(rows: &[Value], out: &Path) -> Result<(), String> {
    let series = |i: usize| -> Vec<(String, Option<f64>)> {
        rows.iter()
            .map(|r| {
                (
                    r["server"].as_str().unwrap_or("?").to_string(),
                    figures(r)[i],
                )
            })
            .collect()
    };
    crate::plot::bars(
        &out.join("compare-connect-rate.png"),
        "Connect rate (higher is better)",
        "connections / s",
        &series(0),
    )?;
    crate::plot::bars(
        &out.join("compare-memory.png"),
        "Server RSS per idle connection (lower is better)",
        "bytes",
        &series(1),
    )?;
    crate::plot::bars(
        &out.join("compare-broadcast.png"),
        "One 64 B broadcast: last delivery (lower is better)",
        "seconds",
        &series(2),
    )?;
    crate::plot::bars(
        &out.join("compare-p99.png"),
        "Sustained publishes: p99 publish → delivery (lower is better)",
        "milliseconds",
        &series(4),
    )
}
