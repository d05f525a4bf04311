//! What reaches a shard from the hub: publishes to fan out to its local subscribers, session
//! listings, disconnects, a new configuration, and shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::Core;
use super::inbox::{Census, Command, SessionInfo, SubscriptionInfo};
use super::recovery::Live;
use crate::dest::Dest;
use crate::endpoint::{Context, Mode};
use crate::outbound::Messages;
use crate::ws::CloseError;
use ringcast_proto::publish::Publish;

impl Core {
    /// A command from the hub.
    pub fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish { msg, reply } => {
                let reached = self.fan_out(&msg);
                let st = &self.stats.shards[self.id];
                st.fanouts.fetch_add(1, Relaxed);
                st.messages_out.fetch_add(reached as u64, Relaxed);
                if let Some(reply) = reply {
                    let _ = reply.send(reached);
                }
            }
            Command::Disconnect {
                project,
                user,
                revoked,
                reply,
            } => {
                let _ = reply.send(self.disconnect(&project, &user, revoked));
            }
            Command::Sessions {
                projects,
                user,
                after,
                limit,
                reply,
            } => {
                let page = (after, limit);
                let _ = reply.send(self.sessions(projects.as_deref(), user.as_deref(), page));
            }
            Command::Census(reply) => {
                let _ = reply.send(self.census());
            }
            Command::Destinations {
                projects,
                filter,
                after,
                limit,
                reply,
            } => {
                let page = self.subs.page(projects.as_deref(), &filter, &after, limit);
                let _ = reply.send(page);
            }
            Command::Barrier(reply) => {
                let _ = reply.send(0);
            }
            Command::Reload(ctx) => self.reload(ctx),
            Command::Sockjs(m) => self.sockjs_message(m),
            Command::Answer(a) => self.answer(a),
            Command::Recovered {
                key,
                serial,
                replay,
            } => self.recovered(key, serial, replay),
            Command::Shutdown => self.shutdown(),
            Command::HandOver(_) => {}
        }
    }

    fn reload(&mut self, ctx: Arc<Context>) {
        self.ctx = ctx;
    }

    /// Closes every session of `user` in `project` with 1008; returns how many. A scan of this
    /// shard's sessions: /disconnect is rare, and a per-user index would cost every session
    /// ~200 bytes.
    fn disconnect(&mut self, project: &str, user: &str, revoked: bool) -> usize {
        let mut keys = std::mem::take(&mut self.keys);
        keys.extend(self.conns.iter().filter_map(|(k, c)| {
            let (p, u) = c.session.identity()?;
            (p == project && u == Some(user)).then_some(k as u32)
        }));
        for &key in &keys {
            if revoked {
                self.on_session(key, |s, out| s.revoke(out));
            } else {
                self.close_session(key, CloseError::POLICY, "disconnected by the server");
            }
        }
        let n = keys.len();
        keys.clear();
        self.keys = keys;
        n
    }

    /// Identified sessions per project, and the rest. A scan: the console asks once a second
    /// while someone watches its overview.
    fn census(&self) -> Census {
        let mut c = Census::default();
        for (_, conn) in self.conns.iter() {
            match conn.session.identity() {
                Some((p, _)) => match c.projects.get_mut(p) {
                    Some(n) => *n += 1,
                    None => {
                        c.projects.insert(p.to_string(), 1);
                    }
                },
                None => c.anonymous += 1,
            }
        }
        c
    }

    /// Identified sessions of `project` (every project if `None`; and of `user`, if given).
    fn sessions(
        &self,
        projects: Option<&[String]>,
        user: Option<&str>,
        (after, limit): (Option<(usize, u32)>, usize),
    ) -> Vec<SessionInfo> {
        // Keys after the cursor: all of them on a later shard, none on an earlier one.
        let from = match after {
            Some((shard, _)) if shard > self.id => usize::MAX,
            Some((shard, id)) if shard == self.id => id as usize + 1,
            _ => 0,
        };
        self.conns
            .iter()
            .filter(|(k, _)| *k >= from)
            .filter_map(|(k, c)| {
                let (p, u) = c.session.identity()?;
                if projects.is_some_and(|want| !want.iter().any(|w| w == p))
                    || (user.is_some() && u != user)
                {
                    return None;
                }
                let subscriptions = match c.session.mode() {
                    Mode::Stomp(s) => s
                        .subscriptions()
                        .map(|(id, d)| SubscriptionInfo {
                            id: id.to_string(),
                            destination: d.to_string(),
                        })
                        .collect(),
                    // A raw session's topics, as it named them in its URL.
                    _ => c
                        .subs
                        .iter()
                        .filter_map(|&id| match self.subs.dest_of(id)? {
                            Dest::Topic { topic, .. } => Some(SubscriptionInfo {
                                id: format!("topic={topic}"),
                                destination: format!("/topic/{topic}"),
                            }),
                            Dest::User { .. } => None,
                        })
                        .collect(),
                };
                Some(SessionInfo {
                    id: k as u32,
                    shard: self.id,
                    project: p.to_string(),
                    user: u.map(str::to_string),
                    protocol: if c.session.is_sockjs() {
                        "sockjs"
                    } else if c.session.stomp().is_some() {
                        "stomp"
                    } else {
                        "raw"
                    }
                    .into(),
                    connected_at: c.connected_at,
                    remote: (c.peer != [0; 4])
                        .then(|| std::net::Ipv4Addr::from(c.peer).to_string()),
                    subscriptions,
                    node: None,
                })
            })
            .take(limit)
            .collect()
    }

    /// Sends one publish to this shard's subscribers: raw sessions share `msg.raw`; STOMP
    /// sessions share one MESSAGE frame per distinct (subscription id, destination).
    fn fan_out(&mut self, msg: &Arc<Publish>) -> usize {
        let mut keys = std::mem::take(&mut self.keys);
        let mut frames = std::mem::take(&mut self.frames);
        let mut messages = Messages::default();
        let min = self.ctx.cfg.compression.min_bytes;
        self.subs.members_of(&msg.dest, &mut keys);
        // Slab order is roughly accept order: neighbouring sends then touch neighbouring slab
        // entries and sockets, where the set's hash order jumps around.
        keys.sort_unstable();
        let mut reached = 0;
        for &key in &keys {
            let Some(c) = self.conns.get(key as usize) else {
                continue;
            };
            if !c.session.is_open() {
                continue;
            }
            let enc = c.session.encoding(min);
            match c.session.mode() {
                Mode::Raw(_) if c.session.positions() || !self.recovering.is_empty() => {
                    if let Some(f) = self.raw_positioned(key, msg, c.session.positions(), enc) {
                        frames.push(f);
                    }
                }
                Mode::Raw(_) => frames.push(enc.raw(msg)),
                Mode::Stomp(s) if s.is_connected() => {
                    for (id, written) in s.matching(&msg.dest) {
                        if msg.position.is_some() && !self.recovering.is_empty() {
                            match self.recovering.live(key, id, msg) {
                                Live::Deliver => {}
                                Live::Skip => continue,
                                Live::Tell(t) => {
                                    let extra = Some(("x-recovered", t.to_string()));
                                    frames.push(enc.message(msg, id, written, extra));
                                    continue;
                                }
                            }
                        }
                        frames.push(messages.get(msg, id, written, enc));
                    }
                }
                _ => {}
            }
            let mut any = false;
            for f in frames.drain(..) {
                any |= self.send(key, f, true);
            }
            reached += usize::from(any);
        }
        keys.clear();
        self.keys = keys;
        self.frames = frames;
        reached
    }
}
