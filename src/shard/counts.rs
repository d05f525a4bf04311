//! Counts across all shards with a limit: connections per source address
//! (`limits.max_connections_per_ip`, `max_pending_per_ip`) and sessions per user
//! (`limits.max_sessions_per_user`). SO_REUSEPORT spreads one address's (or one user's)
//! connections over every shard, so the count is the node's; it is touched only when a
//! connection is counted in or out, and only when its limit is on.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, RwLock};

/// A count per key, refused beyond `limit`; with what the cluster's other nodes hold added
/// (`set_others`, from their presence) for the per-user count.
pub struct Counts<K> {
    limit: usize,
    counts: Mutex<HashMap<K, u32>>,
    others: RwLock<HashMap<K, u32>>,
}

/// Connections per source address.
pub type PerIp = Counts<IpAddr>;
/// Identified sessions per (project, user).
pub type PerUser = Counts<(Box<str>, Box<str>)>;

impl<K: Hash + Eq> Counts<K> {
    /// `limit` 0 = no limit (nothing is counted).
    pub fn new(limit: usize) -> Counts<K> {
        Counts {
            limit,
            counts: Mutex::new(HashMap::new()),
            others: RwLock::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Counts one more for `key`; false (and not counted) if `key` is at the limit.
    pub fn admit(&self, key: K) -> bool {
        let elsewhere = {
            let o = self.others.read().unwrap_or_else(|p| p.into_inner());
            o.get(&key).copied().unwrap_or(0)
        };
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key).or_insert(0);
        if (*n + elsewhere) as usize >= self.limit {
            return false;
        }
        *n += 1;
        true
    }

    /// What the other nodes hold now, replacing what they held.
    pub fn set_others(&self, others: HashMap<K, u32>) {
        *self.others.write().unwrap_or_else(|p| p.into_inner()) = others;
    }

    pub fn release(&self, key: &K) {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                m.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_per_address() {
        let p = PerIp::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(p.admit(a) && p.admit(a));
        assert!(!p.admit(a));
        assert!(p.admit(b));
        p.release(&a);
        assert!(p.admit(a));
    }
}
