//! A STOMP session's SUBSCRIBE: the id and destination checked, the per-second and
//! per-session limits, a recovery asked for (`x-recover-since`), the project's policy (or its
//! backend) consulted, the subscription kept.

use super::{Output, Session, Sink, Sub, access};
use crate::access::Act;
use crate::context::Context;
use crate::dest::Dest;
use crate::stomp::frame::Frame;

impl Session {
    /// SUBSCRIBE: `Ok(true)` when done, `Ok(false)` when the backend was asked first.
    /// Counts a SUBSCRIBE in the second it arrived in (`last_in`, a 100 ms tick); false
    /// beyond `rate` in that second.
    fn count_subscribe(&mut self, rate: usize) -> bool {
        let second = (self.last_in / 10) & 0xffff;
        let (at, n) = (self.sub_rate >> 16, self.sub_rate & 0xffff);
        let n = if at == second { n } else { 0 };
        if n as usize >= rate {
            return false;
        }
        self.sub_rate = (second << 16) | (n + 1).min(0xffff);
        true
    }

    pub(super) fn subscribe(
        &mut self,
        f: &Frame,
        ctx: &Context,
        out: &mut impl Sink,
    ) -> Result<bool, access::Refusal> {
        let id = f.get("id").ok_or("SUBSCRIBE needs an id header")?;
        if !crate::names::valid(id) {
            return Err(format!("invalid subscription id: {}", crate::names::RULE).into());
        }
        let written = f
            .get("destination")
            .ok_or("SUBSCRIBE needs a destination header")?;
        if self.subs.iter().any(|s| s.id() == id) || self.is_asking(id) {
            return Err(format!("subscription id {id:?} is already in use").into());
        }
        let rate = ctx.cfg.limits.max_subscribes_per_s;
        if rate > 0 && !self.count_subscribe(rate) {
            return Err(format!("too many subscribes (at most {rate} a second)").into());
        }
        if self.subs.len() >= ctx.cfg.limits.max_topics_per_session {
            return Err(format!(
                "too many subscriptions: at most {} per session",
                ctx.cfg.limits.max_topics_per_session
            )
            .into());
        }
        let dest = self.resolve(written, true)?;
        let since = match f.get("x-recover-since") {
            Some(s) => Some(crate::history::Position::parse(s)?),
            None => None,
        };
        if since.is_some()
            && ctx
                .cfg
                .projects
                .get(&*self.project)
                .and_then(|p| p.history_for(&dest))
                .is_none()
        {
            return Err(format!(
                "{written} keeps no history: x-recover-since needs [projects.{}.history] to cover it",
                self.project
            )
            .into());
        }
        if !self.permitted(Act::Subscribe, &dest, ctx)? {
            if since.is_some() {
                return Err("x-recover-since is not available where the project's backend decides subscriptions (subscribe = \"proxy\")".into());
            }
            self.ask_subscribe(id, written, &dest, f.get("receipt"), out);
            return Ok(false);
        }
        self.add_sub(id, written, dest.clone(), out);
        match since {
            Some(since) => {
                out.put(Output::Recover(crate::history::Recover {
                    id: id.into(),
                    written: written.into(),
                    dest,
                    since,
                    receipt: f.get("receipt").map(Into::into),
                }));
                Ok(false)
            }
            None => Ok(true),
        }
    }

    /// Records a subscription (the hub hears of the destination only for its first one).
    pub(super) fn add_sub(&mut self, id: &str, written: &str, dest: Dest, out: &mut impl Sink) {
        if !self
            .subs
            .iter()
            .any(|s| self.resolves_to(s.written(), &dest))
        {
            out.put(Output::Subscribe(dest));
        }
        self.subs.push(Sub::new(id, written));
    }
}
