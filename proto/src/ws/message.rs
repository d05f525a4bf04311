//! From frames to messages (RFC 6455 §5.4–5.5, §8.1), sans-IO: fragmentation, UTF-8 of text,
//! the message size limit, and close-frame validation.
//!
//! A connection that is not mid-way through a fragmented message holds no buffer here: the
//! reassembly state is boxed and exists only between the first and the final fragment.

use super::CloseError;
use super::frame::Opcode;

/// A complete message or control frame, borrowing from the frame or the reassembly buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Text, already validated as UTF-8.
    Text(&'a [u8]),
    /// A whole binary message.
    Binary(&'a [u8]),
    /// A ping's payload.
    Ping(&'a [u8]),
    /// A pong's payload.
    Pong(&'a [u8]),
    /// The peer's close: its code (None for an empty close) and reason.
    Close(Option<u16>, &'a str),
}

#[derive(Debug, Default)]
/// Reassembles fragmented messages and checks text as it arrives.
pub struct Reader {
    frag: Option<Box<Fragmented>>,
}

#[derive(Debug)]
struct Fragmented {
    text: bool,
    /// permessage-deflate: `data` is compressed until the final fragment is inflated.
    compressed: bool,
    data: Vec<u8>,
    /// How far `data` is known to be valid UTF-8 (always on a character boundary).
    checked: usize,
    /// The final fragment has been delivered; the buffer goes at the next call.
    done: bool,
}

impl Reader {
    /// The message being reassembled, as plain data (`None` between messages).
    pub fn export(&self) -> Option<crate::handover::Fragment> {
        let f = self.frag.as_ref().filter(|f| !f.done)?;
        Some(crate::handover::Fragment {
            text: f.text,
            compressed: f.compressed,
            data: f.data.clone(),
            checked: f.checked,
        })
    }

    /// A reader that goes on with `fragment`.
    pub fn import(fragment: Option<crate::handover::Fragment>) -> Reader {
        Reader {
            frag: fragment.map(|f| {
                Box::new(Fragmented {
                    text: f.text,
                    compressed: f.compressed,
                    data: f.data,
                    checked: f.checked,
                    done: false,
                })
            }),
        }
    }

    /// Consumes one complete frame. `max_message` bounds the reassembled message.
    pub fn on_frame<'a>(
        &'a mut self,
        fin: bool,
        opcode: Opcode,
        payload: &'a [u8],
        max_message: usize,
    ) -> Result<Option<Message<'a>>, CloseError> {
        self.on_frame_with(fin, false, opcode, payload, max_message)
    }

    /// `on_frame` for a connection with permessage-deflate: `rsv1` on a message's first frame
    /// says the message is compressed; it is inflated (bounded by `max_message`) once whole.
    pub fn on_frame_with<'a>(
        &'a mut self,
        fin: bool,
        rsv1: bool,
        opcode: Opcode,
        payload: &'a [u8],
        max_message: usize,
    ) -> Result<Option<Message<'a>>, CloseError> {
        self.finish();
        if rsv1 && opcode == Opcode::Continuation {
            return Err(CloseError::protocol("RSV1 set on a continuation frame"));
        }
        match opcode {
            Opcode::Ping => Ok(Some(Message::Ping(payload))),
            Opcode::Pong => Ok(Some(Message::Pong(payload))),
            Opcode::Close => parse_close(payload).map(|(c, r)| Some(Message::Close(c, r))),
            Opcode::Text | Opcode::Binary => {
                if self.frag.is_some() {
                    return Err(CloseError::protocol(
                        "new data frame while a fragmented message is open",
                    ));
                }
                let text = opcode == Opcode::Text;
                if rsv1 && fin {
                    let data = super::deflate::inflate(payload, max_message)?;
                    if text {
                        validate_utf8(&data, 0, true)?;
                    }
                    let f = self.frag.insert(Box::new(Fragmented {
                        text,
                        compressed: false,
                        checked: data.len(),
                        data,
                        done: true,
                    }));
                    return Ok(Some(if text {
                        Message::Text(&f.data)
                    } else {
                        Message::Binary(&f.data)
                    }));
                }
                if fin {
                    if text {
                        validate_utf8(payload, 0, true)?;
                        return Ok(Some(Message::Text(payload)));
                    }
                    return Ok(Some(Message::Binary(payload)));
                }
                let mut f = Box::new(Fragmented {
                    text,
                    compressed: rsv1,
                    data: Vec::with_capacity(payload.len()),
                    checked: 0,
                    done: false,
                });
                f.data.extend_from_slice(payload);
                if text && !rsv1 {
                    f.checked = validate_utf8(&f.data, 0, false)?;
                }
                self.frag = Some(f);
                Ok(None)
            }
            Opcode::Continuation => {
                let Some(f) = self.frag.as_mut() else {
                    return Err(CloseError::protocol(
                        "continuation frame without a message to continue",
                    ));
                };
                if f.data.len() + payload.len() > max_message {
                    return Err(CloseError::too_big());
                }
                f.data.extend_from_slice(payload);
                if f.text && !f.compressed {
                    f.checked = validate_utf8(&f.data, f.checked, fin)?;
                }
                if !fin {
                    return Ok(None);
                }
                if f.compressed {
                    f.data = super::deflate::inflate(&f.data, max_message)?;
                    f.compressed = false;
                    if f.text {
                        f.checked = validate_utf8(&f.data, 0, true)?;
                    }
                }
                f.done = true;
                let f = self.frag.as_ref().expect("checked above");
                Ok(Some(if f.text {
                    Message::Text(&f.data)
                } else {
                    Message::Binary(&f.data)
                }))
            }
        }
    }

    /// Frees the reassembly buffer of a message already delivered. `on_frame` does this itself
    /// on the next frame; calling it early keeps an idle connection at zero buffered bytes.
    pub fn finish(&mut self) {
        if self.frag.as_ref().is_some_and(|f| f.done) {
            self.frag = None;
        }
    }

    /// Fails fast on text that is already invalid before its frame has fully arrived.
    /// `fresh` is newly arrived, unmasked payload of an incomplete frame of type `opcode`;
    /// `frame_start` says it begins the frame's payload (so it continues the reassembled
    /// message's last, possibly incomplete, character). Returns how many bytes of `fresh` are
    /// valid up to a character boundary: the next call starts there.
    pub fn check_partial(
        &self,
        opcode: Opcode,
        fresh: &[u8],
        frame_start: bool,
    ) -> Result<usize, CloseError> {
        let open = self.frag.as_ref().filter(|f| !f.done);
        let text = match opcode {
            Opcode::Text => open.is_none(),
            Opcode::Continuation => open.is_some_and(|f| f.text && !f.compressed),
            _ => false,
        };
        if !text || fresh.is_empty() {
            return Ok(0);
        }
        match open {
            Some(f)
                if opcode == Opcode::Continuation && frame_start && f.checked < f.data.len() =>
            {
                let carry = f.data.len() - f.checked;
                let mut joined = f.data[f.checked..].to_vec();
                joined.extend_from_slice(fresh);
                validate_utf8(&joined, 0, false).map(|n| n.saturating_sub(carry))
            }
            _ => validate_utf8(fresh, 0, false),
        }
    }
}

