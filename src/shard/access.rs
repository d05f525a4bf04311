//! A shard's side of who may do what: token expiries (a heap of the sessions' deadlines,
//! bounded however often tokens are refreshed), a refreshed raw token's narrower grants, and
//! the questions for a project's backend (the access proxy) and their answers.

use std::cmp::Reverse;
use std::sync::atomic::Ordering::Relaxed;

use super::{Core, Op};
use crate::access::{self, Act, Decision, Grants};
use crate::dest::Dest;

/// Stale expiry entries tolerated beyond twice the connections before a compaction.
const COMPACT_SLACK: usize = 1024;

impl Core {
    /// Files connection `key`'s token expiry, if it has one (again after a refresh: the older
    /// entry is recognised as stale when it comes up). Stale entries are bounded: past twice
    /// the shard's connections the heap is compacted to one entry per session, so refreshing
    /// a token over and over costs no memory.
    pub(super) fn watch_expiry(&mut self, key: u32) {
        let c = &self.conns[key as usize];
        if let Some(exp) = c.session.expires_at() {
            self.expiries.push(Reverse((exp, key, c.epoch)));
        }
        if self.expiries.len() > 2 * self.conns.len() + COMPACT_SLACK {
            self.compact_expiries();
        }
    }

    /// Keeps, for each live session, its earliest entry not later than its token's expiry
    /// (when that entry comes up, the session is re-filed at its current expiry).
    fn compact_expiries(&mut self) {
        let mut v = std::mem::take(&mut self.expiries).into_vec();
        v.retain(|&Reverse((exp, key, epoch))| {
            self.conns.get(key as usize).is_some_and(|c| {
                c.epoch == epoch && c.session.expires_at().is_some_and(|e| exp <= e)
            })
        });
        v.sort_unstable_by_key(|&Reverse((exp, key, epoch))| (key, epoch, exp));
        v.dedup_by_key(|&mut Reverse((_, key, epoch))| (key, epoch));
        self.expiries = v.into();
    }

    /// Closes the sessions whose token expired by `now_s` (Unix seconds).
    pub(super) fn expire_tokens(&mut self, now_s: u64) {
        while let Some(&Reverse((exp, key, epoch))) = self.expiries.peek() {
            if exp > now_s {
                break;
            }
            self.expiries.pop();
            let Some(c) = self.conns.get_mut(key as usize) else {
                continue;
            };
            if c.epoch != epoch {
                continue;
            }
            match c.session.expires_at() {
                // Refreshed since this entry was filed; a compaction may have left this older
                // entry as the session's only one, so it is filed again at its expiry.
                Some(later) if later > exp => {
                    if later > now_s {
                        self.expiries.push(Reverse((later, key, epoch)));
                        continue;
                    }
                }
                Some(_) => {}
                None => continue,
            }
            let mut out = std::mem::take(&mut self.out);
            if c.session.expire(now_s, &mut out) {
                self.stats.shards[self.id]
                    .token_expired
                    .fetch_add(1, Relaxed);
            }
            self.apply(key, &mut out);
            self.out = out;
        }
    }

    /// Connection `key` needs the project's backend to decide on `topic`.
    pub(super) fn ask(&mut self, key: u32, act: Act, topic: String) {
        let c = &self.conns[key as usize];
        let Some((project, Some(user))) = c.session.identity() else {
            return;
        };
        let q = super::Question {
            shard: self.id,
            key,
            epoch: c.epoch,
            project: project.to_string(),
            user: user.to_string(),
            topic,
            act,
        };
        self.ops.push(Op::Ask(q));
    }

    /// The backend's answer to a `Question` of this shard.
    pub fn answer(&mut self, a: super::inbox::Answer) {
        let Some(c) = self.conns.get_mut(a.key as usize) else {
            return;
        };
        if c.epoch != a.epoch {
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        c.session
            .on_answer(a.act, &a.topic, a.allowed, &a.reason, &mut out);
        self.apply(a.key, &mut out);
        self.out = out;
    }
}

impl Core {
    /// The backend URL for a question (empty when the project has none: the question is then
    /// refused by the proxy as unreachable).
    pub fn backend_for(&self, q: &super::Question) -> String {
        self.ctx
            .cfg
            .projects
            .get(&q.project)
            .and_then(|p| p.proxy_for(q.act))
            .unwrap_or_default()
            .to_string()
    }
}

impl Core {
    /// A raw session's token was refreshed with `grants`: its subscriptions to topics the
    /// project's policy no longer allows under them end, each told in a text message.
    pub(super) fn regranted(&mut self, key: u32, grants: Option<&Grants>) {
        let Some(c) = self.conns.get(key as usize) else {
            return;
        };
        let Some((project, _)) = c.session.identity() else {
            return;
        };
        let Some(policy) = self.ctx.cfg.projects.get(project).map(|p| p.subscribe) else {
            return;
        };
        let mut ended = Vec::new();
        for &id in &c.subs {
            if let Some(Dest::Topic { topic, .. }) = self.subs.dest_of(id)
                && let Decision::Deny(why) = access::decide(policy, Act::Subscribe, grants, &topic)
            {
                ended.push((id, topic, why));
            }
        }
        for (id, topic, why) in ended {
            self.subs.unsubscribe(id, key);
            self.conns[key as usize].subs.retain(|&d| d != id);
            let text = serde_json::json!({ "unsubscribed": topic, "reason": why }).to_string();
            let frame = crate::ws::frame::encode(crate::ws::frame::Opcode::Text, text.as_bytes());
            self.send(key, frame, false);
        }
    }
}
