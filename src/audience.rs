//! Which shards of this node listen to which destination: shards report a destination's
//! first and last local subscriber, the hub reads it to wake only the shards a publish
//! concerns. Shared by every shard and the hub (one mutex, off the per-message path).

use std::collections::HashMap;

/// Which shards hold at least one subscriber of each destination, so that a publish wakes only
/// its audience: a push to one user visits the one shard that holds the user's session, not
/// all of them. Shards report a destination's first and last local subscriber (rare events),
/// publishers read. Tracked on nodes of up to 64 shards (a bitmask); beyond that every publish
/// visits every shard, as before.
pub struct Audience {
    shards: usize,
    map: std::sync::Mutex<HashMap<String, u64>>,
}

impl Audience {
    pub fn new(shards: usize) -> Audience {
        Audience {
            shards,
            map: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn tracked(&self) -> bool {
        self.shards <= 64
    }

    /// Shard `shard` gained its first (`on`) or lost its last subscriber of `key`.
    pub fn set(&self, key: &str, shard: usize, on: bool) {
        if !self.tracked() {
            return;
        }
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            *m.entry(key.to_string()).or_insert(0) |= 1 << shard;
        } else if let Some(bits) = m.get_mut(key) {
            *bits &= !(1 << shard);
            if *bits == 0 {
                m.remove(key);
            }
        }
    }

    /// Whether shard `i` is to be visited for destination `key`.
    pub fn visits(&self, key: &str) -> impl Fn(usize) -> bool + use<> {
        let bits = if self.tracked() {
            let m = self.map.lock().unwrap_or_else(|p| p.into_inner());
            m.get(key).copied().unwrap_or(0)
        } else {
            u64::MAX
        };
        move |i| i >= 64 || bits & (1 << i) != 0
    }
}
