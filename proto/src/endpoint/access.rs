//! A connection's side of topic permissions and token expiry: the backend's answers reach the
//! session they were asked for (STOMP's parked frames, or a raw upgrade's topics), expired
//! tokens close sessions (STOMP `ERROR message:token_expired`, raw close 4001), and a raw
//! client refreshes its token with a text message `{"refresh": "<jwt>"}`.

use super::{Action, Event, Framing, Identity, Mode, Outputs, Session};
use crate::access::Act;
use crate::context::Context;
use crate::dest::Dest;

/// Close code of a raw session whose token expired.
pub(super) const TOKEN_EXPIRED: u16 = 4001;
/// Close code of a raw session refused a topic by the project's backend.
pub(super) const FORBIDDEN: u16 = 4003;

impl Session {
    /// The backend answered whether this session may `act` on `topic` (`reason` when not).
    pub fn on_answer(
        &mut self,
        act: Act,
        topic: &str,
        allowed: bool,
        reason: &str,
        out: &mut Outputs,
    ) {
        if !self.is_open() {
            return;
        }
        match &mut self.mode {
            Mode::Stomp(s) => {
                let mut sink = Framing::new(out, self.wrapping);
                s.on_answer(act, topic, allowed, reason, &mut sink);
                let close = sink.close;
                self.stomp_closed(close, out);
            }
            Mode::Raw(Some(id)) if act == Act::Subscribe => {
                let Some(i) = id.asking.iter().position(|t| &**t == topic) else {
                    return;
                };
                id.asking.remove(i);
                if allowed {
                    out.act(Action::Subscribe(Dest::Topic {
                        project: id.project.to_string(),
                        topic: topic.to_string(),
                    }));
                } else {
                    let why = format!("forbidden: subscribe {topic}: {reason}");
                    self.close(FORBIDDEN, &why, out);
                }
            }
            _ => {}
        }
    }

    /// When the session's token expires (Unix seconds), if it does.
    pub fn expires_at(&self) -> Option<u64> {
        if !self.is_open() {
            return None;
        }
        match &self.mode {
            Mode::Stomp(s) => s.expires_at(),
            Mode::Raw(Some(id)) if id.exp > 0 => Some(u64::from(id.exp)),
            _ => None,
        }
    }

    /// The clock reads `now_s` (Unix seconds): a session whose token expired by then is
    /// closed. Returns whether it was.
    pub fn expire(&mut self, now_s: u64, out: &mut Outputs) -> bool {
        if self.expires_at().is_none_or(|e| e > now_s) {
            return false;
        }
        match &mut self.mode {
            Mode::Stomp(s) => {
                let mut sink = Framing::new(out, self.wrapping);
                s.expire(now_s, &mut sink);
                let close = sink.close;
                self.stomp_closed(close, out);
            }
            _ => self.close(TOKEN_EXPIRED, "token expired", out),
        }
        true
    }
}

/// A raw session's message: a `{"refresh": "<jwt>"}` replaces its token (same project, same
/// user); anything else is only counted. A refused refresh is answered in words in a text
/// message, and the session keeps its old token (and so its expiry).
pub(super) fn raw_message(
    id: &mut Option<Box<Identity>>,
    data: &[u8],
    ctx: &Context,
    out: &mut Outputs,
) {
    let Some(id) = id else {
        return;
    };
    if !data.starts_with(b"{") {
        return;
    }
    #[derive(serde::Deserialize)]
    struct Refresh {
        refresh: String,
    }
    let Ok(r) = serde_json::from_slice::<Refresh>(data) else {
        return;
    };
    let answer = match ctx.auth.verify(&id.project, &r.refresh) {
        Ok(v) if *v.user == *id.user => {
            let exp = u32::try_from(v.exp).unwrap_or(u32::MAX);
            if id.exp > 0 && exp <= id.exp {
                // As for STOMP: a refresh extends, so a repeated token costs nothing.
                serde_json::json!({ "error": format!(
                    "refresh refused: the new token must expire later than the session's (exp {})",
                    id.exp
                ) })
            } else {
                id.exp = exp;
                out.note(Event::Refreshed);
                out.act(Action::Regranted(v.grants.map(Box::new)));
                serde_json::json!({ "refreshed": v.exp })
            }
        }
        Ok(_) => {
            serde_json::json!({ "error": "refresh refused: the new token names another user" })
        }
        Err(e) => serde_json::json!({ "error": format!("refresh refused: {e}") }),
    };
    let text = answer.to_string();
    out.act(Action::Send(crate::ws::frame::encode(
        crate::ws::frame::Opcode::Text,
        text.as_bytes(),
    )));
}
