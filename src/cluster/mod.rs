//! Several nodes as one push center, on Redis: pub/sub carries publishes between nodes, keys
//! with a TTL hold presence (each node's sessions and counters).
//!
//! Redis is driven by one dedicated thread per node (`worker`), async on a single-threaded
//! tokio runtime; shards and the admin thread talk to it only through the non-blocking
//! channels of a [`Cluster`] handle, so a slow or dead Redis never stalls a reactor. Publishes
//! waiting for Redis are bounded (`cluster.publish_queue`); beyond it, or while Redis is down,
//! they are refused and counted, and local delivery goes on regardless.
//!
//! The channels are crossbeam ones plus a wake-up socket pair made before the shards exist, not
//! tokio's: each shard has its own fd table, and a tokio waker called on a shard would write to
//! the runtime's eventfd *number* in the shard's table, where that number is some client's
//! socket. The pair made up front has the same number in every table (as the hub's eventfds).

mod history;
mod link;
mod presence;
mod revocations;
mod target;
pub use ringcast_proto::cluster::wire;
mod worker;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crossbeam_channel::{Sender, bounded, unbounded};
use std::io::Write;
use std::os::unix::net::UnixStream;

use crate::config::Config;
use crate::relay::{Numbered, Pending, Relay, RelayError, Ticket};
use crate::stats::Stats;
use ringcast_proto::publish::Publish;
use wire::Names;
pub use worker::Worker;

/// How long the admin API waits for Redis before answering without it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// What the admin thread and the shards ask of the cluster thread.
enum Request {
    /// A shard's first subscriber to index key `key` arrived (`add`) or its last one left.
    Interest { key: String, add: bool },
    Sessions {
        project: String,
        user: Option<String>,
        reply: Sender<Result<Vec<crate::shard::inbox::SessionInfo>, RelayError>>,
    },
    Stats {
        reply: Sender<Result<serde_json::Value, RelayError>>,
    },
    /// Asks the other nodes to close `user`'s sessions; answers how many presence lists there.
    Disconnect {
        project: String,
        user: String,
        reply: Sender<Result<usize, RelayError>>,
    },
    /// Writes a revocation to Redis and tells the other nodes (a `Control::Revoke`).
    Revoke {
        revoke: ringcast_proto::cluster::wire::Control,
        reply: Sender<Result<(), RelayError>>,
    },
    /// The node is stopping: take its presence out of Redis now rather than at TTL.
    Leave {
        reply: Sender<Result<(), RelayError>>,
    },
    /// A recovering subscription the history cache could not answer (`Relay::fetch`).
    Fetch {
        dest: crate::dest::Dest,
        since: ringcast_proto::history::Position,
        to: Ticket,
    },
}

impl Request {
    /// Answers a waiting caller with `why` (what the cluster thread does while Redis is down).
    fn fail(self, why: RelayError, hub: &crate::hub::Hub) {
        // A caller that gave up waiting has dropped its receiver: nothing to tell it.
        match self {
            Request::Interest { .. } => {}
            Request::Sessions { reply, .. } => drop(reply.send(Err(why))),
            Request::Stats { reply } => drop(reply.send(Err(why))),
            Request::Disconnect { reply, .. } => drop(reply.send(Err(why))),
            Request::Leave { reply } => drop(reply.send(Err(why))),
            Request::Revoke { reply, .. } => drop(reply.send(Err(why))),
            Request::Fetch { to, .. } => answer_fetch(hub, to, Err(why)),
        }
    }
}

/// A publish on its way to Redis.
struct Outgoing {
    /// The destination's index key (`Dest::key`).
    key: String,
    payload: Vec<u8>,
    kind: Kind,
}

enum Kind {
    /// PUBLISH; the caller may wait for how many other nodes got it.
    Plain(Option<Sender<Result<u64, RelayError>>>),
    /// Numbered by the history script and delivered from Redis to every node, this one too.
    Numbered {
        size: usize,
        ttl_ms: u64,
        reply: Option<Sender<Numbered>>,
    },
}

impl Kind {
    fn fail(self, why: RelayError) {
        match self {
            Kind::Plain(Some(r)) => drop(r.send(Err(why))),
            Kind::Numbered { reply: Some(r), .. } => drop(r.send(Err(why))),
            _ => {}
        }
    }
}

/// Hands Redis's answer to a recovering subscription to its shard.
fn answer_fetch(
    hub: &crate::hub::Hub,
    to: Ticket,
    replay: Result<crate::history::Replay, RelayError>,
) {
    let cmd = crate::shard::inbox::Command::Recovered {
        key: to.key,
        serial: to.serial,
        replay,
    };
    hub.send_to(to.shard, cmd);
}

/// The node's tables the cluster fills in from the other nodes.
pub struct Tables {
    /// Revocations made anywhere in the cluster.
    pub revoked: Arc<crate::auth::revoked::Revoked>,
    /// Sessions per user, with the other nodes' added.
    pub per_user: Arc<crate::shard::counts::PerUser>,
}

/// The handle shards and the admin API hold; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    node: Arc<str>,
    requests: Sender<Request>,
    outgoing: Sender<Outgoing>,
    /// Wakes the cluster thread after a send (see the module doc for why not tokio's waker).
    wake: Arc<UnixStream>,
    stats: Arc<Stats>,
}

/// The default node name: unique per process on a host, readable in `redis-cli`.
fn default_node(listen: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}:{}", listen.port(), std::process::id())
}

