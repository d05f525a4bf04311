//! `[limits]`: every bound on what a connection may cost or do.

use super::ConfigError;
use serde::{Deserialize, Serialize};

/// What to do with a session whose send queue is full (it is not reading).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SlowPolicy {
    /// Drop the oldest queued message (never the one being written) and count it.
    DropOldest,
    /// Close the session with 1008.
    Close,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[limits]`.
pub struct Limits {
    /// An upgrade request must be complete this soon after the connection is accepted (408).
    pub handshake_timeout_ms: u64,
    /// Largest upgrade request head (431 beyond it).
    pub max_header_bytes: usize,
    /// Largest WebSocket message, reassembled (1009 beyond it).
    pub max_message_bytes: usize,
    /// Messages queued per session beyond the one being written.
    pub send_queue: usize,
    /// What happens to a session whose send queue is full.
    pub slow_consumer: SlowPolicy,
    /// How long our close frame waits for the peer's before the socket is dropped.
    pub close_timeout_ms: u64,
    /// Raw topics and STOMP subscriptions per session.
    pub max_topics_per_session: usize,
    /// Raw and echo sessions silent this long get a ping; silent for another period after it,
    /// they are closed (a vanished peer). 0 = never. STOMP sessions use their heart-beats.
    pub ping_interval_ms: u64,
    /// Open connections allowed from one source address (0 = no limit); beyond it, 429.
    /// Off by default: many real users share one address behind carrier-grade NAT.
    pub max_connections_per_ip: usize,
    /// STOMP: CONNECT must arrive within this after the upgrade, or the session gets an ERROR
    /// and is closed (an unauthenticated connection must not hold a slot forever).
    pub connect_timeout_ms: u64,
    /// Connections from one source address not yet authenticated (upgrades in progress and
    /// STOMP sessions before CONNECTED); beyond it, 429. 0 = no limit.
    pub max_pending_per_ip: usize,
    /// Identified sessions one user may hold on this node (0: no limit); the one beyond is
    /// refused (`ERROR message:too many sessions`, or close 1008 for raw).
    pub max_sessions_per_user: usize,
    /// SUBSCRIBEs one STOMP session may send in a second (0: no limit); the one beyond gets
    /// `ERROR message:too many subscribes (…)` and the session is closed.
    pub max_subscribes_per_s: usize,
    /// Largest WebSocket message and STOMP frame a session may send before it is
    /// authenticated (a CONNECT is a few hundred bytes; a token a few KB at most).
    pub max_connect_bytes: usize,
    /// New connections the node takes on per second; beyond it they are answered at once with
    /// 503 and a `Retry-After`. 0 = automatic: a shard sheds while it holds more unfinished
    /// handshakes than it can finish within `handshake_timeout_ms`.
    pub max_handshakes_per_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout_ms: 10_000,
            max_header_bytes: 8192,
            max_message_bytes: 64 * 1024,
            send_queue: 1024,
            slow_consumer: SlowPolicy::DropOldest,
            close_timeout_ms: 2000,
            max_topics_per_session: 64,
            ping_interval_ms: 30_000,
            max_connections_per_ip: 0,
            connect_timeout_ms: 10_000,
            max_pending_per_ip: 1000,
            max_sessions_per_user: 0,
            max_subscribes_per_s: 0,
            max_connect_bytes: 8192,
            max_handshakes_per_s: 0,
        }
    }
}

impl Limits {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connect_bytes < 512 {
            return Err("limits.max_connect_bytes must be at least 512".into());
        }
        if self.send_queue == 0 {
            return Err("limits.send_queue must be at least 1".into());
        }
        Ok(())
    }
}
