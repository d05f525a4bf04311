//! The node's history store: for each destination whose project keeps history, its recent
//! messages (bounded by `size` and `ttl_ms`) under their offsets. One store per node, not per
//! shard: the hub numbers a message and hands it to the shards under the store's lock, so every
//! shard sees a destination's messages in offset order, and a recovering subscription can read
//! "everything up to now" and know that whatever comes live after it is new.
//!
//! Bodies are copied into blocks per stream (see `Stream::store`); a destination without
//! history never takes the lock. The epoch is drawn at start: history does not survive a
//! restart, and clients holding positions of the old epoch are told they cannot recover.
//!
//! In a cluster, Redis numbers messages (each destination with its own epoch, see
//! `cluster::history`) and this store is the node's cache of it: it keeps what arrives from
//! Redis for destinations the node listens to, and what Redis reads brought in. It answers a
//! recovering subscription when it can be sure (`replay` → `Some`); otherwise the shard asks
//! Redis. A stream's cache is dropped when the node stops listening to it, since it would miss
//! what comes next.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringcast_proto::history::{Config, Position};

use crate::config;
use ringcast_proto::publish::Publish;

use crate::dest::Dest;

mod saved;
pub use saved::Saved;

/// One kept message.
#[derive(Clone)]
pub struct Entry {
    pub offset: u64,
    /// Milliseconds since the store started (for `ttl_ms`).
    at_ms: u64,
    pub body: Bytes,
    /// Boxed twice so that the common case, no headers, costs one word (a `Vec` costs three).
    #[allow(clippy::box_collection)]
    headers: Option<Box<Vec<(String, String)>>>,
}

impl Entry {
    /// A message read back from Redis (its age travels beside it, see `Snapshot`).
    pub fn new(offset: u64, body: Bytes, headers: Vec<(String, String)>) -> Entry {
        Entry {
            offset,
            at_ms: 0,
            body,
            headers: (!headers.is_empty()).then(|| Box::new(headers)),
        }
    }

    /// The publisher's headers.
    pub fn into_headers(self) -> Vec<(String, String)> {
        self.headers.map(|h| *h).unwrap_or_default()
    }
}

/// The largest block of bodies a stream allocates at once.
const MAX_BLOCK: usize = 64 * 1024;

struct Stream {
    epoch: Arc<str>,
    /// The offset of the last message published (0: none yet).
    last: u64,
    entries: VecDeque<Entry>,
    /// `entries` hold everything the history keeps up to `last` (always, on a standalone
    /// node): a position older than them cannot be recovered. Otherwise (a cluster node's
    /// cache, filled live only) older positions are for Redis to judge.
    complete: bool,
    /// Where the stream's bodies are copied, one after the other: a body on its own would
    /// cost an allocation and `Bytes`' shared header (~50 bytes with the allocator's own);
    /// in a block they cost their bytes. A block lives as long as its newest entry.
    block: BytesMut,
}

impl Stream {
    fn new(epoch: Arc<str>, complete: bool) -> Stream {
        Stream {
            epoch,
            last: 0,
            entries: VecDeque::new(),
            complete,
            block: BytesMut::new(),
        }
    }

    /// `body`, copied into the stream's current block (a new one when it is full). Blocks
    /// grow with the stream, to an eighth of what it keeps (at most `MAX_BLOCK`): a block
    /// trimmed to its last entry wastes that much at most, and a stream of one message gets
    /// a block of exactly its body.
    fn store(&mut self, body: &[u8]) -> Bytes {
        if body.is_empty() {
            return Bytes::new();
        }
        if self.block.capacity() - self.block.len() < body.len() {
            let grown = (self.entries.len() * body.len() / 8).min(MAX_BLOCK);
            self.block = BytesMut::with_capacity(grown.max(body.len()));
        }
        self.block.extend_from_slice(body);
        self.block.split().freeze()
    }
}

/// A destination's history as Redis holds it, read at one instant.
pub struct Snapshot {
    pub epoch: Arc<str>,
    /// The last offset Redis assigned.
    pub last: u64,
    /// What Redis keeps, oldest first, with each entry's age in milliseconds.
    pub entries: Vec<(Entry, u64)>,
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
    /// The stream's epoch (the node's; in a cluster, the destination's in Redis).
    pub epoch: Arc<str>,
}

