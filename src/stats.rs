//! The server's counters: one cache-line-padded block per shard, written only by that shard
//! (relaxed atomics, no contention) and summed on demand for `stats`, `metrics` and `healthz`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_utils::CachePadded;
use serde_json::Value;

macro_rules! counters {
    ($($name:ident: $help:literal),* $(,)?) => {
        /// One shard's counters.
        #[derive(Default)]
        pub struct ShardStats {
            $(pub $name: AtomicU64,)*
            /// Milliseconds since the epoch at the shard loop's last turn (liveness).
            pub last_turn_ms: AtomicU64,
        }

        const NAMES: &[(&str, &str)] = &[$((stringify!($name), $help)),*];

        /// The counters' values at one moment (one shard's, or the sum over shards).
        #[derive(Debug, Default, Clone, Copy, serde::Serialize)]
        pub struct Counters {
            $(pub $name: u64,)*
        }

        impl ShardStats {
            fn values(&self) -> Vec<u64> {
                vec![$(self.$name.load(Relaxed)),*]
            }

            fn counters(&self) -> Counters {
                Counters { $($name: self.$name.load(Relaxed),)* }
            }
        }

        impl std::ops::AddAssign for Counters {
            fn add_assign(&mut self, o: Counters) {
                $(self.$name += o.$name;)*
            }
        }
    };
}

/// `GET /stats`: the totals, process facts, each shard, and the cluster link if any.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    /// Publishes accepted through the admin socket, the network API and ingest (each once,
    /// however many shards it reached; `fanouts` counts per shard).
    pub publishes: u64,
    #[serde(flatten)]
    pub total: Counters,
    pub uptime_s: u64,
    /// When this process started serving, in Unix seconds.
    pub started_at: u64,
    pub pid: u32,
    /// The last hand-over this process took (`ringcast upgrade`): connections, ms, from_pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<serde_json::Value>,
    pub rss_bytes: u64,
    pub shard_count: usize,
    pub shards: Vec<ShardSnapshot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<std::collections::BTreeMap<&'static str, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<std::collections::BTreeMap<&'static str, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<std::collections::BTreeMap<&'static str, u64>>,
}

/// One shard's counters in `GET /stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardSnapshot {
    pub shard: usize,
    #[serde(flatten)]
    pub counters: Counters,
}

counters! {
    connections: "open connections (gauge)",
    accepted: "TCP connections accepted",
    upgraded: "WebSocket upgrades completed",
    rejected: "upgrades refused with an HTTP error",
    closed: "connections closed",
    messages_in: "messages received from clients",
    messages_out: "messages queued to clients (publishes and echoes)",
    bytes_out: "bytes written to sockets",
    dropped: "messages dropped because a session's send queue was full",
    slow_closed: "sessions closed because their send queue was full",
    protocol_errors: "connections closed for a protocol violation",
    stomp_errors: "STOMP sessions refused or closed with an ERROR frame (auth, limits, violations)",
    handshake_timeouts: "connections closed because the upgrade did not finish in time",
    shed: "connections turned away at once with 503 and Retry-After (limits.max_handshakes_per_s, or the shard could not finish more handshakes in time)",
    connect_timeouts: "STOMP sessions closed because no CONNECT came in time after the upgrade",
    ping_timeouts: "raw sessions closed because they answered no ping",
    accept_errors: "accept failures (e.g. the fd table is full)",
    fanouts: "publishes this shard fanned out to its subscribers (a publish reaching subscribers on three shards counts once in each)",
    sockjs_sessions: "SockJS sessions over HTTP (xhr, xhr-streaming, eventsource) this shard owns (gauge)",
    sockjs_expired: "SockJS sessions over HTTP closed because no request came for them in time",
    token_expired: "sessions closed because their token expired (not refreshed in time)",
    tls_handshakes: "TLS handshakes completed",
    tls_failures: "TLS connections refused: bad or unfinished handshakes, bad records, plain HTTP on the TLS port",
}

