//! Stopping a shard: at once (every session closed with 1001), or as a paced drain over
//! `server.drain_ms`, where sessions are closed a few at a time on the tick, STOMP sessions
//! first, each with 1012 and a jittered `retry-after` hint, so that a node's clients do not
//! all reconnect to its neighbours in the same second. Publishes keep reaching the sessions
//! not closed yet; a second stop closes the rest at once.

use std::collections::VecDeque;

use super::{Core, Op, ticks};
use crate::ws::CloseError;

/// A drain under way.
pub(super) struct Drain {
    /// Sessions still to close, in order: (key, epoch).
    queue: VecDeque<(u32, u32)>,
    total: usize,
    start: u64,
    window: u64,
}

/// The hints are spread over the window too, from a second on: a client closed early comes
/// back late, and one closed late need not wait long.
fn retry_hint(key: u32, epoch: u32, drain_ms: u64) -> u64 {
    1000 + super::admission::jitter(key, epoch) % drain_ms.max(1)
}

impl Core {
    /// Stops accepting and closes this shard's sessions: at once with 1001, or paced over
    /// `server.drain_ms`. The shard is `finished` when they are gone or the time is over. A
    /// second stop during a drain closes what is left at once.
    pub(super) fn shutdown(&mut self) {
        let drain_ms = self.ctx.cfg.server.drain_ms;
        if let Some(d) = self.drain.take() {
            self.shutdown_at =
                Some(self.wheel.now() + ticks(self.ctx.cfg.server.shutdown_grace_ms));
            for (key, epoch) in d.queue {
                self.restart_session(key, epoch, retry_hint(key, epoch, drain_ms));
            }
            return;
        }
        if self.shutdown_at.is_some() {
            return;
        }
        let grace = ticks(self.ctx.cfg.server.shutdown_grace_ms);
        self.listening = false;
        self.ops.push(Op::CloseListener);
        if drain_ms == 0 {
            self.shutdown_at = Some(self.wheel.now() + grace);
            let keys: Vec<u32> = self.conns.iter().map(|(k, _)| k as u32).collect();
            for key in keys {
                self.close_session(key, CloseError::GOING_AWAY, "server shutting down");
            }
            return;
        }
        let window = ticks(drain_ms).max(1);
        self.shutdown_at = Some(self.wheel.now() + window + grace);
        // STOMP sessions first: their clients are told in words, and reconnect the slowest.
        let mut stomp: VecDeque<(u32, u32)> = VecDeque::new();
        let mut other = Vec::new();
        for (k, c) in self.conns.iter() {
            let e = (k as u32, c.epoch);
            if c.session.stomp().is_some() {
                stomp.push_back(e);
            } else {
                other.push(e);
            }
        }
        stomp.extend(other);
        self.drain = Some(Drain {
            total: stomp.len(),
            queue: stomp,
            start: self.wheel.now(),
            window,
        });
        self.drain_step();
    }

    /// The tick during a drain: closes as many sessions as the time elapsed calls for.
    pub(super) fn drain_step(&mut self) {
        let drain_ms = self.ctx.cfg.server.drain_ms;
        let Some(d) = self.drain.as_mut() else {
            return;
        };
        let elapsed = (self.wheel.now() - d.start + 1).min(d.window);
        let due = (d.total as u64 * elapsed).div_ceil(d.window) as usize;
        let mut now = Vec::new();
        while d.total - d.queue.len() < due {
            match d.queue.pop_front() {
                Some(e) => now.push(e),
                None => break,
            }
        }
        if d.queue.is_empty() {
            self.drain = None;
        }
        for (key, epoch) in now {
            self.restart_session(key, epoch, retry_hint(key, epoch, drain_ms));
        }
    }

    /// Whether a drain is under way.
    pub(super) fn draining(&self) -> bool {
        self.drain.is_some()
    }

    pub(super) fn restart_session(&mut self, key: u32, epoch: u32, retry_ms: u64) {
        let mut out = std::mem::take(&mut self.out);
        if let Some(c) = self.conns.get_mut(key as usize)
            && c.epoch == epoch
        {
            c.session.restart(retry_ms, &mut out);
        }
        self.apply(key, &mut out);
        self.out = out;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hints_spread_over_the_window() {
        let hints: Vec<u64> = (0..1000).map(|k| super::retry_hint(k, 7, 4000)).collect();
        assert!(hints.iter().all(|&h| (1000..5000).contains(&h)));
        let early = hints.iter().filter(|&&h| h < 3000).count();
        assert!((400..600).contains(&early), "{early}");
    }
}
