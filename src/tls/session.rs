//! One connection's TLS, sans-IO: ciphertext from the socket in, plaintext for the shard core
//! out; the core's plaintext sends in, ciphertext chunks for the socket out. The handshake runs
//! in rustls' unbuffered API, so the connection owns no record buffers: a received record is
//! decrypted from the ring's buffer, and only a record split across reads is kept (in a buffer
//! freed as soon as it completes). Once a TLS 1.3 handshake is done and nothing is in flight,
//! rustls hands the traffic keys over (as it would to kTLS) and `record` seals and opens from
//! then on, so an idle session is its keys, not rustls' ~3 KB of connection state. TLS 1.2
//! sessions stay in rustls.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use rustls::{ProtocolVersion, ServerConfig};

use super::record::{Ended, Keys, Records};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};

/// A record's framing cost beyond its payload (TLS 1.2 GCM: 5 header + 8 nonce + 16 tag; TLS
/// 1.3: 5 + 16 + 1 content type), rounded up.
const RECORD_OVERHEAD: usize = 32;
/// Payload per record.
const MAX_FRAGMENT: usize = 16 * 1024;
/// Ciphertext kept waiting for the rest of a record or handshake message. rustls refuses a
/// record longer than 16 KiB + overhead and a handshake message over 64 KiB before this fills.
const MAX_PENDING: usize = 80 * 1024;

/// What the peer sent first when it was not TLS: a `ws://` or `http://` client on the TLS port
/// gets a readable answer instead of a TLS alert it would show as garbage.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 64\r\nConnection: close\r\n\r\nThis port speaks TLS: connect with wss:// or https:// instead.\r\n";

/// Why a connection's TLS ended; `reply` (an alert, or the answer to plain HTTP) goes to the
/// peer before the socket is shut.
#[derive(Debug)]
pub struct Failure {
    pub reason: String,
    pub reply: Option<Bytes>,
    /// The peer spoke plain HTTP on the TLS port.
    pub plain_http: bool,
}

/// Ciphertext for the socket, in order. `ack` is the core's send it finishes: the core hears
/// its send completed once the last byte of this chunk is written.
pub struct Chunk {
    pub bytes: Bytes,
    pub ack: Option<(Bytes, usize)>,
}

/// A session as plain data for a successor process (`ringcast upgrade`): its keys, a partial
/// record received, and ciphertext already sealed but not yet written (it goes out first, so
/// the peer sees one unbroken stream of records).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Moved {
    pub keys: Keys,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsent: Vec<u8>,
}

/// What a `received` call did beyond the plaintext it appended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The handshake completed during this call.
    pub established: bool,
    /// The peer sent close_notify: no more plaintext will come.
    pub peer_closed: bool,
}

/// Who protects the records.
// The session is boxed by the driver already: `Records` inline saves an allocation per
// connection, and rustls' far larger state is the one behind a box.
#[allow(clippy::large_enum_variant)]
enum Engine {
    /// rustls: the handshake, and TLS 1.2 sessions throughout.
    Rustls(Box<UnbufferedServerConnection>),
    /// A TLS 1.3 session after its handshake: the keys alone.
    Records(Records),
    /// Handed over (kTLS) or failed half-way: nothing left to protect with.
    Gone,
}

/// One connection's TLS state.
pub struct Session {
    engine: Engine,
    /// Leave rustls for `Records` after a TLS 1.3 handshake (not when the kernel takes over).
    compact: bool,
    /// Ciphertext received but not yet consumed (a partial record): empty, and unallocated,
    /// between records.
    pending: Vec<u8>,
    /// Handshake bytes encoded but not yet queued (a flight is sent as one chunk).
    flight: Vec<u8>,
    out: VecDeque<Chunk>,
    established: bool,
    seen_bytes: bool,
    /// Handshake bytes went to the peer (after which alerts may have to be encrypted).
    spoke: bool,
}

