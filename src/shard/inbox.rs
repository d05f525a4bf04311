//! What a shard accepts from the rest of the node: its commands, the answers it gives to them,
//! and the queue they arrive on. Defined here, by the shard, so the hub (which sends them)
//! depends on the shard and not the other way round.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use nix::sys::eventfd::EventFd;
use ringcast_proto::publish::Publish;

/// One identified session, as `/sessions` lists it (and a cluster node registers it in Redis).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionInfo {
    /// The session's key in its shard.
    pub id: u32,
    pub shard: usize,
    pub project: String,
    pub user: Option<String>,
    /// `stomp`, `sockjs` or `raw`.
    pub protocol: String,
    /// The peer's IPv4 address (absent for IPv6 peers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Seconds since the Unix epoch.
    pub connected_at: u32,
    pub subscriptions: Vec<SubscriptionInfo>,
    /// In a cluster's listings: the node that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What a shard holds, per project (`Command::Census`).
#[derive(Debug, Default, Clone)]
pub struct Census {
    pub projects: std::collections::BTreeMap<String, u64>,
    /// Connections without an identity yet (handshaking, or raw without a token).
    pub anonymous: u64,
}

/// One STOMP subscription: its id and the destination as the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionInfo {
    pub id: String,
    pub destination: String,
}

pub enum Command {
    /// Fan out; `reply` (if any) gets how many sessions of this shard it reached.
    Publish {
        msg: Arc<Publish>,
        reply: Option<Sender<usize>>,
    },
    /// Describe identified sessions of `project` (every project if `None`; optionally of one
    /// `user`): at most `limit`, in (shard, id) order after `after`.
    Sessions {
        /// Only these projects' sessions (`None`: every project's).
        projects: Option<Vec<String>>,
        user: Option<String>,
        after: Option<(usize, u32)>,
        limit: usize,
        reply: Sender<Vec<SessionInfo>>,
    },
    /// Identified sessions per project, and sessions not yet identified (the console's
    /// overview).
    Census(Sender<Census>),
    /// Destinations whose key contains `filter`, with their subscribers here: at most `limit`,
    /// the smallest keys after `after` (the console's destination list, a page at a time).
    Destinations {
        /// Only these projects' destinations (`None`: every project's).
        projects: Option<Vec<String>>,
        filter: String,
        after: String,
        limit: usize,
        reply: Sender<Vec<(String, usize)>>,
    },
    /// Close every session of `user` in `project` (code 1008, "disconnected by the server";
    /// when `revoked`, STOMP `ERROR message:revoked` and code 4001).
    Disconnect {
        project: String,
        user: String,
        revoked: bool,
        reply: Sender<usize>,
    },
    /// Answer once every command sent before this one is done (commands to a shard run in
    /// order): how a batch of `publish_nowait`s learns it has been carried out.
    Barrier(Sender<usize>),
    /// Use this configuration (and keys) from now on.
    Reload(Arc<crate::context::Context>),
    /// Stop accepting, close every session with 1001, exit after the grace period.
    Shutdown,
    /// Give the listener and every connection to the new process's shard listening on this
    /// Unix socket, then exit (`ringcast upgrade`). The driver carries it out, not the core.
    HandOver(std::path::PathBuf),
    /// About a SockJS session over HTTP, between the shard that read a request and the shard
    /// that owns the session.
    Sockjs(crate::endpoint::relay::Message),
    /// A project's backend answered a shard's `Question`.
    Answer(Answer),
    /// Redis answered a recovering subscription the node's history cache could not
    /// (`Relay::fetch`); an error means the client is told it cannot recover.
    Recovered {
        key: u32,
        serial: u64,
        replay: Result<crate::history::Replay, crate::relay::RelayError>,
    },
}

/// A project backend's answer to `shard::Question` (for connection `key`, `epoch`).
#[derive(Debug, Clone)]
pub struct Answer {
    pub key: u32,
    pub epoch: u32,
    pub act: crate::access::Act,
    pub topic: String,
    pub allowed: bool,
    pub reason: String,
}

/// What a shard keeps of the hub: its queue and its wake-up eventfd.
pub struct Inbox {
    pub rx: Receiver<Command>,
    pub wake: Arc<EventFd>,
}
