//! WebSocket frame wire format (RFC 6455 §5.2), sans-IO.
//!
//! Both roles. The server's: `decode` takes masked client frames and unmasks them in place so a
//! payload is never copied, and `encode` writes unmasked server frames (the same bytes for every
//! recipient, so one encoded frame is shared by all subscribers). The client's, for the load
//! generator and tests: `decode_from_server` reads unmasked frames and `encode_masked` writes
//! masked ones.

use bytes::{BufMut, Bytes, BytesMut};

use super::CloseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// A frame's opcode (RFC 6455 §5.2).
pub enum Opcode {
    /// The next fragment of a message.
    Continuation,
    /// A UTF-8 text message (or its first fragment).
    Text,
    /// A binary message (or its first fragment).
    Binary,
    /// The close handshake.
    Close,
    /// A ping, to be answered with a pong.
    Ping,
    /// The answer to a ping (or an unsolicited heartbeat).
    Pong,
}

impl Opcode {
    fn from_bits(b: u8) -> Option<Opcode> {
        Some(match b {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0,
            Opcode::Text => 1,
            Opcode::Binary => 2,
            Opcode::Close => 8,
            Opcode::Ping => 9,
            Opcode::Pong => 10,
        }
    }

    /// Close, ping and pong: never fragmented, at most 125 bytes.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// One decoded frame: its header and where its (unmasked) payload sits in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message's last fragment.
    pub fin: bool,
    /// RSV1: the message is compressed (permessage-deflate; first frame of a message only).
    pub rsv1: bool,
    /// What the frame carries.
    pub opcode: Opcode,
    /// Where its (unmasked) payload lies in the buffer.
    pub payload: std::ops::Range<usize>,
    /// Bytes of input this frame occupied; the next frame starts there.
    pub len: usize,
}

/// What the bytes received so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame, unmasked in place.
    Frame(Frame),
    /// A frame is still incomplete. `payload_seen` is how many payload bytes are already here
    /// (unmasked in place at `payload_start`), so text can be validated before the frame ends.
    Partial {
        /// The opcode, once the header is in.
        opcode: Option<Opcode>,
        /// RSV1 is set (a compressed message: its bytes are no text until inflated).
        rsv1: bool,
        /// Where the payload starts.
        payload_start: usize,
        /// How many payload bytes are in so far.
        payload_seen: usize,
    },
}

/// Reads one client frame from the front of `buf`, unmasking its payload in place.
/// `max_payload` bounds a single frame (and so the memory a connection can make us hold).
pub fn decode(buf: &mut [u8], max_payload: usize) -> Result<Decoded, CloseError> {
    decode_with(buf, max_payload, false)
}

/// `decode`, with RSV1 allowed on data frames when permessage-deflate was negotiated.
pub fn decode_with(
    buf: &mut [u8],
    max_payload: usize,
    deflate: bool,
) -> Result<Decoded, CloseError> {
    let partial = Decoded::Partial {
        opcode: None,
        rsv1: false,
        payload_start: 0,
        payload_seen: 0,
    };
    if buf.len() < 2 {
        return Ok(partial);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let rsv1 = b0 & 0x40 != 0;
    if b0 & 0x30 != 0 || (rsv1 && !deflate) {
        return Err(CloseError::protocol(
            "reserved bits set without an extension",
        ));
    }
    let opcode =
        Opcode::from_bits(b0 & 0x0f).ok_or_else(|| CloseError::protocol("reserved opcode"))?;
    if rsv1 && opcode.is_control() {
        return Err(CloseError::protocol("a control frame cannot be compressed"));
    }
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(CloseError::protocol("client frames must be masked"));
    }
    let (len, mut pos) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(partial);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(partial);
            }
            let n = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
            if n >> 63 != 0 {
                return Err(CloseError::protocol("64-bit length with the high bit set"));
            }
            (n, 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode.is_control() {
        if !fin {
            return Err(CloseError::protocol("fragmented control frame"));
        }
        if len > 125 {
            return Err(CloseError::protocol("control frame payload over 125 bytes"));
        }
    }
    if len > max_payload as u64 {
        return Err(CloseError::too_big());
    }
    let len = len as usize;
    if buf.len() < pos + 4 {
        return Ok(Decoded::Partial {
            opcode: Some(opcode),
            rsv1,
            payload_start: pos + 4,
            payload_seen: 0,
        });
    }
    let mask: [u8; 4] = buf[pos..pos + 4].try_into().expect("4 bytes");
    pos += 4;
    let available = (buf.len() - pos).min(len);
    // Unmasking is idempotent only once, so a partial frame is unmasked on a copy by the caller
    // (see `peek_unmasked`); a complete frame is unmasked here, in place, exactly once.
    if available < len {
        return Ok(Decoded::Partial {
            opcode: Some(opcode),
            rsv1,
            payload_start: pos,
            payload_seen: available,
        });
    }
    unmask(&mut buf[pos..pos + len], mask);
    Ok(Decoded::Frame(Frame {
        fin,
        rsv1,
        opcode,
        payload: pos..pos + len,
        len: pos + len,
    }))
}

