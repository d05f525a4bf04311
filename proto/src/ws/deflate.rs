//! permessage-deflate (RFC 7692), sans-IO: which offer to accept, and the two transforms.
//!
//! The server always answers with `server_no_context_takeover; client_no_context_takeover`, so
//! no connection keeps a compression window: every message is compressed on its own, which is
//! what lets one compressed broadcast frame serve every subscriber that negotiated the
//! extension. Scratch compressors live per thread (one per shard), reset between messages.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::CloseError;

/// The tail every compressed message loses on the wire (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What the server agreed to: the window it compresses with (`server_max_window_bits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// 9..=15: the client may ask for a smaller window than the default 15.
    pub window_bits: u8,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` answer.
    pub fn header(self) -> String {
        let mut h = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            .to_string();
        if self.window_bits < 15 {
            h.push_str(&format!("; server_max_window_bits={}", self.window_bits));
        }
        h
    }
}

/// The first acceptable `permessage-deflate` offer among the client's extension headers.
/// Offers the server cannot honour (an unknown parameter, a window under 9 bits, a malformed
/// value) are skipped, so the extension is declined rather than the handshake failed.
pub fn negotiate(headers: &[String]) -> Option<Agreed> {
    headers
        .iter()
        .flat_map(|h| h.split(','))
        .find_map(|offer| accept(offer.trim()))
}

fn accept(offer: &str) -> Option<Agreed> {
    let mut parts = offer.split(';').map(str::trim);
    if parts.next()? != "permessage-deflate" {
        return None;
    }
    let mut agreed = Agreed { window_bits: 15 };
    let mut seen = Vec::new();
    for p in parts {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        };
        if seen.contains(&name) {
            return None;
        }
        seen.push(name);
        match (name, value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                bits(v)?;
            }
            ("server_max_window_bits", Some(v)) => {
                // zlib has no 8-bit raw window: an offer insisting on it is declined.
                agreed.window_bits = bits(v).filter(|&b| b >= 9)?;
            }
            _ => return None,
        }
    }
    Some(agreed)
}

fn bits(v: &str) -> Option<u8> {
    let b: u8 = v.parse().ok()?;
    (8..=15).contains(&b).then_some(b)
}

thread_local! {
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// A compressed message's payload, inflated; more than `max` bytes of it is 1009 (so a
/// decompression bomb stops at the limit), corrupt data 1007.
pub fn inflate(payload: &[u8], max: usize) -> Result<Vec<u8>, CloseError> {
    INFLATER.with(|cell| {
        let mut d = cell.borrow_mut();
        d.reset(false);
        let mut out: Vec<u8> = Vec::with_capacity((payload.len() * 3).max(64).min(max + 1));
        'inputs: for input in [payload, &TAIL[..]] {
            let mut pos = 0;
            loop {
                if out.capacity() - out.len() < 256 {
                    // Grow by doubling, never past one byte over the limit.
                    let room = (max + 1).saturating_sub(out.len()).max(1);
                    out.reserve(out.capacity().max(256).min(room));
                }
                let (in0, out0) = (d.total_in(), d.total_out());
                let status = d
                    .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| CloseError::invalid_data("corrupt permessage-deflate data"))?;
                pos += (d.total_in() - in0) as usize;
                if out.len() > max {
                    return Err(CloseError::too_big());
                }
                if status == Status::StreamEnd {
                    break 'inputs;
                }
                let room = out.len() < out.capacity();
                let moved = (d.total_in(), d.total_out()) != (in0, out0);
                if room && (pos >= input.len() || !moved) {
                    break;
                }
            }
        }
        Ok(out)
    })
}

thread_local! {
    static DEFLATERS: RefCell<Vec<(u8, Compress)>> = const { RefCell::new(Vec::new()) };
}

/// A message's payload, compressed on its own (no context kept) with a `window_bits` window.
pub fn deflate(payload: &[u8], window_bits: u8) -> Vec<u8> {
    DEFLATERS.with(|cell| {
        let mut all = cell.borrow_mut();
        let i = match all.iter().position(|(b, _)| *b == window_bits) {
            Some(i) => i,
            None => {
                let c = Compress::new_with_window_bits(Compression::fast(), false, window_bits);
                all.push((window_bits, c));
                all.len() - 1
            }
        };
        let c = &mut all[i].1;
        c.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        loop {
            let used = c.total_in() as usize;
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            c.compress_vec(&payload[used..], &mut out, FlushCompress::Sync)
                .expect("deflate into a growing buffer");
            if c.total_in() as usize == payload.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(s: &str) -> Option<Agreed> {
        negotiate(&[s.to_string()])
    }

    #[test]
    fn offers() {
        assert_eq!(
            offer("permessage-deflate; client_max_window_bits"),
            Some(Agreed { window_bits: 15 })
        );
        assert_eq!(
            offer("permessage-deflate; server_max_window_bits=10"),
            Some(Agreed { window_bits: 10 })
        );
        assert_eq!(offer("permessage-deflate; server_max_window_bits=8"), None);
        assert_eq!(offer("permessage-deflate; bogus"), None);
        assert_eq!(offer("permessage-deflate; server_max_window_bits"), None);
        assert_eq!(offer("permessage-deflate; client_max_window_bits=16"), None);
        assert_eq!(
            offer("x-webkit-deflate-frame, permessage-deflate; server_no_context_takeover"),
            Some(Agreed { window_bits: 15 })
        );
        // The first offer is unacceptable, the fallback is taken.
        assert_eq!(
            offer("permessage-deflate; server_max_window_bits=8, permessage-deflate"),
            Some(Agreed { window_bits: 15 })
        );
        assert_eq!(
            Agreed { window_bits: 10 }.header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
        );
    }

    #[test]
    fn round_trips_and_bounds() {
        let text = "{\"n\":1,\"payload\":\"hello hello hello hello hello hello\"}".repeat(50);
        for bits in [9, 12, 15] {
            let z = deflate(text.as_bytes(), bits);
            assert!(z.len() < text.len() / 4, "{bits}: {}", z.len());
            assert_eq!(inflate(&z, 1 << 20).unwrap(), text.as_bytes());
        }
        // RFC 7692 §7.2.3.1: "Hello" compressed.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&hello, 100).unwrap(), b"Hello");
        assert!(deflate(b"", 15).len() <= 2);
        assert_eq!(inflate(&deflate(b"", 15), 10).unwrap(), b"");
        // A bomb: 1 MB of zeros stops at the limit.
        let bomb = deflate(&vec![0u8; 1 << 20], 15);
        assert_eq!(inflate(&bomb, 1000).unwrap_err().code, CloseError::TOO_BIG);
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff], 100).unwrap_err().code,
            CloseError::INVALID_DATA
        );
    }
}
