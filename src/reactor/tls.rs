//! The driver's TLS glue: for a connection on a `wss` listener, ciphertext from the ring goes
//! through its `tls::session::Session` and only plaintext reaches the core; the core's sends
//! are sealed and written one chunk at a time, and the core hears a send completed once its
//! last record is out. With kTLS the session leaves the process after the handshake and the
//! socket is plain again for the core and the ring.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use nix::sys::socket::{MsgFlags, send};

use super::Driver;
use super::ring::Ring;
use crate::tls::session::{Failure, Moved, Session};
use crate::tls::{Tls, ktls};

/// A connection's TLS beside its socket.
pub(super) struct TlsConn {
    session: Session,
    /// The chunk the ring is writing, and the core send it completes (if any).
    writing: Option<Option<(Bytes, usize)>>,
    /// The chunk being written is the driver's own and holds the core's send slot (see
    /// `Core::hold_send`).
    held: bool,
    /// The session failed: its socket is being shut; completions are only accounted for.
    failed: bool,
}

impl Driver {
    fn tls_conn(&mut self, key: u32) -> Option<&mut TlsConn> {
        self.tls_conns.get_mut(key as usize)?.as_deref_mut()
    }

    /// Whether `key`'s bytes go through a userspace TLS session.
    pub(super) fn has_tls(&self, key: u32) -> bool {
        self.tls_conns
            .get(key as usize)
            .is_some_and(Option::is_some)
    }

    /// A connection was accepted on the TLS listener: its session starts with the
    /// certificate current now.
    pub(super) fn tls_accepted(&mut self, tls: &Tls, key: u32) {
        let k = key as usize;
        if self.tls_conns.len() <= k {
            self.tls_conns.resize_with(k + 1, || None);
        }
        self.tls_conns[k] = match Session::new(tls.current(), !tls.kernel) {
            Ok(session) => Some(Box::new(TlsConn {
                session,
                writing: None,
                held: false,
                failed: false,
            })),
            Err(e) => {
                tracing::error!("TLS session: {e}");
                let _ = nix::sys::socket::shutdown(self.fd(key), nix::sys::socket::Shutdown::Both);
                None
            }
        };
    }

    /// `n` bytes of ciphertext arrived.
    pub(super) fn tls_received(
        &mut self,
        ring: &mut Ring,
        key: u32,
        n: usize,
        more: bool,
        data: &mut [u8],
    ) {
        let mut plain = std::mem::take(&mut self.plain);
        plain.clear();
        let Some(t) = self.tls_conn(key).filter(|t| !t.failed) else {
            self.plain = plain;
            return;
        };
        match t.session.received(&mut data[..n], &mut plain) {
            Ok(progress) => {
                if progress.established {
                    self.stats.shards[self.id]
                        .tls_handshakes
                        .fetch_add(1, Relaxed);
                }
                self.pump(ring, key);
                let mut more = more;
                if !plain.is_empty() {
                    let len = plain.len();
                    self.core.received(key, Ok(len), more, &mut plain);
                    // The core re-armed its read (or shut): whatever it did stands.
                    more = true;
                } else if !progress.peer_closed {
                    self.core.received_transport(key, more);
                }
                if progress.peer_closed {
                    self.core.received(key, Ok(0), more, &mut []);
                }
                self.maybe_kernel(key);
            }
            Err(f) => self.tls_failed(key, f, Some(more)),
        }
        self.plain = plain;
    }

    /// The session cannot go on: its alert (or the answer to plain HTTP) goes out now and the
    /// core hears end-of-stream (`recv`: the read that brought the failure, and whether it is
    /// still armed). Sends the core waits on fail, but only once nothing is left in flight.
    fn tls_failed(&mut self, key: u32, f: Failure, recv: Option<bool>) {
        self.stats.shards[self.id]
            .tls_failures
            .fetch_add(1, Relaxed);
        tracing::debug!(key, "TLS: {}", f.reason);
        if let Some(reply) = &f.reply {
            // A few bytes into an empty socket buffer: written directly, so they are out
            // before the core's shutdown.
            let _ = send(
                self.fd(key),
                reply,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            );
        }
        let mut unacked = Vec::new();
        if let Some(t) = self.tls_conn(key) {
            t.failed = true;
            if t.writing.is_none() {
                unacked = t.session.unacked();
            }
        }
        match recv {
            Some(more) => self.core.received(key, Ok(0), more, &mut []),
            None => self.core.transport_failed(key),
        }
        self.fail_sends(key, unacked);
    }

