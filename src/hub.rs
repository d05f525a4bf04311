//! The hub: how a publish reaches the shards that listen to it, and how the node asks every
//! shard a question and gathers the answers (`fan_in`).
//!
//! A publish is encoded once into a shared frame and handed to every shard over its
//! `crossbeam-channel`, followed by a write to the shard's eventfd (a read of which the shard
//! keeps pending in its ring: the wake-up needs no epoll). Each shard answers with how many of
//! its sessions the message reached. Subscriptions are shard-local (`shard::index`):
//! subscribing or leaving touches only that shard's destinations. Three locks are shared between reactors, each
//! taken off the per-message path or briefly: the audience table (which shards listen to a
//! destination, read under the history lock when a message is numbered), the history store,
//! and the per-address counts (`PerIp`, on accept and close only when a limit is on).

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use nix::sys::eventfd::{EfdFlags, EventFd};

use ringcast_proto::publish::Publish;

use crate::audience::Audience;
use crate::relay::{Pending, Relay, RelayError};
use crate::shard::inbox::{Census, Command, Inbox, SessionInfo};

struct Link {
    tx: Sender<Command>,
    wake: Arc<EventFd>,
}

/// The sending side, shared by the admin API, signal handling and the cluster link.
pub struct Hub {
    links: Vec<Link>,
    relay: Option<Arc<dyn Relay>>,
    audience: Arc<Audience>,
    /// Numbers and keeps messages of destinations with history (see `History::record`).
    history: Option<Arc<crate::history::History>>,
    /// Set while the shards hand their connections to a new process (`ringcast upgrade`), and
    /// for good once they have: publishes are refused (503, retry), so none is taken that no
    /// process would deliver. A publish holds it shared from its check until every shard has
    /// it in its inbox, so none can reach some shards before their hand-over and the rest
    /// after.
    handing_over: std::sync::RwLock<bool>,
    /// Client SENDs that shards read while the gate was closed (they cannot be refused): given
    /// to the successor once it serves, or delivered here if the upgrade fails.
    held: std::sync::Mutex<Vec<Publish>>,
    /// Ingest steps (fetch, hand out, acknowledge) under way: a hand-over waits for them to
    /// end before the successor's consumers start (see `source_step`).
    source_steps: std::sync::atomic::AtomicUsize,
}

/// An ingest step under way (see `Hub::source_step`).
pub struct SourceStep<'a>(&'a Hub);

impl Drop for SourceStep<'_> {
    fn drop(&mut self) {
        self.0.source_steps.fetch_sub(1, SeqCst);
    }
}

/// Why the hub could not carry out a publish or a question to the shards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// A shard did not answer within `REPLY_TIMEOUT` (it is stalled or overloaded).
    #[error("a shard did not answer in time")]
    ShardTimedOut,
    /// The node is handing its connections to a new process.
    #[error(
        "the server is handing its connections to a new process (ringcast upgrade): retry in a moment"
    )]
    HandingOver,
    /// The message is for Redis to number and deliver, and Redis could not.
    #[error(transparent)]
    Relay(#[from] RelayError),
}

impl HubError {
    /// The HTTP status an API answers with: 504 when something did not answer in time, 503
    /// when it could not be asked.
    pub fn status(&self) -> u16 {
        match self {
            HubError::ShardTimedOut | HubError::Relay(RelayError::TimedOut(_)) => 504,
            HubError::Relay(_) | HubError::HandingOver => 503,
        }
    }
}

/// What a relay reports when it asked this node's shards on another node's behalf.
impl From<HubError> for RelayError {
    fn from(e: HubError) -> RelayError {
        match e {
            HubError::Relay(r) => r,
            HubError::ShardTimedOut => RelayError::TimedOut("a shard did not answer in time"),
            HubError::HandingOver => RelayError::Stopped,
        }
    }
}

/// How far a publish went.
#[derive(Debug)]
pub struct Reach {
    /// Sessions of this node it reached.
    pub sessions: usize,
    /// With a cluster: how many other nodes Redis handed it to (those with an audience for
    /// it), or why it could not be handed over.
    pub cluster: Option<Result<u64, RelayError>>,
    /// From the call to every local shard's answer (each answers once its sends are queued).
    pub local: Duration,
}

/// How long a publish waits for the shards' counts before answering without them.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A publish handed out, before its answers.
enum Sent {
    /// Delivered here: the shards' answers, how many were asked, the other nodes' answer.
    Here(Receiver<usize>, usize, Option<Pending>),
    /// Numbered by Redis and delivered from it.
    Numbered(Pending<(usize, u64)>),
}