/// The node's link to the cluster (zero and absent from the output on a standalone node).
#[derive(Default)]
pub struct ClusterStats {
    pub enabled: AtomicBool,
    /// 1 while the node is connected to Redis.
    pub redis_up: AtomicU64,
    /// Publishes handed to Redis / refused because Redis was down, slow or the queue full.
    pub published: AtomicU64,
    pub publish_failed: AtomicU64,
    /// Publishes from other nodes delivered here.
    pub received: AtomicU64,
    /// Connections to Redis made after the first.
    pub reconnects: AtomicU64,
    /// Redis channels this node listens on (destinations with a local audience).
    pub channels: AtomicU64,
    pub presence_refreshed: AtomicU64,
    pub presence_failed: AtomicU64,
    /// When this node's last probe came back through Redis pub/sub (ms since the epoch), and
    /// how old that may be for the node to count as ready (three probe periods).
    pub answered_ms: AtomicU64,
    pub fresh_ms: AtomicU64,
    /// The last probe's round trip (publish → own subscription), in microseconds.
    pub probe_rtt_us: AtomicU64,
}

impl ClusterStats {
    /// Whether a probe came back recently enough: Redis is up end to end, publishing and
    /// delivering, not merely accepting connections.
    pub fn broker_up(&self) -> bool {
        let age = now_ms().saturating_sub(self.answered_ms.load(Relaxed));
        self.redis_up.load(Relaxed) != 0 && age <= self.fresh_ms.load(Relaxed)
    }

    fn fields(&self) -> [(&'static str, u64); 10] {
        [
            ("redis_up", self.redis_up.load(Relaxed)),
            ("broker_up", u64::from(self.broker_up())),
            ("probe_rtt_us", self.probe_rtt_us.load(Relaxed)),
            ("published", self.published.load(Relaxed)),
            ("publish_failed", self.publish_failed.load(Relaxed)),
            ("received", self.received.load(Relaxed)),
            ("reconnects", self.reconnects.load(Relaxed)),
            ("channels", self.channels.load(Relaxed)),
            ("presence_refreshed", self.presence_refreshed.load(Relaxed)),
            ("presence_failed", self.presence_failed.load(Relaxed)),
        ]
    }
}

pub struct Stats {
    pub shards: Vec<CachePadded<ShardStats>>,
    pub cluster: ClusterStats,
    /// Open connections across all shards: what `max_connections` is enforced against.
    pub open: CachePadded<AtomicU64>,
    pub started_ms: u64,
    /// Publishes through the admin socket or the network API: accepted → every shard has
    /// queued its last local send.
    pub publish_latency: Histogram,
    /// Ingest consumers (all of them together).
    pub ingest: IngestStats,
    pub history: HistoryStats,
    pub jwks: JwksStats,
    /// Set when the server begins to stop (a drain included): it takes no new clients.
    pub stopping: AtomicBool,
    /// The hand-over this process took over with, if it was started by `ringcast upgrade`.
    pub upgrade: std::sync::Mutex<Option<serde_json::Value>>,
}

/// What the ingest consumers did.
#[derive(Default)]
pub struct IngestStats {
    /// On when any consumer is configured (the counters are shown then).
    pub enabled: AtomicBool,
    /// Messages taken from brokers.
    pub received: AtomicU64,
    /// Messages that did not parse or were refused, set aside in a dead letter.
    pub rejected: AtomicU64,
    /// Failed broker operations (each retried with back-off).
    pub errors: AtomicU64,
    /// Each consumer's own counts, in the order they started.
    sources: std::sync::Mutex<Vec<std::sync::Arc<SourceStats>>>,
}

/// One consumer's counts (`/stats` `ingest.sources`, `/metrics` with a `source` label).
#[derive(Default)]
pub struct SourceStats {
    /// The consumer's name (broker kind and stream, topic or table).
    pub name: String,
    /// Messages taken from the broker.
    pub read: AtomicU64,
    /// Handed to the shards.
    pub published: AtomicU64,
    /// Set aside in the dead letter.
    pub rejected: AtomicU64,
    /// Failed broker operations.
    pub errors: AtomicU64,
    /// Messages behind the broker's end where the broker says (Kafka's high watermark); -1:
    /// not known.
    pub lag: std::sync::atomic::AtomicI64,
}

/// `/stats` `ingest`: the totals and each consumer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestView {
    #[serde(flatten)]
    pub totals: std::collections::BTreeMap<&'static str, u64>,
    pub sources: Vec<SourceView>,
}

/// One consumer in `/stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceView {
    pub name: String,
    pub read: u64,
    pub published: u64,
    pub rejected: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
}