impl Session {
    /// A fresh server-side session with the configuration current at accept; `compact`: move
    /// TLS 1.3 sessions to `Records` after the handshake (the configuration must allow secret
    /// extraction, as `super::server_config` does).
    pub fn new(config: Arc<ServerConfig>, compact: bool) -> Result<Session, rustls::Error> {
        Ok(Session {
            engine: Engine::Rustls(Box::new(UnbufferedServerConnection::new(config)?)),
            compact,
            pending: Vec::new(),
            flight: Vec::new(),
            out: VecDeque::new(),
            established: false,
            seen_bytes: false,
            spoke: false,
        })
    }

    /// Whether the handshake has completed.
    pub fn established(&self) -> bool {
        self.established
    }

    /// Whether the session has left rustls for `record::Records`.
    pub fn compacted(&self) -> bool {
        matches!(self.engine, Engine::Records(_))
    }

    /// Takes `data` from the socket: decrypted application data is appended to `plain`,
    /// handshake answers are queued for `next_chunk`.
    pub fn received(&mut self, data: &mut [u8], plain: &mut Vec<u8>) -> Result<Progress, Failure> {
        // Hostile bytes reach rustls here. Should its state machine ever panic on them, only
        // this connection ends, never its shard's other sessions.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.take(data, plain)))
            .unwrap_or_else(|_| Err(Failure::internal("TLS state machine panicked".into())))
    }

    fn take(&mut self, data: &mut [u8], plain: &mut Vec<u8>) -> Result<Progress, Failure> {
        if !self.seen_bytes && !data.is_empty() {
            self.seen_bytes = true;
            // Every TLS connection opens with a handshake record (content type 22).
            if data[0] != 22 && data[0].is_ascii_uppercase() {
                return Err(Failure {
                    reason: "plain HTTP on the TLS port".into(),
                    reply: Some(Bytes::from_static(PLAIN_HTTP_ANSWER)),
                    plain_http: true,
                });
            }
        }
        let was = self.established;
        let mut progress = Progress::default();
        if self.pending.is_empty() {
            let used = self.consume(data, plain, &mut progress)?;
            if used < data.len() {
                self.pending.extend_from_slice(&data[used..]);
            }
        } else {
            if self.pending.len() + data.len() > MAX_PENDING {
                return Err(Failure::internal(
                    "a TLS record or handshake message too large".into(),
                ));
            }
            self.pending.extend_from_slice(data);
            let mut pending = std::mem::take(&mut self.pending);
            let used = self.consume(&mut pending, plain, &mut progress)?;
            pending.drain(..used);
            if !pending.is_empty() {
                self.pending = pending;
            }
        }
        progress.established = self.established && !was;
        if self.compact {
            self.leave_rustls()?;
        }
        Ok(progress)
    }

    /// Runs the engine over `buf`; returns how many bytes it consumed.
    fn consume(
        &mut self,
        buf: &mut [u8],
        plain: &mut Vec<u8>,
        progress: &mut Progress,
    ) -> Result<usize, Failure> {
        let Engine::Records(r) = &mut self.engine else {
            return self.process(buf, plain, progress);
        };
        match r.open(buf, plain) {
            Ok(used) => Ok(used),
            Err((used, Ended::PeerClosed)) => {
                progress.peer_closed = true;
                Ok(used)
            }
            Err((_, Ended::Failed { reason, alert })) => {
                let mut reply = Vec::new();
                match alert {
                    0 => r.seal_alert(1, 0, &mut reply),
                    a => r.seal_alert(2, a, &mut reply),
                }
                Err(Failure {
                    reason: reason.into(),
                    reply: Some(Bytes::from(reply)),
                    plain_http: false,
                })
            }
        }
    }

