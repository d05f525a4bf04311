//! Recovering subscriptions: a SUBSCRIBE with a position gets what it missed, read from the
//! node's history in one piece, then live messages, with none lost and none twice. The
//! subscription is live before the history is read (the hub numbers and sends under the
//! store's lock, reading the audience there), so every offset after the read arrives live; the
//! live ones the read already covered, still on their way through the shard's queue, are
//! skipped here by offset.
//!
//! In a cluster the node's history is a cache of Redis's; when it cannot answer, the shard
//! asks Redis (`Relay::fetch`, sent after the subscription joined) and holds that
//! subscription's live messages until the answer comes back as `Command::Recovered`.

use std::collections::HashMap;
use std::sync::Arc;

use super::Core;
use crate::dest::Dest;
use crate::history::{Entry, Replay};
use crate::outbound::Encoding;
use crate::relay::Ticket;
use crate::stomp::frame::{Command as StompCommand, Frame as StompFrame};
use bytes::Bytes;
use ringcast_proto::history::Recover;
use ringcast_proto::publish::Publish;

/// One recovering subscription of a connection.
struct Pending {
    id: String,
    /// Live messages up to this offset were replayed (or belong to what the client reloads).
    through: u64,
    /// `x-recovered` still owed to the client on its next frame (no receipt was asked).
    tell: Option<bool>,
    /// Waiting for Redis's answer.
    waiting: Option<Waiting>,
}

struct Waiting {
    serial: u64,
    recover: Recover,
    /// Live messages that arrived meanwhile, delivered (or skipped) once the answer is in.
    held: Vec<Arc<Publish>>,
}

/// What a shard remembers of its recovering subscriptions, per connection: empty but for the
/// moments between a recovering SUBSCRIBE and the first live message after it.
#[derive(Default)]
pub struct Recovering(HashMap<u32, Vec<Pending>>);

/// What to do with one live message for one subscription.
pub enum Live {
    /// Deliver it as usual.
    Deliver,
    /// The replay carried it already.
    Skip,
    /// Deliver it with `x-recovered` (the first frame of a subscription that asked no receipt).
    Tell(bool),
}

impl Recovering {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A live message for subscription `id` of connection `key`.
    pub fn live(&mut self, key: u32, id: &str, msg: &Arc<Publish>) -> Live {
        let Some((offset, _)) = msg.position else {
            return Live::Deliver;
        };
        let Some(subs) = self.0.get_mut(&key) else {
            return Live::Deliver;
        };
        let Some(i) = subs.iter().position(|p| p.id == id) else {
            return Live::Deliver;
        };
        if let Some(w) = &mut subs[i].waiting {
            w.held.push(msg.clone());
            return Live::Skip;
        }
        if offset <= subs[i].through {
            return Live::Skip;
        }
        let p = subs.swap_remove(i);
        if subs.is_empty() {
            self.0.remove(&key);
        }
        p.tell.map_or(Live::Deliver, Live::Tell)
    }

    /// Connection `key` is gone.
    /// Whether connection `key` has a recovery under way.
    pub fn holds(&self, key: u32) -> bool {
        self.0.contains_key(&key)
    }

    pub fn forget(&mut self, key: u32) {
        self.0.remove(&key);
    }
}

impl Core {
    /// Replays what `r` missed to connection `key` and answers its receipt; asks Redis first
    /// when the node's cache cannot tell.
    pub(super) fn recover(&mut self, key: u32, r: Recover) {
        let Some(history) = self.history.clone() else {
            return;
        };
        let queued = self.conns.get(key as usize).map_or(0, |c| c.queue.len());
        if queued >= self.ctx.cfg.limits.send_queue {
            // A session that does not read what it has is given no replay on top: it hears
            // that it cannot recover (and reloads), which costs neither memory nor encoding.
            let replay = Replay::unavailable();
            history.count_replay(&replay);
            self.replay(key, r, replay, Vec::new());
            return;
        }
        if let Some(replay) = history.replay(&r.dest, &r.since) {
            self.replay(key, r, replay, Vec::new());
            return;
        }
        let Some(relay) = self.relay.clone() else {
            let replay = Replay::unavailable();
            history.count_replay(&replay);
            self.replay(key, r, replay, Vec::new());
            return;
        };
        self.next_serial += 1;
        let to = Ticket {
            shard: self.id,
            key,
            serial: self.next_serial,
        };
        relay.fetch(&r.dest, &r.since, to);
        self.recovering.0.entry(key).or_default().push(Pending {
            id: r.id.clone(),
            through: 0,
            tell: None,
            waiting: Some(Waiting {
                serial: to.serial,
                recover: r,
                held: Vec::new(),
            }),
        });
    }

