//! `ringcast-bench compare --stomp`: ringcast's STOMP mode against the brokers STOMP users put
//! behind their clients instead (RabbitMQ with Web-STOMP, ActiveMQ), one after another on this
//! machine under the same load, driven by the same load generator.
//!
//! Every session CONNECTs (ringcast: a JWT of its own; the brokers: their login) with
//! heart-beats of 10 s both ways and SUBSCRIBEs with a receipt; it counts as connected when the
//! receipt arrives. Per server, each on a fresh process: memory per session, the connect +
//! CONNECTED rate and one 64 B broadcast to all (median of `repeat` runs); a sustained publish
//! rate round-robin over topics; unicast, one destination per session and publishes to random
//! ones. The brokers take publishes on their own STOMP TCP port from one publisher connection,
//! ringcast through its admin socket. The brokers are started by `bench/peers/*/run.sh`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringcast::ws::frame::{Opcode, encode_masked};
use serde_json::{Value, json};

use crate::compare::{
    self, SETTLE, TempDir, connect_memory_broadcast, family, figure, free_port, median_run,
    percentiles, root, stop_child, stop_within, write_results,
};
use crate::{
    Load, Target, admin_publish, admin_publish_users, client, drive, floor_measure, pid_cpu_s,
    upgrade_request,
};

const HEARTBEAT_MS: u32 = 10_000;
/// The key ringcast's bench project signs its tokens with.
const SECRET: &str = "ringcast-bench-stomp-compare-secret-0123456789";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ringcast,
    Rabbit,
    ActiveMq,
}

impl Kind {
    fn of(name: &str) -> Result<Kind, String> {
        match name {
            "ringcast" => Ok(Kind::Ringcast),
            "rabbitmq" => Ok(Kind::Rabbit),
            "activemq" => Ok(Kind::ActiveMq),
            other => Err(format!(
                "unknown STOMP server {other:?} (floor, ringcast, rabbitmq, activemq)"
            )),
        }
    }
}

/// What the sessions subscribe to.
#[derive(Clone, Copy)]
enum Scenario {
    /// Everyone on `/topic/cmp`.
    Broadcast,
    /// Session I on `/topic/cmp-(I mod topics)`.
    Topics,
    /// Session I on its own destination (ringcast: user `bench-I`'s `/user/queue/bench`).
    Unicast,
}

/// How publishes reach a server.
enum Publisher {
    Admin(PathBuf),
    /// One STOMP connection to the broker's TCP port.
    Stomp(Mutex<TcpStream>),
}

impl Publisher {
    fn send(&self, destination: &str, body: &str) -> Result<(), String> {
        match self {
            Publisher::Admin(sock) => {
                let topic = destination.strip_prefix("/topic/").unwrap_or(destination);
                admin_publish(sock, "default", topic, body)
            }
            Publisher::Stomp(s) => {
                let frame = format!(
                    "SEND\ndestination:{destination}\ncontent-length:{}\n\n{body}\0",
                    body.len()
                );
                let mut s = s.lock().map_err(|_| "publisher poisoned".to_string())?;
                s.write_all(frame.as_bytes())
                    .map_err(|e| format!("publish: {e}"))
            }
        }
    }

    fn unicast(&self, items: &[(usize, String)]) -> Result<(), String> {
        match self {
            Publisher::Admin(sock) => admin_publish_users(sock, "default", items),
            Publisher::Stomp(_) => items
                .iter()
                .try_for_each(|(i, body)| self.send(&format!("/queue/bench-{i}"), body)),
        }
    }
}

struct Running {
    kind: Kind,
    child: Child,
    /// Where the sessions connect.
    addr: SocketAddr,
    publisher: Publisher,
    auth: Option<Arc<ringcast::auth::Auth>>,
    _dir: TempDir,
}

