//! How a connection ends when the server ends it: a close handshake (or, before the upgrade, an
//! HTTP refusal), preceded for STOMP sessions by an ERROR frame saying why (a restart with its
//! retry hint, a user over its session limit, revoked tokens), and the protocol failures that
//! close with a WebSocket code.

use super::{Action, Event, Framing, Mode, Outputs, Phase, Session, StompOutput, Wrapping};
use crate::sockjs;
use crate::stomp::session::Sink;
use crate::ws::CloseError;
use crate::ws::frame::{self, Opcode};
use crate::ws::handshake::{self, Reject};

impl Session {
    /// The server is restarting (a paced drain): closes with 1012 and a reason carrying the
    /// hint `retry-after=MS`; a connected STOMP session first gets `ERROR message:server
    /// restart` with a `retry-after` header (what STOMP clients read; they see no close reason).
    pub fn restart(&mut self, retry_ms: u64, out: &mut Outputs) {
        let body = format!("the server is restarting: reconnect in about {retry_ms} ms");
        let retry = ("retry-after", retry_ms.to_string());
        self.stomp_error("server restart", Some(retry), body, out);
        let reason = format!("server restart retry-after={retry_ms}");
        self.close(CloseError::SERVICE_RESTART, &reason, out);
    }

    /// Refuses a session its user may not open (`limits.max_sessions_per_user`): a STOMP
    /// session gets `ERROR message:too many sessions` and a close with 1008; a raw upgrade,
    /// whose 101 has not gone out, gets 429.
    pub fn refuse_user(&mut self, out: &mut Outputs) {
        const WHY: &str = "too many sessions";
        if self.stomp().is_none() {
            return self.reject(&Reject::new(429, "too many sessions for this user"), out);
        }
        let body = "this user holds as many sessions as the server allows".to_string();
        out.note(Event::StompError);
        self.stomp_error(WHY, None, body, out);
        self.close(CloseError::POLICY, WHY, out);
    }

    /// Ends a session whose user's tokens were revoked: STOMP `ERROR message:revoked`, then
    /// close 4001 (raw sessions get the close alone).
    pub fn revoke(&mut self, out: &mut Outputs) {
        let body = "the tokens of this session's user were revoked".to_string();
        self.stomp_error("revoked", None, body, out);
        self.close(4001, "revoked", out);
    }

    /// An ERROR frame for a connected STOMP session (nothing for any other).
    pub(super) fn stomp_error(
        &mut self,
        message: &str,
        extra: Option<(&str, String)>,
        body: String,
        out: &mut Outputs,
    ) {
        if self.phase == Phase::Open
            && let Mode::Stomp(s) = &self.mode
            && s.is_connected()
        {
            let mut f = crate::stomp::frame::Frame::new(crate::stomp::frame::Command::Error)
                .header("message", message);
            if let Some((k, v)) = extra {
                f = f.header(k, v);
            }
            f = f.header("content-type", "text/plain");
            f.body = body.into_bytes();
            let mut sink = Framing::new(out, self.wrapping);
            sink.put(StompOutput::Frame(f.encode()));
        }
    }

    /// A server-initiated close (shutdown, disconnect, slow consumer).
    pub fn close(&mut self, code: u16, reason: &str, out: &mut Outputs) {
        match self.phase {
            Phase::Open if self.wrapping == Wrapping::SockjsHttp => {
                out.act(Action::Send(sockjs::close(code, reason).into()));
                out.act(Action::Close);
                self.phase = Phase::Done;
            }
            Phase::Open => {
                if self.wrapping == Wrapping::Sockjs {
                    let c = sockjs::close(code, reason);
                    out.act(Action::Send(frame::encode(Opcode::Text, &c)));
                }
                out.act(Action::Send(frame::encode_close(code, reason)));
                out.act(Action::AwaitClose);
                self.phase = Phase::Closing;
            }
            Phase::Handshake => {
                let status = if code == CloseError::GOING_AWAY {
                    503
                } else {
                    408
                };
                self.reject(&Reject::new(status, reason), out);
            }
            Phase::Exchange => {
                out.act(Action::Close);
                self.phase = Phase::Done;
            }
            Phase::Closing | Phase::Done => {}
        }
        self.pending = Vec::new();
    }

    /// Refuses the upgrade with `r` before it is read (limits at accept; a 503 with
    /// `Retry-After` when shedding load).
    pub fn refuse(&mut self, r: &Reject, out: &mut Outputs) {
        if self.phase == Phase::Handshake {
            self.reject(r, out);
        }
    }

    pub(super) fn reject(&mut self, r: &Reject, out: &mut Outputs) {
        if matches!(r.status, 401 | 403) {
            out.act(Action::Refused(format!(
                "upgrade refused with {}: {}",
                r.status, r.reason
            )));
        }
        out.act(Action::Send(handshake::reject_response(r).into()));
        out.note(Event::Rejected);
        out.act(Action::Close);
        self.phase = Phase::Done;
    }

    pub(super) fn fail(&mut self, e: CloseError, out: &mut Outputs) {
        out.act(Action::Send(frame::encode_close(e.code, e.reason)));
        out.note(Event::ProtocolError);
        out.act(Action::Close);
        self.phase = Phase::Done;
    }
}
