//! A publish as the shards receive it: the destination, the body and headers, and the raw-mode
//! frame encoded once (compressed once too, for deflate subscribers) and shared by every shard.
//! A value of the protocol layer (it needs destinations and frames only), so the history, the
//! hub and the shards all take it from here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::dest::Dest;

/// One message on its way to every shard.
#[derive(Debug)]
pub struct Publish {
    /// Where it goes.
    pub dest: Dest,
    /// The body, shared by every recipient.
    pub body: Bytes,
    /// Extra STOMP headers (`content-type` among them) for STOMP recipients.
    pub headers: Vec<(String, String)>,
    /// The raw-mode WebSocket frame (the body alone), encoded once for every shard.
    pub raw: Bytes,
    /// Whether the body is UTF-8. A text frame must hold UTF-8 (conforming clients close
    /// with 1007 otherwise), so any other body travels in binary frames, raw and STOMP alike:
    /// one publisher's bytes can never make other sessions fail.
    pub utf8: bool,
    /// Unique within this server process: the STOMP `message-id`.
    pub seq: u64,
    /// Its offset and epoch in its destination's history (`x-offset`, `x-epoch`), when the
    /// destination keeps history (see `history::History::record`).
    pub position: Option<(u64, Arc<str>)>,
    /// The raw-mode frame compressed (permessage-deflate, 15-bit window), made by the first
    /// shard that needs it and shared by every deflate subscriber after it
    /// (`outbound::Encoding::raw`).
    pub(crate) deflated: std::sync::OnceLock<Bytes>,
}

static SEQ: AtomicU64 = AtomicU64::new(1);

impl Publish {
    /// The WebSocket opcode of every frame that carries this body.
    pub fn opcode(utf8: bool) -> crate::ws::frame::Opcode {
        if utf8 {
            crate::ws::frame::Opcode::Text
        } else {
            crate::ws::frame::Opcode::Binary
        }
    }

    /// A publish of `body` to `dest`, its raw-mode frame encoded now.
    pub fn new(dest: Dest, body: Bytes, headers: Vec<(String, String)>) -> Publish {
        let utf8 = simdutf8::basic::from_utf8(&body).is_ok();
        Publish {
            raw: crate::ws::frame::encode(Publish::opcode(utf8), &body),
            utf8,
            dest,
            body,
            headers,
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            position: None,
            deflated: std::sync::OnceLock::new(),
        }
    }
}
