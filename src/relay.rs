//! The other nodes, as this node's shards and hub see them: the trait the cluster implements,
//! and the handles its answers come back on. It sits below the shard and the hub so that both
//! can hand messages on without naming the cluster (the dependency runs cluster → relay).

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use ringcast_proto::publish::Publish;

use crate::dest::Dest;

/// Where Redis's answer to a recovering subscription goes: a shard, a connection, and the
/// shard's serial for that recovery (a connection key is reused after a close).
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    pub shard: usize,
    pub key: u32,
    pub serial: u64,
}

/// What a numbered publish reached: sessions of this node, other nodes.
pub type Numbered = Result<(usize, u64), RelayError>;

/// The other nodes: the hub and the shards hand them publishes and tell them where this node
/// has an audience. The cluster implements it; nothing below it names the cluster.
pub trait Relay: Send + Sync {
    /// Hands `msg` to the other nodes; `Pending::wait` tells how many got it.
    fn publish(&self, msg: &Publish) -> Pending;
    /// Hands `msg` over without waiting for an answer (a client's SEND, from a shard).
    fn forward(&self, msg: &Publish);
    /// A destination (by index key) gained its first (`add`) or lost its last subscriber in a
    /// shard of this node. Never blocks.
    fn interest(&self, key: &str, add: bool);
    /// For a destination with history: has the other side number `msg` and deliver it to
    /// every node, this one included, so all see one order. `reply` hears what it reached.
    /// False when it could not be taken (the queue is full).
    fn number(
        &self,
        msg: &Publish,
        bounds: &crate::history::Bounds,
        reply: Option<Sender<Numbered>>,
    ) -> bool;
    /// Asks what a subscription at `since` missed on `dest`; the answer goes to `to` as a
    /// `Command::Recovered`. Sent after the subscription joined, so the read follows it.
    fn fetch(&self, dest: &Dest, since: &ringcast_proto::history::Position, to: Ticket);
}

/// A relay's answer to a publish, to wait for: a channel it answers on, or why it could not
/// take the message at all.
pub struct Pending<T = u64>(pub Result<Receiver<Result<T, RelayError>>, RelayError>);

/// Why the other nodes did not get a message, or why Redis did not answer: what an HTTP edge
/// turns into 504 (`TimedOut`) or 503 (the rest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// Redis, or the other nodes through it, did not answer within the wait.
    #[error("{0}")]
    TimedOut(&'static str),
    /// The queue to the cluster thread is full: the message was not handed over.
    #[error("the queue to Redis is full: {0}")]
    Full(&'static str),
    /// The cluster thread is gone (the node is stopping).
    #[error("the cluster link has stopped")]
    Stopped,
    /// Redis refused a command, or its connection went away.
    #[error("{0}")]
    Redis(String),
}

/// How long a publish waits for the relay's answer.
const RELAY_TIMEOUT: Duration = Duration::from_secs(3);

impl<T> Pending<T> {
    /// How many other nodes the message was handed to, or why it was not.
    pub fn wait(self) -> Result<T, RelayError> {
        let rx = self.0?;
        rx.recv_timeout(RELAY_TIMEOUT)
            .unwrap_or(Err(RelayError::TimedOut(
                "the other nodes did not answer in time",
            )))
    }
}