/// The sum of `asked` shards' counts on `rx`.
pub fn collect(rx: &Receiver<usize>, asked: usize) -> Result<usize, HubError> {
    fan_in(rx, asked, 0, |sum, n| *sum += n)
}

/// Waits for `asked` answers on `rx`, folding each into `acc`: the one place that waits on
/// shards, so a shard that does not answer in time is the same error everywhere.
pub fn fan_in<T, A>(
    rx: &Receiver<T>,
    asked: usize,
    mut acc: A,
    mut fold: impl FnMut(&mut A, T),
) -> Result<A, HubError> {
    for _ in 0..asked {
        let answer = rx
            .recv_timeout(REPLY_TIMEOUT)
            .map_err(|_| HubError::ShardTimedOut)?;
        fold(&mut acc, answer);
    }
    Ok(acc)
}

/// Client SENDs held during one hand-over at most.
const MAX_HELD: usize = 100_000;

impl Hub {
    pub fn new(shards: usize) -> std::io::Result<(Hub, Vec<Inbox>)> {
        let mut links = Vec::with_capacity(shards);
        let mut inboxes = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = unbounded();
            let wake = Arc::new(
                EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC)
                    .map_err(std::io::Error::from)?,
            );
            links.push(Link {
                tx,
                wake: wake.clone(),
            });
            inboxes.push(Inbox { rx, wake });
        }
        Ok((
            Hub {
                links,
                relay: None,
                audience: Arc::new(Audience::new(shards)),
                history: None,
                handing_over: Default::default(),
                held: Default::default(),
                source_steps: Default::default(),
            },
            inboxes,
        ))
    }

    /// Publishes also go to the other nodes through `relay`.
    pub fn with_relay(mut self, relay: Arc<dyn Relay>) -> Hub {
        self.relay = Some(relay);
        self
    }

    /// Messages of destinations with history are numbered and kept in `history`.
    pub fn with_history(mut self, history: Arc<crate::history::History>) -> Hub {
        self.history = Some(history);
        self
    }

    /// The node's history store, if it keeps one.
    pub fn history(&self) -> Option<&Arc<crate::history::History>> {
        self.history.as_ref()
    }

    /// Hands `msg` to `deliver` (numbered first when its destination keeps history).
    fn stamp<R>(&self, msg: Publish, deliver: impl FnOnce(Arc<Publish>) -> R) -> R {
        match &self.history {
            Some(h) => h.record(msg, deliver),
            None => deliver(Arc::new(msg)),
        }
    }

    /// The relay to the other nodes, if this node is in a cluster.
    pub fn relay(&self) -> Option<&Arc<dyn Relay>> {
        self.relay.as_ref()
    }

    pub fn shard_count(&self) -> usize {
        self.links.len()
    }

    /// Every publish visits every shard, whatever the shards report: for shards that keep no
    /// subscription index (the load generator's floor server).
    pub fn visit_all(mut self) -> Hub {
        self.audience = Arc::new(Audience::new(usize::MAX));
        self
    }

    /// Where shards report their audience (see `Audience`).
    pub fn audience(&self) -> Arc<Audience> {
        self.audience.clone()
    }

    fn send(&self, link: &Link, cmd: Command) {
        if link.tx.send(cmd).is_ok() {
            // A failed write means the counter is saturated: the shard is awake anyway.
            let _ = link.wake.write(1);
        }
    }

    /// Hands `cmd` to one shard (what shards use to reach each other).
    pub fn send_to(&self, shard: usize, cmd: Command) {
        if let Some(link) = self.links.get(shard) {
            self.send(link, cmd);
        }
    }

    /// Fans `msg` out to every shard (and, in a cluster, to the other nodes); returns how far
    /// it went, or an error if a shard did not answer in time.
    pub fn publish(&self, msg: Publish) -> Result<Reach, HubError> {
        self.publish_many(vec![msg])
            .pop()
            .unwrap_or(Err(HubError::ShardTimedOut))
    }

    /// Publishes a batch: every message is handed to its shards before any answer is awaited,
    /// so a batch of N costs the shards one wake-up each rather than N round trips. Answers
    /// come back in order.
    pub fn publish_many(&self, msgs: Vec<Publish>) -> Vec<Result<Reach, HubError>> {
        let gate = self.gate();
        if *gate {
            return msgs.iter().map(|_| Err(HubError::HandingOver)).collect();
        }
        let start = std::time::Instant::now();
        let sent: Vec<_> = msgs
            .into_iter()
            .map(|msg| {
                if let Some(numbered) = self.number(&msg, true) {
                    return Sent::Numbered(numbered);
                }
                // Handed to Redis first, so the other nodes deliver while this one does.
                let remote = self.relay.as_ref().map(|c| c.publish(&msg));
                let (tx, rx) = bounded(self.links.len());
                let asked = self.stamp(msg, |msg| self.hand_out(&msg, Some(&tx)));
                Sent::Here(rx, asked, remote)
            })
            .collect();
        drop(gate);
        sent.into_iter()
            .map(|sent| match sent {
                Sent::Numbered(pending) => {
                    let (sessions, nodes) = pending.wait()?;
                    Ok(Reach {
                        sessions,
                        cluster: Some(Ok(nodes)),
                        local: start.elapsed(),
                    })
                }
                Sent::Here(rx, asked, remote) => {
                    let sessions = collect(&rx, asked)?;
                    // Measured before the other nodes' answer: `local` is this node's part.
                    let local = start.elapsed();
                    Ok(Reach {
                        sessions,
                        cluster: remote.map(|r| r.wait()),
                        local,
                    })
                }
            })
            .collect()
    }

    /// In a cluster, a destination with history is numbered by Redis, and delivered from it
    /// (here too): `None` for every other publish, which is delivered here at once.
    fn number(&self, msg: &Publish, wait: bool) -> Option<Pending<(usize, u64)>> {
        let relay = self.relay.as_ref()?;
        let bounds = self.history.as_ref()?.bounds_for(&msg.dest)?;
        let (tx, rx) = bounded(1);
        let taken = relay.number(msg, &bounds, wait.then_some(tx));
        Some(Pending(if taken {
            Ok(rx)
        } else {
            Err(RelayError::Full("the message was not numbered"))
        }))
    }

    /// Hands `msg` to every shard with an audience for it; returns how many.
    fn hand_out(&self, msg: &Arc<Publish>, reply: Option<&Sender<usize>>) -> usize {
        // Called under the history's lock when the destination keeps history: a recovering
        // subscriber joins the audience before reading the history, so it gets every later
        // offset.
        let visits = self.audience.visits(&msg.dest.key());
        let mut asked = 0;
        for (_, link) in self.links.iter().enumerate().filter(|(i, _)| visits(*i)) {
            let cmd = Command::Publish {
                msg: msg.clone(),
                reply: reply.cloned(),
            };
            self.send(link, cmd);
            asked += 1;
        }
        asked
    }

    /// Fans out without waiting for counts: what a shard uses for a client's SEND, since a
    /// reactor must never block on other reactors.
    pub fn publish_nowait(&self, msg: Publish) {
        let gate = self.gate();
        if *gate {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if held.len() < MAX_HELD {
                held.push(msg);
            } else {
                tracing::warn!(
                    "a client's publish during the hand-over was dropped: {MAX_HELD} held already"
                );
            }
            return;
        }
        self.fan_out_nowait(msg);
    }

    /// `publish_nowait` for a source that can take a message back (ingest: left
    /// unacknowledged, its broker gives it to the successor): refused, not held, during a
    /// hand-over. One that is taken is handed to the shards before any hand-over command.
    pub fn try_publish_nowait(&self, msg: Publish) -> Result<(), HubError> {
        let gate = self.gate();
        if *gate {
            return Err(HubError::HandingOver);
        }
        self.fan_out_nowait(msg);
        Ok(())
    }

    fn fan_out_nowait(&self, msg: Publish) {
        if self.number(&msg, false).is_some() {
            return;
        }
        if let Some(c) = &self.relay {
            c.forward(&msg);
        }
        self.deliver_nowait(msg);
    }

    /// Fans out to this node's shards only: what arrives from the other nodes.
    pub fn deliver_nowait(&self, msg: Publish) {
        self.stamp(msg, |msg| self.hand_out(&msg, None));
    }

    /// Fans out to this node's shards, which answer on `reply`; returns how many were asked.
    pub fn deliver_counted(&self, msg: Publish, reply: &Sender<usize>) -> usize {
        self.stamp(msg, |msg| self.hand_out(&msg, Some(reply)))
    }

    /// Identified sessions of `project` (every project if `None`; and `user`) on every shard.
    pub fn sessions(
        &self,
        project: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<SessionInfo>, HubError> {
        let projects = project.map(|p| vec![p.to_string()]);
        self.sessions_page(projects.as_deref(), user, None, usize::MAX)
    }

    /// A page of identified sessions: at most `limit`, in (shard, id) order after `after`.
    pub fn sessions_page(
        &self,
        projects: Option<&[String]>,
        user: Option<&str>,
        after: Option<(usize, u32)>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, HubError> {
        let mut all = self.gather(|reply| Command::Sessions {
            projects: projects.map(<[String]>::to_vec),
            user: user.map(str::to_string),
            after,
            limit,
            reply,
        })?;
        all.sort_by_key(|s| (s.shard, s.id));
        all.truncate(limit);
        Ok(all)
    }

    /// Every shard's answer to `make`, concatenated.
    fn gather<T>(&self, make: impl FnMut(Sender<Vec<T>>) -> Command) -> Result<Vec<T>, HubError> {
        let (rx, asked) = self.ask_each(|_| true, make);
        fan_in(&rx, asked, Vec::new(), |all, part| all.extend(part))
    }

    /// Sessions per project over every shard.
    pub fn census(&self) -> Result<Census, HubError> {
        let (rx, asked) = self.ask_each(|_| true, Command::Census);
        fan_in(&rx, asked, Census::default(), |total, c| {
            total.anonymous += c.anonymous;
            for (p, n) in c.projects {
                *total.projects.entry(p).or_default() += n;
            }
        })
    }

    /// Sends `make`'s command to each shard `visit` picks; the channel their answers come
    /// back on, and how many were asked.
    fn ask_each<T>(
        &self,
        visit: impl Fn(usize) -> bool,
        mut make: impl FnMut(Sender<T>) -> Command,
    ) -> (Receiver<T>, usize) {
        let (tx, rx) = bounded(self.links.len());
        let mut asked = 0;
        for (_, link) in self.links.iter().enumerate().filter(|(i, _)| visit(*i)) {
            self.send(link, make(tx.clone()));
            asked += 1;
        }
        (rx, asked)
    }

    /// A page of destinations whose key contains `filter`, after `after`, with their
    /// subscribers over every shard.
    pub fn destinations(
        &self,
        projects: Option<&[String]>,
        filter: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, usize)>, HubError> {
        let all = self.gather(|reply| Command::Destinations {
            projects: projects.map(<[String]>::to_vec),
            filter: filter.to_string(),
            after: after.to_string(),
            limit,
            reply,
        })?;
        let mut merged: std::collections::BTreeMap<String, usize> = Default::default();
        for (k, n) in all {
            *merged.entry(k).or_default() += n;
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    /// Returns once every shard has carried out what was sent to it before (publishes
    /// included), or an error if one did not answer in time.
    pub fn barrier(&self) -> Result<(), HubError> {
        self.ask(Command::Barrier).map(|_| ())
    }

    /// Closes every session of `user` in `project`; `revoked`: as a revocation (STOMP
    /// `ERROR message:revoked`, close 4001) rather than a disconnect (1008).
    pub fn disconnect(&self, project: &str, user: &str, revoked: bool) -> Result<usize, HubError> {
        self.ask(|reply| Command::Disconnect {
            project: project.to_string(),
            user: user.to_string(),
            revoked,
            reply,
        })
    }

    fn ask(&self, make: impl FnMut(Sender<usize>) -> Command) -> Result<usize, HubError> {
        self.ask_some(|_| true, make)
    }

    /// Sends `make`'s command to the shards `visit` picks and sums their answers.
    fn ask_some(
        &self,
        visit: impl Fn(usize) -> bool,
        make: impl FnMut(Sender<usize>) -> Command,
    ) -> Result<usize, HubError> {
        let (rx, asked) = self.ask_each(visit, make);
        collect(&rx, asked)
    }

    pub fn reload(&self, ctx: Arc<crate::context::Context>) {
        if let Some(h) = &self.history {
            h.reload(&ctx.cfg);
        }
        for link in &self.links {
            self.send(link, Command::Reload(ctx.clone()));
        }
    }

    /// Refuses publishes from now on: returns once no publish is half handed out.
    pub fn hand_over(&self) {
        *self
            .handing_over
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
    }

    /// An ingest consumer may fetch from its broker now: `None` during a hand-over, so a
    /// fetch never leaves messages taken by this process once its successor consumes.
    /// Counted before the gate is looked at, so `sources_quiet` cannot miss a step that
    /// saw the gate open.
    pub fn source_step(&self) -> Option<SourceStep<'_>> {
        self.source_steps.fetch_add(1, SeqCst);
        let step = SourceStep(self);
        (!self.handing_over()).then_some(step)
    }

    /// Waits (until `deadline`) for the ingest steps under way when the gate closed to end;
    /// false if one is still running.
    pub fn sources_quiet(&self, deadline: std::time::Instant) -> bool {
        while self.source_steps.load(SeqCst) > 0 {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        true
    }

    /// Whether publishes are refused for a hand-over.
    pub fn handing_over(&self) -> bool {
        *self.gate()
    }

    /// Takes publishes again: the upgrade failed before anything moved. The client SENDs held
    /// meanwhile are delivered now.
    pub fn take_publishes(&self) {
        *self
            .handing_over
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = false;
        for msg in self.held() {
            self.publish_nowait(msg);
        }
    }

    /// The client SENDs held while the gate was closed, oldest first.
    pub fn held(&self) -> Vec<Publish> {
        std::mem::take(&mut *self.held.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn gate(&self) -> std::sync::RwLockReadGuard<'_, bool> {
        self.handing_over
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn shutdown(&self) {
        for link in &self.links {
            self.send(link, Command::Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::Dest;
    use crate::shard::index::Subscriptions;
    use bytes::Bytes;

    fn topic(p: &str, t: &str) -> Dest {
        Dest::topic(p, t).unwrap()
    }

    /// One small publish to `/topic/t` of project `p`.
    fn push() -> Publish {
        Publish::new(topic("p", "t"), Bytes::from_static(b"x"), vec![])
    }

    #[test]
    fn during_a_hand_over_publishes_are_refused_and_client_sends_held() {
        let (hub, inboxes) = Hub::new(1).unwrap();
        let hub = hub.visit_all();
        hub.hand_over();
        assert_eq!(hub.publish(push()).unwrap_err(), HubError::HandingOver);
        assert_eq!(HubError::HandingOver.status(), 503);
        hub.publish_nowait(push());
        assert!(
            inboxes[0].rx.try_recv().is_err(),
            "nothing reached the shard"
        );
        // The upgrade failed: the held SEND is delivered here after all, and publishes flow.
        hub.take_publishes();
        assert!(matches!(
            inboxes[0].rx.try_recv(),
            Ok(Command::Publish { .. })
        ));
        assert!(hub.held().is_empty());
    }

    #[test]
    fn a_body_that_is_not_utf8_travels_in_binary_frames() {
        let text = Publish::new(
            topic("p", "t"),
            Bytes::from_static("héllo".as_bytes()),
            vec![],
        );
        assert!(text.utf8);
        assert_eq!(text.raw[0], 0x81);
        let bin = Publish::new(topic("p", "t"), Bytes::from_static(b"\xff\x00\xfe"), vec![]);
        assert!(!bin.utf8);
        assert_eq!(bin.raw[0], 0x82);
        assert_eq!(&bin.raw[2..], b"\xff\x00\xfe");
    }

    #[test]
    fn a_publish_visits_only_shards_with_an_audience() {
        let (hub, inboxes) = Hub::new(3).unwrap();
        let a = hub.audience();
        let mut s1 = Subscriptions::watched(None, Some((1, a.clone())));
        let id = s1.subscribe(&topic("p", "t"), 7);
        let reply = std::thread::spawn({
            let rx = inboxes[1].rx.clone();
            move || match rx.recv() {
                Ok(Command::Publish {
                    reply: Some(reply), ..
                }) => reply.send(1).unwrap(),
                _ => panic!("shard 1 expected the publish"),
            }
        });
        let n = hub.publish(push()).unwrap();
        reply.join().unwrap();
        assert_eq!(n.sessions, 1);
        assert!(inboxes[0].rx.is_empty() && inboxes[2].rx.is_empty());
        // Nobody listens any more: nobody is woken, and the answer is immediate.
        s1.unsubscribe(id, 7);
        let n = hub.publish(push()).unwrap();
        assert_eq!(n.sessions, 0);
        assert!(inboxes.iter().all(|i| i.rx.is_empty()));
    }

    #[test]
    fn publish_collects_counts_from_every_shard() {
        let (hub, inboxes) = Hub::new(3).unwrap();
        let workers: Vec<_> = inboxes
            .into_iter()
            .enumerate()
            .map(|(i, inbox)| {
                std::thread::spawn(move || {
                    if let Ok(Command::Publish {
                        reply: Some(reply), ..
                    }) = inbox.rx.recv()
                    {
                        assert_eq!(inbox.wake.read().unwrap(), 1);
                        reply.send(i + 1).unwrap();
                    }
                })
            })
            .collect();
        for shard in 0..3 {
            hub.audience.set(&topic("p", "t").key(), shard, true);
        }
        let n = hub.publish(push()).unwrap();
        assert_eq!(n.sessions, 6);
        assert!(n.cluster.is_none());
        for w in workers {
            w.join().unwrap();
        }
    }
}
