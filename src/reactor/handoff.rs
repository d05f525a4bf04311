//! A shard's side of `ringcast upgrade` (issue #31): the old shard gives its listener and
//! every connection that can move (socket and plain-data state) to a shard of the new
//! process over a Unix socket with `SCM_RIGHTS`; the new shard takes them in before it serves.
//!
//! The stream carries frames `[u32 length][u16 descriptors][JSON piece]`. Connections go in
//! batches of up to `BATCH` (the kernel passes at most 253 descriptors a message), so a shard
//! of 18,000 pays ~70 `sendmsg`s, not 18,000. A frame's descriptors ride on its first byte;
//! the kernel never lets one `recvmsg` read past a message that carried descriptors, so they
//! arrive in the order of their frames and a FIFO pairs them up.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use serde::{Deserialize, Serialize};

use super::Driver;
use crate::shard::handover::Moving;

/// Largest frame a shard accepts: a batch of connections' states with their queued frames.
const MAX_FRAME: usize = 256 << 20;
/// Connections per frame (`SCM_MAX_FD` is 253).
const BATCH: usize = 250;
/// A batch is sent early once its states take this many bytes (frames stay below the mmap
/// threshold, see `CHUNK`).
const BATCH_BYTES: usize = 96 << 10;
/// How long a sender waits while the kernel refuses more descriptors in flight (a user may
/// have at most `RLIMIT_NOFILE` of them queued in Unix sockets: `ETOOMANYREFS`).
const INFLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// One connection on the way: the shard's state, and its TLS session's when the driver
/// runs one for it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Handed {
    #[serde(flatten)]
    pub conn: Moving,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::session::Moved>,
}

/// One thing handed over.
#[derive(Debug, Serialize, Deserialize)]
pub enum Piece {
    /// The listening socket (the descriptor).
    Listener,
    /// Another of the node's listening sockets, by name (the descriptor): sent by the old
    /// process's main thread, not a shard, since the shards' fd tables do not hold them.
    Socket(String),
    /// Connections (one descriptor each, in order) and their states.
    Conns(Vec<Handed>),
    /// Nothing more from this shard: how many it moved, and how many it had to close.
    Done { moved: u64, closed: u64 },
}

/// Writes `piece`, with `fds` passed along (at most 253).
pub fn send(sock: &UnixStream, piece: &Piece, fds: &[RawFd]) -> io::Result<()> {
    let body = serde_json::to_vec(piece).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(6 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&(fds.len() as u16).to_le_bytes());
    frame.extend_from_slice(&body);
    let cmsg: Vec<ControlMessage> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    let iov = [io::IoSlice::new(&frame)];
    let deadline = std::time::Instant::now() + INFLIGHT_WAIT;
    let n = loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ETOOMANYREFS) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            r => break r.map_err(io::Error::from)?,
        }
    };
    (&*sock).write_all(&frame[n..])
}

/// Bytes one `recvmsg` reads at most. Below glibc's mmap threshold on purpose: freeing an
/// mmapped block raises that threshold, after which the shard's growing slab and socket
/// table were reallocated inside the heap, leaving the old copies as holes.
const CHUNK: usize = 64 << 10;

/// Reads frames and the descriptors that came with them.
pub struct Reader {
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
    chunk: Vec<u8>,
}

impl Default for Reader {
    fn default() -> Reader {
        Reader {
            buf: Vec::new(),
            fds: VecDeque::new(),
            chunk: vec![0; CHUNK],
        }
    }
}

impl Reader {
    /// The next piece and its descriptors; an error at the end of the stream.
    pub fn next(&mut self, sock: &UnixStream) -> io::Result<(Piece, Vec<OwnedFd>)> {
        loop {
            if self.buf.len() >= 6 {
                let len = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
                if len > MAX_FRAME {
                    return Err(io::Error::other(format!("a {len}-byte hand-over frame")));
                }
                if self.buf.len() >= 6 + len {
                    let nfds = u16::from_le_bytes([self.buf[4], self.buf[5]]) as usize;
                    let piece = serde_json::from_slice(&self.buf[6..6 + len])
                        .map_err(|e| io::Error::other(format!("hand-over frame: {e}")))?;
                    self.buf.drain(..6 + len);
                    if self.fds.len() < nfds {
                        return Err(io::Error::other("a hand-over frame lost its descriptors"));
                    }
                    return Ok((piece, self.fds.drain(..nfds).collect()));
                }
            }
            let (n, fds) = match super::ring::recv_with_fds(sock.as_raw_fd(), &mut self.chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            };
            self.fds.extend(fds);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the old shard went away mid-hand-over",
                ));
            }
            self.buf.extend_from_slice(&self.chunk[..n]);
        }
    }
}

/// A new shard's part in an upgrade: where it listens for the old shards, how many will come,
/// and whom it tells once it listens.
pub struct Takeover {
    pub socket: PathBuf,
    pub senders: usize,
    pub bound: crossbeam_channel::Sender<Result<(), String>>,
}

/// What one shard moved.
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    pub moved: u64,
    pub closed: u64,
}

