//! What shards tell each other about SockJS sessions carried over HTTP: a session lives on one
//! owner shard, and the requests that carry it arrive on any shard. Plain data, so the hub
//! carries it between shards without knowing the shard's workings.

use bytes::Bytes;

use super::HttpRequest;

/// A request's connection: where an owner sends its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The shard that read the request.
    pub shard: usize,
    /// The connection's slab key there.
    pub key: u32,
    /// The connection's epoch (a reused key is another connection).
    pub epoch: u32,
}

/// One message between shards.
#[derive(Debug)]
pub enum Message {
    /// A session request read by `from`'s shard, for the session's owner; `ip` is the
    /// requester's address, which a new session is counted against (the per-address limits).
    Request {
        /// Where the answer goes.
        from: Peer,
        /// The request.
        req: Box<HttpRequest>,
        /// The requester's address, when a per-address limit is on.
        ip: Option<std::net::IpAddr>,
    },
    /// Bytes of the answer for connection (`key`, `epoch`); `end`: the answer is complete, and
    /// the connection reads its next request (`keep_alive`) or closes.
    Reply {
        /// The connection's key on the shard it lives on.
        key: u32,
        /// Its epoch.
        epoch: u32,
        /// What to write.
        bytes: Bytes,
        /// The answer is complete.
        end: bool,
        /// The connection reads its next request after it.
        keep_alive: bool,
    },
    /// A connection that was receiving for `session` closed.
    Gone {
        /// The session it was receiving for.
        session: Box<str>,
        /// The connection.
        from: Peer,
    },
}
