//! Runs: connect the load, measure idle memory, broadcast and time the deliveries, or sustain a
//! publish rate; against ringcast or the floor; and the CPU figures they report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringcast::ws::frame::{Opcode, encode_masked};
use serde_json::{Value, json};

use crate::*;

/// A run against a ringcast server (or cluster): raw mode, or STOMP when `stomp` holds the
/// token config.
pub(crate) fn ringcast_run(
    server: &ServerArgs,
    load: &Load,
    stomp: Option<Option<PathBuf>>,
    heartbeat_ms: u32,
    sockjs: bool,
) -> Result<Value, String> {
    let targets = server
        .url
        .iter()
        .map(|u| {
            parse_url(u).map(|mut t| {
                t.deflate = load.deflate;
                t
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let target = &targets[0];
    let proto = match stomp {
        None => raw_proto(target, load),
        Some(config) => stomp_proto(target, load, config.as_deref(), heartbeat_ms, sockjs)?,
    };
    let socks = server.admin_socket.clone();
    let rss = || {
        socks
            .iter()
            .map(|s| server_stats(s).ok().and_then(|v| v["rss_bytes"].as_u64()))
            .sum::<Option<u64>>()
    };
    let pids = socks
        .iter()
        .map(|s| Ok(server_stats(s)?["pid"].as_u64().unwrap_or(0)))
        .collect::<Result<Vec<u64>, String>>()?;
    let project = target.project.clone();
    let publish =
        |topic: &str, body: &str| admin_publish(&server.admin_socket[0], &project, topic, body);
    let cpu = move || pids.iter().map(|&p| pid_cpu_s(p)).sum::<Option<f64>>();
    let addrs: Vec<SocketAddr> = targets.iter().map(|t| t.addr).collect();
    let unicast = |items: &[(usize, String)]| {
        admin_publish_users(&server.admin_socket[0], &target.project, items)
    };
    let load = &Load {
        tls: target.tls,
        ..load.clone()
    };
    let mut v = drive(
        load,
        &addrs,
        &target.topic,
        proto,
        (&publish, Some(&unicast)),
        &rss,
        &cpu,
    )?;
    if let Ok(stats) = server_stats(&server.admin_socket[0]) {
        v["server_shards"] = stats["shard_count"].clone();
        v["server_dropped"] = stats["dropped"].clone();
    }
    v["servers"] = json!(targets.len());
    finish(load, v)
}

/// The floor at `load`: a bare io_uring server in this process, the same client.
pub(crate) fn floor_measure(listen: SocketAddr, load: &Load) -> Result<Value, String> {
    let per_table = ringcast::server::per_table(ringcast::server::raise_nofile()) as usize;
    let shards = load
        .connections
        .div_ceil(per_table * 9 / 10)
        .max(core_affinity::get_core_ids().map_or(1, |c| c.len()));
    let (server, addr) = floor::FloorServer::start(listen, shards)?;
    eprintln!("floor server: {shards} shards on {addr}");
    let publish = |_topic: &str, body: &str| -> Result<(), String> {
        let msg = ringcast::publish::Publish::new(
            ringcast::dest::Dest::Topic {
                project: "floor".into(),
                topic: "floor".into(),
            },
            Bytes::from(body.to_string()),
            vec![],
        );
        server.hub.publish(msg).map(drop).map_err(|e| e.to_string())
    };
    if load.topics > 1 {
        return Err("the floor has one topic: run it without --topics".into());
    }
    let target = Target {
        addr,
        host: addr.to_string(),
        path: "/ws".into(),
        topic: "floor".into(),
        project: "floor".into(),
        tls: false,
        deflate: false,
    };
    let proto = raw_proto(&target, load);
    let v = drive(
        load,
        &[addr],
        "floor",
        proto,
        (&publish, None),
        &|| None,
        &|| None,
    );
    server.stop();
    let mut v = v?;
    v["server_shards"] = json!(shards);
    Ok(v)
}

pub(crate) fn finish(load: &Load, v: Value) -> Result<Value, String> {
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    if let Some(p) = &load.json {
        std::fs::write(p, serde_json::to_string_pretty(&v).unwrap_or_default())
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(v)
}

/// Opens the connections, measures, publishes, waits for every delivery.
pub(crate) fn drive(
    a: &Load,
    targets: &[SocketAddr],
    topic: &str,
    proto: client::Proto,
    (publish, unicast): (&PublishFn<'_>, Option<&UnicastFn<'_>>),
    server_rss: &dyn Fn() -> Option<u64>,
    server_cpu: &dyn Fn() -> Option<f64>,
) -> Result<Value, String> {
    if a.topics > 1 && a.messages > 0 {
        return Err(
            "broadcasts go to one topic: with --topics, give --messages 0 and --rate".into(),
        );
    }
    let sources = parse_sources(&a.sources)?;
    let tls = match a.tls {
        true => Some(crate::load::tls_client(&a.tls_ca)?),
        false => None,
    };
    // A multiple of the target count, so every server gets the same share.
    let shards = client_shards(a.connections, a.shards, targets.len());
    let rss_before = server_rss();
    eprintln!(
        "opening {} connections to {targets:?} from {} source addresses over {shards} client shards",
        a.connections,
        sources.len()
    );
    let opened = open(a, targets, proto, shards, &sources, tls);
    let (shared, epoch, handles) = (opened.shared, opened.epoch, opened.handles);
    let (connected, failed, connect_s, timeline) = wait_connected(a, &shared, epoch);
    // Let the server settle (freed handshake buffers, allocator) before reading its memory.
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = server_rss();
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) => {
            let per = a.saturating_sub(b) as f64 / connected.max(1) as f64;
            eprintln!(
                "server RSS {:.1} MiB → {:.1} MiB: {per:.0} B per connection",
                b as f64 / 1048576.0,
                a as f64 / 1048576.0
            );
            Some(per)
        }
        _ => None,
    };

    let push_start = (Instant::now(), server_cpu());
    let (deliveries, mut all_delivered) =
        broadcasts(a, topic, connected, (&shared, epoch), publish)?;
    let share = |since: (Instant, Option<f64>)| {
        let now = server_cpu()?;
        Some((now - since.1?) / since.0.elapsed().as_secs_f64())
    };
    let push_cpu = share(push_start);
    let (msgs, bytes) = (
        shared.received.load(Relaxed),
        shared.received_bytes.load(Relaxed),
    );
    let wire_per_delivery = (msgs > 0).then(|| bytes as f64 / msgs as f64);
    if let Some(w) = wire_per_delivery {
        eprintln!("WebSocket bytes per delivery (frame as sent): {w:.1}");
    }
    let sustained = if a.rate > 0 {
        let s = match unicast {
            Some(u) if a.unicast => sustain_unicast(a, connected, (&shared, epoch), u, server_cpu)?,
            _ => sustain(a, topic, connected, (&shared, epoch), publish, server_cpu)?,
        };
        all_delivered &= s["delivered"] == s["expected"];
        Some(s)
    } else {
        None
    };
    let hold_start = (Instant::now(), server_cpu());
    let cpu_before = process_cpu_s();
    std::thread::sleep(Duration::from_secs(a.hold));
    let hold_cpu = process_cpu_s() - cpu_before;
    let hold_s = hold_start.0.elapsed().as_secs_f64();
    let hold_server_cpu = if a.hold > 0 { share(hold_start) } else { None };
    shared.stop.store(true, Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let hist = shared.latency.lock().unwrap().take();
    let pct = |q: f64| {
        hist.as_ref()
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1e6)
    };
    let errors: serde_json::Map<String, Value> = shared
        .errors
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if !errors.is_empty() {
        eprintln!("errors: {}", Value::Object(errors.clone()));
    }
    let missed = shared.missed_beats.load(Relaxed);
    if let (Some(c), true) = (push_cpu, a.messages > 0) {
        eprintln!(
            "server CPU while publishing: {:.1} % of one core",
            c * 100.0
        );
    }
    if a.hold > 0 {
        eprintln!(
            "held {hold_s:.0} s: server CPU {}, client process CPU {hold_cpu:.1} s, missed heart-beats {missed}, closed by server {}",
            hold_server_cpu.map_or("not measured".into(), |c| format!(
                "{:.1} % of one core",
                c * 100.0
            )),
            shared.closed.load(Relaxed)
        );
    }
    eprintln!(
        "latency (publish → delivery): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    let ok = failed == 0 && connected == a.connections as u64 && all_delivered;
    Ok(json!({
        "ok": ok,
        "connections": a.connections,
        "connected": connected,
        "failed": failed,
        "errors": errors,
        "client_shards": shards,
        "sources": sources.len(),
        "connect_seconds": connect_s,
        "connect_rate": connected as f64 / connect_s,
        "connect_timeline": timeline,
        "server_rss_before": rss_before,
        "server_rss_after": rss_after,
        "server_rss_per_connection": per_conn,
        "messages": deliveries,
        "wire_bytes_per_delivery": wire_per_delivery,
        "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "p999": pct(0.999), "max": pct(1.0)},
        "latency_cdf": (0..=100)
            .map(|i| f64::from(i) / 100.0)
            .chain([0.995, 0.999, 0.9999])
            .map(|q| json!([pct(q), q]))
            .collect::<Vec<_>>(),
        "hold_seconds": hold_s,
        "server_cpu_share_publishing": push_cpu,
        "server_cpu_share_holding": hold_server_cpu,
        "missed_heartbeats": missed,
        "closed_by_server": shared.closed.load(Relaxed),
        "sustained": sustained,
    }))
}

/// The client shards, started.
struct Opened {
    shared: Arc<client::Shared>,
    epoch: Instant,
    handles: Vec<std::thread::JoinHandle<()>>,
}

/// Starts `shards` client shards, each opening its share of the connections.
fn open(
    a: &Load,
    targets: &[SocketAddr],
    proto: client::Proto,
    shards: usize,
    sources: &[std::net::IpAddr],
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Opened {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let shared = Arc::new(client::Shared::default());
    let epoch = Instant::now();
    let handles: Vec<_> = (0..shards)
        .map(|id| {
            let (first, count) = share(a.connections, shards, id);
            client::spawn(client::Plan {
                id,
                first,
                count,
                target: targets[id % targets.len()],
                sources: sources.to_vec(),
                proto: proto.clone(),
                concurrency: a.concurrency,
                shared: shared.clone(),
                epoch,
                core: cores.get(id % cores.len().max(1)).copied(),
                tls: tls.clone(),
                storm: false,
                fallbacks: Vec::new(),
                resume: None,
            })
        })
        .collect();

    Opened {
        shared,
        epoch,
        handles,
    }
}

/// Waits until every connection is up or failed (or the timeout), with a progress bar;
/// returns (connected, failed, seconds, the connected count per second).
fn wait_connected(
    a: &Load,
    shared: &client::Shared,
    epoch: Instant,
) -> (u64, u64, f64, Vec<Value>) {
    let bar = indicatif::ProgressBar::new(a.connections as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} {bar:40} {pos}/{len} connected {per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let deadline = epoch + Duration::from_secs(a.timeout);
    let mut timeline = Vec::new();
    let mut last_sample = Instant::now();
    loop {
        let ok = shared.connected.load(Relaxed);
        let failed = shared.failed.load(Relaxed);
        bar.set_position(ok);
        bar.set_message(format!("{failed} failed"));
        if last_sample.elapsed() >= Duration::from_secs(1) {
            last_sample = Instant::now();
            timeline.push(json!([epoch.elapsed().as_secs_f64(), ok]));
        }
        if ok + failed >= a.connections as u64 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let connect_s = epoch.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let connected = shared.connected.load(Relaxed);
    let failed = shared.failed.load(Relaxed);
    timeline.push(json!([connect_s, connected]));
    eprintln!(
        "connected {connected}, failed {failed} in {connect_s:.2} s ({:.0}/s)",
        connected as f64 / connect_s
    );
    (connected, failed, connect_s, timeline)
}

/// `--messages` broadcasts, one at a time: each waits until every connection got it (or the
/// timeout); returns each one's figures and whether all were delivered everywhere.
fn broadcasts(
    a: &Load,
    topic: &str,
    connected: u64,
    (shared, epoch): (&client::Shared, Instant),
    publish: &PublishFn<'_>,
) -> Result<(Vec<Value>, bool), String> {
    let mut deliveries = Vec::new();
    let mut all_delivered = true;
    for i in 0..a.messages {
        let expect = connected * (i as u64 + 1);
        let sent_ns = epoch.elapsed().as_nanos() as u64;
        let body = stamp(sent_ns, a.size, a.json_body);
        publish(topic, &body)?;
        let answered_ns = epoch.elapsed().as_nanos() as u64;
        let deadline = Instant::now() + Duration::from_secs(a.timeout);
        while shared.received.load(Relaxed) < expect && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let got = shared.received.load(Relaxed) - connected * i as u64;
        let last = shared.last_recv_ns.load(Relaxed).saturating_sub(sent_ns);
        all_delivered &= got == connected;
        eprintln!(
            "message {}: delivered to {got}/{connected}, publish answered after {:.3} s, last delivery after {:.3} s",
            i + 1,
            (answered_ns - sent_ns) as f64 / 1e9,
            last as f64 / 1e9
        );
        deliveries.push(
            json!({"delivered": got, "last_delivery_s": last as f64 / 1e9,
            "publish_answer_s": (answered_ns - sent_ns) as f64 / 1e9}),
        );
        if i + 1 < a.messages {
            std::thread::sleep(Duration::from_millis(a.interval_ms));
        }
    }
    Ok((deliveries, all_delivered))
}

/// A bench body: its send time (ns since the run's epoch), padded to `size` bytes.
pub(crate) fn stamped(epoch: Instant, size: usize, json: bool) -> String {
    stamp(epoch.elapsed().as_nanos() as u64, size, json)
}

/// A body stamped `sent_ns`, padded with `x`, or with `--json-body` with JSON as a market-data
/// push looks (varied numbers, repeated keys), so compression gains what it would on real
/// traffic and no more.
fn stamp(sent_ns: u64, size: usize, json: bool) -> String {
    let mut body = format!("{sent_ns} ");
    if json {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ body.len() as u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        body.push_str("{\"quotes\":[");
        let mut first = true;
        while body.len() + 90 < size {
            let (a, b, c) = (next(), next(), next());
            if !first {
                body.push(',');
            }
            first = false;
            body.push_str(&format!(
                "{{\"sym\":\"{}{}{}\",\"bid\":{}.{:02},\"ask\":{}.{:02},\"vol\":{}}}",
                (b'A' + (a % 26) as u8) as char,
                (b'A' + (a / 26 % 26) as u8) as char,
                (b'A' + (a / 676 % 26) as u8) as char,
                b % 1000,
                b / 1000 % 100,
                b % 1000 + 1,
                c % 100,
                c % 100_000
            ));
        }
        body.push_str("]}");
    }
    while body.len() < size {
        body.push(if json { ' ' } else { 'x' });
    }
    body
}

/// The publisher threads' results, a panic counting as an error.
pub(crate) fn join_all<T>(
    workers: Vec<std::thread::ScopedJoinHandle<'_, Result<T, String>>>,
) -> Vec<Result<T, String>> {
    workers
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err("a publisher panicked".into()))
        })
        .collect()
}

/// CPU seconds (user + system) process `pid` has used, from /proc (same host only).
pub(crate) fn pid_cpu_s(pid: u64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    Some(ticks / hz as f64)
}

/// CPU seconds (user + system) this process has used.
pub(crate) fn process_cpu_s() -> f64 {
    let r = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    r.map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// STOMP sessions: per connection (user `bench-I`, a token each when `config` names the
/// project's key) CONNECT and SUBSCRIBE with a receipt, over WebSocket or SockJS.
pub(crate) fn stomp_proto(
    target: &Target,
    load: &Load,
    config: Option<&std::path::Path>,
    heartbeat_ms: u32,
    sockjs: bool,
) -> Result<client::Proto, String> {
    let auth = minting(config)?;
    let (project, topic, l) = (target.project.clone(), target.topic.clone(), load.clone());
    let frames = move |i: usize| {
        let connect = stomp_connect(auth.as_ref(), &project, i, heartbeat_ms);
        let destination = if l.unicast {
            "/user/queue/bench".to_string()
        } else {
            format!("/topic/{}", l.topic_of(&topic, i))
        };
        let subscribe = format!("SUBSCRIBE\nid:sub-0\ndestination:{destination}\nreceipt:s\n\n\0");
        masked_frames(&[&connect, &subscribe], sockjs)
    };
    let (path, protocol) = if sockjs {
        // SockJS over WebSocket: one session id for all is fine (no session table).
        let base = target.path.split('?').next().unwrap_or("/ws");
        (format!("{base}/0/bench/websocket"), None)
    } else {
        (target.path.clone(), Some("v12.stomp"))
    };
    Ok(client::Proto::Stomp {
        request: upgrade_request(target, &path, protocol),
        frames: Arc::new(frames),
        heartbeat_ms,
        sockjs,
        tcp: false,
    })
}

/// The CONNECT of session `i` (user `bench-I`): with a token minted by `auth`, else a login.
pub(crate) fn stomp_connect(
    auth: Option<&ringcast::auth::Auth>,
    project: &str,
    i: usize,
    heartbeat_ms: u32,
) -> String {
    let user = format!("bench-{i}");
    let who = match auth {
        Some(a) => format!(
            "token:{}",
            a.mint(project, &user, 86400).unwrap_or_default()
        ),
        None => format!("login:{user}"),
    };
    format!(
        "CONNECT\naccept-version:1.2\nhost:bench\n{who}\nprojectId:{project}\nheart-beat:{heartbeat_ms},{heartbeat_ms}\n\n\0"
    )
}

/// STOMP frames as a client sends them: masked WebSocket text frames, each inside SockJS's
/// `["..."]` when `sockjs`.
pub(crate) fn masked_frames(frames: &[&str], sockjs: bool) -> Bytes {
    let mut out = Vec::new();
    for f in frames {
        let payload = if sockjs {
            ringcast::sockjs::messages([f.as_bytes()])[1..].to_vec()
        } else {
            f.as_bytes().to_vec()
        };
        out.extend(encode_masked(Opcode::Text, true, &payload, [7, 7, 7, 7]));
    }
    Bytes::from(out)
}

/// What mints the sessions' tokens: the keys of the server's configuration file, if given.
pub(crate) fn minting(
    config: Option<&std::path::Path>,
) -> Result<Option<ringcast::auth::Auth>, String> {
    let Some(path) = config else {
        return Ok(None);
    };
    let mut cfg = ringcast::config::Config::from_file(path)?;
    cfg.auth.enabled = false;
    Ok(Some(ringcast::auth::Auth::from_config(
        &cfg,
        ringcast::clock::unix_s(),
    )?))
}

/// Client shards for `n` connections: at least `asked`, one per core, and as many as the fd
/// tables need; a multiple of `targets`; never more than the connections.
pub(crate) fn client_shards(n: usize, asked: usize, targets: usize) -> usize {
    let cores = core_affinity::get_core_ids().map_or(1, |c| c.len().max(1));
    let per_table = ringcast::server::per_table(ringcast::server::raise_nofile()) as usize;
    asked
        .max(n.div_ceil(per_table))
        .max(cores)
        .next_multiple_of(targets.max(1))
        .min(n.max(1))
}

/// Connection `id`'s share of `n` over `shards` client shards: (first index, count).
pub(crate) fn share(n: usize, shards: usize, id: usize) -> (usize, usize) {
    let (base, extra) = (n / shards, n % shards);
    (id * base + id.min(extra), base + usize::from(id < extra))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shares_cover_every_connection_once() {
        for (n, shards) in [(10, 3), (1_000_000, 56), (5, 5), (7, 2)] {
            let mut next = 0;
            for id in 0..shards {
                let (first, count) = super::share(n, shards, id);
                assert_eq!(first, next);
                next += count;
            }
            assert_eq!(next, n);
        }
    }

    #[test]
    fn client_shards_are_a_multiple_of_the_targets_and_never_more_than_the_connections() {
        assert_eq!(super::client_shards(1, 8, 1), 1);
        assert_eq!(super::client_shards(1000, 5, 3) % 3, 0);
        // Enough fd tables for a million, whatever this host's nofile.
        let per_table = ringcast::server::per_table(ringcast::server::raise_nofile()) as usize;
        assert!(super::client_shards(1_000_000, 0, 1) * per_table >= 1_000_000);
    }
}
