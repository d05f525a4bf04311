//! A STOMP session to and from plain data (`crate::handover::Stomp`), for a successor process.
//! Heart-beat clocks travel as ages in ticks, so the session beats on schedule under the next
//! process's clock.

use std::sync::Arc;

use super::{Session, State, Sub};
use crate::access::Grants;
use crate::handover::{NotMovable, Refused, Stomp};

impl Session {
    /// This session as plain data, `now` being the tick its clocks are read against.
    pub fn export(&self, now: u64) -> Result<Stomp, NotMovable> {
        if self.state == State::Closed {
            return Err(NotMovable::Closing);
        }
        if self.asked.is_some() {
            return Err(NotMovable::Asking);
        }
        let age = |at: u32| (now as u32).wrapping_sub(at);
        Ok(Stomp {
            connected: self.state == State::Connected,
            version: self.version.to_string(),
            legacy: self.legacy,
            project: self.project.to_string(),
            user: self.user.as_deref().map(str::to_string),
            upgrade_token: self.upgrade_token.as_deref().map(str::to_string),
            subs: self
                .subs
                .iter()
                .map(|s| (s.id().to_string(), s.written().to_string()))
                .collect(),
            pending: self.pending.clone(),
            heartbeat: (self.hb_out, self.hb_in),
            idle: (age(self.last_in), age(self.last_out)),
            exp: self.exp,
            grants: self
                .grants
                .as_ref()
                .map(|g| g.patterns().map(str::to_string).collect()),
        })
    }

    /// The session `s` describes, its clocks set against tick `now`; `project` is the
    /// process's interned name for it.
    pub fn import(s: Stomp, project: Arc<str>, now: u64) -> Result<Session, Refused> {
        let version = match s.version.as_str() {
            "1.0" => "1.0",
            "1.1" => "1.1",
            "1.2" => "1.2",
            _ => return Err(Refused::Version(s.version)),
        };
        let at = |age: u32| (now as u32).wrapping_sub(age);
        Ok(Session {
            state: if s.connected {
                State::Connected
            } else {
                State::AwaitConnect
            },
            version,
            legacy: s.legacy,
            project,
            user: s.user.map(Into::into),
            upgrade_token: s.upgrade_token.map(Into::into),
            subs: s.subs.iter().map(|(id, w)| Sub::new(id, w)).collect(),
            pending: s.pending,
            hb_out: s.heartbeat.0,
            hb_in: s.heartbeat.1,
            last_in: at(s.idle.0),
            last_out: at(s.idle.1),
            exp: s.exp,
            sub_rate: 0,
            grants: s.grants.map(|g| Box::new(Grants::new(g))),
            asked: None,
        })
    }
}