fn wait_listening(
    addrs: &[SocketAddr],
    child: &mut Child,
    name: &str,
    log: &std::path::Path,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !addrs.iter().all(|a| TcpStream::connect(a).is_ok()) {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!("{name} did not start: {}", tail.join(" / ")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A STOMP connection to a broker's TCP port, CONNECTED.
fn stomp_publisher(addr: SocketAddr, host: &str) -> Result<Publisher, String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("publisher: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    write!(
        w,
        "CONNECT\naccept-version:1.2\nhost:{host}\nlogin:guest\npasscode:guest\nheart-beat:0,0\n\n\0"
    )
    .map_err(|e| format!("publisher: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut first = Vec::new();
    BufReader::new(&s)
        .read_until(0, &mut first)
        .map_err(|e| format!("publisher: {e}"))?;
    if !first.starts_with(b"CONNECTED") {
        return Err(format!(
            "publisher: {}",
            String::from_utf8_lossy(&first[..first.len().min(200)])
        ));
    }
    // The broker sends nothing more (no heart-beats, no receipts): nothing to read.
    Ok(Publisher::Stomp(Mutex::new(s)))
}

fn start(kind: Kind, sessions: usize) -> Result<Running, String> {
    let root = root();
    let dir = std::env::temp_dir().join(format!(
        "ringcast-stomp-compare-{}-{}",
        std::process::id(),
        free_port()?
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let dir = TempDir(dir);
    let log_path = dir.0.join("server.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let (port, stomp_port) = (free_port()?, free_port()?);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let stomp_addr: SocketAddr = ([127, 0, 0, 1], stomp_port).into();
    let state = dir.0.join("broker");
    let (mut cmd, name) = match kind {
        Kind::Ringcast => {
            let cfg = dir.0.join("ringcast.toml");
            std::fs::write(
                &cfg,
                format!(
                    "[auth]\nenabled = true\n[projects.default]\njwt_secret = \"{SECRET}\"\n\
                     [server]\nmax_connections = {}\n",
                    sessions + 1000
                ),
            )
            .map_err(|e| e.to_string())?;
            let mut c = Command::new(root.join("target/release/ringcast"));
            c.arg("serve")
                .arg("--config")
                .arg(&cfg)
                .args(["--listen", &addr.to_string()])
                .arg("--admin-socket")
                .arg(dir.0.join("admin.sock"));
            (c, "ringcast")
        }
        Kind::Rabbit => {
            let mut c = Command::new("bash");
            // Erlang listens on every address: ports free on all of them, not just loopback
            // (after a big run, the clients' source ports linger in TIME_WAIT).
            let any = || -> Result<u16, String> {
                let l = std::net::TcpListener::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
                Ok(l.local_addr().map_err(|e| e.to_string())?.port())
            };
            c.arg(root.join("bench/peers/rabbitmq/run.sh"))
                .arg(&state)
                .args([port, stomp_port, any()?, any()?].map(|p| p.to_string()));
            (c, "rabbitmq")
        }
        Kind::ActiveMq => {
            let mut c = Command::new("bash");
            c.arg(root.join("bench/peers/activemq/run.sh"))
                .arg(&state)
                .arg(port.to_string());
            (c, "activemq")
        }
    };
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))?;
    let ready = match kind {
        Kind::Ringcast => {
            let sock = dir.0.join("admin.sock");
            let deadline = Instant::now() + Duration::from_secs(30);
            while !sock.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            wait_listening(&[addr], &mut child, name, &log_path)
        }
        Kind::Rabbit => wait_listening(&[addr, stomp_addr], &mut child, name, &log_path),
        Kind::ActiveMq => wait_listening(&[addr], &mut child, name, &log_path),
    };
    let built = ready.and_then(|()| match kind {
        Kind::Ringcast => {
            let path = dir.0.join("ringcast.toml");
            let mut cfg = ringcast::config::Config::from_file(&path)?;
            cfg.auth.enabled = false;
            let auth = ringcast::auth::Auth::from_config(&cfg, ringcast::clock::unix_s())?;
            Ok((
                Publisher::Admin(dir.0.join("admin.sock")),
                Some(Arc::new(auth)),
            ))
        }
        Kind::Rabbit => Ok((stomp_publisher(stomp_addr, "/")?, None)),
        Kind::ActiveMq => Ok((stomp_publisher(addr, "localhost")?, None)),
    });
    match built {
        Ok((publisher, auth)) => Ok(Running {
            kind,
            child,
            addr,
            publisher,
            auth,
            _dir: dir,
        }),
        Err(e) => {
            stop_child(&mut child);
            Err(e)
        }
    }
}

/// CONNECT + SUBSCRIBE of session `i`, as the server's transport carries them.
fn frames(r: &Running, load: &Load, scenario: Scenario) -> client::Proto {
    let (kind, auth, l) = (r.kind, r.auth.clone(), load.clone());
    let make = move |i: usize| {
        let who = match &auth {
            Some(a) => format!(
                "token:{}\nprojectId:default",
                a.mint("default", &format!("bench-{i}"), 86400)
                    .unwrap_or_default()
            ),
            None => "login:guest\npasscode:guest".to_string(),
        };
        let host = if kind == Kind::Rabbit {
            "/"
        } else {
            "localhost"
        };
        let destination = match (scenario, kind) {
            (Scenario::Broadcast, _) => "/topic/cmp".to_string(),
            (Scenario::Topics, _) => format!("/topic/{}", l.topic_of("cmp", i)),
            (Scenario::Unicast, Kind::Ringcast) => "/user/queue/bench".to_string(),
            (Scenario::Unicast, _) => format!("/queue/bench-{i}"),
        };
        let connect = format!(
            "CONNECT\naccept-version:1.2\nhost:{host}\n{who}\nheart-beat:{HEARTBEAT_MS},{HEARTBEAT_MS}\n\n\0"
        );
        let subscribe = format!("SUBSCRIBE\nid:sub-0\ndestination:{destination}\nreceipt:s\n\n\0");
        if kind == Kind::ActiveMq {
            return Bytes::from(connect + &subscribe);
        }
        let mut out = encode_masked(Opcode::Text, true, connect.as_bytes(), [7, 7, 7, 7]);
        out.extend(encode_masked(
            Opcode::Text,
            true,
            subscribe.as_bytes(),
            [7, 7, 7, 7],
        ));
        Bytes::from(out)
    };
    let target = Target {
        addr: r.addr,
        host: r.addr.to_string(),
        path: "/ws".into(),
        topic: "cmp".into(),
        project: "default".into(),
        tls: false,
        deflate: false,
    };
    client::Proto::Stomp {
        request: upgrade_request(&target, "/ws", Some("v12.stomp")),
        frames: Arc::new(make),
        heartbeat_ms: HEARTBEAT_MS,
        sockjs: false,
        tcp: kind == Kind::ActiveMq,
    }
}

/// One scenario against a fresh process of `kind`.
fn measure(kind: Kind, load: &Load, scenario: Scenario) -> Result<Value, String> {
    let mut r = start(kind, load.connections)?;
    let pid = r.child.id();
    let rss = || {
        family(pid)
            .iter()
            .map(|p| ringcast::stats::rss_bytes_of(&p.to_string()))
            .sum::<Option<u64>>()
    };
    let cpu = || {
        family(pid)
            .iter()
            .map(|&p| pid_cpu_s(u64::from(p)))
            .sum::<Option<f64>>()
    };
    let publish = |topic: &str, body: &str| r.publisher.send(&format!("/topic/{topic}"), body);
    let unicast = |items: &[(usize, String)]| r.publisher.unicast(items);
    let proto = frames(&r, load, scenario);
    let result = drive(
        load,
        &[r.addr],
        "cmp",
        proto,
        (&publish, Some(&unicast)),
        &rss,
        &cpu,
    );
    // A broker's clean stop takes seconds (its run script then removes its state).
    stop_within(&mut r.child, Duration::from_secs(30));
    result
}

fn load(a: &compare::Args, connections: usize, scenario: Scenario) -> Load {
    let sustained = !matches!(scenario, Scenario::Broadcast);
    Load {
        topics: if matches!(scenario, Scenario::Topics) {
            a.topics
        } else {
            1
        },
        unicast: matches!(scenario, Scenario::Unicast),
        ..compare::load(a, connections, sustained)
    }
}

/// A run in which the server stopped taking sessions short of the count asked (none refused,
/// the rest never answered before the timeout) but served every one it took: its figures hold
/// for the sessions it took, and the table says how many those were.
fn stopped_short(mut r: Value) -> Value {
    let connected = r["connected"].as_u64().unwrap_or(0);
    let whole = r["messages"].as_array().is_some_and(|m| {
        !m.is_empty() && m.iter().all(|m| m["delivered"].as_u64() == Some(connected))
    });
    if r["ok"] == false && connected > 0 && r["failed"] == 0 && whole {
        r["ok"] = json!(true);
        r["stopped_at"] = json!(connected);
    }
    r
}

pub(crate) fn run(a: &compare::Args) -> Result<Value, String> {
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let mut rows = Vec::new();
    for name in &a.stomp_servers {
        let fail = |e: String| json!({"ok": false, "error": e});
        if name == "floor" {
            eprintln!(
                "== floor: {} raw connections + one 64 B broadcast",
                a.connections
            );
            std::thread::sleep(SETTLE);
            let b = floor_measure(
                "127.0.0.1:0".parse().unwrap(),
                &load(a, a.connections, Scenario::Broadcast),
            )
            .unwrap_or_else(fail);
            rows.push(json!({"server": "floor", "broadcast": b}));
            continue;
        }
        let kind = Kind::of(name)?;
        let mut runs = Vec::new();
        for i in 0..a.repeat.max(1) {
            eprintln!(
                "== {name}: {} STOMP sessions + one 64 B broadcast (run {} of {})",
                a.connections,
                i + 1,
                a.repeat.max(1)
            );
            std::thread::sleep(SETTLE);
            let load = load(a, a.connections, Scenario::Broadcast);
            runs.push(measure(kind, &load, Scenario::Broadcast).unwrap_or_else(fail));
        }
        let broadcast = median_run(runs.into_iter().map(stopped_short).collect());
        let mut row =
            json!({"server": name, "sessions_asked": a.connections, "broadcast": broadcast});
        for (key, scenario) in [
            ("sustained", Scenario::Topics),
            ("unicast", Scenario::Unicast),
        ] {
            eprintln!(
                "== {name}: {key}, {} publishes/s to {} sessions for {} s",
                a.rate, a.sustained_connections, a.duration
            );
            std::thread::sleep(SETTLE);
            let load = load(a, a.sustained_connections, scenario);
            row[key] = measure(kind, &load, scenario).unwrap_or_else(fail);
        }
        for key in ["broadcast", "sustained", "unicast"] {
            let p = a.out.join(format!("stomp-{name}-{key}.json"));
            std::fs::write(
                &p,
                serde_json::to_string_pretty(&row[key]).unwrap_or_default(),
            )
            .map_err(|e| format!("{}: {e}", p.display()))?;
        }
        rows.push(row);
    }
    charts(&rows, &a.out)?;
    let ok = rows.iter().all(|r| {
        ["broadcast", "sustained", "unicast"]
            .iter()
            .all(|k| r[k].is_null() || r[k]["ok"].as_bool() == Some(true))
    });
    write_results(&a.out, "compare-stomp", &table(&rows), rows, ok)
}

/// Per server: connect rate, bytes per session, last delivery, then p50/p99/p99.9 and CPU of
/// the sustained and the unicast runs.
fn figures(r: &Value) -> [Option<f64>; 11] {
    let ok = |v: &Value| v["ok"].as_bool() == Some(true);
    let (b, s, u) = (&r["broadcast"], &r["sustained"], &r["unicast"]);
    let of = |v: &Value, x: &Value| x.as_f64().filter(|_| ok(v));
    [
        of(b, &b["connect_rate"]),
        of(b, &b["server_rss_per_connection"]),
        of(b, &b["messages"][0]["last_delivery_s"]),
        of(s, &s["latency_ms"]["p50"]),
        of(s, &s["latency_ms"]["p99"]),
        of(s, &s["latency_ms"]["p999"]),
        of(s, &s["sustained"]["server_cpu_seconds"]),
        of(u, &u["latency_ms"]["p50"]),
        of(u, &u["latency_ms"]["p99"]),
        of(u, &u["latency_ms"]["p999"]),
        of(u, &u["sustained"]["server_cpu_seconds"]),
    ]
}

fn table(rows: &[Value]) -> String {
    let find = |name: &str| rows.iter().find(|r| r["server"] == name).map(figures);
    let (floor, ours) = (find("floor"), find("ringcast"));
    let f = figure;
    let lat = |x: &[Option<f64>], at: usize| percentiles(&x[at..at + 3]);
    let mut t = String::from(
        "| server | sessions | connect + CONNECTED (/s) | vs floor | RSS per session | vs ringcast | last delivery of one 64 B broadcast | vs floor | sustained p50 / p99 / p99.9 | CPU (sustained) | unicast p50 / p99 / p99.9 | CPU (unicast) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let x = figures(r);
        let errors: Vec<String> = ["broadcast", "sustained", "unicast"]
            .iter()
            .filter_map(|k| {
                let e = r[k]["error"].as_str().or_else(|| {
                    (r[k]["ok"].as_bool() == Some(false)).then_some("incomplete run")
                })?;
                Some(format!("{k}: {}", e.lines().next().unwrap_or("")))
            })
            .collect();
        let sessions = match (
            r["broadcast"]["connected"].as_u64(),
            &r["broadcast"]["stopped_at"],
        ) {
            (Some(c), Value::Null) => c.to_string(),
            (Some(c), _) => format!("{c} of {} (stopped taking more)", r["sessions_asked"]),
            (None, _) => "–".into(),
        };
        t.push_str(&format!(
            "| {}{} | {sessions} | {} | {} | {} | {} | {} |\n",
            r["server"].as_str().unwrap_or("?"),
            if errors.is_empty() {
                String::new()
            } else {
                format!(" (failed: {})", errors.join("; "))
            },
            connect_memory_broadcast(
                &x,
                floor.as_ref().map(|f| &f[..]),
                ours.as_ref().map(|o| &o[..])
            ),
            lat(&x, 3),
            f(x[6], 1, " s"),
            lat(&x, 7),
            f(x[10], 1, " s"),
        ));
    }
    t
}

fn charts(rows: &[Value], out: &std::path::Path) -> Result<(), String> {
    let series = |i: usize| -> Vec<(String, Option<f64>)> {
        rows.iter()
            .filter(|r| r["server"] != "floor" || i == 0 || i == 2)
            .map(|r| {
                (
                    r["server"].as_str().unwrap_or("?").to_string(),
                    figures(r)[i],
                )
            })
            .collect()
    };
    for (file, title, unit, i) in [
        (
            "stomp-memory.png",
            "Server RSS per STOMP session (lower is better)",
            "bytes",
            1,
        ),
        (
            "stomp-broadcast.png",
            "One 64 B broadcast to every session: last delivery (lower is better)",
            "seconds",
            2,
        ),
        (
            "stomp-sustained-p99.png",
            "Sustained publishes over topics: p99 (lower is better)",
            "milliseconds",
            4,
        ),
        (
            "stomp-unicast-p99.png",
            "Unicast to random sessions: p99 (lower is better)",
            "milliseconds",
            8,
        ),
    ] {
        crate::plot::bars(&out.join(file), title, unit, &series(i))?;
    }
    Ok(())
}
