//! A connection's WebSocket messages once it is upgraded: what each one means in its mode
//! (echo, raw topics, STOMP, a SockJS array of messages), and the framing of a STOMP session's
//! outputs onto the connection (frames, heart-beats, the close it asks for).

use bytes::Bytes;

use super::{Action, Context, Event, Mode, Outputs, Phase, Wrapping, access};
use crate::outbound::Encoding;
use crate::sockjs;
use crate::stomp::session::{Output as StompOutput, Sink};
use crate::ws::CloseError;
use crate::ws::frame::{self, Opcode};
use crate::ws::message::Message;

/// Carries a STOMP session's outputs onto the connection: frames become WebSocket text
/// messages, and a close the session asks for is kept for the endpoint to carry out.
pub(super) struct Framing<'a> {
    pub(super) out: &'a mut Outputs,
    pub(super) close: Option<(u16, &'static str)>,
    wrapping: Wrapping,
    /// Window bits when echoes may go compressed (0: never).
    pub(super) deflate: u8,
}

impl<'a> Framing<'a> {
    pub(super) fn new(out: &'a mut Outputs, wrapping: Wrapping) -> Self {
        Framing {
            out,
            close: None,
            wrapping,
            deflate: 0,
        }
    }

    /// One message for the client, as a WebSocket text frame (holding SockJS's `a[...]` on
    /// SockJS; just the `a[...]` on SockJS over HTTP).
    fn message(&self, payload: &[u8]) -> Bytes {
        let plain = Encoding {
            wrapping: self.wrapping,
            deflate: None,
            min_bytes: 0,
        };
        plain.frame(payload, true)
    }
}

/// A server heart-beat: one EOL in a WebSocket text frame, shared by every session (a million
/// sessions beat without allocating).
const HEART_BEAT: &[u8] = b"\x81\x01\n";
/// The same EOL as a SockJS message, `a["\n"]`.
const SOCKJS_HEART_BEAT: &[u8] = b"\x81\x07a[\"\\n\"]";
/// SockJS's open frame, `o`.
pub(super) const SOCKJS_OPEN: &[u8] = b"\x81\x01o";
/// A STOMP heart-beat for a SockJS session over HTTP.
const SOCKJS_HTTP_HEART_BEAT: &[u8] = b"a[\"\\n\"]";
/// SockJS's own heart-beat frame, `h`, for proxies (the STOMP beat is for the client).
pub const SOCKJS_BEAT: &[u8] = b"\x81\x01h";

impl Sink for Framing<'_> {
    fn put(&mut self, o: StompOutput) {
        let a = match o {
            StompOutput::Frame(f) => Action::Send(self.message(&f)),
            StompOutput::HeartBeat => Action::Send(Bytes::from_static(match self.wrapping {
                Wrapping::WebSocket => HEART_BEAT,
                Wrapping::Sockjs => SOCKJS_HEART_BEAT,
                Wrapping::SockjsHttp => SOCKJS_HTTP_HEART_BEAT,
            })),
            StompOutput::Subscribe(d) => Action::Subscribe(d),
            StompOutput::Recover(r) => Action::Recover(r),
            StompOutput::Unsubscribe(d) => Action::Unsubscribe(d),
            StompOutput::Publish {
                dest,
                body,
                headers,
            } => Action::Publish {
                dest,
                body,
                headers,
            },
            StompOutput::Connected => return self.out.note(Event::Connected),
            StompOutput::Refreshed => return self.out.note(Event::Refreshed),
            StompOutput::Ask(act, topic) => Action::Ask(act, topic),
            StompOutput::Refused(why) => Action::Refused(why),
            StompOutput::Close(code, reason) => {
                self.close = Some((code, reason));
                return;
            }
        };
        self.out.act(a);
    }
}

/// Acts on one message; returns the phase to move to, if it changes.
pub(super) fn on_message(
    mode: &mut Mode,
    closing: bool,
    m: Message<'_>,
    now: u64,
    ctx: &Context,
    sink: &mut Framing<'_>,
) -> Option<Phase> {
    let out = &mut *sink.out;
    match m {
        Message::Close(code, _) => {
            if !closing {
                // Echo the peer's code (RFC 6455 §5.5.1); an empty close gets an empty one.
                let reply = match code {
                    Some(c) => frame::encode_close(c, ""),
                    None => frame::encode(Opcode::Close, b""),
                };
                out.act(Action::Send(reply));
            }
            out.act(Action::Close);
            Some(Phase::Done)
        }
        // Once we have sent our close, only the peer's close matters.
        _ if closing => None,
        Message::Ping(p) => {
            out.act(Action::Send(frame::encode(Opcode::Pong, p)));
            None
        }
        Message::Pong(_) => None,
        Message::Text(data) | Message::Binary(data) => {
            let op = if matches!(m, Message::Text(_)) {
                Opcode::Text
            } else {
                Opcode::Binary
            };
            if sink.wrapping == Wrapping::Sockjs {
                return on_sockjs_message(mode, data, now, ctx, sink);
            }
            match mode {
                Mode::Echo => {
                    out.note(Event::Received);
                    let enc = Encoding {
                        wrapping: Wrapping::WebSocket,
                        deflate: (sink.deflate > 0).then_some(sink.deflate),
                        min_bytes: ctx.cfg.compression.min_bytes,
                    };
                    out.act(Action::Send(enc.frame(data, op == Opcode::Text)));
                }
                Mode::Stomp(s) => s.on_bytes(data, now, ctx, sink),
                Mode::Raw(id) => {
                    out.note(Event::Received);
                    access::raw_message(id, data, ctx, out);
                }
            }
            None
        }
    }
}

/// A message on a SockJS WebSocket: a JSON array of strings, each one message for the session.
fn on_sockjs_message(
    mode: &mut Mode,
    data: &[u8],
    now: u64,
    ctx: &Context,
    sink: &mut Framing<'_>,
) -> Option<Phase> {
    let msgs = match sockjs::decode(data) {
        Ok(m) => m,
        // An empty message is nothing to act on (what the SockJS suite expects).
        Err(sockjs::DecodeError::Empty) => return None,
        Err(sockjs::DecodeError::Broken) => {
            // The protocol wants the connection dropped at once: no `c[...]` frame, no wait for
            // the peer's close.
            sink.out.note(Event::ProtocolError);
            let close = frame::encode_close(CloseError::INVALID_DATA, "Broken JSON encoding.");
            sink.out.act(Action::Send(close));
            sink.out.act(Action::Close);
            return Some(Phase::Done);
        }
    };
    match mode {
        Mode::Echo if msgs.is_empty() => {}
        Mode::Echo => {
            sink.out.note(Event::Received);
            let f = sockjs::messages(msgs.iter().map(|m| m.as_bytes()));
            sink.out.act(Action::Send(frame::encode(Opcode::Text, &f)));
        }
        Mode::Stomp(s) => {
            for m in &msgs {
                s.on_bytes(m.as_bytes(), now, ctx, sink);
                if sink.close.is_some() {
                    break;
                }
            }
        }
        Mode::Raw(_) => sink.out.note(Event::Received),
    }
    None
}
