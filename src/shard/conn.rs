//! What one connection keeps in its shard's slab. Kept small on purpose: an idle connection is
//! this struct and nothing else (no read buffer, no pending timer object, no task). The socket
//! itself belongs to the driver, filed under the same key: nothing here touches the kernel.

use std::collections::VecDeque;

use bytes::Bytes;

use super::index::DestId;
use crate::endpoint::Session;

/// The outcome of a ping check.
#[derive(Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Something arrived during the last period.
    Alive,
    /// Silent for a period: send a ping.
    Ping,
    /// Silent for a period after our ping: the peer is gone.
    Dead,
}

pub struct Conn {
    /// Distinguishes this connection from earlier ones that used the same slab slot, so a
    /// stale timer entry cannot touch it.
    pub epoch: u32,
    /// Seconds since the Unix epoch (u32 lasts until 2106).
    pub connected_at: u32,
    flags: u8,
    /// The peer's IPv4 address (zeros for IPv6 or unknown), for the console's session list:
    /// it fits in what was padding after `flags`, so it costs nothing.
    pub peer: [u8; 4],
    /// Frames waiting for the one send in flight to finish (ordering needs one at a time).
    pub queue: VecDeque<Bytes>,
    pub subs: Vec<DestId>,
    pub session: Session,
    /// Counted against its user's `max_sessions_per_user` (given back at the close).
    pub user_slot: bool,
}

const RECV_ARMED: u8 = 1;
const SENDING: u8 = 2;
/// Close the socket as soon as the queue is written.
const CLOSE_AFTER_FLUSH: u8 = 4;
/// The socket is shut down; the entry goes once no operation references it.
const SHUT: u8 = 8;
/// Bytes arrived since the last ping check.
const HEARD: u8 = 16;
/// We pinged and wait for anything back.
const PINGED: u8 = 32;
/// Our side is finished (write shut down); input is read and discarded until the peer's FIN.
const LINGER: u8 = 64;
/// Not authenticated yet: counted in the shard's backlog of unfinished handshakes (and, when
/// `limits.max_pending_per_ip` is on, against its address's unauthenticated connections).
const PENDING: u8 = 128;

impl Conn {
    pub fn new(epoch: u32, connected_at: u32) -> Conn {
        Conn {
            epoch,
            connected_at,
            flags: 0,
            peer: [0; 4],
            queue: VecDeque::new(),
            subs: Vec::new(),
            session: Session::default(),
            user_slot: false,
        }
    }

    fn set(&mut self, f: u8, on: bool) {
        if on {
            self.flags |= f;
        } else {
            self.flags &= !f;
        }
    }

    pub fn recv_armed(&self) -> bool {
        self.flags & RECV_ARMED != 0
    }
    pub fn set_recv_armed(&mut self, on: bool) {
        self.set(RECV_ARMED, on);
    }
    pub fn sending(&self) -> bool {
        self.flags & SENDING != 0
    }
    pub fn set_sending(&mut self, on: bool) {
        self.set(SENDING, on);
    }
    pub fn close_after_flush(&self) -> bool {
        self.flags & CLOSE_AFTER_FLUSH != 0
    }
    pub fn set_close_after_flush(&mut self) {
        self.set(CLOSE_AFTER_FLUSH, true);
    }
    pub fn is_shut(&self) -> bool {
        self.flags & SHUT != 0
    }

    pub fn set_pending(&mut self) {
        self.set(PENDING, true);
    }

    /// Whether it was counted as unauthenticated; it no longer is.
    pub fn take_pending(&mut self) -> bool {
        let was = self.flags & PENDING != 0;
        self.set(PENDING, false);
        was
    }

    pub fn set_heard(&mut self) {
        self.set(HEARD, true);
    }

    /// The ping timer fired: what to do about this connection's liveness.
    pub fn ping_due(&mut self) -> Liveness {
        let (heard, pinged) = (self.flags & HEARD != 0, self.flags & PINGED != 0);
        self.set(HEARD, false);
        if heard {
            self.set(PINGED, false);
            Liveness::Alive
        } else if pinged {
            Liveness::Dead
        } else {
            self.set(PINGED, true);
            Liveness::Ping
        }
    }

    /// Finishes our side after the last byte is written: the socket is to be shut down for
    /// writing only, and input read (and discarded) until the peer closes. Closing outright
    /// with unread input would make the kernel answer with a reset, and the peer could lose
    /// our close frame or HTTP error. Returns whether the write side is to be shut now (false
    /// if it was already lingering or shut).
    pub fn linger(&mut self) -> bool {
        if self.is_shut() || self.flags & LINGER != 0 {
            return false;
        }
        self.set(LINGER, true);
        true
    }

    /// Marks the connection shut both ways (which also ends a pending multishot recv) and drops
    /// whatever was still queued. Returns whether the socket is to be shut down now (false if
    /// it already was).
    pub fn shut(&mut self) -> bool {
        if self.is_shut() {
            return false;
        }
        self.set(SHUT, true);
        self.queue = VecDeque::new();
        true
    }

    /// No operation in the ring references this entry any more: it may be freed.
    pub fn removable(&self) -> bool {
        self.is_shut() && !self.recv_armed() && !self.sending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_then_reap_a_silent_peer() {
        let mut c = Conn::new(1, 0);
        assert_eq!(c.ping_due(), Liveness::Ping);
        c.set_heard(); // the pong
        assert_eq!(c.ping_due(), Liveness::Alive);
        assert_eq!(c.ping_due(), Liveness::Ping);
        assert_eq!(c.ping_due(), Liveness::Dead);
    }

    #[test]
    fn entry_stays_small() {
        // The per-connection budget is a few hundred bytes including the slab's own overhead.
        let size = std::mem::size_of::<super::Conn>();
        assert!(size <= 128, "Conn grew to {size} bytes");
    }
}
