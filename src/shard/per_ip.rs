//! Connections per source address, across all shards (`limits.max_connections_per_ip`).
//! SO_REUSEPORT spreads one address's connections over every shard, so the count is global;
//! it is touched only on accept and close, and only when the limit is on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

pub struct PerIp {
    limit: usize,
    counts: Mutex<HashMap<IpAddr, u32>>,
}

impl PerIp {
    /// `limit` 0 = no limit (nothing is counted).
    pub fn new(limit: usize) -> PerIp {
        PerIp {
            limit,
            counts: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Counts a new connection from `ip`; false (and not counted) if `ip` is at the limit.
    pub fn admit(&self, ip: IpAddr) -> bool {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n as usize >= self.limit {
            return false;
        }
        *n += 1;
        true
    }

    pub fn release(&self, ip: IpAddr) {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
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
        p.release(a);
        assert!(p.admit(a));
    }
}