impl Replay {
    /// Told to a client when Redis could not be read: it cannot recover, and reloads.
    pub fn unavailable() -> Replay {
        Replay {
            recovered: false,
            entries: Vec::new(),
            through: 0,
            epoch: Arc::from(""),
        }
    }
}

/// Where the store reads the time: milliseconds from any fixed start.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Milliseconds since the store was made.
fn monotonic() -> Clock {
    let started = Instant::now();
    Arc::new(move || started.elapsed().as_millis() as u64)
}

pub struct History {
    stats: Arc<crate::stats::Stats>,
    epoch: Arc<str>,
    /// Redis numbers the messages; this store caches (see the module doc).
    clustered: bool,
    /// Milliseconds on the node's clock; injected so tests run on virtual time.
    clock: Clock,
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
            clustered: cfg.cluster.clustered(),
            clock: monotonic(),
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
    pub fn bounds_for(&self, dest: &Dest) -> Option<Bounds> {
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

    /// The same store on another clock (tests drive it by hand).
    pub fn with_clock(mut self, clock: Clock) -> History {
        self.clock = clock;
        self
    }

    fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// Numbers `msg` if its destination keeps history, keeps it, and hands it to `deliver`
    /// while still holding the store, so deliveries leave in offset order. Without history,
    /// `deliver` runs at once and the store is not touched. In a cluster, Redis numbered the
    /// message already (`msg.position`): it is cached, and a message without a position is
    /// delivered as it is.
    pub fn record<R>(&self, mut msg: Publish, deliver: impl FnOnce(Arc<Publish>) -> R) -> R {
        let Some(cfg) = self.bounds_for(&msg.dest) else {
            return deliver(Arc::new(msg));
        };
        if self.clustered {
            if msg.position.is_none() {
                return deliver(Arc::new(msg));
            }
            return self.cache(msg, &cfg, deliver);
        }
        let now = self.now_ms();
        let key = msg.dest.key();
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let s = streams
            .entry(key)
            .or_insert_with(|| Stream::new(self.epoch.clone(), true));
        s.last += 1;
        msg.position = Some((s.last, self.epoch.clone()));
        let e = entry(s, s.last, now, &msg);
        keep(s, e, cfg.size);
        let dropped = trim(s, &cfg, now);
        self.count_kept(1, dropped);
        self.stats.history.recorded.fetch_add(1, Relaxed);
        deliver(Arc::new(msg))
    }

    fn count_kept(&self, added: usize, dropped: usize) {
        let h = &self.stats.history;
        h.messages.fetch_add(added as u64, Relaxed);
        h.messages.fetch_sub(dropped as u64, Relaxed);
    }

    /// A message Redis numbered, on its way to the shards: kept if it extends the cache.
    fn cache<R>(&self, msg: Publish, cfg: &Bounds, deliver: impl FnOnce(Arc<Publish>) -> R) -> R {
        let Some((offset, epoch)) = msg.position.clone() else {
            return deliver(Arc::new(msg));
        };
        let now = self.now_ms();
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let s = streams
            .entry(msg.dest.key())
            .or_insert_with(|| Stream::new(epoch.clone(), false));
        let mut dropped = 0;
        if s.epoch != epoch || offset > s.last + 1 && s.last > 0 {
            // A new life of the stream, or a hole (the node was not listening): start over.
            dropped += s.entries.len();
            *s = Stream::new(epoch, false);
        }
        let mut added = 0;
        if offset > s.last {
            s.last = offset;
            let e = entry(s, offset, now, &msg);
            keep(s, e, cfg.size);
            added = 1;
            dropped += trim(s, cfg, now);
        }
        self.count_kept(added, dropped);
        deliver(Arc::new(msg))
    }

    /// What Redis holds of `dest`, read after the node started listening to it: the cache
    /// takes it in front of what arrived live, and is then complete.
    pub fn merge(&self, dest: &Dest, snap: &Snapshot) {
        let Some(cfg) = self.bounds_for(dest) else {
            return;
        };
        let now = self.now_ms();
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let s = streams
            .entry(dest.key())
            .or_insert_with(|| Stream::new(snap.epoch.clone(), true));
        let held = s.entries.len();
        if s.epoch != snap.epoch {
            *s = Stream::new(snap.epoch.clone(), true);
        }
        let live = std::mem::take(&mut s.entries);
        s.entries = snap
            .entries
            .iter()
            .map(|(e, age)| Entry {
                at_ms: now.saturating_sub(*age),
                ..e.clone()
            })
            .chain(live.into_iter().filter(|e| e.offset > snap.last))
            .collect();
        s.last = s.last.max(snap.last);
        s.complete = true;
        trim(s, &cfg, now);
        self.count_kept(s.entries.len(), held);
    }

    /// The node stopped listening to `key` (or to everything: `None`): its cache would miss
    /// what comes next.
    pub fn forget(&self, key: Option<&str>) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let gone = match key {
            Some(k) => streams.remove(k).map_or(0, |s| s.entries.len()),
            None => streams.drain().map(|(_, s)| s.entries.len()).sum(),
        };
        self.count_kept(0, gone);
    }

