//! A connection's endpoint state to and from plain data (`crate::handover::Connection`): what
//! a successor process needs to go on reading and answering it where this one stopped.

use super::{Identity, Mode, Phase, Session, Wrapping};
use crate::context::Context;
use crate::handover::{self, Connection, NotMovable, Refused};
use crate::ws::message::Reader;

impl Session {
    /// This connection as plain data (`now`: the tick its clocks are read against).
    pub fn export(&self, now: u64) -> Result<Connection, NotMovable> {
        match self.phase {
            Phase::Open => {}
            Phase::Handshake => return Err(NotMovable::Handshake),
            Phase::Exchange => return Err(NotMovable::Http),
            Phase::Closing | Phase::Done => return Err(NotMovable::Closing),
        }
        if self.wrapping == Wrapping::SockjsHttp {
            return Err(NotMovable::Http);
        }
        let mode = match &self.mode {
            Mode::Raw(None) => handover::Mode::Raw(None),
            Mode::Raw(Some(id)) if !id.asking.is_empty() => return Err(NotMovable::Asking),
            Mode::Raw(Some(id)) => handover::Mode::Raw(Some(handover::Identity {
                project: id.project.to_string(),
                user: id.user.to_string(),
                exp: id.exp,
            })),
            Mode::Echo => handover::Mode::Echo,
            Mode::Stomp(s) => handover::Mode::Stomp(s.export(now)?),
        };
        Ok(Connection {
            mode,
            wrapping: self.wrapping,
            deflate: self.deflate,
            positions: self.positions,
            pending: self.pending.clone(),
            peeked: self.peeked,
            fragment: self.reader.export(),
        })
    }

    /// The connection `c` describes, open, its clocks set against tick `now`.
    pub fn import(c: Connection, now: u64, ctx: &Context) -> Result<Session, Refused> {
        let mode = match c.mode {
            handover::Mode::Raw(id) => Mode::Raw(id.map(|id| {
                Box::new(Identity {
                    project: id.project.into(),
                    user: id.user.into(),
                    exp: id.exp,
                    asking: Vec::new(),
                })
            })),
            handover::Mode::Echo => Mode::Echo,
            handover::Mode::Stomp(s) => {
                let project = ctx.project(&s.project);
                Mode::Stomp(Box::new(crate::stomp::session::Session::import(
                    s, project, now,
                )?))
            }
        };
        Ok(Session {
            phase: Phase::Open,
            mode,
            pending: c.pending,
            reader: Reader::import(c.fragment),
            peeked: c.peeked,
            wrapping: c.wrapping,
            deflate: c.deflate,
            positions: c.positions,
        })
    }
}