impl IngestStats {
    /// Registers a consumer; its counts show from now on.
    pub fn source(&self, name: String) -> std::sync::Arc<SourceStats> {
        self.enabled.store(true, Relaxed);
        let s = std::sync::Arc::new(SourceStats {
            name,
            lag: std::sync::atomic::AtomicI64::new(-1),
            ..SourceStats::default()
        });
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.clone());
        s
    }

    fn sources(&self) -> Vec<SourceView> {
        let list = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .map(|s| SourceView {
                name: s.name.clone(),
                read: s.read.load(Relaxed),
                published: s.published.load(Relaxed),
                rejected: s.rejected.load(Relaxed),
                errors: s.errors.load(Relaxed),
                lag: Some(s.lag.load(Relaxed)).filter(|&l| l >= 0),
            })
            .collect()
    }

    /// Each consumer's counts for `/metrics`, labelled by its name.
    fn metrics(&self, out: &mut String) {
        let sources = self.sources();
        let label = |s: &SourceView| s.name.replace('\\', "\\\\").replace('"', "\\\"");
        type Field = fn(&SourceView) -> Option<i64>;
        let families: [(&str, &str, Field); 5] = [
            ("read_total", "counter", |s| Some(s.read as i64)),
            ("published_total", "counter", |s| Some(s.published as i64)),
            ("rejected_total", "counter", |s| Some(s.rejected as i64)),
            ("errors_total", "counter", |s| Some(s.errors as i64)),
            ("lag", "gauge", |s| s.lag),
        ];
        for (name, kind, get) in families {
            let metric = format!("ringcast_ingest_source_{name}");
            out.push_str(&format!(
                "# HELP {metric} one ingest consumer's {name}\n# TYPE {metric} {kind}\n"
            ));
            for s in &sources {
                if let Some(v) = get(s) {
                    out.push_str(&format!("{metric}{{source=\"{}\"}} {v}\n", label(s)));
                }
            }
        }
    }

    fn view(&self) -> IngestView {
        IngestView {
            totals: self.fields().into_iter().collect(),
            sources: self.sources(),
        }
    }

    fn fields(&self) -> [(&'static str, u64); 3] {
        [
            ("received", self.received.load(Relaxed)),
            ("rejected", self.rejected.load(Relaxed)),
            ("errors", self.errors.load(Relaxed)),
        ]
    }
}

/// What fetching projects' key sets did (shown when a project has a `jwks_url`).
#[derive(Default)]
pub struct JwksStats {
    pub enabled: AtomicBool,
    /// Fetches that brought a set.
    pub fetches: AtomicU64,
    /// Fetches that failed (the last good set stays in use).
    pub fetch_failed: AtomicU64,
    /// Tokens naming a `kid` their project's set lacked.
    pub unknown_kid: AtomicU64,
}