    fn fail_sends(&mut self, key: u32, unacked: Vec<(Bytes, usize)>) {
        for (buf, offset) in unacked {
            self.core.sent(key, Err(epipe()), buf, offset);
        }
    }

    /// A write of ciphertext completed.
    pub(super) fn tls_sent(
        &mut self,
        ring: &mut Ring,
        key: u32,
        res: io::Result<usize>,
        buf: Bytes,
        offset: usize,
    ) {
        let fd = self.fd(key);
        let handing = self.handing.is_some();
        // A write a hand-over cancelled is a short one.
        let res = match res {
            Err(e) if handing && e.raw_os_error() == Some(libc::ECANCELED) => Ok(0),
            res => res,
        };
        let Some(t) = self.tls_conn(key) else {
            return;
        };
        if let Ok(n) = res
            && !t.failed
            && offset + n < buf.len()
        {
            if !handing {
                ring.send(fd, key, buf, offset + n);
                return;
            }
            // The rest is owed to the peer before anything else, and moves as ciphertext;
            // the core's send counts as done (its bytes are sealed).
            t.session.unwritten(buf.slice(offset + n..));
        }
        let failed = t.failed;
        let ack = t.writing.take().flatten();
        let held = std::mem::take(&mut t.held);
        match res {
            Ok(_) if !failed => {
                self.chunk_written(key, ack, held);
                self.pump(ring, key);
                self.maybe_kernel(key);
            }
            res => {
                let e = res.err().unwrap_or_else(epipe);
                if !failed {
                    self.tls_failed(key, Failure::internal(e.to_string()), None);
                }
                let mut unacked = self
                    .tls_conn(key)
                    .map(|t| t.session.unacked())
                    .unwrap_or_default();
                unacked.extend(ack);
                if held {
                    unacked.push((Bytes::new(), 0));
                }
                self.fail_sends(key, unacked);
            }
        }
    }

    /// The core's send a written chunk finished (`ack`), or the send slot the driver held for
    /// a chunk of its own, is done.
    fn chunk_written(&mut self, key: u32, ack: Option<(Bytes, usize)>, held: bool) {
        if let Some((plain, off)) = ack {
            let len = plain.len() - off;
            self.core.sent(key, Ok(len), plain, off);
        } else if held {
            self.core.sent(key, Ok(0), Bytes::new(), 0);
        }
    }

    /// The core sends plaintext.
    pub(super) fn tls_send(&mut self, ring: &mut Ring, key: u32, buf: Bytes, offset: usize) {
        let Some(t) = self.tls_conn(key).filter(|t| !t.failed) else {
            self.core.sent(key, Err(epipe()), buf, offset);
            return;
        };
        if !t.session.established() {
            // A refusal or timeout before the handshake ended: a TLS client reads no HTTP
            // yet, so the words are dropped (as written) and the core goes on to close.
            let len = buf.len() - offset;
            self.core.sent(key, Ok(len), buf, offset);
            return;
        }
        match t.session.send(buf.clone(), offset) {
            Ok(()) => self.pump(ring, key),
            Err(f) => {
                // Failed with the others once nothing is in flight (see `tls_failed`).
                t.session.defer_ack(buf, offset);
                self.tls_failed(key, f, None);
            }
        }
    }

    /// The core closes its writing side: a close_notify first, when nothing else is queued.
    pub(super) fn tls_shutdown_write(&mut self, key: u32) {
        let fd = self.fd(key);
        if let Some(t) = self.tls_conn(key)
            && !t.failed
            && t.writing.is_none()
            && t.session.idle()
            && let Some(alert) = t.session.close_notify()
        {
            let _ = send(fd, &alert, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL);
        }
    }

