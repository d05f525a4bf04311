//! TLS 1.3 application records after the handshake, without rustls' connection state: the
//! traffic keys rustls hands over (the same export kTLS takes) and the two sequence numbers.
//! An idle session is then a sealing key and a few dozen bytes, where rustls keeps ~2.3 KB;
//! the opening key is rebuilt for each record received, since clients of a push server send
//! little (heart-beats, subscriptions) while every push is sealed.
//!
//! What this layer does not do, it refuses by closing: TLS 1.2 sessions stay in rustls (see
//! `session`), a peer's KeyUpdate or any handshake message ends the session, and a session
//! nearing the AES-GCM record limit of RFC 8446 §5.5 is closed (the client reconnects with
//! fresh keys) rather than updating its keys.

use ring::aead::{
    AES_128_GCM, AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce,
    UnboundKey,
};
use rustls::ConnectionTrafficSecrets;
use serde::{Deserialize, Serialize};

use super::TlsError;

/// Payload per record (RFC 8446 §5.1).
const MAX_FRAGMENT: usize = 16 * 1024;
/// A protected record's body may exceed its payload by the content type, padding and tag:
/// RFC 8446 §5.2 allows 2^14 + 256.
const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 256;
/// Records sealed or opened under one AES-GCM key before the session is closed: below the
/// 2^24.5 of RFC 8446 §5.5, with room for the closing alert.
const AES_GCM_RECORD_LIMIT: u64 = 1 << 24;

const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;

/// Why the session ended, and what to tell the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The peer sent close_notify.
    PeerClosed,
    /// A record failed: `alert` is the description to send (sealed).
    Failed { reason: &'static str, alert: u8 },
}

/// A TLS 1.3 cipher suite's AEAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

/// A session's record protection as plain data: both directions' traffic keys, nonce bases
/// and next sequence numbers. Secret: it travels only over the upgrade's private Unix socket.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keys {
    pub cipher: Cipher,
    pub tx_key: Vec<u8>,
    pub tx_iv: [u8; NONCE_LEN],
    pub tx_seq: u64,
    pub rx_key: Vec<u8>,
    pub rx_iv: [u8; NONCE_LEN],
    pub rx_seq: u64,
}

impl std::fmt::Debug for Keys {
    // Keys never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("cipher", &self.cipher)
            .field("tx_seq", &self.tx_seq)
            .field("rx_seq", &self.rx_seq)
            .finish_non_exhaustive()
    }
}

/// One direction's traffic key and nonce base, and the next record's sequence number.
struct Direction {
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Direction {
    fn nonce(&mut self) -> Nonce {
        let mut n = self.iv;
        for (b, s) in n[NONCE_LEN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(n)
    }
}

/// A TLS 1.3 session's record protection.
pub struct Records {
    alg: &'static Algorithm,
    seal: LessSafeKey,
    /// The sealing key's bytes: `ring` keeps only the expanded key, and a session handed to
    /// another process (`ringcast upgrade`) must take the key itself along.
    tx_key: [u8; 32],
    tx: Direction,
    /// The opening key's bytes (16 or 32), expanded per record.
    rx_key: [u8; 32],
    rx: Direction,
}

impl Records {
    /// From rustls' export of a TLS 1.3 session: `(next sequence number, secrets)` each way.
    pub fn new(
        tx: (u64, ConnectionTrafficSecrets),
        rx: (u64, ConnectionTrafficSecrets),
    ) -> Result<Records, TlsError> {
        let (alg, tx_key, tx_iv) = parts(&tx.1)?;
        let (rx_alg, rx_key_bytes, rx_iv) = parts(&rx.1)?;
        if !std::ptr::eq(alg, rx_alg) {
            return Err(keys("the two directions use different ciphers"));
        }
        Records::from_parts(alg, (tx.0, tx_key, tx_iv), (rx.0, rx_key_bytes, rx_iv))
    }

    fn from_parts(
        alg: &'static Algorithm,
        tx: (u64, &[u8], [u8; NONCE_LEN]),
        rx: (u64, &[u8], [u8; NONCE_LEN]),
    ) -> Result<Records, TlsError> {
        if tx.1.len() != alg.key_len() || rx.1.len() != alg.key_len() {
            return Err(keys("a key of the wrong size"));
        }
        let seal =
            LessSafeKey::new(UnboundKey::new(alg, tx.1).map_err(|_| keys("bad sealing key"))?);
        let mut tx_key = [0; 32];
        tx_key[..tx.1.len()].copy_from_slice(tx.1);
        let mut rx_key = [0; 32];
        rx_key[..rx.1.len()].copy_from_slice(rx.1);
        Ok(Records {
            alg,
            seal,
            tx_key,
            tx: Direction {
                iv: tx.2,
                seq: tx.0,
            },
            rx_key,
            rx: Direction {
                iv: rx.2,
                seq: rx.0,
            },
        })
    }

    /// The keys and sequence numbers as plain data, for a successor process.
    pub fn export(&self) -> Keys {
        let n = self.alg.key_len();
        let cipher = if std::ptr::eq(self.alg, &AES_128_GCM) {
            Cipher::Aes128Gcm
        } else if std::ptr::eq(self.alg, &AES_256_GCM) {
            Cipher::Aes256Gcm
        } else {
            Cipher::Chacha20Poly1305
        };
        Keys {
            cipher,
            tx_key: self.tx_key[..n].to_vec(),
            tx_iv: self.tx.iv,
            tx_seq: self.tx.seq,
            rx_key: self.rx_key[..n].to_vec(),
            rx_iv: self.rx.iv,
            rx_seq: self.rx.seq,
        }
    }

    /// A session exported by `export`, sealing and opening where it left off.
    pub fn import(k: &Keys) -> Result<Records, TlsError> {
        let alg = match k.cipher {
            Cipher::Aes128Gcm => &AES_128_GCM,
            Cipher::Aes256Gcm => &AES_256_GCM,
            Cipher::Chacha20Poly1305 => &CHACHA20_POLY1305,
        };
        Records::from_parts(
            alg,
            (k.tx_seq, &k.tx_key, k.tx_iv),
            (k.rx_seq, &k.rx_key, k.rx_iv),
        )
    }

    fn limited(&self) -> bool {
        !std::ptr::eq(self.alg, &CHACHA20_POLY1305)
    }

    /// Whether the sealing side is at its record limit (the session must close).
    pub fn worn_out(&self) -> bool {
        self.limited() && self.tx.seq >= AES_GCM_RECORD_LIMIT
    }

    /// Appends `plain` to `out` as application-data records.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        if plain.is_empty() {
            return;
        }
        for chunk in plain.chunks(MAX_FRAGMENT) {
            self.seal_record(APPLICATION_DATA, chunk, out);
        }
    }

