//! The node's history store: for each destination whose project keeps history, its recent
//! messages (bounded by `size` and `ttl_ms`) under their offsets. One store per node, not per
//! shard: the hub numbers a message and hands it to the shards under the store's lock, so every
//! shard sees a destination's messages in offset order, and a recovering subscription can read
//! "everything up to now" and know that whatever comes live after it is new.
//!
//! Bodies are kept as the publish's own `Bytes` (shared, not copied); a destination without
//! history never takes the lock. The epoch is drawn at start: history does not survive a
//! restart, and clients holding positions of the old epoch are told they cannot recover.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytes::Bytes;
use ringcast_proto::history::{Config, Position};

use crate::config;
use crate::hub::{Dest, Publish};

/// One kept message.
#[derive(Clone)]
pub struct Entry {
    pub offset: u64,
    /// Milliseconds since the store started (for `ttl_ms`).
    at_ms: u64,
    pub body: Bytes,
    pub headers: Box<[(String, String)]>,
}

struct Stream {
    /// The offset of the last message published (0: none yet).
    last: u64,
    entries: VecDeque<Entry>,
}

/// What a recovering subscription gets.
pub struct Replay {
    /// The client's position is of this epoch and within what is kept: `entries` is exactly
    /// what it missed. Otherwise it must reload its state (and `entries` is empty).
    pub recovered: bool,
    pub entries: Vec<Entry>,
    /// The last offset published when the replay was read: live messages up to it are
    /// covered (replayed or, when not recovered, part of what the client reloads).
    pub through: u64,
}

pub struct History {
    stats: Arc<crate::stats::Stats>,
    epoch: Arc<str>,
    started: Instant,
    /// Each project's `[projects.P.history]` (reloaded with the configuration).
    configs: RwLock<BTreeMap<String, Config>>,
    streams: Mutex<HashMap<String, Stream>>,
}

impl History {
    pub fn new(cfg: &config::Config, stats: Arc<crate::stats::Stats>) -> History {
        stats
            .history
            .enabled
            .store(cfg.projects.values().any(|p| p.history.is_some()), Relaxed);
        History {
            stats,
            epoch: new_epoch().into(),
            started: Instant::now(),
            configs: RwLock::new(configs_of(cfg)),
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// This store's epoch (what `x-epoch` says).
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// New limits and patterns (SIGHUP). Kept streams stay; a destination no longer covered
    /// stops being numbered.
    pub fn reload(&self, cfg: &config::Config) {
        let mut c = self.configs.write().unwrap_or_else(|p| p.into_inner());
        *c = configs_of(cfg);
        let any = !c.is_empty() || self.stats.history.messages.load(Relaxed) > 0;
        self.stats.history.enabled.store(any, Relaxed);
    }

    /// `dest`'s bounds (`size`, `ttl_ms`) if it keeps history.
    fn bounds_for(&self, dest: &Dest) -> Option<Bounds> {
        let c = self.configs.read().unwrap_or_else(|p| p.into_inner());
        c.get(dest.project())
            .filter(|h| h.covers(dest))
            .map(|h| Bounds {
                size: h.size,
                ttl_ms: h.ttl_ms,
            })
    }

    /// Whether `dest` keeps history.
    pub fn covers(&self, dest: &Dest) -> bool {
        self.bounds_for(dest).is_some()
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Numbers `msg` if its destination keeps history, keeps it, and hands it to `deliver`
    /// while still holding the store, so deliveries leave in offset order. Without history,
    /// `deliver` runs at once and the store is not touched.
    pub fn record<R>(&self, mut msg: Publish, deliver: impl FnOnce(Arc<Publish>) -> R) -> R {
        let Some(cfg) = self.bounds_for(&msg.dest) else {
            return deliver(Arc::new(msg));
        };
        let now = self.now_ms();
        let key = msg.dest.key();
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let s = streams.entry(key).or_insert_with(|| Stream {
            last: 0,
            entries: VecDeque::new(),
        });
        s.last += 1;
        msg.position = Some((s.last, self.epoch.clone()));
        s.entries.push_back(Entry {
            offset: s.last,
            at_ms: now,
            body: msg.body.clone(),
            headers: msg.headers.clone().into_boxed_slice(),
        });
        let dropped = trim(s, &cfg, now);
        let h = &self.stats.history;
        h.recorded.fetch_add(1, Relaxed);
        h.messages.fetch_add(1, Relaxed);
        h.messages.fetch_sub(dropped as u64, Relaxed);
        deliver(Arc::new(msg))
    }

    /// What a subscription at `since` missed on `dest`, read at one instant.
    pub fn replay(&self, dest: &Dest, since: &Position) -> Replay {
        let r = self.read(dest, since);
        let h = &self.stats.history;
        h.replays.fetch_add(1, Relaxed);
        if !r.recovered {
            h.unrecovered.fetch_add(1, Relaxed);
        }
        r
    }

    fn read(&self, dest: &Dest, since: &Position) -> Replay {
        let cfg = self.bounds_for(dest);
        let now = self.now_ms();
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let stream = streams.get_mut(&dest.key());
        let through = stream.as_ref().map_or(0, |s| s.last);
        let refused = Replay {
            recovered: false,
            entries: Vec::new(),
            through,
        };
        if since.epoch != *self.epoch || since.offset > through {
            return refused;
        }
        let Some(s) = stream else {
            // Nothing published in this epoch, and the client has nothing: nothing missed.
            return Replay {
                recovered: true,
                entries: Vec::new(),
                through,
            };
        };
        if let Some(cfg) = &cfg {
            let dropped = trim(s, cfg, now);
            self.stats
                .history
                .messages
                .fetch_sub(dropped as u64, Relaxed);
        }
        let oldest = s.entries.front().map_or(s.last + 1, |e| e.offset);
        if since.offset + 1 < oldest {
            return refused;
        }
        Replay {
            recovered: true,
            entries: s
                .entries
                .iter()
                .filter(|e| e.offset > since.offset)
                .cloned()
                .collect(),
            through,
        }
    }

    /// Messages kept, over every destination.
    pub fn len(&self) -> usize {
        let streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.values().map(|s| s.entries.len()).sum()
    }

    /// Nothing kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How much a destination keeps.
struct Bounds {
    size: usize,
    ttl_ms: u64,
}

/// Drops what is beyond `size` or older than `ttl_ms`; returns how many went.
fn trim(s: &mut Stream, cfg: &Bounds, now: u64) -> usize {
    let before = s.entries.len();
    while s.entries.len() > cfg.size {
        s.entries.pop_front();
    }
    while s
        .entries
        .front()
        .is_some_and(|e| now.saturating_sub(e.at_ms) > cfg.ttl_ms)
    {
        s.entries.pop_front();
    }
    if s.entries.is_empty() && s.entries.capacity() > 0 {
        s.entries = VecDeque::new();
    }
    before - s.entries.len()
}

fn configs_of(cfg: &config::Config) -> BTreeMap<String, Config> {
    cfg.projects
        .iter()
        .filter_map(|(name, p)| Some((name.clone(), p.history.clone()?)))
        .collect()
}

/// 16 hex digits, different at every start.
fn new_epoch() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests;