    /// A TLS 1.3 session whose handshake is over and whose output is all queued leaves rustls
    /// for `Records`, keeping the keys and sequence numbers rustls reached.
    fn leave_rustls(&mut self) -> Result<(), Failure> {
        let ready = match &self.engine {
            Engine::Rustls(conn) => {
                self.established
                    && self.pending.is_empty()
                    && self.flight.is_empty()
                    && !conn.wants_write()
                    && conn.protocol_version() == Some(ProtocolVersion::TLSv1_3)
            }
            _ => false,
        };
        if !ready {
            return Ok(());
        }
        if let Engine::Rustls(conn) = std::mem::replace(&mut self.engine, Engine::Gone) {
            let (secrets, _updates) = conn
                .dangerous_into_kernel_connection()
                .map_err(|e| Failure::internal(format!("TLS key hand-over: {e}")))?;
            self.engine = Engine::Records(
                Records::new(secrets.tx, secrets.rx)
                    .map_err(|e| Failure::internal(e.to_string()))?,
            );
        }
        Ok(())
    }

    /// Runs rustls over `buf` until it needs more bytes; returns how many it consumed.
    fn process(
        &mut self,
        buf: &mut [u8],
        plain: &mut Vec<u8>,
        progress: &mut Progress,
    ) -> Result<usize, Failure> {
        let mut used = 0;
        loop {
            let Engine::Rustls(conn) = &mut self.engine else {
                return Err(Failure::internal("TLS session gone".into()));
            };
            let UnbufferedStatus { mut discard, state } =
                conn.process_tls_records(&mut buf[used..]);
            let mut failed = None;
            let more = match state {
                Err(e) => {
                    failed = Some(e);
                    false
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(r) = records.next_record() {
                        match r {
                            Ok(r) => {
                                discard += r.discard;
                                plain.extend_from_slice(r.payload);
                            }
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    failed.is_none()
                }
                Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                    encode_into(&mut self.flight, |b| enc.encode(b))
                        .map_err(|e| Failure::internal(format!("{e:?}")))?;
                    true
                }
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    t.done();
                    self.queue_flight();
                    true
                }
                Ok(ConnectionState::WriteTraffic(_)) => {
                    self.established = true;
                    false
                }
                Ok(ConnectionState::BlockedHandshake) => false,
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                    progress.peer_closed = true;
                    false
                }
                Ok(_) => {
                    failed = Some(rustls::Error::General("early data is not accepted".into()));
                    false
                }
            };
            used += discard;
            if let Some(e) = failed {
                return Err(self.fail(e.to_string()));
            }
            if !more {
                return Ok(used);
            }
        }
    }

    fn queue_flight(&mut self) {
        if !self.flight.is_empty() {
            self.spoke = true;
            let bytes = Bytes::from(std::mem::take(&mut self.flight));
            self.out.push_back(Chunk { bytes, ack: None });
        }
    }

    /// A failure with whatever alert rustls queued for the peer. Only queued records are
    /// asked for: after an error, rustls must not be made to deframe again (its handshake
    /// reassembly still points into input already discarded).
    fn fail(&mut self, reason: String) -> Failure {
        let mut alert = Vec::new();
        for _ in 0..4 {
            let Engine::Rustls(conn) = &mut self.engine else {
                break;
            };
            if !conn.wants_write() {
                break;
            }
            match conn.process_tls_records(&mut []).state {
                Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                    if encode_into(&mut alert, |b| enc.encode(b)).is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
        if alert.is_empty() && !self.spoke {
            // rustls answers some malformed openings with silence; before anything is
            // encrypted a plaintext decode_error alert is still ours to send.
            alert.extend_from_slice(&[21, 3, 3, 0, 2, 2, 50]);
        }
        Failure {
            reason,
            reply: (!alert.is_empty()).then(|| Bytes::from(alert)),
            plain_http: false,
        }
    }

    /// The core sends `buf[offset..]`: encrypted and queued. Only once `established`: before
    /// that the peer reads no HTTP, so the driver drops what the core says (a refusal at accept,
    /// a handshake timeout) and just closes.
    pub fn send(&mut self, buf: Bytes, offset: usize) -> Result<(), Failure> {
        if !self.established {
            return Err(Failure::internal(
                "nothing can be sent before the TLS handshake".into(),
            ));
        }
        let sealed = self.seal(&buf[offset..])?;
        self.out.push_back(Chunk {
            bytes: sealed,
            ack: Some((buf, offset)),
        });
        Ok(())
    }

    /// Encrypts application data into records (flushing any handshake message rustls wants
    /// out first, e.g. a TLS 1.3 key update answer).
    fn seal(&mut self, plain: &[u8]) -> Result<Bytes, Failure> {
        if let Engine::Records(r) = &mut self.engine {
            if r.worn_out() {
                let mut reply = Vec::new();
                r.seal_alert(1, 0, &mut reply);
                return Err(Failure {
                    reason: "the session's key reached its record limit".into(),
                    reply: Some(Bytes::from(reply)),
                    plain_http: false,
                });
            }
            let mut out = Vec::new();
            r.seal(plain, &mut out);
            return Ok(Bytes::from(out));
        }
        for _ in 0..8 {
            let Engine::Rustls(conn) = &mut self.engine else {
                return Err(Failure::internal("TLS session gone".into()));
            };
            let state = match conn.process_tls_records(&mut []).state {
                Ok(s) => s,
                Err(e) => return Err(self.fail(e.to_string())),
            };
            match state {
                ConnectionState::WriteTraffic(mut w) => {
                    let records = plain.len().div_ceil(MAX_FRAGMENT).max(1);
                    let mut out = vec![0; plain.len() + records * RECORD_OVERHEAD];
                    let n = match w.encrypt(plain, &mut out) {
                        Ok(n) => n,
                        Err(EncryptError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) => {
                            out.resize(required_size, 0);
                            w.encrypt(plain, &mut out)
                                .map_err(|e| Failure::internal(format!("{e:?}")))?
                        }
                        Err(e) => return Err(Failure::internal(format!("{e:?}"))),
                    };
                    out.truncate(n);
                    return Ok(Bytes::from(out));
                }
                ConnectionState::EncodeTlsData(mut enc) => {
                    encode_into(&mut self.flight, |b| enc.encode(b))
                        .map_err(|e| Failure::internal(format!("{e:?}")))?;
                }
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    self.queue_flight();
                }
                other => {
                    return Err(Failure::internal(format!(
                        "cannot send in TLS state {other:?}"
                    )));
                }
            }
        }
        Err(Failure::internal("TLS never became writable".into()))
    }

    /// A close_notify alert, if the session can still send one.
    pub fn close_notify(&mut self) -> Option<Bytes> {
        if !self.established {
            return None;
        }
        let conn = match &mut self.engine {
            Engine::Records(r) => {
                let mut out = Vec::new();
                r.seal_alert(1, 0, &mut out);
                return Some(Bytes::from(out));
            }
            Engine::Rustls(conn) => conn,
            Engine::Gone => return None,
        };
        match conn.process_tls_records(&mut []).state {
            Ok(ConnectionState::WriteTraffic(mut w)) => {
                let mut out = vec![0; 64];
                let n = w.queue_close_notify(&mut out).ok()?;
                out.truncate(n);
                Some(Bytes::from(out))
            }
            _ => None,
        }
    }

    /// The next ciphertext to write, if any.
    pub fn next_chunk(&mut self) -> Option<Chunk> {
        let c = self.out.pop_front();
        if self.out.is_empty() && self.out.capacity() > 0 {
            // An idle connection keeps no queue allocation.
            self.out = VecDeque::new();
        }
        c
    }

    /// Nothing is waiting to be written.
    pub fn idle(&self) -> bool {
        self.out.is_empty() && self.flight.is_empty() && self.pending.is_empty()
    }

    /// Keeps the core's send `buf[offset..]` (not sealed: the session failed) to be reported
    /// with the others by `unacked`.
    pub fn defer_ack(&mut self, buf: Bytes, offset: usize) {
        self.out.push_back(Chunk {
            bytes: Bytes::new(),
            ack: Some((buf, offset)),
        });
    }

    /// The core's sends queued and not yet acknowledged.
    pub fn unacked(&mut self) -> Vec<(Bytes, usize)> {
        self.out.drain(..).filter_map(|c| c.ack).collect()
    }

    /// The session as plain data, with the core's sends its queued chunks complete (the
    /// caller acknowledges them: their bytes are sealed and move as `unsent`). Only a TLS 1.3
    /// session past its handshake can move; rustls' own state (a handshake under way, TLS
    /// 1.2) cannot, and is left untouched.
    pub fn export(&mut self) -> Option<(Moved, Vec<(Bytes, usize)>)> {
        let Engine::Records(r) = &self.engine else {
            return None;
        };
        if !self.flight.is_empty() {
            return None;
        }
        let keys = r.export();
        let mut unsent = Vec::new();
        let mut acks = Vec::new();
        for c in self.out.drain(..) {
            unsent.extend_from_slice(&c.bytes);
            acks.extend(c.ack);
        }
        let moved = Moved {
            keys,
            pending: std::mem::take(&mut self.pending),
            unsent,
        };
        Some((moved, acks))
    }

    /// A session `export`ed by another process, established, its unsent ciphertext first in
    /// line.
    pub fn import(m: Moved) -> Result<Session, super::TlsError> {
        let mut out = VecDeque::new();
        if !m.unsent.is_empty() {
            out.push_back(Chunk {
                bytes: Bytes::from(m.unsent),
                ack: None,
            });
        }
        Ok(Session {
            engine: Engine::Records(Records::import(&m.keys)?),
            compact: true,
            pending: m.pending,
            flight: Vec::new(),
            out,
            established: true,
            seen_bytes: true,
            spoke: true,
        })
    }

    /// Puts ciphertext a write did not finish back in front of the queue (a hand-over
    /// cancelled the write): it is still owed to the peer before anything else.
    pub fn unwritten(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.out.push_front(Chunk { bytes, ack: None });
        }
    }

    /// For a session that cannot move: everything queued and `frames` sealed after it, then
    /// close_notify, as one buffer to write once. `None` if nothing can be sealed.
    pub fn farewell(&mut self, frames: &[Bytes]) -> Option<Bytes> {
        if !self.established || !self.flight.is_empty() {
            return None;
        }
        let mut all = Vec::new();
        for c in self.out.drain(..) {
            all.extend_from_slice(&c.bytes);
        }
        for f in frames {
            all.extend_from_slice(&self.seal(f).ok()?);
        }
        all.extend_from_slice(&self.close_notify()?);
        Some(Bytes::from(all))
    }

    /// Hands the rustls connection over for kTLS (see `ktls`): only sound while `idle`, and
    /// only for a session made without `compact`.
    pub fn into_rustls(self) -> Option<UnbufferedServerConnection> {
        match self.engine {
            Engine::Rustls(conn) => Some(*conn),
            _ => None,
        }
    }
}

impl Failure {
    /// A failure with nothing to tell the peer.
    pub fn internal(reason: String) -> Failure {
        Failure {
            reason,
            reply: None,
            plain_http: false,
        }
    }
}

/// Runs an encoder that reports the size it needs, growing `into` to fit.
fn encode_into(
    into: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), EncodeError> {
    let start = into.len();
    into.resize(start + 4096, 0);
    let n = match encode(&mut into[start..]) {
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            into.resize(start + required_size, 0);
            encode(&mut into[start..])
        }
        r => r,
    };
    match n {
        Ok(n) => {
            into.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            into.truncate(start);
            Err(e)
        }
    }
}