    /// Appends an alert record (`level` 1 warning, 2 fatal).
    pub fn seal_alert(&mut self, level: u8, description: u8, out: &mut Vec<u8>) {
        self.seal_record(ALERT, &[level, description], out);
    }

    fn seal_record(&mut self, content_type: u8, payload: &[u8], out: &mut Vec<u8>) {
        let len = payload.len() + 1 + self.alg.tag_len();
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        out.reserve(5 + len);
        out.extend_from_slice(&header);
        let start = out.len();
        out.extend_from_slice(payload);
        out.push(content_type);
        let nonce = self.tx.nonce();
        // Sealing fails only for inputs beyond the AEAD's limits, which a record never is.
        if let Ok(tag) =
            self.seal
                .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start..])
        {
            out.extend_from_slice(tag.as_ref());
        }
    }

    /// Opens the complete records at the front of `buf`, appending application data to
    /// `plain`. Returns how many bytes were consumed (a partial record stays for later).
    pub fn open(&mut self, buf: &mut [u8], plain: &mut Vec<u8>) -> Result<usize, (usize, Ended)> {
        let mut pos = 0;
        while buf.len() - pos >= 5 {
            let header: [u8; 5] = [
                buf[pos],
                buf[pos + 1],
                buf[pos + 2],
                buf[pos + 3],
                buf[pos + 4],
            ];
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if header[0] != APPLICATION_DATA {
                return Err((pos, failed("an unprotected record after the handshake", 10)));
            }
            if header[1..3] != [3, 3] {
                return Err((pos, failed("a record with a wrong version", 70)));
            }
            if len > MAX_CIPHERTEXT || len < 1 + self.alg.tag_len() {
                return Err((pos, failed("a record of an impossible length", 22)));
            }
            if buf.len() - pos < 5 + len {
                break;
            }
            if self.limited() && self.rx.seq >= AES_GCM_RECORD_LIMIT {
                return Err((
                    pos,
                    failed("the peer reached the record limit of its key", 0),
                ));
            }
            let body = &mut buf[pos + 5..pos + 5 + len];
            let opened = UnboundKey::new(self.alg, &self.rx_key[..self.alg.key_len()])
                .map(LessSafeKey::new)
                .and_then(|key| key.open_in_place(self.rx.nonce(), Aad::from(header), body));
            let Ok(inner) = opened else {
                return Err((pos, failed("a record that does not decrypt", 20)));
            };
            // The content type is the last non-zero byte; zeros after it are padding.
            let Some(end) = inner.iter().rposition(|&b| b != 0) else {
                return Err((pos, failed("a record without a content type", 10)));
            };
            pos += 5 + len;
            match inner[end] {
                APPLICATION_DATA => plain.extend_from_slice(&inner[..end]),
                ALERT if inner[..end] == [1, 0] || inner[..end] == [2, 0] => {
                    return Err((pos, Ended::PeerClosed));
                }
                ALERT => return Err((pos, failed("the peer sent an alert", 0))),
                HANDSHAKE => {
                    return Err((
                        pos,
                        failed("a handshake message after the handshake (key update)", 10),
                    ));
                }
                _ => return Err((pos, failed("a record of an unknown type", 10))),
            }
        }
        Ok(pos)
    }
}

fn keys(why: &str) -> TlsError {
    TlsError::Keys(why.into())
}

fn failed(reason: &'static str, alert: u8) -> Ended {
    Ended::Failed { reason, alert }
}

fn parts(
    s: &ConnectionTrafficSecrets,
) -> Result<(&'static Algorithm, &[u8], [u8; NONCE_LEN]), TlsError> {
    let (alg, key, iv) = match s {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
        _ => return Err(keys("a cipher this record layer does not seal")),
    };
    let iv: [u8; NONCE_LEN] = iv
        .as_ref()
        .try_into()
        .map_err(|_| keys("a nonce base of the wrong size"))?;
    Ok((alg, key.as_ref(), iv))
}
