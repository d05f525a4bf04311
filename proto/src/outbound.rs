//! How a message leaves for a client: the one encoder behind every path that frames one
//! (fan-out, history replay and its receipt, echoes, a STOMP session's own frames). A session's
//! `Encoding` says its transport (WebSocket, SockJS inside WebSocket, SockJS over HTTP) and its
//! compression; the frame it yields goes on the wire as is. The caches of encoded frames are
//! here too: a publish's raw frame compressed once (`Encoding::raw`), and, within one fan-out,
//! one STOMP MESSAGE per distinct subscription (`Messages`).

use bytes::Bytes;

use crate::publish::Publish;
use crate::sockjs;
use crate::stomp::frame::{Command, Frame, SERVER_HEADERS};
use crate::ws::{deflate, frame};

/// How a session's messages reach its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Wrapping {
    /// One WebSocket message each.
    WebSocket,
    /// SockJS frames (`a["..."]`) inside WebSocket messages.
    Sockjs,
    /// SockJS frames, unwrapped: the session has no socket of its own; its frames go to
    /// whichever HTTP request is receiving for it.
    SockjsHttp,
}

/// One session's way of framing what it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// The transport around each message.
    pub wrapping: Wrapping,
    /// permessage-deflate's window bits, when the session negotiated it.
    pub deflate: Option<u8>,
    /// Payloads shorter than this go uncompressed (`[compression] min_bytes`): deflate costs
    /// more than it saves on a few bytes.
    pub min_bytes: usize,
}

impl Encoding {
    /// One message (a STOMP frame or a raw body) as the transport carries it: a WebSocket
    /// frame, text when `utf8` and binary otherwise, compressed when negotiated and worth it;
    /// on SockJS always text, `a["..."]`; on SockJS over HTTP, the `a["..."]` alone.
    pub fn frame(&self, payload: &[u8], utf8: bool) -> Bytes {
        let wrapped;
        let (opcode, payload) = match self.wrapping {
            Wrapping::WebSocket => (Publish::opcode(utf8), payload),
            Wrapping::Sockjs => {
                wrapped = sockjs::messages([payload]);
                (frame::Opcode::Text, &wrapped[..])
            }
            Wrapping::SockjsHttp => return sockjs::messages([payload]).into(),
        };
        match self.deflate {
            Some(bits) if payload.len() >= self.min_bytes => {
                frame::encode_deflated(opcode, &deflate::deflate(payload, bits))
            }
            _ => frame::encode(opcode, payload),
        }
    }

    /// A publish's raw-mode frame (the body alone): the one encoded when it was made, or its
    /// compressed twin, made by the first session that needs it and shared by every one after
    /// it (for the common 15-bit window; other windows compress their own).
    pub fn raw(&self, msg: &Publish) -> Bytes {
        match self.deflate {
            Some(15) if msg.body.len() >= self.min_bytes => msg
                .deflated
                .get_or_init(|| self.frame(&msg.body, msg.utf8))
                .clone(),
            Some(_) if msg.body.len() >= self.min_bytes => self.frame(&msg.body, msg.utf8),
            _ => msg.raw.clone(),
        }
    }

    /// `msg` as a STOMP MESSAGE for subscription `sub` on `destination` (as the client wrote
    /// it), with one `extra` header if given.
    pub fn message(
        &self,
        msg: &Publish,
        sub: &str,
        destination: &str,
        extra: Option<(&str, String)>,
    ) -> Bytes {
        self.frame(&stomp_message(msg, sub, destination, extra), msg.utf8)
    }
}