/// Validates `data[from..]`; returns how far it is valid. An incomplete sequence at the end is
/// fine unless this is the end of the message.
fn validate_utf8(data: &[u8], from: usize, fin: bool) -> Result<usize, CloseError> {
    match simdutf8::compat::from_utf8(&data[from..]) {
        Ok(_) => Ok(data.len()),
        Err(e) if e.error_len().is_none() && !fin => Ok(from + e.valid_up_to()),
        Err(_) => Err(CloseError::invalid_utf8()),
    }
}

fn parse_close(payload: &[u8]) -> Result<(Option<u16>, &str), CloseError> {
    match payload.len() {
        0 => Ok((None, "")),
        1 => Err(CloseError::protocol("close frame with a 1-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !valid_close_code(code) {
                return Err(CloseError::protocol("invalid close code"));
            }
            let reason =
                std::str::from_utf8(&payload[2..]).map_err(|_| CloseError::invalid_utf8())?;
            Ok((Some(code), reason))
        }
    }
}

/// Codes a peer may send (RFC 6455 §7.4 and the IANA registry); 1005, 1006 and 1015 are
/// reserved for reporting and never appear on the wire.
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 16;

    #[test]
    fn fragments_reassemble() {
        let mut r = Reader::default();
        assert_eq!(r.on_frame(false, Opcode::Text, b"Hel", MAX).unwrap(), None);
        // A control frame in the middle of a fragmented message is allowed.
        assert_eq!(
            r.on_frame(true, Opcode::Ping, b"p", MAX).unwrap(),
            Some(Message::Ping(b"p"))
        );
        assert_eq!(
            r.on_frame(true, Opcode::Continuation, b"lo", MAX).unwrap(),
            Some(Message::Text(b"Hello"))
        );
        r.finish();
        assert!(r.frag.is_none());
    }

    #[test]
    fn utf8_split_across_fragments_is_fine() {
        let s = "κόσμε".as_bytes();
        let mut r = Reader::default();
        assert_eq!(r.on_frame(false, Opcode::Text, &s[..3], MAX).unwrap(), None);
        assert_eq!(r.check_partial(Opcode::Continuation, &s[3..4], true), Ok(1));
        assert_eq!(
            r.on_frame(true, Opcode::Continuation, &s[3..], MAX)
                .unwrap(),
            Some(Message::Text(s))
        );
    }

    #[test]
    fn invalid_utf8_fails_fast() {
        let mut r = Reader::default();
        assert_eq!(
            r.on_frame(false, Opcode::Text, b"ok\xff", MAX)
                .unwrap_err()
                .code,
            1007
        );
        let r = Reader::default();
        assert_eq!(
            r.check_partial(Opcode::Text, b"\xce\xba\xff", true)
                .unwrap_err()
                .code,
            1007
        );
        assert_eq!(r.check_partial(Opcode::Text, b"ab\xce", true), Ok(2));
        // Truncated at the end of the message.
        let mut r = Reader::default();
        assert_eq!(
            r.on_frame(true, Opcode::Text, b"\xce", MAX)
                .unwrap_err()
                .code,
            1007
        );
    }

    #[test]
    fn sequencing_errors() {
        let mut r = Reader::default();
        assert_eq!(
            r.on_frame(true, Opcode::Continuation, b"x", MAX)
                .unwrap_err()
                .code,
            1002
        );
        r.on_frame(false, Opcode::Binary, b"x", MAX).unwrap();
        assert_eq!(
            r.on_frame(true, Opcode::Text, b"x", MAX).unwrap_err().code,
            1002
        );
    }

    #[test]
    fn message_limit_spans_fragments() {
        let mut r = Reader::default();
        r.on_frame(false, Opcode::Binary, &[0; 600], 1000).unwrap();
        assert_eq!(
            r.on_frame(true, Opcode::Continuation, &[0; 600], 1000)
                .unwrap_err()
                .code,
            1009
        );
    }

    #[test]
    fn close_frames() {
        let mut r = Reader::default();
        assert_eq!(
            r.on_frame(true, Opcode::Close, b"", MAX).unwrap(),
            Some(Message::Close(None, ""))
        );
        assert_eq!(
            r.on_frame(true, Opcode::Close, b"\x03\xe8bye", MAX)
                .unwrap(),
            Some(Message::Close(Some(1000), "bye"))
        );
        for bad in [&b"\x03"[..], b"\x03\xed", b"\x00\x00", b"\x13\x88"] {
            assert_eq!(
                r.on_frame(true, Opcode::Close, bad, MAX).unwrap_err().code,
                1002
            );
        }
        assert_eq!(
            r.on_frame(true, Opcode::Close, b"\x03\xe8\xff", MAX)
                .unwrap_err()
                .code,
            1007
        );
    }
}