/// Payload bytes `from..to` of a still-incomplete frame, unmasked into `out`; `buf` starts at
/// the frame's first byte. Used to fail fast on invalid UTF-8 before the frame has arrived,
/// looking at each byte once however many reads the frame takes.
pub fn peek_unmasked(buf: &[u8], payload_start: usize, from: usize, to: usize, out: &mut Vec<u8>) {
    let m: [u8; 4] = buf[payload_start - 4..payload_start]
        .try_into()
        .expect("mask precedes payload");
    let mask = [
        m[from % 4],
        m[(from + 1) % 4],
        m[(from + 2) % 4],
        m[(from + 3) % 4],
    ];
    out.clear();
    out.extend_from_slice(&buf[payload_start + from..payload_start + to]);
    unmask(out, mask);
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    // Word-at-a-time XOR: this loop touches every inbound byte.
    let m = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let w = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ m;
        c.copy_from_slice(&w.to_ne_bytes());
    }
    let rest = chunks.into_remainder();
    let mb = m.to_ne_bytes();
    for (i, b) in rest.iter_mut().enumerate() {
        *b ^= mb[i];
    }
}

/// Length of the header of an unmasked server frame carrying `len` payload bytes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// Writes the header of a final, unmasked server frame.
pub fn put_header(out: &mut impl BufMut, opcode: Opcode, len: usize) {
    out.put_u8(0x80 | opcode.bits());
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=65535 => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
}

/// One complete server frame whose payload is compressed (permessage-deflate: RSV1 set).
pub fn encode_deflated(opcode: Opcode, compressed: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(compressed.len()) + compressed.len());
    put_header(&mut out, opcode, compressed.len());
    out[0] |= 0x40;
    out.put_slice(compressed);
    out.freeze()
}

/// One complete server frame, ready to be shared by every recipient.
pub fn encode(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    put_header(&mut out, opcode, payload.len());
    out.put_slice(payload);
    out.freeze()
}

/// A close frame with a status code and a reason (truncated to fit the 125-byte control limit
/// on a character boundary).
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(Opcode::Close, &payload)
}

/// The client's side: one unmasked server frame at the front of `buf`; `Ok(None)` until it is
/// whole. A masked frame or an unknown opcode is an error (a server never sends either).
pub fn decode_from_server(buf: &[u8]) -> Result<Option<Frame>, CloseError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let opcode = Opcode::from_bits(buf[0] & 0x0f).ok_or(CloseError::protocol("unknown opcode"))?;
    if buf[1] & 0x80 != 0 {
        return Err(CloseError::protocol("masked frame from a server"));
    }
    let (len, off) = match buf[1] & 0x7f {
        126 if buf.len() < 4 => return Ok(None),
        127 if buf.len() < 10 => return Ok(None),
        126 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 => (
            u64::from_be_bytes([
                buf[2], buf[3], buf[4], buf[5], buf[6], buf[7], buf[8], buf[9],
            ]),
            10,
        ),
        n => (u64::from(n), 2),
    };
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(off))
        .ok_or_else(CloseError::too_big)?;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(Frame {
        fin: buf[0] & 0x80 != 0,
        rsv1: buf[0] & 0x40 != 0,
        opcode,
        payload: off..end,
        len: end,
    }))
}