/// The STOMP MESSAGE frame for one (subscription, destination). The server's own headers come
/// first and cannot be repeated by the publisher's: every path that builds a `Publish` filters
/// them, and this skips them again for whatever arrives from another node.
fn stomp_message(
    msg: &Publish,
    sub: &str,
    destination: &str,
    extra: Option<(&str, String)>,
) -> Vec<u8> {
    let mut f = Frame::new(Command::Message)
        .header("destination", destination)
        .header("message-id", msg.seq.to_string())
        .header("subscription", sub);
    if let Some((offset, epoch)) = &msg.position {
        f = f
            .header("x-offset", offset.to_string())
            .header("x-epoch", &**epoch);
    }
    if let Some((k, v)) = extra {
        f = f.header(k, v);
    }
    if !msg.headers.iter().any(|(k, _)| k == "content-type") {
        let content_type = if msg.utf8 {
            "text/plain;charset=UTF-8"
        } else {
            "application/octet-stream"
        };
        f = f.header("content-type", content_type);
    }
    f.headers.extend(
        msg.headers
            .iter()
            .filter(|(k, _)| !SERVER_HEADERS.contains(&k.as_str()))
            .cloned(),
    );
    f = f.header("content-length", msg.body.len().to_string());
    f.body = msg.body.to_vec();
    f.encode()
}

/// The MESSAGE frames of one publish's fan-out: sessions that share a subscription id, a
/// destination as written and an encoding share one frame (a million subscribers of one topic
/// under one id cost one encoding).
#[derive(Default)]
pub struct Messages {
    made: Vec<(String, String, Encoding, Bytes)>,
}

impl Messages {
    /// `msg`'s frame for (`sub`, `destination`, `enc`), made once.
    pub fn get(&mut self, msg: &Publish, sub: &str, destination: &str, enc: Encoding) -> Bytes {
        let hit = self
            .made
            .iter()
            .find(|(i, w, e, _)| i == sub && w == destination && *e == enc);
        if let Some((_, _, _, f)) = hit {
            return f.clone();
        }
        let f = enc.message(msg, sub, destination, None);
        self.made
            .push((sub.into(), destination.into(), enc, f.clone()));
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::Dest;

    fn publish(body: &'static [u8]) -> Publish {
        let dest = Dest::Topic {
            project: "p".into(),
            topic: "t".into(),
        };
        Publish::new(dest, Bytes::from_static(body), vec![])
    }

    fn enc(wrapping: Wrapping, deflate: Option<u8>, min_bytes: usize) -> Encoding {
        Encoding {
            wrapping,
            deflate,
            min_bytes,
        }
    }

    #[test]
    fn each_transport_wraps_its_own_way() {
        let ws = enc(Wrapping::WebSocket, None, 0);
        assert_eq!(&ws.frame(b"hi", true)[..], b"\x81\x02hi");
        assert_eq!(&ws.frame(b"\xff", false)[..], b"\x82\x01\xff");
        let sj = enc(Wrapping::Sockjs, None, 0);
        assert_eq!(&sj.frame(b"hi", true)[..], b"\x81\x07a[\"hi\"]");
        let http = enc(Wrapping::SockjsHttp, None, 0);
        assert_eq!(&http.frame(b"hi", true)[..], b"a[\"hi\"]");
    }

    #[test]
    fn compression_starts_at_min_bytes() {
        let small = enc(Wrapping::WebSocket, Some(15), 10).frame(b"short", true);
        assert_eq!(small[0], 0x81, "under min_bytes: plain text, no RSV1");
        let big = enc(Wrapping::WebSocket, Some(15), 4).frame(b"long enough", true);
        assert_eq!(big[0], 0xC1, "compressed: RSV1 set");
    }

    #[test]
    fn the_raw_frame_is_compressed_once_and_shared() {
        let msg = publish(b"a body long enough to compress");
        let e = enc(Wrapping::WebSocket, Some(15), 0);
        let (a, b) = (e.raw(&msg), e.raw(&msg));
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "one compressed frame for every subscriber"
        );
        assert_eq!(enc(Wrapping::WebSocket, None, 0).raw(&msg), msg.raw);
    }

    #[test]
    fn a_fan_out_makes_one_message_per_subscription_shape() {
        let msg = publish(b"x");
        let e = enc(Wrapping::WebSocket, None, 0);
        let mut m = Messages::default();
        let a = m.get(&msg, "s1", "/topic/t", e);
        let b = m.get(&msg, "s1", "/topic/t", e);
        let c = m.get(&msg, "s2", "/topic/t", e);
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert_ne!(a, c);
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("subscription:s1\n") && text.contains("content-length:1\n"));
    }
}