impl JwksStats {
    fn fields(&self) -> [(&'static str, u64); 3] {
        [
            ("fetches", self.fetches.load(Relaxed)),
            ("fetch_failed", self.fetch_failed.load(Relaxed)),
            ("unknown_kid", self.unknown_kid.load(Relaxed)),
        ]
    }
}

/// What the history store holds and did (shown when a project keeps history).
#[derive(Default)]
pub struct HistoryStats {
    pub enabled: AtomicBool,
    /// Messages kept now, over every destination (gauge).
    pub messages: AtomicU64,
    /// Messages numbered and kept.
    pub recorded: AtomicU64,
    /// Recovering subscriptions answered.
    pub replays: AtomicU64,
    /// Of those, told they could not recover (`x-recovered: false`).
    pub unrecovered: AtomicU64,
    /// In a cluster: reads of a history stream from Redis (what the local cache did not cover).
    pub redis_reads: AtomicU64,
}

impl HistoryStats {
    fn fields(&self) -> [(&'static str, u64); 5] {
        [
            ("messages", self.messages.load(Relaxed)),
            ("recorded", self.recorded.load(Relaxed)),
            ("replays", self.replays.load(Relaxed)),
            ("unrecovered", self.unrecovered.load(Relaxed)),
            ("redis_reads", self.redis_reads.load(Relaxed)),
        ]
    }
}

/// Upper bounds of the latency buckets, in microseconds (Prometheus `le`, in seconds).
const BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// A fixed-bucket latency histogram, lock-free (one atomic per bucket).
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let us = d.as_micros() as u64;
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// The exposition of one histogram family named `name`.
    fn prometheus(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        let mut cumulative = 0;
        for (i, b) in BUCKETS_US.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let le = *b as f64 / 1e6;
            out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {cumulative}\n"));
        }
        let count = self.count.load(Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {count}\n"));
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        out.push_str(&format!("{name}_sum {sum}\n{name}_count {count}\n"));
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Stats {
    pub fn new(shards: usize) -> Stats {
        Stats {
            shards: (0..shards)
                .map(|_| CachePadded::new(ShardStats::default()))
                .collect(),
            cluster: ClusterStats::default(),
            open: CachePadded::new(AtomicU64::new(0)),
            started_ms: now_ms(),
            publish_latency: Histogram::default(),
            ingest: IngestStats::default(),
            history: HistoryStats::default(),
            jwks: JwksStats::default(),
            stopping: AtomicBool::new(false),
            upgrade: std::sync::Mutex::new(None),
        }
    }

    /// Every shard's loop has turned within `within_ms`.
    pub fn healthy(&self, within_ms: u64) -> bool {
        let now = now_ms();
        self.shards
            .iter()
            .all(|s| now.saturating_sub(s.last_turn_ms.load(Relaxed)) <= within_ms)
    }

    /// `GET /readyz`: whether this node should be sent new clients; why not otherwise.
    pub fn ready(&self, within_ms: u64) -> Result<(), &'static str> {
        if self.stopping.load(Relaxed) {
            return Err("the server is stopping");
        }
        if !self.healthy(within_ms) {
            return Err("a shard's reactor is stalled");
        }
        let c = &self.cluster;
        if c.enabled.load(Relaxed) {
            if c.redis_up.load(Relaxed) == 0 {
                return Err("Redis is unreachable");
            }
            if !c.broker_up() {
                return Err("no probe came back through Redis pub/sub within 3 probe periods");
            }
        }
        Ok(())
    }

    /// The counters now, typed.
    pub fn snapshot(&self) -> Snapshot {
        let shards: Vec<ShardSnapshot> = self
            .shards
            .iter()
            .enumerate()
            .map(|(shard, s)| ShardSnapshot {
                shard,
                counters: s.counters(),
            })
            .collect();
        let mut total = Counters::default();
        for s in &shards {
            total += s.counters;
        }
        Snapshot {
            publishes: self.publish_latency.count.load(Relaxed),
            total,
            uptime_s: now_ms().saturating_sub(self.started_ms) / 1000,
            started_at: self.started_ms / 1000,
            pid: std::process::id(),
            upgrade: self.upgrade.lock().ok().and_then(|u| u.clone()),
            rss_bytes: rss_bytes(),
            shard_count: self.shards.len(),
            shards,
            cluster: self
                .cluster
                .enabled
                .load(Relaxed)
                .then(|| self.cluster.fields().into_iter().collect()),
            ingest: self
                .ingest
                .enabled
                .load(Relaxed)
                .then(|| self.ingest.view()),
            history: self
                .history
                .enabled
                .load(Relaxed)
                .then(|| self.history.fields().into_iter().collect()),
            jwks: self
                .jwks
                .enabled
                .load(Relaxed)
                .then(|| self.jwks.fields().into_iter().collect()),
        }
    }

    /// The snapshot as JSON (what `/stats` answers and presence stores).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.snapshot()).unwrap_or(Value::Null)
    }