/// A masked client frame: for tests and the load generator, which speak as clients.
pub fn encode_masked(opcode: Opcode, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + payload.len());
    out.push(if fin { 0x80 } else { 0 } | opcode.bits());
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], mask);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(buf: &mut [u8]) -> Frame {
        match decode(buf, 1 << 20).unwrap() {
            Decoded::Frame(f) => f,
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn the_client_role_reads_what_the_server_role_writes() {
        for n in [0, 5, 125, 126, 65535, 65536] {
            let payload = vec![7u8; n];
            let wire = encode(Opcode::Binary, &payload);
            for cut in [0, 1, wire.len() / 2, wire.len() - 1] {
                if cut < wire.len() {
                    assert_eq!(decode_from_server(&wire[..cut]), Ok(None), "{n}/{cut}");
                }
            }
            let f = decode_from_server(&wire).unwrap().unwrap();
            assert!(f.fin && f.opcode == Opcode::Binary && f.len == wire.len());
            assert_eq!(&wire[f.payload], &payload[..]);
        }
        assert!(
            decode_from_server(&encode_masked(Opcode::Text, true, b"x", [1, 2, 3, 4])).is_err()
        );
        assert!(decode_from_server(&[0x83, 0]).is_err());
        assert!(
            decode_from_server(&[0x82, 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .is_err()
        );
    }

    #[test]
    fn rfc_masked_hello() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let mut b = vec![
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let f = frame(&mut b);
        assert!(f.fin);
        assert_eq!(f.opcode, Opcode::Text);
        assert_eq!(&b[f.payload], b"Hello");
        assert_eq!(f.len, 11);
    }

    #[test]
    fn rfc_unmasked_server_frames() {
        assert_eq!(&encode(Opcode::Text, b"Hello")[..], b"\x81\x05Hello");
        assert_eq!(&encode(Opcode::Pong, b"Hello")[..], b"\x8a\x05Hello");
        let big = encode(Opcode::Binary, &[0u8; 256]);
        assert_eq!(&big[..4], &[0x82, 0x7e, 0x01, 0x00]);
        let huge = encode(Opcode::Binary, &[0u8; 65536]);
        assert_eq!(&huge[..10], &[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn round_trips_every_length_class() {
        for n in [0, 1, 125, 126, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut b = encode_masked(Opcode::Binary, true, &payload, [1, 2, 3, 4]);
            let f = frame(&mut b);
            assert_eq!(&b[f.payload], &payload[..]);
        }
    }

    #[test]
    fn partial_until_complete() {
        let full = encode_masked(Opcode::Text, true, b"hello world", [9, 8, 7, 6]);
        for cut in 0..full.len() {
            let mut b = full[..cut].to_vec();
            assert!(matches!(decode(&mut b, 100), Ok(Decoded::Partial { .. })));
        }
        let mut b = full[..10].to_vec();
        if let Ok(Decoded::Partial {
            payload_start,
            payload_seen,
            ..
        }) = decode(&mut b, 100)
        {
            let mut out = Vec::new();
            peek_unmasked(&b, payload_start, 0, payload_seen, &mut out);
            assert_eq!(out, b"hell");
            peek_unmasked(&b, payload_start, 1, payload_seen, &mut out);
            assert_eq!(out, b"ell");
        } else {
            panic!()
        }
    }

    #[test]
    fn violations_close_with_the_right_code() {
        let cases: [(Vec<u8>, u16); 6] = [
            (vec![0x81, 0x05, b'H', b'e', b'l', b'l', b'o'], 1002), // unmasked
            (vec![0xc1, 0x80, 0, 0, 0, 0], 1002),                   // RSV1
            (vec![0x83, 0x80, 0, 0, 0, 0], 1002),                   // opcode 3
            (vec![0x09, 0x80, 0, 0, 0, 0], 1002),                   // fragmented ping
            (vec![0x89, 0xfe, 0, 126, 0, 0, 0, 0], 1002),           // ping of 126
            (vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0], 1002),    // len high bit
        ];
        for (mut b, code) in cases {
            assert_eq!(decode(&mut b, 1000).unwrap_err().code, code, "{b:x?}");
        }
        let mut b = encode_masked(Opcode::Binary, true, &[0; 2000], [0; 4]);
        assert_eq!(decode(&mut b, 1000).unwrap_err().code, 1009);
    }

    #[test]
    fn close_reason_truncates_on_char_boundary() {
        let f = encode_close(1001, &"é".repeat(100));
        assert!(f.len() <= 127);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
