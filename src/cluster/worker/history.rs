//! The cluster thread's part in history: which destinations the node listens to (and since
//! when), numbered messages coming back from Redis, and reads of a destination's stream for the
//! recoveries the node's cache cannot answer (one read in flight per destination).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::cluster::link::Conn;
use tokio::time::timeout;

use super::{OP_TIMEOUT, ReadDone, Worker, script};
use crate::cluster::{answer_fetch, wire};
use crate::dest::Dest;
use crate::hub::Hub;
use crate::relay::{RelayError, Ticket};
use ringcast_proto::history::Position;
use ringcast_proto::publish::Publish;

impl Worker {
    pub(super) fn listen(&mut self, key: &str) {
        self.generation += 1;
        self.listening.insert(key.to_string(), self.generation);
    }

    /// The node stopped listening to `key` (`None`: to everything, Redis is gone): its history
    /// cache is dropped, publishes waiting for their own copy are answered without it, and
    /// recoveries waiting for a read are told they cannot recover.
    pub(super) fn deafen(&mut self, hub: &Hub, key: Option<&str>) {
        if let Some(h) = hub.history() {
            h.forget(key);
        }
        let mine = |k: &str| key.is_none_or(|key| key == k);
        self.listening.retain(|k, _| !mine(k));
        let gone: Vec<_> = self
            .awaiting
            .keys()
            .filter(|(k, _)| mine(k))
            .cloned()
            .collect();
        for k in gone {
            if let Some((reply, others)) = self.awaiting.remove(&k) {
                let _ = reply.send(Ok((0, others)));
            }
        }
        if key.is_none() {
            for (_, to) in self.fetching.drain().flat_map(|(_, w)| w) {
                answer_fetch(
                    hub,
                    to,
                    Err(RelayError::Redis(
                        "Redis went away during the history read".into(),
                    )),
                );
            }
        }
    }

    /// A message Redis numbered: cached and delivered like any other; this node's own ones
    /// are counted for the publisher waiting on them.
    pub(super) fn incoming_numbered(
        &mut self,
        hub: &Arc<Hub>,
        channel: &[u8],
        n: (String, u64, wire::Message),
    ) {
        let (epoch, offset, m) = n;
        let Some(dest) = self.setup.info.names.dest(channel) else {
            return;
        };
        let mine = m.origin == *self.setup.info.name;
        if !mine {
            self.setup.info.stats.cluster.received.fetch_add(1, Relaxed);
        }
        let key = dest.key();
        let mut msg = Publish::new(dest, m.body, m.headers);
        msg.position = Some((offset, epoch.into()));
        let Some((reply, others)) = mine.then(|| self.awaiting.remove(&(key, offset))).flatten()
        else {
            hub.deliver_nowait(msg);
            return;
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let asked = hub.deliver_counted(msg, &tx);
        // The shards answer soon, but this thread never waits on them.
        tokio::task::spawn_blocking(move || {
            let _ = reply.send(
                crate::hub::collect(&rx, asked)
                    .map(|s| (s, others))
                    .map_err(RelayError::from),
            );
        });
    }

    /// A recovering subscription the cache could not answer: one read of the destination's
    /// stream serves every subscription that asks while it is in flight.
    pub(super) fn fetch(
        &mut self,
        hub: &Arc<Hub>,
        conn: &Conn,
        dest: Dest,
        since: Position,
        to: Ticket,
    ) {
        let key = dest.key();
        if let Some(waiting) = self.fetching.get_mut(&key) {
            waiting.push((since, to));
            return;
        }
        // Answered from the cache if a read finished since the shard looked.
        if let Some(r) = hub.history().and_then(|h| h.replay(&dest, &since)) {
            answer_fetch(hub, to, Ok(r));
            return;
        }
        self.fetching.insert(key.clone(), vec![(since, to)]);
        self.setup
            .info
            .stats
            .history
            .redis_reads
            .fetch_add(1, Relaxed);
        let names = &self.setup.info.names;
        let (meta, stream) = (names.history_meta(&key), names.history_stream(&key));
        let generation = self.listening.get(&key).copied();
        let read = self.read.clone();
        let done = self.reads.0.clone();
        let mut conn = conn.clone();
        tokio::spawn(async move {
            let mut call = read.prepare_invoke();
            call.key(meta)
                .key(stream)
                .arg(crate::history::new_epoch())
                .arg(script::META_TTL_MS);
            let result =
                match timeout(OP_TIMEOUT, call.invoke_async::<redis::Value>(&mut conn)).await {
                    Ok(Ok(v)) => script::snapshot(&v).map_err(RelayError::Redis),
                    Ok(Err(e)) => Err(RelayError::Redis(format!("the history read failed: {e}"))),
                    Err(_) => Err(RelayError::TimedOut("the history read timed out")),
                };
            let _ = done.send(ReadDone {
                dest,
                generation,
                result,
            });
        });
    }

    /// A history read came back: the cache takes it in if the node listened throughout, and
    /// every subscription waiting on it is answered.
    pub(super) fn read_done(&mut self, hub: &Arc<Hub>, done: ReadDone) {
        let waiting = self.fetching.remove(&done.dest.key()).unwrap_or_default();
        let Some(history) = hub.history() else {
            return;
        };
        let snap = match done.result {
            Ok(snap) => snap,
            Err(e) => {
                tracing::warn!("cluster: {e}; recovering subscriptions are told to reload");
                for (_, to) in waiting {
                    answer_fetch(hub, to, Err(e.clone()));
                }
                return;
            }
        };
        let steady = done.generation.is_some()
            && self.listening.get(&done.dest.key()) == done.generation.as_ref();
        if !steady {
            // Those that asked during the read may have joined after it: they cannot be sure.
            for (_, to) in waiting {
                answer_fetch(
                    hub,
                    to,
                    Err(RelayError::Redis(
                        "the node stopped listening during the read".into(),
                    )),
                );
            }
            return;
        }
        history.merge(&done.dest, &snap);
        let bounds = history.bounds_for(&done.dest);
        for (since, to) in waiting {
            let r = history.replay(&done.dest, &since).or_else(|| {
                let r = script::decide(&snap, &since, bounds.as_ref()?);
                history.count_replay(&r);
                Some(r)
            });
            answer_fetch(
                hub,
                to,
                r.ok_or_else(|| RelayError::Redis("the destination keeps no history".into())),
            );
        }
    }
}
