//! `ringcast doctor`: checks this host against what N connections need, one line per wall the
//! seed article crashed into (and a few it did not reach), each OK or the exact fix.

use crate::config::Config;
use crate::server::{per_table, plan_shards};

/// Kernel memory per loopback connection pair (both ends), measured on the project machine.
const KERNEL_BYTES_PER_PAIR: u64 = 9_800;
/// ringcast's own memory per idle session (measured: BENCHMARKS.md), with headroom.
const RAW_BYTES: u64 = 256;
const STOMP_BYTES: u64 = 1024;
/// Socket buffer memory a connection holds while a broadcast is in flight (one small skb).
const TCP_BYTES_IN_FLIGHT: u64 = 2048;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Works, but worth knowing (a slower path, a wall close by).
    Warn,
    /// N connections will fail here until this is fixed.
    Fix,
}

pub struct Check {
    pub wall: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    pub fix: Option<String>,
}

fn check(wall: &'static str, verdict: Verdict, detail: String, fix: Option<String>) -> Check {
    Check {
        wall,
        verdict,
        detail,
        fix,
    }
}

/// What the host looks like; read from /proc (or given, in tests).
pub struct Host {
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    pub nr_open: u64,
    pub file_max: u64,
    pub mem_available: u64,
    /// tcp_mem (min, pressure, max) in pages.
    pub tcp_mem: (u64, u64, u64),
    pub max_orphans: u64,
    pub somaxconn: u64,
    pub syn_backlog: u64,
    pub port_range: (u64, u64),
    pub conntrack_max: Option<u64>,
    pub time_wait: u64,
    /// Buckets of this namespace's TCP established-connection hash table (0 = unknown).
    pub ehash: u64,
    pub cores: usize,
    pub io_uring: Result<bool, String>,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn num(path: &str) -> u64 {
    read(path).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn nums(path: &str) -> Vec<u64> {
    read(path)
        .map(|s| {
            s.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Host {
    pub fn probe() -> Host {
        use nix::sys::resource::{Resource, getrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
        let tcp_mem = nums("/proc/sys/net/ipv4/tcp_mem");
        let ports = nums("/proc/sys/net/ipv4/ip_local_port_range");
        let mem_available = read("/proc/meminfo")
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemAvailable:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
            * 1024;
        let time_wait = read("/proc/net/sockstat")
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("TCP:"))?.to_string();
                let mut it = line.split_whitespace();
                while let Some(w) = it.next() {
                    if w == "tw" {
                        return it.next()?.parse().ok();
                    }
                }
                None
            })
            .unwrap_or(0);
        let io_uring = crate::reactor::ring::Ring::new(
            8,
            crate::reactor::ring::BufferConfig {
                count: 8,
                size: 512,
            },
            false,
        )
        .map(|r| r.features().multishot)
        .map_err(|e| e.to_string());
        Host {
            nofile_soft: soft,
            nofile_hard: hard,
            nr_open: num("/proc/sys/fs/nr_open"),
            file_max: num("/proc/sys/fs/file-max"),
            mem_available,
            tcp_mem: (
                tcp_mem.first().copied().unwrap_or(0),
                tcp_mem.get(1).copied().unwrap_or(0),
                tcp_mem.get(2).copied().unwrap_or(0),
            ),
            max_orphans: num("/proc/sys/net/ipv4/tcp_max_orphans"),
            somaxconn: num("/proc/sys/net/core/somaxconn"),
            syn_backlog: num("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
            port_range: (
                ports.first().copied().unwrap_or(0),
                ports.get(1).copied().unwrap_or(0),
            ),
            conntrack_max: read("/proc/sys/net/netfilter/nf_conntrack_max")
                .and_then(|s| s.parse().ok()),
            time_wait,
            ehash: num("/proc/sys/net/ipv4/tcp_ehash_entries"),
            cores: core_affinity::get_core_ids().map_or(1, |c| c.len()),
            io_uring,
        }
    }
}

use Verdict::*;

/// What `n` connections ask of a host, worked out once for every wall.
struct Need {
    n: u64,
    /// Sockets per connection on this host: 2 with a local load generator, else 1.
    ends: u64,
    shards: usize,
    per_table: u64,
    /// More shards than cores only because of the fd cap.
    capped: bool,
    /// Bytes ringcast itself keeps per session (raw, or STOMP when auth is on).
    own: u64,
    /// With a local load generator: its source addresses.
    sources: Option<u64>,
}

/// One wall: `None` where it does not apply to this host or setup.
type Wall = fn(&Host, &Need) -> Option<Check>;

/// Every wall, in the order the report lists them.
const WALLS: &[Wall] = &[
    nofile,
    file_max,
    nr_open,
    memory,
    tcp_mem,
    tcp_max_orphans,
    somaxconn,
    syn_backlog,
    ports,
    conntrack,
    time_wait,
    established_hash,
    io_uring,
];

/// Checks `host` against `n` connections (server and a local load generator on one host when
/// `local_bench`, with `sources` source addresses).
pub fn checks(cfg: &Config, host: &Host, n: u64, local_bench: bool, sources: u64) -> Vec<Check> {
    let mut c = cfg.clone();
    c.server.max_connections = n as usize;
    let (shards, _) = plan_shards(&c, host.cores, host.nofile_hard);
    let need = Need {
        n,
        ends: if local_bench { 2 } else { 1 },
        shards,
        per_table: per_table(host.nofile_hard),
        // More shards than cores only because of the fd cap: it works (measured to 1M here),
        // but the threads share the cores.
        capped: shards > host.cores && c.server.shards <= host.cores,
        own: if cfg.auth.enabled {
            STOMP_BYTES
        } else {
            RAW_BYTES
        },
        sources: local_bench.then_some(sources),
    };
    let mut all: Vec<Check> = WALLS.iter().filter_map(|wall| wall(host, &need)).collect();
    all.push(reconnect(cfg, n, shards.min(host.cores)));
    all
}

/// Not a wall but the storm after one: how long this node's clients take to come back if it
/// stops without a drain, at the measured connect rate.
fn reconnect(cfg: &Config, n: u64, cores: usize) -> Check {
    let (per_s, secs, basis) = super::reconnect::estimate(cfg, n, cores);
    let detail = format!(
        "{n} clients back in about {secs:.0} s at {per_s:.0}/s ({basis}; measured rates, BENCHMARKS.md)"
    );
    if secs <= 60.0 {
        return check("reconnect storm", Ok, detail, None);
    }
    check(
        "reconnect storm",
        Warn,
        detail,
        Some(format!(
            "more than a minute: set [server] drain_ms = {} so a restart spreads them, have \
             clients back off with jitter (README \"Restarts and storms\"), or add nodes",
            ((secs * 1000.0) as u64).div_ceil(1000) * 1000
        )),
    )
}

/// Each `jwks_url` fetched now: how many keys its set holds, or why none could be had (its
/// project's tokens would be refused until a fetch succeeds).
fn key_sets(cfg: &Config) -> Vec<Check> {
    if !cfg.projects.values().any(|p| p.jwks_url.is_some()) {
        return Vec::new();
    }
    let stats = std::sync::Arc::new(crate::stats::Stats::new(1));
    let (jwks, _) = crate::jwks::Jwks::start(cfg, stats);
    jwks.describe()
        .into_iter()
        .map(|line| {
            if line.contains("could not be fetched") {
                let fix = "check the URL and that this host reaches the identity provider \
                           (ringcast logs why at start)";
                check("key set (JWKS)", Warn, line, Some(fix.into()))
            } else {
                check("key set (JWKS)", Ok, line, None)
            }
        })
        .collect()
}

/// The server's own cap, when a configuration file sets it: below `n`, the server itself
/// refuses connections (503) long before any kernel wall.
pub fn configured_cap(cfg: &Config, n: u64) -> Check {
    let cap = cfg.server.max_connections as u64;
    if cap >= n {
        check("server.max_connections", Ok, format!("{cap} ≥ {n}"), None)
    } else {
        check(
            "server.max_connections",
            Fix,
            format!("the configuration caps the server at {cap}: connections beyond it get 503"),
            Some(format!(
                "set max_connections = {n} under [server] (or pass --max-connections {n})"
            )),
        )
    }
}

fn nofile(host: &Host, need: &Need) -> Option<Check> {
    let Need {
        n,
        shards,
        per_table: per,
        capped,
        ..
    } = *need;
    Some(check(
        "nofile per fd table",
        if capped { Warn } else { Ok },
        format!(
            "soft {} hard {}: {shards} shards with their own fd tables hold {n} ({per} per table)",
            host.nofile_soft, host.nofile_hard
        ),
        (host.nofile_hard < 1_048_576).then(|| {
            "optional, fewer shards: raise the hard limit (make tune; LimitNOFILE in the unit) — \
             without CAP_SYS_RESOURCE it cannot be raised and ringcast shards around it"
                .to_string()
        }),
    ))
}

fn file_max(host: &Host, need: &Need) -> Option<Check> {
    let files = need.n * need.ends + 10_000;
    Some(if host.file_max >= files {
        check(
            "fs.file-max",
            Ok,
            format!("{} ≥ {files}", host.file_max),
            None,
        )
    } else {
        check(
            "fs.file-max",
            Fix,
            format!("{} < {files} descriptors needed system-wide", host.file_max),
            Some(format!(
                "sysctl -w fs.file-max={}",
                files.next_power_of_two()
            )),
        )
    })
}

fn nr_open(host: &Host, need: &Need) -> Option<Check> {
    Some(check(
        "fs.nr_open",
        Ok,
        format!(
            "{} (caps any nofile; per-table need is {})",
            host.nr_open,
            need.n.div_ceil(need.shards as u64)
        ),
        None,
    ))
}

fn memory(host: &Host, need: &Need) -> Option<Check> {
    let Need { n, ends, own, .. } = *need;
    let mem = n * KERNEL_BYTES_PER_PAIR * ends / 2 + n * own + (256 << 20);
    Some(if host.mem_available >= mem {
        check(
            "memory",
            Ok,
            format!(
                "{} MiB available ≥ {} MiB (kernel ≈{} B per loopback pair + ringcast ≤{own} B per session)",
                host.mem_available >> 20,
                mem >> 20,
                KERNEL_BYTES_PER_PAIR
            ),
            None,
        )
    } else {
        check(
            "memory",
            Fix,
            format!(
                "{} MiB available < {} MiB needed",
                host.mem_available >> 20,
                mem >> 20
            ),
            Some("add memory, or lower --connections".into()),
        )
    })
}

/// Global sysctls exist only in the initial network namespace: a child sees no file.
const HOST_ONLY: &str =
    "not visible in this network namespace (a global setting): check it on the host";

fn tcp_mem(host: &Host, need: &Need) -> Option<Check> {
    let n = need.n;
    let pages = n * need.ends * TCP_BYTES_IN_FLIGHT / 4096;
    Some(if host.tcp_mem == (0, 0, 0) {
        check("net.ipv4.tcp_mem", Warn, HOST_ONLY.into(), None)
    } else if host.tcp_mem.1 >= pages {
        check(
            "net.ipv4.tcp_mem",
            Ok,
            format!(
                "pressure at {} pages ≥ {pages} for a broadcast in flight",
                host.tcp_mem.1
            ),
            None,
        )
    } else {
        check(
            "net.ipv4.tcp_mem",
            Fix,
            format!(
                "pressure at {} pages < {pages}: a broadcast to {n} pushes TCP into memory pressure (the seed's wall at ~500k)",
                host.tcp_mem.1
            ),
            Some("sysctl -w net.ipv4.tcp_mem='786432 2097152 3145728'".into()),
        )
    })
}

fn tcp_max_orphans(host: &Host, need: &Need) -> Option<Check> {
    let n = need.n;
    Some(if host.max_orphans == 0 {
        check("net.ipv4.tcp_max_orphans", Warn, HOST_ONLY.into(), None)
    } else if host.max_orphans >= n {
        check(
            "net.ipv4.tcp_max_orphans",
            Ok,
            host.max_orphans.to_string(),
            None,
        )
    } else {
        check(
            "net.ipv4.tcp_max_orphans",
            Warn,
            format!(
                "{} < {n}: a mass disconnect logs 'too many orphaned sockets' and resets",
                host.max_orphans
            ),
            Some(format!(
                "sysctl -w net.ipv4.tcp_max_orphans={}",
                n.next_power_of_two()
            )),
        )
    })
}

/// A listen queue bound (accept backlog or SYN backlog).
fn listen_queue(key: &'static str, v: u64) -> Option<Check> {
    Some(if v >= 16_384 {
        check(key, Ok, v.to_string(), None)
    } else {
        check(
            key,
            Warn,
            format!(
                "{v}: connect bursts overflow the queue and clients wait for SYN retries (1 s, 3 s)"
            ),
            Some(format!("sysctl -w {key}=65535")),
        )
    })
}

fn somaxconn(host: &Host, _: &Need) -> Option<Check> {
    listen_queue("net.core.somaxconn", host.somaxconn)
}

fn syn_backlog(host: &Host, _: &Need) -> Option<Check> {
    listen_queue("net.ipv4.tcp_max_syn_backlog", host.syn_backlog)
}

/// A local load generator needs a port per connection per source address.
fn ports(host: &Host, need: &Need) -> Option<Check> {
    let (n, sources) = (need.n, need.sources?);
    let per_source = host.port_range.1.saturating_sub(host.port_range.0) + 1;
    let ports = per_source * sources;
    Some(if ports >= n {
        check(
            "ports × source addresses",
            Ok,
            format!("{per_source} ports × {sources} sources = {ports} ≥ {n}"),
            None,
        )
    } else {
        check(
            "ports × source addresses",
            Fix,
            format!(
                "{per_source} ports × {sources} sources = {ports} < {n} (the seed's walls at ~30k and ~60k)"
            ),
            Some(format!(
                "sysctl -w net.ipv4.ip_local_port_range='1024 65535', and bench with --sources 127.0.0.2-127.0.0.{}",
                1 + n.div_ceil(64_000).max(sources)
            )),
        )
    })
}

fn conntrack(host: &Host, need: &Need) -> Option<Check> {
    let max = host.conntrack_max?;
    let want = need.n * need.ends;
    Some(if max >= want {
        check("nf_conntrack_max", Ok, format!("{max} ≥ {want}"), None)
    } else {
        check(
            "nf_conntrack_max",
            Warn,
            format!(
                "{max} < {want}: if connection tracking is active, SYNs are dropped silently when the table fills (the seed's wall at ~70k)"
            ),
            Some(format!(
                "sysctl -w net.netfilter.nf_conntrack_max={}",
                want.next_power_of_two()
            )),
        )
    })
}

fn time_wait(host: &Host, _: &Need) -> Option<Check> {
    Some(if host.time_wait < 10_000 {
        check("TIME_WAIT", Ok, format!("{} sockets", host.time_wait), None)
    } else {
        check(
            "TIME_WAIT",
            Warn,
            format!(
                "{} sockets hold their ports for 60 s after a previous run",
                host.time_wait
            ),
            Some("wait a minute, or sysctl -w net.ipv4.tcp_tw_reuse=1".into()),
        )
    })
}

/// Every packet looks its socket up in this table: at a million loopback pairs and the default
/// 262,144 buckets the chains are ~8 long, and the lookup was 20 % of all CPU in the 1M STOMP
/// run (BENCHMARKS.md).
fn established_hash(host: &Host, need: &Need) -> Option<Check> {
    let sockets = need.n * need.ends;
    if host.ehash == 0 {
        return None;
    }
    Some(if host.ehash * 2 >= sockets {
        check(
            "TCP established hash",
            Ok,
            format!("{} buckets for {sockets} sockets", host.ehash),
            None,
        )
    } else {
        check(
            "TCP established hash",
            Warn,
            format!(
                "{} buckets for {sockets} sockets: chains of ~{} per lookup, on every packet",
                host.ehash,
                sockets / host.ehash
            ),
            Some(format!(
                "boot with thash_entries={0}, or run in a network namespace created after sysctl -w net.ipv4.tcp_child_ehash_entries={0}",
                sockets.next_power_of_two()
            )),
        )
    })
}

fn io_uring(host: &Host, _: &Need) -> Option<Check> {
    Some(match &host.io_uring {
        std::result::Result::Ok(true) => check(
            "io_uring",
            Ok,
            "multishot accept/recv and buffer rings".into(),
            None,
        ),
        std::result::Result::Ok(false) => check(
            "io_uring",
            Warn,
            "no multishot/buffer rings (kernel < 6.0): the single-shot compat path is used".into(),
            Some("a 6.x kernel".into()),
        ),
        Err(e) => check(
            "io_uring",
            Fix,
            format!("cannot set up a ring: {e}"),
            Some("allow io_uring (sysctl kernel.io_uring_disabled=0; seccomp profile)".into()),
        ),
    })
}

/// Prints the report; returns whether `n` connections can be reached.
/// `from_file`: the configuration came from a file, so its `max_connections` is the
/// operator's and is checked too.
/// Whether `ringcast upgrade` can hand the running server's connections over from here: a
/// server answers on the admin socket, this user may ask it (its own uid, or root), and the
/// server has nothing this version cannot move yet (it says, on `GET /upgrade`).
pub fn upgrades(socket: &std::path::Path) -> Check {
    const WALL: &str = "live upgrade";
    let answer = match crate::admin::request(socket, "GET", "/upgrade", None) {
        std::result::Result::Ok((200, body)) => {
            serde_json::from_slice::<serde_json::Value>(&body).ok()
        }
        _ => None,
    };
    let Some((pid, why)) =
        answer.and_then(|v| Some((v["pid"].as_u64()?, v["why"].as_str().map(String::from))))
    else {
        return check(
            WALL,
            Warn,
            format!("no server answers on {}", socket.display()),
            Some("`ringcast upgrade` talks to a running server's admin socket: start it, or pass --admin-socket".into()),
        );
    };
    let uid = read(&format!("/proc/{pid}/status")).and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok())
    });
    let me = nix::unistd::getuid().as_raw();
    if let Some(u) = uid
        && u != me
        && me != 0
    {
        return check(
            WALL,
            Warn,
            format!("the server (pid {pid}) runs as uid {u}, this is uid {me}"),
            Some(format!(
                "run `ringcast upgrade` as uid {u} or root, or send SIGUSR2 as them"
            )),
        );
    }
    if let Some(why) = why {
        return check(WALL, Warn, format!("pid {pid}: {why}"), None);
    }
    check(
        WALL,
        Ok,
        format!(
            "pid {pid} answers on {}: `ringcast upgrade` (or SIGUSR2, or `systemctl reload`) hands its connections to a new process",
            socket.display()
        ),
        None,
    )
}

pub fn run(
    cfg: &Config,
    socket: &std::path::Path,
    from_file: bool,
    n: u64,
    local_bench: bool,
    sources: u64,
    json: bool,
) -> bool {
    let host = Host::probe();
    let mut all = checks(cfg, &host, n, local_bench, sources);
    if from_file {
        all.insert(0, configured_cap(cfg, n));
        all.extend(key_sets(cfg));
    }
    all.push(upgrades(socket));
    let blocked = all.iter().filter(|c| c.verdict == Verdict::Fix).count();
    if json {
        let checks: Vec<serde_json::Value> = all
            .iter()
            .map(|c| {
                serde_json::json!({
                    "wall": c.wall,
                    "verdict": match c.verdict { Ok => "ok", Warn => "warn", Fix => "fix" },
                    "detail": c.detail,
                    "fix": c.fix,
                })
            })
            .collect();
        let v = serde_json::json!({"connections": n, "ok": blocked == 0, "checks": checks});
        println!("{v:#}");
        return blocked == 0;
    }
    println!("ringcast doctor: this host against {n} connections");
    for c in &all {
        let tag = match c.verdict {
            Verdict::Ok => "[ OK ]",
            Verdict::Warn => "[WARN]",
            Verdict::Fix => "[FIX ]",
        };
        println!("{tag} {:<30} {}", c.wall, c.detail);
        if let Some(f) = &c.fix
            && c.verdict != Verdict::Ok
        {
            println!("       {:<30} → {f}", "");
        }
    }
    if blocked == 0 {
        println!(
            "OK: nothing stands between this host and {n} connections (`make tune` applies every fix)."
        );
    } else {
        println!(
            "{blocked} wall(s) to fix before {n} connections: run the commands above, or `make tune` as root."
        );
    }
    blocked == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            nofile_soft: 20_000,
            nofile_hard: 20_000,
            nr_open: 1_048_576,
            file_max: 4_194_304,
            mem_available: 23 << 30,
            tcp_mem: (786_432, 2_097_152, 3_145_728),
            max_orphans: 1_048_576,
            somaxconn: 65_535,
            syn_backlog: 65_535,
            port_range: (1024, 65_535),
            conntrack_max: Some(2_097_152),
            time_wait: 0,
            ehash: 1 << 21,
            cores: 2,
            io_uring: std::result::Result::Ok(true),
        }
    }

    #[test]
    fn a_tuned_host_passes_at_a_million() {
        let all = checks(&Config::embedded(), &host(), 1_000_000, true, 40);
        let not_ok: Vec<_> = all
            .iter()
            .filter(|c| c.verdict != Verdict::Ok)
            .map(|c| c.wall)
            .collect();
        // 20,000 per table: 56 shards on 2 cores, worth a warning, not a failure.
        assert_eq!(not_ok, ["nofile per fd table"]);
        let mut h = host();
        h.nofile_hard = 1 << 20;
        let all = checks(&Config::embedded(), &h, 1_000_000, true, 40);
        assert!(all.iter().all(|c| c.verdict == Verdict::Ok));
    }

    #[test]
    fn a_configured_cap_below_n_is_a_wall() {
        let mut cfg = Config::embedded();
        cfg.server.max_connections = 50_000;
        let c = configured_cap(&cfg, 100_000);
        assert_eq!(c.verdict, Verdict::Fix);
        assert!(c.fix.unwrap().contains("max_connections = 100000"));
        assert_eq!(configured_cap(&cfg, 50_000).verdict, Verdict::Ok);
    }

    #[test]
    fn each_wall_names_its_fix() {
        let mut h = host();
        h.file_max = 100_000;
        h.tcp_mem = (1, 2, 3);
        h.port_range = (32_768, 60_999);
        h.mem_available = 1 << 30;
        let all = checks(&Config::embedded(), &h, 1_000_000, true, 2);
        for wall in [
            "fs.file-max",
            "net.ipv4.tcp_mem",
            "ports × source addresses",
            "memory",
        ] {
            let c = all.iter().find(|c| c.wall == wall).unwrap();
            assert_eq!(c.verdict, Verdict::Fix, "{wall}");
            assert!(c.fix.is_some(), "{wall}");
        }
    }
}
