//! Admission under a storm: whether a shard takes on a new connection, or answers it at once
//! with `503` and a `Retry-After` before reading a byte of its request. Reading, parsing and
//! (STOMP) verifying a token are what a storm costs; a refusal written from a constant costs
//! almost nothing, so a node that sheds early stays responsive, and the hints it gives spread
//! the returning clients over the seconds it can serve them in.
//!
//! Two rules, by `limits.max_handshakes_per_s`:
//! - a rate (`Rate`), shared by the node's shards: a GCRA bucket holding a second's worth;
//! - 0, automatic (`Backlog`), one per shard: shed while the shard's unfinished handshakes
//!   (accepted, not yet authenticated) exceed what it finishes within `handshake_timeout_ms`
//!   at the rate it has been seen to finish them while busy.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The longest hint given: a client is never told to stay away longer than this.
pub const MAX_HINT_S: u64 = 60;
/// The rate a shard is assumed to finish handshakes at until it has been measured busy, and
/// the least it is ever assumed to: well below what one core does (BENCHMARKS.md), so that the
/// automatic rule sheds only what truly cannot be served in time.
const FLOOR_PER_S: u64 = 2000;
/// Unfinished handshakes at the start of a tick for the shard to count as busy (its rate of
/// finishing them then measures what it can do, not how fast clients happen to arrive).
const BUSY: usize = 64;

/// The node-wide rate, shared by its shards. Times are microseconds of the Unix clock.
#[derive(Default)]
pub struct Rate {
    /// When the bucket will be empty (GCRA's theoretical arrival time).
    tat_us: AtomicU64,
    /// The latest return time promised to a client turned away.
    promised_us: AtomicU64,
}

impl Rate {
    /// Takes one handshake at `now_us` under `per_s`; `Err(seconds)` when it must come back
    /// later. `jitter` (any value from the connection's identity) spreads hints once the
    /// promised times run past `MAX_HINT_S`.
    pub fn admit(&self, per_s: u64, now_us: u64, jitter: u64) -> Result<(), u64> {
        let t = 1_000_000 / per_s.clamp(1, 1_000_000);
        let burst = 1_000_000;
        let mut tat = self.tat_us.load(Relaxed);
        let next_token = loop {
            let base = tat.max(now_us);
            if base + t - now_us > burst {
                // The earliest moment one more would fit.
                break base + t - burst;
            }
            match self
                .tat_us
                .compare_exchange_weak(tat, base + t, Relaxed, Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        };
        // Clients sent away are promised times at half the rate: the rounding of a hint to
        // whole seconds can bunch two seconds' returns into one, and new arrivals keep the
        // other half.
        let horizon = now_us + MAX_HINT_S * 1_000_000;
        let slot = |p: u64| (p + 2 * t).max(next_token);
        let promised = self.promised_us.fetch_update(Relaxed, Relaxed, |p| {
            (slot(p) <= horizon).then_some(slot(p))
        });
        Err(match promised {
            Ok(p) => (slot(p) - now_us).div_ceil(1_000_000).max(1),
            Err(_) => 1 + jitter % MAX_HINT_S,
        })
    }
}

/// One shard's handshakes not finished yet, and how fast it finishes them when busy.
pub struct Backlog {
    /// Accepted connections (and SockJS sessions) not authenticated yet.
    unfinished: usize,
    finished: u64,
    /// Unfinished at the last tick, and its time (ms of the shard's clock).
    at_tick: usize,
    tick_ms: u64,
    per_s: u64,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog {
            unfinished: 0,
            finished: 0,
            at_tick: 0,
            tick_ms: 0,
            per_s: FLOOR_PER_S,
        }
    }
}

impl Backlog {
    pub fn started(&mut self) {
        self.unfinished += 1;
    }

    /// A handshake finished (authenticated) or its connection is gone (`finished` false).
    pub fn ended(&mut self, finished: bool) {
        self.unfinished = self.unfinished.saturating_sub(1);
        if finished {
            self.finished += 1;
        }
    }

    /// The tick: when the shard was busy since the last one, what it finished meanwhile
    /// updates its measured rate (a moving average over about eight ticks).
    pub fn tick(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.tick_ms);
        if self.at_tick >= BUSY && elapsed > 0 {
            let seen = self.finished * 1000 / elapsed;
            self.per_s = ((self.per_s * 7 + seen) / 8).max(FLOOR_PER_S);
        }
        self.finished = 0;
        self.at_tick = self.unfinished;
        self.tick_ms = now_ms;
    }

    /// Whether one more handshake would be more than the shard can finish within
    /// `timeout_ms`; then `Some(seconds)` to come back in, spread by `jitter` over about
    /// twice the time the backlog takes to clear.
    pub fn shed(&self, timeout_ms: u64, jitter: u64) -> Option<u64> {
        let can = (self.per_s * timeout_ms / 1000).max(1) as usize;
        if self.unfinished < can {
            return None;
        }
        let clear_s = (self.unfinished as u64).div_ceil(self.per_s).max(1);
        Some(1 + jitter % (2 * clear_s).min(MAX_HINT_S))
    }
}

/// An even spread from a connection's identity, with no generator state (SplitMix64): the
/// jitter of shedding's hints and of the drain's.
pub fn jitter(key: u32, epoch: u32) -> u64 {
    let mut z = (u64::from(key) << 32 | u64::from(epoch)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_takes_a_seconds_burst_then_promises_returns_that_fit() {
        let r = Rate::default();
        let now = 1_000_000_000_000;
        let mut hints = Vec::new();
        for i in 0..5000u64 {
            if let Err(s) = r.admit(500, now, i) {
                hints.push(s);
            }
        }
        assert_eq!(hints.len(), 4500);
        // Returns land at no more than half the rate in any second after the first.
        for s in 1..=MAX_HINT_S {
            let n = hints.iter().filter(|&&h| h == s).count();
            assert!(n <= 250, "{n} told to come back in {s} s");
        }
        assert!(hints.iter().all(|&h| (1..=MAX_HINT_S).contains(&h)));
        // A second later the bucket holds a second's worth again.
        let later = now + 1_000_000 + 5000;
        assert!((0..500).all(|i| r.admit(500, later + i, 0).is_ok()));
        assert!(r.admit(500, later + 500, 0).is_err());
    }

    #[test]
    fn past_the_horizon_hints_are_spread_not_piled() {
        let r = Rate::default();
        let hints: Vec<u64> = (0..20_000u64)
            .filter_map(|i| r.admit(10, 5_000_000 + i, jitter(i as u32, 1)).err())
            .collect();
        let last_second = hints.iter().filter(|&&h| h == MAX_HINT_S).count();
        assert!(last_second < 1000, "{last_second}");
    }

    #[test]
    fn a_backlog_sheds_beyond_what_it_finishes_in_time() {
        let mut b = Backlog::default();
        for _ in 0..199 {
            b.started();
        }
        // 2,000/s assumed, 100 ms to finish in: 200 fit.
        assert_eq!(b.shed(100, 0), None);
        b.started();
        assert!(b.shed(100, 0).is_some());
        b.ended(false);
        assert_eq!(b.shed(100, 0), None);
    }

    #[test]
    fn a_busy_shard_learns_it_is_faster() {
        let mut b = Backlog::default();
        b.tick(0);
        // A thousand arrive and a thousand finish in every 100 ms: 10,000/s.
        for t in 1..=40u64 {
            for _ in 0..1000 {
                b.started();
            }
            if t > 1 {
                for _ in 0..1000 {
                    b.ended(true);
                }
            }
            b.tick(t * 100);
        }
        assert!(b.per_s > 8000, "{}", b.per_s);
    }
}
