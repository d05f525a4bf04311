//! What reaches a shard from the hub: publishes to fan out to its local subscribers, session
//! listings, disconnects, a new configuration, and shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::Core;
use super::recovery::Live;
use crate::endpoint::{Context, Mode, Wrapping};
use crate::hub::{Command, Dest, Publish, SessionInfo, SubscriptionInfo};
use crate::stomp::frame::{Command as StompCommand, Frame as StompFrame, SERVER_HEADERS};
use crate::ws::CloseError;

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
                reply,
            } => {
                let _ = reply.send(self.disconnect(&project, &user));
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
        }
    }

    fn reload(&mut self, ctx: Arc<Context>) {
        self.ctx = ctx;
    }

    /// Closes every session of `user` in `project` with 1008; returns how many. A scan of this
    /// shard's sessions: /disconnect is rare, and a per-user index would cost every session
    /// ~200 bytes.
    fn disconnect(&mut self, project: &str, user: &str) -> usize {
        let mut keys = std::mem::take(&mut self.keys);
        keys.extend(self.conns.iter().filter_map(|(k, c)| {
            let (p, u) = c.session.identity()?;
            (p == project && u == Some(user)).then_some(k as u32)
        }));
        for &key in &keys {
            self.close_session(key, CloseError::POLICY, "disconnected by the server");
        }
        let n = keys.len();
        keys.clear();
        self.keys = keys;
        n
    }

    /// Identified sessions of `project` (every project if `None`; and of `user`, if given).
    /// Identified sessions per project, and the rest. A scan: the console asks once a second
    /// while someone watches its overview.
    fn census(&self) -> crate::hub::Census {
        let mut c = crate::hub::Census::default();
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
                    },
                    connected_at: c.connected_at,
                    remote: (c.peer != [0; 4])
                        .then(|| std::net::Ipv4Addr::from(c.peer).to_string()),
                    subscriptions,
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
        let mut cache: Vec<(String, String, Encoding, Bytes)> = Vec::new();
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
            match c.session.mode() {
                Mode::Raw(_) if c.session.positions() || !self.recovering.is_empty() => {
                    if let Some(f) =
                        self.raw_positioned(key, msg, c.session.positions(), c.session.deflate())
                    {
                        frames.push(f);
                    }
                }
                Mode::Raw(_) => frames.push(msg.raw_for(c.session.deflate(), min)),
                Mode::Stomp(s) if s.is_connected() => {
                    let wrap = (c.session.wrapping(), c.session.deflate());
                    for (id, written) in s.matching(&msg.dest) {
                        if msg.position.is_some() && !self.recovering.is_empty() {
                            match self.recovering.live(key, id, msg) {
                                Live::Deliver => {}
                                Live::Skip => continue,
                                Live::Tell(t) => {
                                    let extra = Some(("x-recovered", t.to_string()));
                                    frames.push(message_frame(msg, id, written, wrap, min, extra));
                                    continue;
                                }
                            }
                        }
                        let hit = cache
                            .iter()
                            .find(|(i, w, j, _)| i == id && w == written && *j == wrap);
                        let frame = match hit {
                            Some((_, _, _, f)) => f.clone(),
                            None => {
                                let f = message_frame(msg, id, written, wrap, min, None);
                                cache.push((id.into(), written.into(), wrap, f.clone()));
                                f
                            }
                        };
                        frames.push(frame);
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

impl Core {
    /// A raw session's frame for `msg` when it wants positions or may be recovering: `None`
    /// when its replay already carried the message.
    pub(super) fn raw_positioned(
        &mut self,
        key: u32,
        msg: &Arc<Publish>,
        positions: bool,
        deflate: Option<u8>,
    ) -> Option<Bytes> {
        let min = self.ctx.cfg.compression.min_bytes;
        let Dest::Topic { topic, .. } = &msg.dest else {
            return Some(msg.raw_for(deflate, min));
        };
        let position = msg.position.as_ref().map(|(o, e)| (&**e, *o));
        if position.is_some()
            && !self.recovering.is_empty()
            && matches!(
                self.recovering.live(key, &format!("topic={topic}"), msg),
                Live::Skip
            )
        {
            return None;
        }
        if !positions {
            return Some(msg.raw_for(deflate, min));
        }
        let text = ringcast_proto::history::envelope(topic, position, &msg.body);
        Some(super::recovery::raw_text(text, deflate, min))
    }
}

/// A STOMP MESSAGE frame for one (subscription, destination), as a WebSocket text frame (a
/// binary one when the body is not UTF-8; on SockJS, always text: `a["..."]`, with what is not
/// UTF-8 replaced). The server's own headers come first and cannot be repeated by the
/// publisher's: every path that builds a `Publish` filters them, and this skips them again for
/// whatever arrives from another node.
/// How a session wants its frames: SockJS or not, and compressed with which window.
type Encoding = (Wrapping, Option<u8>);

pub(super) fn message_frame(
    msg: &Publish,
    sub: &str,
    destination: &str,
    encoding: Encoding,
    min_bytes: usize,
    extra: Option<(&str, String)>,
) -> Bytes {
    let mut f = StompFrame::new(StompCommand::Message)
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
    wrap_frame(f.encode(), msg.utf8, encoding, min_bytes)
}

/// An encoded STOMP frame as the session's transport carries it: a WebSocket frame (text, or
/// binary when `utf8` is false; compressed when the session negotiated it), SockJS's
/// `a["..."]` inside one, or that alone for SockJS over HTTP.
pub(super) fn wrap_frame(
    payload: Vec<u8>,
    utf8: bool,
    (wrap, deflate): Encoding,
    min_bytes: usize,
) -> Bytes {
    use crate::ws::frame::{Opcode, encode, encode_deflated};
    let (opcode, payload) = match wrap {
        Wrapping::WebSocket => (Publish::opcode(utf8), payload),
        Wrapping::Sockjs => (Opcode::Text, crate::sockjs::messages([&payload[..]])),
        Wrapping::SockjsHttp => return crate::sockjs::messages([&payload[..]]).into(),
    };
    match deflate {
        Some(bits) if payload.len() >= min_bytes => {
            encode_deflated(opcode, &crate::ws::deflate::deflate(&payload, bits))
        }
        _ => encode(opcode, &payload),
    }
}
