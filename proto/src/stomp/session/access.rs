//! A STOMP session's permissions: whether a SUBSCRIBE or SEND to a topic may go ahead under
//! the project's policy (`crate::access`), the ones parked while the backend is asked, the
//! token's expiry, and its refresh through `SEND /app/refresh`.

use bytes::Bytes;

use super::{Output, Session, Sink, State};
use crate::access::{self, Act, Decision};
use crate::context::Context;
use crate::dest::Dest;
use crate::stomp::frame::{Command, Frame};
use crate::ws::CloseError;

/// Where a client SENDs a newer token (in a `token` header) before its current one expires.
pub(super) const REFRESH: &str = "/app/refresh";

/// `message` header of a refused SUBSCRIBE or SEND.
pub const FORBIDDEN: &str = "forbidden";
/// `message` header of a session closed because its token expired.
pub const TOKEN_EXPIRED: &str = "token_expired";

/// Why a SUBSCRIBE or SEND is refused.
#[derive(Debug)]
pub(super) enum Refusal {
    /// The frame is wrong (ERROR with the reason as its message).
    Protocol(String),
    /// The frame is fine but not allowed (ERROR `message:forbidden`, the reason in the body).
    Forbidden(String),
}

impl From<String> for Refusal {
    fn from(s: String) -> Self {
        Refusal::Protocol(s)
    }
}

impl From<&str> for Refusal {
    fn from(s: &str) -> Self {
        Refusal::Protocol(s.to_string())
    }
}

/// A SUBSCRIBE or SEND waiting for the backend's answer.
#[derive(Debug)]
pub(super) enum Asked {
    Subscribe {
        id: Box<str>,
        written: Box<str>,
        topic: Box<str>,
        receipt: Option<Box<str>>,
    },
    Publish {
        dest: Dest,
        body: Bytes,
        headers: Vec<(String, String)>,
        receipt: Option<Box<str>>,
    },
}

impl Asked {
    fn is(&self, act: Act, topic: &str) -> bool {
        match self {
            Asked::Subscribe { topic: t, .. } => act == Act::Subscribe && &**t == topic,
            Asked::Publish { dest, .. } => act == Act::Publish && dest_topic(dest) == Some(topic),
        }
    }
}

fn dest_topic(d: &Dest) -> Option<&str> {
    match d {
        Dest::Topic { topic, .. } => Some(topic),
        Dest::User { .. } => None,
    }
}

impl Session {
    /// Whether `act` on `dest` may go ahead now; `Ok(false)`: the backend must be asked.
    /// User queues are always the session's own, so only topics are checked; without
    /// authentication there is no token to check against and every topic is open.
    pub(super) fn permitted(&self, act: Act, dest: &Dest, ctx: &Context) -> Result<bool, Refusal> {
        let (Some(topic), true) = (dest_topic(dest), ctx.auth.enabled) else {
            return Ok(true);
        };
        let Some(p) = ctx.cfg.projects.get(&*self.project) else {
            return Ok(true);
        };
        let policy = match act {
            Act::Subscribe => p.subscribe,
            Act::Publish => p.publish_policy(),
        };
        match access::decide(policy, act, self.grants.as_deref(), topic) {
            Decision::Allow => Ok(true),
            Decision::Ask => Ok(false),
            Decision::Deny(why) => Err(Refusal::Forbidden(format!(
                "{} {topic}: {why}",
                act.as_str()
            ))),
        }
    }

    /// Whether subscription `id` is waiting for the backend.
    pub(super) fn is_asking(&self, id: &str) -> bool {
        self.asked
            .iter()
            .flat_map(|a| a.iter())
            .any(|a| matches!(a, Asked::Subscribe { id: i, .. } if &**i == id))
    }

    fn park(&mut self, a: Asked) {
        self.asked.get_or_insert_with(Default::default).push(a);
    }

    pub(super) fn ask_subscribe(
        &mut self,
        id: &str,
        written: &str,
        dest: &Dest,
        receipt: Option<&str>,
        out: &mut impl Sink,
    ) {
        let topic = dest_topic(dest).unwrap_or_default().to_string();
        self.park(Asked::Subscribe {
            id: id.into(),
            written: written.into(),
            topic: topic.as_str().into(),
            receipt: receipt.map(Into::into),
        });
        out.put(Output::Ask(Act::Subscribe, topic));
    }

    pub(super) fn ask_publish(
        &mut self,
        dest: Dest,
        body: Bytes,
        headers: Vec<(String, String)>,
        receipt: Option<String>,
        out: &mut impl Sink,
    ) {
        let topic = dest_topic(&dest).unwrap_or_default().to_string();
        self.park(Asked::Publish {
            dest,
            body,
            headers,
            receipt: receipt.map(Into::into),
        });
        out.put(Output::Ask(Act::Publish, topic));
    }

