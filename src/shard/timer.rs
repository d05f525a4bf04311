//! A hashed timer wheel of connection deadlines, driven by the shard's one periodic ring
//! timeout. A million connections need a million deadlines (handshake, close, heart-beat), not
//! a million kernel timers; entries are 16 bytes and stale ones (the connection moved on, or its
//! slab slot was reused) are recognised by a generation number and dropped when they come due.

/// What a deadline is for; the reactor decides what to do when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The upgrade did not complete in time.
    Handshake,
    /// A STOMP session sent no CONNECT in time after its upgrade.
    Connect,
    /// Our close frame went unanswered.
    Closing,
    /// Time to check heart-beats (send ours, expect theirs).
    Heartbeat,
    /// Time to check a raw session's liveness (ping it, or reap it).
    Ping,
    /// Time for a SockJS session's `h` frame (for proxies that close quiet connections).
    SockjsBeat,
    /// A SockJS session over HTTP may have gone without a receiving request too long.
    SockjsExpire,
}

#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub key: u32,
    pub epoch: u32,
    pub kind: Kind,
    /// Absolute tick at which it fires (u32: 13 years of 100 ms ticks).
    due: u32,
}

pub struct Wheel {
    slots: Vec<Vec<Entry>>,
    now: u64,
}

impl Wheel {
    /// `slots` bounds how often a far deadline is looked at before it is due.
    pub fn new(slots: usize) -> Wheel {
        Wheel {
            slots: (0..slots.max(1)).map(|_| Vec::new()).collect(),
            now: 0,
        }
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    /// Schedules `kind` for connection (`key`, `epoch`) `ticks` ticks from now (at least one).
    pub fn schedule(&mut self, key: u32, epoch: u32, kind: Kind, ticks: u64) {
        let due = self.now + ticks.max(1);
        let n = self.slots.len() as u64;
        self.slots[(due % n) as usize].push(Entry {
            key,
            epoch,
            kind,
            due: due as u32,
        });
    }

    /// Advances one tick and hands every entry now due to `fire`.
    pub fn advance(&mut self, mut fire: impl FnMut(Entry)) {
        self.now += 1;
        let n = self.slots.len() as u64;
        let idx = (self.now % n) as usize;
        let mut slot = std::mem::take(&mut self.slots[idx]);
        let now = self.now as u32;
        slot.retain(|e| {
            if e.due <= now {
                fire(*e);
                false
            } else {
                true
            }
        });
        if slot.capacity() > 64 && slot.len() < slot.capacity() / 4 {
            slot.shrink_to(slot.len() * 2);
        }
        self.slots[idx] = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_16_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }

    #[test]
    fn fires_at_the_right_tick_even_past_one_turn() {
        let mut w = Wheel::new(8);
        w.schedule(1, 0, Kind::Handshake, 3);
        w.schedule(2, 0, Kind::Closing, 20);
        let mut fired = Vec::new();
        for t in 1..=25 {
            w.advance(|e| fired.push((t, e.key)));
        }
        assert_eq!(fired, [(3, 1), (20, 2)]);
    }

    #[test]
    fn rescheduling_from_fire_works() {
        let mut w = Wheel::new(4);
        w.schedule(7, 1, Kind::Heartbeat, 4);
        let mut count = 0;
        for _ in 0..16 {
            let mut again = Vec::new();
            w.advance(|e| {
                count += 1;
                again.push(e);
            });
            for e in again {
                w.schedule(e.key, e.epoch, e.kind, 4);
            }
        }
        assert_eq!(count, 4);
    }
}