    /// What a subscription at `since` missed on `dest`, read at one instant; `None` when a
    /// cluster node's cache cannot tell (Redis must be asked).
    pub fn replay(&self, dest: &Dest, since: &Position) -> Option<Replay> {
        let r = self.read(dest, since)?;
        self.count_replay(&r);
        Some(r)
    }

    /// Counts a replay answered here or from Redis.
    pub fn count_replay(&self, r: &Replay) {
        let h = &self.stats.history;
        h.replays.fetch_add(1, Relaxed);
        if !r.recovered {
            h.unrecovered.fetch_add(1, Relaxed);
        }
    }

    fn read(&self, dest: &Dest, since: &Position) -> Option<Replay> {
        let cfg = self.bounds_for(dest);
        let now = self.now_ms();
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let stream = streams.get_mut(&dest.key());
        let Some(s) = stream else {
            if self.clustered {
                return None;
            }
            // Nothing published in this epoch: nothing missed, if the client has nothing.
            let ok = since.epoch == *self.epoch && since.offset == 0;
            return Some(Replay {
                recovered: ok,
                entries: Vec::new(),
                through: 0,
                epoch: self.epoch.clone(),
            });
        };
        if let Some(cfg) = &cfg {
            let dropped = trim(s, cfg, now);
            self.count_kept(0, dropped);
        }
        let refused = Replay {
            recovered: false,
            entries: Vec::new(),
            through: s.last,
            epoch: s.epoch.clone(),
        };
        if since.epoch != *s.epoch {
            return s.complete.then_some(refused);
        }
        if since.offset > s.last {
            // Positions from the future: refused here; a cache may be behind Redis.
            return (!self.clustered).then_some(refused);
        }
        let oldest = s.entries.front().map_or(s.last + 1, |e| e.offset);
        if since.offset + 1 < oldest {
            return s.complete.then_some(refused);
        }
        Some(Replay {
            recovered: true,
            entries: s
                .entries
                .iter()
                .filter(|e| e.offset > since.offset)
                .cloned()
                .collect(),
            through: s.last,
            epoch: s.epoch.clone(),
        })
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
pub struct Bounds {
    pub size: usize,
    pub ttl_ms: u64,
}

/// `msg` as `s` keeps it at `offset`.
fn entry(s: &mut Stream, offset: u64, at_ms: u64, msg: &Publish) -> Entry {
    Entry {
        at_ms,
        ..Entry::new(offset, s.store(&msg.body), msg.headers.clone())
    }
}

/// Appends `e`. The ring grows by doubling as usual but never past `size` (+1 before the
/// trim): a full stream of 10,000 would otherwise hold 16,384 slots of 64 bytes.
fn keep(s: &mut Stream, e: Entry, size: usize) {
    let (len, cap) = (s.entries.len(), s.entries.capacity());
    if len == cap {
        let want = (cap * 2).max(4).min(size + 1);
        s.entries.reserve_exact(want.saturating_sub(len).max(1));
    }
    s.entries.push_back(e);
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
        s.block = BytesMut::new();
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
pub fn new_epoch() -> String {
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