    /// The backend answered whether this session may `act` on `topic` (`reason` when not):
    /// the parked SUBSCRIBE or SEND goes ahead (with its receipt) or the session is refused.
    pub fn on_answer(
        &mut self,
        act: Act,
        topic: &str,
        allowed: bool,
        reason: &str,
        out: &mut impl Sink,
    ) {
        if self.state != State::Connected {
            return;
        }
        let Some(list) = self.asked.as_mut() else {
            return;
        };
        let Some(i) = list.iter().position(|a| a.is(act, topic)) else {
            return;
        };
        let asked = list.remove(i);
        if list.is_empty() {
            self.asked = None;
        }
        let receipt = match &asked {
            Asked::Subscribe { receipt, .. } | Asked::Publish { receipt, .. } => receipt.clone(),
        };
        if !allowed {
            let why = format!("{} {topic}: {reason}", act.as_str());
            return self.refuse(Refusal::Forbidden(why), receipt.as_deref(), out);
        }
        match asked {
            Asked::Subscribe {
                id, written, topic, ..
            } => {
                let dest = Dest::Topic {
                    project: self.project.to_string(),
                    topic: topic.into(),
                };
                self.add_sub(&id, &written, dest, out);
            }
            Asked::Publish {
                dest,
                body,
                headers,
                ..
            } => out.put(Output::Publish {
                dest,
                body,
                headers,
            }),
        }
        if let Some(r) = receipt {
            let f = Frame::new(Command::Receipt).header("receipt-id", &*r);
            out.put(Output::Frame(f.encode()));
        }
    }

    /// Sends the ERROR a refusal calls for and closes.
    pub(super) fn refuse(&mut self, e: Refusal, receipt: Option<&str>, out: &mut impl Sink) {
        match e {
            Refusal::Protocol(m) => self.error(&m, receipt, CloseError::PROTOCOL, out),
            Refusal::Forbidden(why) => {
                let reason = "forbidden (see the STOMP ERROR frame)";
                self.error_with(FORBIDDEN, &why, receipt, CloseError::POLICY, reason, out)
            }
        }
    }

    /// `SEND /app/refresh` with a `token` header: a newer token for the same user replaces the
    /// session's (its expiry and grants).
    pub(super) fn refresh(
        &mut self,
        f: &Frame,
        ctx: &Context,
        out: &mut impl Sink,
    ) -> Result<(), String> {
        if !ctx.auth.enabled {
            return Ok(());
        }
        let token = f
            .get("token")
            .ok_or("refresh refused: SEND /app/refresh needs a token header")?;
        let v = ctx
            .auth
            .verify(&self.project, token)
            .map_err(|e| format!("refresh refused: {e}"))?;
        if Some(v.user.as_str()) != self.user.as_deref() {
            return Err("refresh refused: the new token names another user".into());
        }
        let exp = u32::try_from(v.exp).unwrap_or(u32::MAX);
        if self.exp > 0 && exp <= self.exp {
            // A refresh extends a session: repeating a token (or sending an older one) is
            // refused, which also bounds refreshes to one per second of token lifetime.
            return Err(format!(
                "refresh refused: the new token must expire later than the session's (exp {})",
                self.exp
            ));
        }
        self.exp = exp;
        self.grants = v.grants.map(Box::new);
        self.drop_ungranted(ctx, out);
        out.put(Output::Refreshed);
        Ok(())
    }

    /// After a refresh: the subscriptions the new token no longer grants end now (a narrowed
    /// grant takes effect at once, not at the next SUBSCRIBE).
    fn drop_ungranted(&mut self, ctx: &Context, out: &mut impl Sink) {
        let mut gone = Vec::new();
        let (mut kept, subs) = (Vec::new(), std::mem::take(&mut self.subs));
        for sub in subs {
            match self.resolve(sub.written(), true) {
                Ok(dest)
                    if matches!(
                        self.permitted(Act::Subscribe, &dest, ctx),
                        Err(Refusal::Forbidden(_))
                    ) =>
                {
                    gone.push(dest)
                }
                _ => kept.push(sub),
            }
        }
        self.subs = kept;
        for dest in gone {
            if !self
                .subs
                .iter()
                .any(|o| self.resolves_to(o.written(), &dest))
            {
                out.put(Output::Unsubscribe(dest));
            }
        }
    }

    /// When the session's token expires (Unix seconds), if it does.
    pub fn expires_at(&self) -> Option<u64> {
        (self.exp > 0 && self.state == State::Connected).then_some(u64::from(self.exp))
    }

    /// The clock reads `now_s` (Unix seconds): a session whose token expired by then gets
    /// `ERROR message:token_expired` and is closed. Returns whether it was.
    pub fn expire(&mut self, now_s: u64, out: &mut impl Sink) -> bool {
        match self.expires_at() {
            Some(exp) if exp <= now_s => {
                let why = format!(
                    "the session's token expired at {exp} (Unix time): send a newer one with SEND {REFRESH} and a token header before it does"
                );
                let policy = CloseError::POLICY;
                self.error_with(TOKEN_EXPIRED, &why, None, policy, "token expired", out);
                true
            }
            _ => false,
        }
    }
}