impl Driver {
    /// The old shard's side, once nothing is in flight in its ring: the listener, then every
    /// connection that can move, a TLS 1.3 session with its keys. One in a state that cannot
    /// move (`NotMovable`) is closed, a TLS session that cannot (TLS 1.2, a handshake under
    /// way) with a 1012 it can still seal; their clients reconnect.
    pub(super) fn give(&mut self, to: &Path) -> io::Result<Moved> {
        let sock = UnixStream::connect(to)?;
        if let Some(l) = self.listener.take() {
            send(&sock, &Piece::Listener, &[l.as_raw_fd()])?;
        }
        let mut m = Moved::default();
        let (mut states, mut fds, mut bytes) = (Vec::with_capacity(BATCH), Vec::new(), 0);
        for key in self.core.keys() {
            let fd = self.fd(key);
            let tls = match self.tls_export(key) {
                Ok(tls) => tls,
                Err(()) => {
                    self.tls_farewell(key);
                    m.closed += 1;
                    continue;
                }
            };
            let state = if fd < 0 {
                None
            } else {
                self.core.export(key).ok()
            };
            let Some(conn) = state else {
                m.closed += 1;
                continue;
            };
            bytes += conn.weight() + tls.as_ref().map_or(0, |t| 256 + t.unsent.len() * 4);
            states.push(Handed { conn, tls });
            fds.push(fd);
            m.moved += 1;
            if states.len() == BATCH || bytes >= BATCH_BYTES {
                send(&sock, &Piece::Conns(std::mem::take(&mut states)), &fds)?;
                fds.clear();
                bytes = 0;
            }
        }
        if !states.is_empty() {
            send(&sock, &Piece::Conns(states), &fds)?;
        }
        send(
            &sock,
            &Piece::Done {
                moved: m.moved,
                closed: m.closed,
            },
            &[],
        )?;
        Ok(m)
    }

    /// The new shard's side, before it serves: listens on `t.socket`, tells the main thread,
    /// then takes in what each of `t.senders` old shards gives. Returns how many arrived.
    pub(super) fn take(&mut self, t: &Takeover) -> io::Result<Moved> {
        let _ = std::fs::remove_file(&t.socket);
        let l = UnixListener::bind(&t.socket)?;
        let _ = t.bound.send(Ok(()));
        let mut m = Moved::default();
        for _ in 0..t.senders {
            let (sock, _) = l.accept()?;
            let mut r = Reader::default();
            loop {
                let (piece, fds) = r.next(&sock)?;
                match piece {
                    Piece::Listener => {
                        let fd = fds.into_iter().next().ok_or_else(|| {
                            io::Error::other("the listener came without its descriptor")
                        })?;
                        if self.listener.is_none() {
                            self.listener = Some(socket2::Socket::from(fd));
                        }
                    }
                    Piece::Socket(name) => {
                        return Err(io::Error::other(format!("a shard was sent socket {name}")));
                    }
                    Piece::Conns(states) => {
                        if states.len() != fds.len() {
                            return Err(io::Error::other(format!(
                                "{} connections came with {} descriptors",
                                states.len(),
                                fds.len()
                            )));
                        }
                        for (state, fd) in states.into_iter().zip(fds) {
                            self.took_in(state, fd, &mut m);
                        }
                    }
                    Piece::Done { closed, .. } => {
                        m.closed += closed;
                        break;
                    }
                }
            }
        }
        let _ = std::fs::remove_file(&t.socket);
        Ok(m)
    }

    fn took_in(&mut self, h: Handed, fd: OwnedFd, m: &mut Moved) {
        if h.tls.is_some() && self.tls.is_none() {
            tracing::warn!(
                shard = self.id,
                "a wss:// connection was handed over to a server without [tls]: closed"
            );
            m.closed += 1;
            return;
        }
        let key = match self.core.import(h.conn) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(shard = self.id, "a handed-over connection was refused: {e}");
                m.closed += 1;
                return;
            }
        };
        let k = key as usize;
        if self.sockets.len() <= k {
            self.sockets.resize_with(k + 1, || None);
        }
        self.sockets[k] = Some(fd);
        if let Some(t) = h.tls
            && let Err(e) = self.tls_import(key, t)
        {
            // Its socket is the core's now: shut, the core frees it as any other.
            tracing::warn!(
                shard = self.id,
                "a handed-over TLS session was refused: {e}"
            );
            self.core.transport_failed(key);
            m.closed += 1;
            return;
        }
        m.moved += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn descriptors_arrive_with_their_frames() {
        let (a, b) = UnixStream::pair().unwrap();
        let pairs: Vec<_> = (0..3).map(|_| UnixStream::pair().unwrap()).collect();
        let passed: Vec<RawFd> = pairs.iter().map(|(_, far)| far.as_raw_fd()).collect();
        send(&a, &Piece::Listener, &passed[..1]).unwrap();
        send(&a, &Piece::Conns(Vec::new()), &passed[1..]).unwrap();
        let done = Piece::Done {
            moved: 0,
            closed: 3,
        };
        send(&a, &done, &[]).unwrap();
        let mut r = Reader::default();
        let (piece, first) = r.next(&b).unwrap();
        assert!(matches!(piece, Piece::Listener) && first.len() == 1);
        let (piece, rest) = r.next(&b).unwrap();
        assert!(matches!(piece, Piece::Conns(_)) && rest.len() == 2);
        // Each descriptor received is the far end of the pair it was sent as.
        for ((near, _), fd) in pairs.iter().zip(first.into_iter().chain(rest)) {
            let mut got = UnixStream::from(fd);
            got.write_all(b"hi").unwrap();
            let mut buf = [0u8; 2];
            (&*near).read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hi");
        }
        let (piece, fds) = r.next(&b).unwrap();
        assert!(matches!(piece, Piece::Done { closed: 3, .. }) && fds.is_empty());
        drop(a);
        assert!(r.next(&b).is_err());
    }
}