/// The handle and the worker for `cfg`'s cluster, or `None` on a standalone node.
pub fn new(
    cfg: &Config,
    listen: std::net::SocketAddr,
    stats: Arc<Stats>,
    tables: Tables,
) -> Result<Option<(Cluster, Worker)>, String> {
    let Some(target) = target::Target::new(&cfg.cluster)? else {
        return Ok(None);
    };
    let node: Arc<str> = cfg
        .cluster
        .node
        .clone()
        .unwrap_or_else(|| default_node(listen))
        .into();
    let names = if cfg.cluster.redis_cluster.is_empty() {
        Names::new(&cfg.cluster.prefix)
    } else {
        Names::sharded(&cfg.cluster.prefix)
    };
    let (requests, req_rx) = unbounded();
    let (outgoing, out_rx) = bounded(cfg.cluster.publish_queue);
    let (wake, woken) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    for s in [&wake, &woken] {
        s.set_nonblocking(true)
            .map_err(|e| format!("socketpair: {e}"))?;
    }
    let wake = Arc::new(wake);
    stats.cluster.enabled.store(true, Relaxed);
    stats
        .cluster
        .fresh_ms
        .store(3 * worker::PROBE_PERIOD.as_millis() as u64, Relaxed);
    let handle = Cluster {
        node: node.clone(),
        requests,
        outgoing,
        wake: wake.clone(),
        stats: stats.clone(),
    };
    let worker = Worker::new(
        worker::Setup {
            target,
            info: Arc::new(presence::NodeInfo {
                name: node.to_string(),
                names,
                listen,
                ttl: Duration::from_millis(cfg.cluster.presence_ttl_ms),
                stats,
                revoked: tables.revoked,
                revoke_ttl_s: cfg.auth.revoke_ttl_s,
                per_user: tables.per_user,
            }),
        },
        req_rx,
        out_rx,
        woken,
    );
    Ok(Some((handle, worker)))
}

impl Cluster {
    fn request(&self, req: Request) -> bool {
        let sent = self.requests.send(req).is_ok();
        self.wake_worker();
        sent
    }

    fn wake_worker(&self) {
        // A full socket buffer means wake-ups are pending already: nothing is lost.
        let _ = (&*self.wake).write(&[1]);
    }

    fn enqueue(&self, msg: &Publish, kind: Kind) -> bool {
        let out = Outgoing {
            key: msg.dest.key(),
            payload: wire::encode(&self.node, &msg.headers, &msg.body),
            kind,
        };
        let queued = self.outgoing.try_send(out).is_ok();
        if queued {
            self.wake_worker();
        } else {
            self.stats.cluster.publish_failed.fetch_add(1, Relaxed);
        }
        queued
    }

    fn ask<T>(
        &self,
        make: impl FnOnce(Sender<Result<T, RelayError>>) -> Request,
    ) -> Result<T, RelayError> {
        let (tx, rx) = bounded(1);
        if !self.request(make(tx)) {
            return Err(RelayError::Stopped);
        }
        rx.recv_timeout(ANSWER_TIMEOUT)
            .unwrap_or(Err(RelayError::TimedOut("Redis did not answer in time")))
    }

    /// Identified sessions of `project` (and `user`) on every live node.
    pub fn sessions(
        &self,
        project: &str,
        user: Option<&str>,
    ) -> Result<Vec<crate::shard::inbox::SessionInfo>, RelayError> {
        self.ask(|reply| Request::Sessions {
            project: project.into(),
            user: user.map(str::to_string),
            reply,
        })
    }

    /// Every live node's counters (this node's live, the others' as of their last heart-beat).
    pub fn stats(&self) -> Result<serde_json::Value, RelayError> {
        self.ask(|reply| Request::Stats { reply })
    }

    /// Asks the other nodes to close `user`'s sessions; answers how many they had.
    pub fn disconnect(&self, project: &str, user: &str) -> Result<usize, RelayError> {
        self.ask(|reply| Request::Disconnect {
            project: project.into(),
            user: user.into(),
            reply,
        })
    }

    /// Makes a revocation the cluster's: kept in Redis (a restarted node reads it back) and
    /// carried out by every other node.
    pub fn revoke(
        &self,
        project: &str,
        user: Option<&str>,
        jti: Option<&str>,
        before: u64,
        close: bool,
    ) -> Result<(), RelayError> {
        let revoke = ringcast_proto::cluster::wire::Control::Revoke {
            from: self.node.to_string(),
            project: project.into(),
            user: user.map(Into::into),
            jti: jti.map(Into::into),
            before,
            close,
        };
        self.ask(|reply| Request::Revoke { revoke, reply })
    }

    /// Removes this node from presence (on a clean stop), waiting at most `ANSWER_TIMEOUT`.
    pub fn leave(&self) {
        let _ = self.ask(|reply| Request::Leave { reply });
    }
}

impl Relay for Cluster {
    fn publish(&self, msg: &Publish) -> Pending {
        let (tx, rx) = bounded(1);
        if self.enqueue(msg, Kind::Plain(Some(tx))) {
            Pending(Ok(rx))
        } else {
            Pending(Err(RelayError::Full("cross-node delivery failed")))
        }
    }

    fn forward(&self, msg: &Publish) {
        self.enqueue(msg, Kind::Plain(None));
    }

    fn number(
        &self,
        msg: &Publish,
        bounds: &crate::history::Bounds,
        reply: Option<Sender<Numbered>>,
    ) -> bool {
        let kind = Kind::Numbered {
            size: bounds.size,
            ttl_ms: bounds.ttl_ms,
            reply,
        };
        self.enqueue(msg, kind)
    }

    fn fetch(
        &self,
        dest: &crate::dest::Dest,
        since: &ringcast_proto::history::Position,
        to: Ticket,
    ) {
        self.request(Request::Fetch {
            dest: dest.clone(),
            since: since.clone(),
            to,
        });
    }

    fn interest(&self, key: &str, add: bool) {
        self.request(Request::Interest {
            key: key.to_string(),
            add,
        });
    }
}