    /// Redis answered recovery `serial` of connection `key` (an error: it cannot recover).
    pub(super) fn recovered(
        &mut self,
        key: u32,
        serial: u64,
        answer: Result<Replay, crate::relay::RelayError>,
    ) {
        let Some(subs) = self.recovering.0.get_mut(&key) else {
            return;
        };
        let mine = |p: &Pending| p.waiting.as_ref().is_some_and(|w| w.serial == serial);
        let Some(i) = subs.iter().position(mine) else {
            return;
        };
        let p = subs.swap_remove(i);
        if subs.is_empty() {
            self.recovering.0.remove(&key);
        }
        let Some(w) = p.waiting else { return };
        let replay = answer.unwrap_or_else(|why| {
            tracing::debug!("recovery of {:?} from Redis: {why}", w.recover.id);
            let r = Replay::unavailable();
            if let Some(h) = &self.history {
                h.count_replay(&r);
            }
            r
        });
        self.replay(key, w.recover, replay, w.held);
    }

    /// Sends `replay` (and the live messages `held` meanwhile that it did not cover) to
    /// connection `key`.
    fn replay(&mut self, key: u32, r: Recover, replay: Replay, held: Vec<Arc<Publish>>) {
        let Some(c) = self.conns.get(key as usize) else {
            return;
        };
        let enc = c.session.encoding(self.ctx.cfg.compression.min_bytes);
        let raw = matches!(c.session.mode(), crate::endpoint::Mode::Raw(_));
        let positions = c.session.positions();
        let epoch = replay.epoch.clone();
        let id = r.id.clone();
        if raw {
            // A raw session hears the outcome first, then what it missed, in envelopes.
            let topic = r.id.strip_prefix("topic=").unwrap_or(&r.id).to_string();
            let notice =
                ringcast_proto::history::recovered_notice(&topic, &epoch, replay.recovered);
            self.send(key, enc.frame(notice.as_bytes(), true), false);
            for e in replay.entries {
                let text =
                    ringcast_proto::history::envelope(&topic, Some((&epoch, e.offset)), &e.body);
                // Replayed messages count against the send queue as live ones do.
                self.send(key, enc.frame(text.as_bytes(), true), true);
            }
            self.recovering.0.entry(key).or_default().push(Pending {
                id: r.id,
                through: replay.through,
                tell: None,
                waiting: None,
            });
            // As fan-out frames them, skipping what the replay covered.
            for msg in held {
                if let Some(f) = self.raw_positioned(key, &msg, positions, enc) {
                    self.send(key, f, true);
                }
            }
            return;
        }
        let mut tell = Some(replay.recovered);
        if let Some(receipt) = &r.receipt {
            let f = StompFrame::new(StompCommand::Receipt)
                .header("receipt-id", receipt.as_str())
                .header("x-recovered", replay.recovered.to_string())
                .header("x-epoch", &*epoch)
                .header("x-offset", replay.through.to_string());
            self.send(key, enc.frame(&f.encode(), true), false);
            tell = None;
        }
        for e in replay.entries {
            let msg = replayed(&r, e, &epoch);
            let extra = tell.take().map(|t| ("x-recovered", t.to_string()));
            self.send(key, enc.message(&msg, &r.id, &r.written, extra), true);
        }
        self.recovering.0.entry(key).or_default().push(Pending {
            id: r.id.clone(),
            through: replay.through,
            tell,
            waiting: None,
        });
        for msg in held {
            let extra = match self.recovering.live(key, &id, &msg) {
                Live::Skip => continue,
                Live::Deliver => None,
                Live::Tell(t) => Some(("x-recovered", t.to_string())),
            };
            self.send(key, enc.message(&msg, &r.id, &r.written, extra), true);
        }
    }
}

/// A kept message as a publish again, for the frame builders.
fn replayed(r: &Recover, e: Entry, epoch: &Arc<str>) -> Publish {
    let offset = e.offset;
    let mut p = Publish::new(r.dest.clone(), e.body.clone(), e.into_headers());
    p.position = Some((offset, epoch.clone()));
    p
}

impl Core {
    /// A raw session's frame for `msg` when it wants positions or may be recovering: `None`
    /// when its replay already carried the message.
    pub(super) fn raw_positioned(
        &mut self,
        key: u32,
        msg: &Arc<Publish>,
        positions: bool,
        enc: Encoding,
    ) -> Option<Bytes> {
        let Dest::Topic { topic, .. } = &msg.dest else {
            return Some(enc.raw(msg));
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
            return Some(enc.raw(msg));
        }
        let text = ringcast_proto::history::envelope(topic, position, &msg.body);
        Some(enc.frame(text.as_bytes(), true))
    }
}
