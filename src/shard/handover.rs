//! A connection as plain data the shard can give away and take in (`ringcast upgrade`, issue
//! #31): the endpoint's state (`ringcast_proto::handover`), what the shard adds to it (its
//! destinations by name, not by this shard's ids; the frames still queued; when and from where
//! it connected), and the import that files it in another shard, possibly of another process,
//! with its subscriptions, timers and queue as if it had always been there.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::conn::Conn;
use super::{Core, Kind, TICK};
use crate::dest::Dest;
use ringcast_proto::handover::{Connection, NotMovable, Refused};

/// One connection as its shard knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moving {
    /// The protocol state.
    pub session: Connection,
    /// Seconds since the Unix epoch.
    pub connected_at: u32,
    /// The peer's IPv4 address (zeros if unknown).
    pub peer: [u8; 4],
    /// The destinations it listens to, by index key (`Dest::key`), in the order it joined.
    pub dests: Vec<String>,
    /// Frames queued for it and not yet written, oldest first.
    pub queue: Vec<Vec<u8>>,
    /// Bytes read from its socket and not yet processed (they arrived during the hand-over).
    #[serde(default)]
    pub unread: Vec<u8>,
}

impl Moving {
    /// Roughly the bytes it takes on the way (what batches are cut by).
    pub fn weight(&self) -> usize {
        128 + self.unread.len()
            + self.session.pending.len()
            + self.queue.iter().map(Vec::len).sum::<usize>() * 4
    }
}

impl Core {
    /// Stops starting I/O: the driver is about to cancel what is in flight and hand the
    /// connections over once the last completion is in.
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    /// Every connection's key.
    pub fn keys(&self) -> Vec<u32> {
        self.conns.iter().map(|(k, _)| k as u32).collect()
    }

    /// Connection `key` as plain data, or why it cannot move now. Reads only: the connection
    /// stays here until the driver has handed its socket over.
    pub fn export(&self, key: u32) -> Result<Moving, NotMovable> {
        let c = self.conns.get(key as usize).ok_or(NotMovable::Closing)?;
        if c.is_shut() || c.close_after_flush() {
            return Err(NotMovable::Closing);
        }
        if c.sending() {
            return Err(NotMovable::Sending);
        }
        if self.recovering.holds(key) {
            return Err(NotMovable::Recovering);
        }
        let session = c.session.export(self.wheel.now())?;
        Ok(Moving {
            session,
            connected_at: c.connected_at,
            peer: c.peer,
            dests: c
                .subs
                .iter()
                .filter_map(|&id| self.subs.dest_of(id))
                .map(|d| d.key())
                .collect(),
            queue: c.queue.iter().map(|b| b.to_vec()).collect(),
            unread: self.unread.get(&key).cloned().unwrap_or_default(),
        })
    }

    /// What a connection that cannot move is told before its socket goes: the frames queued
    /// for it, then its session's 1012 (STOMP: an ERROR with a jittered `retry-after` first),
    /// for a transport that writes them itself (a TLS 1.2 session's rustls).
    pub fn farewell(&mut self, key: u32) -> Vec<Bytes> {
        let Some(epoch) = self.conns.get(key as usize).map(|c| c.epoch) else {
            return Vec::new();
        };
        self.restart_session(
            key,
            epoch,
            1000 + super::admission::jitter(key, epoch) % 4000,
        );
        self.conns
            .get_mut(key as usize)
            .map(|c| c.queue.drain(..).collect())
            .unwrap_or_default()
    }

    /// Files `m` here as a live connection whose socket the driver holds under the returned
    /// key: subscribed, its queue sending, its recv armed, its deadlines scheduled.
    pub fn import(&mut self, m: Moving) -> Result<u32, Refused> {
        let session = crate::endpoint::Session::import(m.session, self.wheel.now(), &self.ctx)?;
        self.next_epoch = self.next_epoch.wrapping_add(1);
        let epoch = self.next_epoch;
        let mut conn = Conn::new(epoch, m.connected_at);
        conn.peer = m.peer;
        conn.session = session;
        let key = self.conns.insert(conn) as u32;
        let st = self.st();
        st.connections.fetch_add(1, Relaxed);
        self.stats.open.fetch_add(1, Relaxed);
        for d in m.dests.iter().filter_map(|k| Dest::from_key(k)) {
            self.join(key, &d);
        }
        self.arm_recv(key);
        self.upgraded(key);
        self.watch_expiry(key);
        let c = &self.conns[key as usize];
        let beats = c.session.stomp().filter(|s| s.is_connected());
        if let Some(t) = beats.and_then(|s| s.next_check(TICK.as_millis() as u64)) {
            self.wheel.schedule(key, c.epoch, Kind::Heartbeat, t);
        }
        for f in m.queue {
            self.send(key, Bytes::from(f), false);
        }
        let mut unread = m.unread;
        if !unread.is_empty() {
            let n = unread.len();
            self.received(key, Ok(n), true, &mut unread);
        }
        Ok(key)
    }
}
