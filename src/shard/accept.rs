//! Admission: what the shard does with a connection the listener handed it before any byte
//! is read. Past the node's connection limit, or while stopping, it is closed at once; in a
//! storm it is shed with a retry hint (`admission`); beyond its address's limits it is refused
//! with 429. The counts it takes are given back when it authenticates or closes.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

use super::conn::Conn;
use super::timer::Kind;
use super::{Core, Op, admission, ticks};
use crate::ws::CloseError;
use crate::ws::handshake::Reject;

impl Core {
    /// A connection was accepted; returns the key to file its socket under.
    pub fn accepted(&mut self, peer: Option<IpAddr>, unix_ms: u64) -> u32 {
        let st = self.st();
        st.accepted.fetch_add(1, Relaxed);
        st.connections.fetch_add(1, Relaxed);
        self.next_epoch = self.next_epoch.wrapping_add(1);
        let epoch = self.next_epoch;
        let key = self.conns.insert(Conn::new(epoch, (unix_ms / 1000) as u32)) as u32;
        if let Some(IpAddr::V4(v4)) = peer {
            self.conns[key as usize].peer = v4.octets();
        }
        self.arm_recv(key);
        // Counted before any refusal: `reap` gives every accepted connection back.
        let open = self.stats.open.fetch_add(1, Relaxed) + 1;
        let full =
            open > self.ctx.cfg.server.max_connections as u64 || self.conns.len() > self.capacity;
        if self.shutdown_at.is_some() || full {
            let reason = if self.shutdown_at.is_some() {
                "server shutting down"
            } else {
                "server is at its connection limit"
            };
            self.close_session(key, CloseError::GOING_AWAY, reason);
        } else if let Some(retry_s) = self.shed(key, epoch, unix_ms) {
            self.st().shed.fetch_add(1, Relaxed);
            self.refuse(key, &Reject::busy(retry_s));
        } else if let Err(reason) = self.admit_peer(key, peer, true) {
            self.refuse(key, &Reject::new(429, reason));
        } else {
            let t = ticks(self.ctx.cfg.limits.handshake_timeout_ms);
            self.wheel.schedule(key, epoch, Kind::Handshake, t);
        }
        key
    }

    /// Whether a new connection must be turned away at once, and in how many seconds it
    /// should come back: beyond the node's handshake rate, or (rate 0) beyond what this shard
    /// can finish in time.
    pub(super) fn shed(&self, key: u32, epoch: u32, unix_ms: u64) -> Option<u64> {
        let limits = &self.ctx.cfg.limits;
        let jitter = admission::jitter(key, epoch);
        if limits.max_handshakes_per_s > 0 {
            let now_us = unix_ms.saturating_mul(1000);
            return self
                .rate
                .admit(limits.max_handshakes_per_s, now_us, jitter)
                .err();
        }
        self.backlog.shed(limits.handshake_timeout_ms, jitter)
    }

    /// Counts connection `key` against its source address's limits (those that are on): open
    /// connections, and (`unauthenticated`) connections not yet authenticated.
    pub(super) fn admit_peer(
        &mut self,
        key: u32,
        peer: Option<IpAddr>,
        unauthenticated: bool,
    ) -> Result<(), &'static str> {
        let open = self.per_ip.enabled();
        let pending = unauthenticated && self.pending_per_ip.enabled();
        if let Some(ip) = peer.filter(|_| open || pending) {
            if open && !self.per_ip.admit(ip) {
                return Err("too many connections from this address");
            }
            if pending && !self.pending_per_ip.admit(ip) {
                if open {
                    self.per_ip.release(&ip);
                }
                return Err("too many connections from this address still authenticating");
            }
            self.peers.insert(key, ip);
        }
        if unauthenticated {
            self.conns[key as usize].set_pending();
            self.backlog.started();
        }
        Ok(())
    }

    /// Connection `key` is authenticated (upgraded in raw mode, CONNECTED in STOMP): it no
    /// longer counts against its address's unauthenticated connections.
    pub(super) fn authenticated(&mut self, key: u32) {
        if !self.conns[key as usize].take_pending() {
            return;
        }
        self.backlog.ended(true);
        if !self.pending_per_ip.enabled() {
            return;
        }
        if let Some(&ip) = self.peers.get(&key) {
            self.pending_per_ip.release(&ip);
            if !self.per_ip.enabled() {
                self.peers.remove(&key);
            }
        }
    }

    /// Accepting failed.
    pub fn accept_failed(&mut self, e: &io::Error) {
        self.st().accept_errors.fetch_add(1, Relaxed);
        if matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        ) {
            // Out of descriptors or memory: retrying at once would spin. Pause until the next
            // tick; connections closing meanwhile make room.
            self.accept_paused = true;
            if !self.accept_error_logged {
                self.accept_error_logged = true;
                tracing::warn!(
                    shard = self.id,
                    "accept failed: {e}; pausing accepts (logged once)"
                );
            }
        }
    }

    /// The armed accept ended (a single-shot accept completed, or a multishot one stopped).
    pub fn accept_ended(&mut self) {
        if !self.accept_paused && self.listening {
            self.ops.push(Op::Accept);
        }
    }

    /// Connection (or SockJS session) `key` is gone: its address's counts go back.
    pub(super) fn release_peer(&mut self, key: u32, pending: bool) {
        if pending {
            self.backlog.ended(false);
        }
        if let Some(ip) = self.peers.remove(&key) {
            if self.per_ip.enabled() {
                self.per_ip.release(&ip);
            }
            if pending && self.pending_per_ip.enabled() {
                self.pending_per_ip.release(&ip);
            }
        }
    }

    /// Counts session `key` against its user's `max_sessions_per_user` once it has a user;
    /// false when the user is at the limit (the session is then refused, see `apply`).
    pub(super) fn admit_user(&mut self, key: u32) -> bool {
        let c = &self.conns[key as usize];
        if c.user_slot {
            return true;
        }
        let Some((project, Some(user))) = c.session.identity() else {
            return true;
        };
        if !self.per_user.admit((project.into(), user.into())) {
            return false;
        }
        self.conns[key as usize].user_slot = true;
        true
    }

    pub(super) fn refuse(&mut self, key: u32, r: &Reject) {
        self.on_session(key, |s, out| s.refuse(r, out));
    }
}
