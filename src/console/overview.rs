//! The console's live overview: a thread samples the node once a second (connections,
//! deliveries and drops per second, slow closes, each shard's load, and, while someone
//! watches, sessions per project and the cluster's nodes) into a ring of the last five
//! minutes, which server-sent events push to every open overview page.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::admin::api::Api;
use crate::stats::{Snapshot, now_ms};

/// Samples kept: five minutes at one a second.
const KEEP: usize = 300;
/// Sessions per project are counted (a scan of every shard) only while a page watched within
/// this long.
const WATCHED_MS: u64 = 10_000;

pub struct Overview {
    samples: Mutex<VecDeque<Value>>,
    /// Bumped with each sample; watchers wait on it.
    tick: Condvar,
    last_watch_ms: AtomicU64,
}

/// Per second, from two snapshots `dt_ms` apart.
fn rate(now: u64, before: u64, dt_ms: u64) -> f64 {
    now.saturating_sub(before) as f64 * 1000.0 / dt_ms.max(1) as f64
}

impl Overview {
    /// Starts the sampling thread.
    pub fn start(api: Arc<Api>) -> Arc<Overview> {
        let o = Arc::new(Overview {
            samples: Mutex::new(VecDeque::with_capacity(KEEP)),
            tick: Condvar::new(),
            last_watch_ms: AtomicU64::new(0),
        });
        let me = o.clone();
        let spawned = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                let mut prev: Option<(u64, Snapshot)> = None;
                loop {
                    let now = now_ms();
                    let snap = api.stats.snapshot();
                    if let Some((t, before)) = &prev {
                        let watched =
                            now.saturating_sub(me.last_watch_ms.load(Relaxed)) < WATCHED_MS;
                        me.push(sample(&api, &snap, before, now - t, watched, now));
                    }
                    prev = Some((now, snap));
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        if let Err(e) = spawned {
            tracing::error!("console: cannot start its sampler: {e}");
        }
        o
    }

    fn push(&self, v: Value) {
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() == KEEP {
            s.pop_front();
        }
        s.push_back(v);
        self.tick.notify_all();
    }

    /// Every sample kept, oldest first.
    pub fn history(&self) -> Vec<Value> {
        self.watched();
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        s.iter().cloned().collect()
    }

    /// Someone is looking: count sessions per project in the next samples.
    pub fn watched(&self) {
        self.last_watch_ms.store(now_ms(), Relaxed);
    }

    /// The next sample after the one at `after_t` (its `t`), waiting up to `wait`.
    pub fn next(&self, after_t: u64, wait: Duration) -> Option<Value> {
        self.watched();
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (s, _) = self
            .tick
            .wait_timeout_while(s, wait, |s| {
                s.back().and_then(|v| v["t"].as_u64()).unwrap_or(0) <= after_t
            })
            .unwrap_or_else(|p| p.into_inner());
        s.back()
            .filter(|v| v["t"].as_u64().unwrap_or(0) > after_t)
            .cloned()
    }
}

/// A sample as a caller limited to some projects may see it: only its projects' session
/// counts (and their sum as its connections); nothing per shard, per node or anonymous.
pub fn scoped(mut v: Value, caller: &crate::admin::api::Caller) -> Value {
    let Some(allowed) = &caller.projects else {
        return v;
    };
    let mine: serde_json::Map<String, Value> = v["sessions_by_project"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(p, _)| allowed.contains(p))
                .map(|(p, n)| (p.clone(), n.clone()))
                .collect()
        })
        .unwrap_or_default();
    let total: u64 = mine.values().filter_map(Value::as_u64).sum();
    let known = v["sessions_by_project"].is_object();
    v["connections"] = if known { json!(total) } else { Value::Null };
    v["sessions_by_project"] = if known {
        Value::Object(mine)
    } else {
        Value::Null
    };
    v["anonymous"] = Value::Null;
    v["shards"] = json!([]);
    v["cluster"] = Value::Null;
    v
}

fn sample(api: &Api, snap: &Snapshot, before: &Snapshot, dt: u64, watched: bool, t: u64) -> Value {
    let shards: Vec<Value> = snap
        .shards
        .iter()
        .zip(&before.shards)
        .map(|(s, b)| {
            json!({
                "shard": s.shard,
                "connections": s.counters.connections,
                "deliveries_per_s": rate(s.counters.messages_out, b.counters.messages_out, dt),
            })
        })
        .collect();
    let (projects, anonymous) = if watched {
        match api.hub.census() {
            Ok(c) => (json!(c.projects), json!(c.anonymous)),
            Err(_) => (Value::Null, Value::Null),
        }
    } else {
        (Value::Null, Value::Null)
    };
    let nodes = match (&api.cluster, watched) {
        (Some(c), true) => c.stats().unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let (n, b) = (&snap.total, &before.total);
    json!({
        "t": t,
        "connections": n.connections,
        "sessions_by_project": projects,
        "anonymous": anonymous,
        "deliveries_per_s": rate(n.messages_out, b.messages_out, dt),
        "publishes_per_s": rate(snap.publishes, before.publishes, dt),
        "dropped": n.dropped,
        "dropped_per_s": rate(n.dropped, b.dropped, dt),
        "slow_closed": n.slow_closed,
        "rss_bytes": snap.rss_bytes,
        "shards": shards,
        "cluster": nodes,
    })
}
