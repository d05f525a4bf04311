//! A shard's side of `ringcast upgrade` (issue #31): the old shard gives its listener and
//! every connection that can move (socket and plain-data state) to a shard of the new
//! process over a Unix socket with `SCM_RIGHTS`; the new shard takes them in before it serves.
//!
//! The stream carries frames `[u32 length][u8 descriptors][JSON piece]`. A descriptor rides on
//! the first byte of its frame; the kernel never lets one `recvmsg` read past a message that
//! carried descriptors, so they arrive in the order of their frames and a FIFO pairs them up.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use serde::{Deserialize, Serialize};

use super::Driver;
use crate::shard::handover::Moving;

/// Largest frame a shard accepts: a connection's state with its queued frames.
const MAX_FRAME: usize = 256 << 20;

/// One thing handed over.
#[derive(Debug, Serialize, Deserialize)]
pub enum Piece {
    /// The listening socket (the descriptor).
    Listener,
    /// A connection (the descriptor) and its state.
    Conn(Box<Moving>),
    /// Nothing more from this shard: how many it moved, and how many it had to close.
    Done { moved: u64, closed: u64 },
}

/// Writes `piece`, with `fd` passed along.
pub fn send(sock: &UnixStream, piece: &Piece, fd: Option<RawFd>) -> io::Result<()> {
    let body = serde_json::to_vec(piece).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.push(u8::from(fd.is_some()));
    frame.extend_from_slice(&body);
    let fds = fd.map(|f| [f]);
    let cmsg: Vec<ControlMessage> = fds.iter().map(|f| ControlMessage::ScmRights(f)).collect();
    let iov = [io::IoSlice::new(&frame)];
    let n = loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.map_err(io::Error::from)?,
        }
    };
    (&*sock).write_all(&frame[n..])
}

/// Reads frames and the descriptors that came with them.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl Reader {
    /// The next piece and its descriptor; an error at the end of the stream.
    pub fn next(&mut self, sock: &UnixStream) -> io::Result<(Piece, Option<OwnedFd>)> {
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
                if len > MAX_FRAME {
                    return Err(io::Error::other(format!("a {len}-byte hand-over frame")));
                }
                if self.buf.len() >= 5 + len {
                    let with_fd = self.buf[4] != 0;
                    let piece = serde_json::from_slice(&self.buf[5..5 + len])
                        .map_err(|e| io::Error::other(format!("hand-over frame: {e}")))?;
                    self.buf.drain(..5 + len);
                    let fd = if with_fd {
                        Some(self.fds.pop_front().ok_or_else(|| {
                            io::Error::other("a hand-over frame lost its descriptor")
                        })?)
                    } else {
                        None
                    };
                    return Ok((piece, fd));
                }
            }
            let (n, fds) = match super::ring::recv_with_fds(sock.as_raw_fd(), &mut chunk) {
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
            self.buf.extend_from_slice(&chunk[..n]);
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
    /// connection that can move. A TLS connection (its session is the driver's, not plain data
    /// yet) and one in a state that cannot move (`NotMovable`) are closed; their clients
    /// reconnect.
    pub(super) fn give(&mut self, to: &Path) -> io::Result<Moved> {
        let sock = UnixStream::connect(to)?;
        if let Some(l) = self.listener.take() {
            send(&sock, &Piece::Listener, Some(l.as_raw_fd()))?;
        }
        let mut m = Moved::default();
        for key in self.core.keys() {
            let fd = self.fd(key);
            let state = if self.has_tls(key) || fd < 0 {
                None
            } else {
                self.core.export(key).ok()
            };
            match state {
                Some(state) => {
                    send(&sock, &Piece::Conn(Box::new(state)), Some(fd))?;
                    m.moved += 1;
                }
                None => m.closed += 1,
            }
        }
        send(
            &sock,
            &Piece::Done {
                moved: m.moved,
                closed: m.closed,
            },
            None,
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
                match r.next(&sock)? {
                    (Piece::Listener, Some(fd)) => {
                        if self.listener.is_none() {
                            self.listener = Some(socket2::Socket::from(fd));
                        }
                    }
                    (Piece::Conn(state), Some(fd)) => match self.core.import(*state) {
                        Ok(key) => {
                            let k = key as usize;
                            if self.sockets.len() <= k {
                                self.sockets.resize_with(k + 1, || None);
                            }
                            self.sockets[k] = Some(fd);
                            m.moved += 1;
                        }
                        Err(e) => {
                            tracing::warn!(
                                shard = self.id,
                                "a handed-over connection was refused: {e}"
                            );
                            m.closed += 1;
                        }
                    },
                    (Piece::Done { closed, .. }, _) => {
                        m.closed += closed;
                        break;
                    }
                    (p, None) => {
                        return Err(io::Error::other(format!(
                            "{p:?} came without its descriptor"
                        )));
                    }
                }
            }
        }
        let _ = std::fs::remove_file(&t.socket);
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn descriptors_arrive_with_their_frames() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut p1, p2) = UnixStream::pair().unwrap();
        send(&a, &Piece::Listener, Some(p2.as_raw_fd())).unwrap();
        send(
            &a,
            &Piece::Done {
                moved: 0,
                closed: 3,
            },
            None,
        )
        .unwrap();
        let mut r = Reader::default();
        let (piece, fd) = r.next(&b).unwrap();
        assert!(matches!(piece, Piece::Listener));
        let mut passed = UnixStream::from(fd.expect("a descriptor"));
        passed.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        p1.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        let (piece, fd) = r.next(&b).unwrap();
        assert!(
            matches!(
                piece,
                Piece::Done {
                    moved: 0,
                    closed: 3
                }
            ) && fd.is_none()
        );
        drop(a);
        assert!(r.next(&b).is_err());
    }
}