    /// Starts writing the next chunk if none is being written (none once a hand-over began:
    /// the ring must run dry).
    fn pump(&mut self, ring: &mut Ring, key: u32) {
        if self.handing.is_some() {
            return;
        }
        let fd = self.fd(key);
        let Some(t) = self.tls_conn(key) else {
            return;
        };
        if t.writing.is_some() {
            return;
        }
        let Some(chunk) = t.session.next_chunk() else {
            return;
        };
        let own = chunk.ack.is_none();
        t.writing = Some(chunk.ack);
        ring.send(fd, key, chunk.bytes, 0);
        if own {
            let held = self.core.hold_send(key);
            if let Some(t) = self.tls_conn(key) {
                t.held = held;
            }
        }
    }

    /// Starts writing every session's queued ciphertext (after a take-over: sessions that came
    /// with unsent bytes and nothing from the core behind them).
    pub(super) fn tls_pump_all(&mut self, ring: &mut Ring) {
        for key in 0..self.tls_conns.len() as u32 {
            if self.has_tls(key) {
                self.pump(ring, key);
            }
        }
    }

    /// The TLS half of `key` for a successor process: `Ok(None)` for a connection whose bytes
    /// are plain here (none, or kTLS: the kernel's state moves with the socket), `Err` for a
    /// session that cannot move (a handshake under way, TLS 1.2, failed). The core's sends the
    /// session sealed are acknowledged: their bytes move as ciphertext.
    pub(super) fn tls_export(&mut self, key: u32) -> Result<Option<Moved>, ()> {
        let Some(t) = self.tls_conn(key) else {
            return Ok(None);
        };
        if t.failed || t.writing.is_some() {
            return Err(());
        }
        let (moved, acks) = t.session.export().ok_or(())?;
        for ack in acks {
            self.chunk_written(key, Some(ack), false);
        }
        Ok(Some(moved))
    }

    /// A session handed over by the old process, under the core's new key for it.
    pub(super) fn tls_import(&mut self, key: u32, m: Moved) -> Result<(), crate::tls::TlsError> {
        let session = Session::import(m)?;
        let k = key as usize;
        if self.tls_conns.len() <= k {
            self.tls_conns.resize_with(k + 1, || None);
        }
        self.tls_conns[k] = Some(Box::new(TlsConn {
            session,
            writing: None,
            held: false,
            failed: false,
        }));
        Ok(())
    }

    /// A TLS session that cannot move hears what the core had queued and its 1012 close,
    /// written once without waiting, then close_notify; the socket goes with this process.
    pub(super) fn tls_farewell(&mut self, key: u32) {
        let frames = self.core.farewell(key);
        let fd = self.fd(key);
        if let Some(t) = self.tls_conn(key)
            && !t.failed
            && t.writing.is_none()
            && let Some(bytes) = t.session.farewell(&frames)
        {
            let _ = send(fd, &bytes, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL);
        }
    }

    /// With kTLS, an established session with nothing in flight moves into the kernel.
    fn maybe_kernel(&mut self, key: u32) {
        if self.handing.is_some() || !self.tls.as_ref().is_some_and(|t| t.kernel) {
            return;
        }
        let ready = self.tls_conn(key).is_some_and(|t| {
            !t.failed && t.writing.is_none() && t.session.established() && t.session.idle()
        });
        if !ready {
            return;
        }
        let Some(t) = self.tls_conns[key as usize].take() else {
            return;
        };
        let installed = match (self.sockets[key as usize].as_ref(), t.session.into_rustls()) {
            (Some(fd), Some(conn)) => ktls::install(fd, conn),
            _ => Err(crate::tls::TlsError::Keys("session or socket gone".into())),
        };
        if let Err(e) = installed {
            tracing::warn!("kTLS: {e}; closing the connection");
            if let Some(fd) = self.sockets[key as usize].as_ref() {
                let _ =
                    nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
            }
        }
    }
}

fn epipe() -> io::Error {
    io::Error::from_raw_os_error(libc::EPIPE)
}