    /// Prometheus text exposition: one series per counter, labelled by shard.
    pub fn to_prometheus(&self) -> String {
        let per: Vec<Vec<u64>> = self.shards.iter().map(|s| s.values()).collect();
        let mut out = String::new();
        for (i, (name, help)) in NAMES.iter().enumerate() {
            let kind = if *name == "connections" {
                "gauge"
            } else {
                "counter"
            };
            let metric = if kind == "counter" {
                format!("ringcast_{name}_total")
            } else {
                format!("ringcast_{name}")
            };
            out.push_str(&format!("# HELP {metric} {help}\n# TYPE {metric} {kind}\n"));
            for (s, v) in per.iter().enumerate() {
                out.push_str(&format!("{metric}{{shard=\"{s}\"}} {}\n", v[i]));
            }
        }
        let open = "ringcast_open_connections";
        out.push_str(&format!(
            "# HELP {open} open connections, all shards (what max_connections is held to)\n# TYPE {open} gauge\n{open} {}\n",
            self.open.load(Relaxed)
        ));
        self.publish_latency.prometheus(
            "ringcast_publish_seconds",
            "publish accepted (admin socket or network API) to its last local send queued",
            &mut out,
        );
        if self.history.enabled.load(Relaxed) {
            for (name, v) in self.history.fields() {
                let (metric, kind) = match name {
                    "messages" => ("ringcast_history_messages".to_string(), "gauge"),
                    _ => (format!("ringcast_history_{name}_total"), "counter"),
                };
                out.push_str(&format!(
                    "# HELP {metric} history: {name}\n# TYPE {metric} {kind}\n{metric} {v}\n"
                ));
            }
        }
        if self.jwks.enabled.load(Relaxed) {
            for (name, v) in self.jwks.fields() {
                let metric = format!("ringcast_jwks_{name}_total");
                out.push_str(&format!(
                    "# HELP {metric} projects' key sets: {name}\n# TYPE {metric} counter\n{metric} {v}\n"
                ));
            }
        }
        if self.ingest.enabled.load(Relaxed) {
            for (name, v) in self.ingest.fields() {
                let metric = format!("ringcast_ingest_{name}_total");
                out.push_str(&format!(
                    "# HELP {metric} ingest consumers: messages {name}\n# TYPE {metric} counter\n{metric} {v}\n"
                ));
            }
            self.ingest.metrics(&mut out);
        }
        if self.cluster.enabled.load(Relaxed) {
            for (name, v) in self.cluster.fields() {
                let (metric, kind) = match name {
                    // Under the names every broker will share (below).
                    "broker_up" | "probe_rtt_us" => continue,
                    "redis_up" | "channels" => (format!("ringcast_cluster_{name}"), "gauge"),
                    _ => (format!("ringcast_cluster_{name}_total"), "counter"),
                };
                let help = format!("cluster link: {}", name.replace('_', " "));
                out.push_str(&format!(
                    "# HELP {metric} {help}\n# TYPE {metric} {kind}\n{metric} {v}\n"
                ));
            }
            let c = &self.cluster;
            out.push_str(&format!(
                "# HELP ringcast_broker_up 1 while this node's probe comes back through the broker\n\
                 # TYPE ringcast_broker_up gauge\nringcast_broker_up {}\n\
                 # HELP ringcast_broker_probe_seconds the last probe's round trip through the broker\n\
                 # TYPE ringcast_broker_probe_seconds gauge\nringcast_broker_probe_seconds {}\n",
                u8::from(c.broker_up()),
                c.probe_rtt_us.load(Relaxed) as f64 / 1e6
            ));
        }
        out
    }
}

/// This process's resident memory, from `/proc/self/status` (0 where unavailable).
pub fn rss_bytes() -> u64 {
    rss_bytes_of("self").unwrap_or(0)
}

/// Resident memory of process `pid` (a number, or `self`) on this host, from /proc.
pub fn rss_bytes_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_exposition() {
        let s = Stats::new(2);
        s.shards[0].connections.store(3, Relaxed);
        s.shards[1].connections.store(4, Relaxed);
        s.shards[1].dropped.store(1, Relaxed);
        let j = s.to_json();
        assert_eq!(j["connections"], 7);
        assert_eq!(j["shards"][1]["dropped"], 1);
        let p = s.to_prometheus();
        assert!(p.contains("ringcast_connections{shard=\"1\"} 4\n"));
        assert!(p.contains("# TYPE ringcast_dropped_total counter\n"));
        assert!(rss_bytes() > 0);
        assert!(j.get("cluster").is_none());
        s.cluster.enabled.store(true, Relaxed);
        s.cluster.publish_failed.store(2, Relaxed);
        assert_eq!(s.to_json()["cluster"]["publish_failed"], 2);
        assert!(
            s.to_prometheus()
                .contains("ringcast_cluster_publish_failed_total 2\n")
        );
    }

    #[test]
    fn ready_means_turning_not_stopping_and_redis_fresh() {
        let s = Stats::new(2);
        for sh in &s.shards {
            sh.last_turn_ms.store(now_ms(), Relaxed);
        }
        assert_eq!(s.ready(2000), Ok(()));
        let c = &s.cluster;
        c.enabled.store(true, Relaxed);
        c.fresh_ms.store(15_000, Relaxed);
        assert!(s.ready(2000).unwrap_err().contains("Redis"));
        c.redis_up.store(1, Relaxed);
        c.answered_ms.store(now_ms(), Relaxed);
        assert_eq!(s.ready(2000), Ok(()));
        c.answered_ms.store(now_ms() - 20_000, Relaxed);
        assert!(s.ready(2000).unwrap_err().contains("Redis"));
        c.answered_ms.store(now_ms(), Relaxed);
        s.stopping.store(true, Relaxed);
        assert_eq!(s.ready(2000), Err("the server is stopping"));
    }
}
