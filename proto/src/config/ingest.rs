//! `[[ingest.*]]`: the brokers publishes are taken from.

use super::ConfigError;
use serde::{Deserialize, Serialize};

/// `[[ingest.redis_stream]]`, ...: consumers that take publishes (in the `/publish` JSON shape)
/// from a broker, at least once.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Ingest {
    /// Redis Streams consumer groups.
    pub redis_stream: Vec<RedisStream>,
    /// NATS JetStream durable pull consumers.
    pub nats: Vec<Nats>,
}

/// `[[ingest.nats]]`: one JetStream stream read by a durable pull consumer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Nats {
    /// `nats://HOST:PORT`.
    pub url: String,
    /// The JetStream stream (created, capturing `subject`, if missing).
    pub stream: String,
    /// The subject publishes arrive on; each message's payload is the `/publish` JSON.
    pub subject: String,
    /// The durable consumer's name; nodes sharing it share the stream.
    pub consumer: String,
    /// Where messages that do not parse go, with the reason; unset = `{subject}.dead`.
    pub dead_letter: Option<String>,
    /// Messages fetched per call.
    pub batch: usize,
    /// A message fetched and not acknowledged this long is redelivered (to this node after a
    /// restart, or to another one sharing the consumer).
    pub ack_wait_ms: u64,
}

impl Default for Nats {
    fn default() -> Self {
        Nats {
            url: "nats://127.0.0.1:4222".into(),
            stream: "PUSHES".into(),
            subject: "pushes".into(),
            consumer: "ringcast".into(),
            dead_letter: None,
            batch: 100,
            ack_wait_ms: 30_000,
        }
    }
}

/// `[[ingest.redis_stream]]`: one stream read through a consumer group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisStream {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// The stream; each entry's field `data` holds the `/publish` JSON.
    pub stream: String,
    /// The consumer group (created at the stream's start if missing); nodes sharing it share
    /// the stream.
    pub group: String,
    /// This node's consumer name in the group.
    pub consumer: String,
    /// Where entries that do not parse go, with the reason; unset = `{stream}:dead`.
    pub dead_letter: Option<String>,
    /// Entries read per call.
    pub batch: usize,
    /// Entries another consumer left unacknowledged this long are claimed (XAUTOCLAIM).
    pub claim_idle_ms: u64,
}

impl Default for RedisStream {
    fn default() -> Self {
        RedisStream {
            url: "redis://127.0.0.1:6379".into(),
            stream: "pushes".into(),
            group: "ringcast".into(),
            consumer: "node-1".into(),
            dead_letter: None,
            batch: 100,
            claim_idle_ms: 30_000,
        }
    }
}

impl Ingest {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (i, r) in self.redis_stream.iter().enumerate() {
            if r.stream.is_empty() || r.group.is_empty() || r.consumer.is_empty() || r.batch == 0 {
                return Err(format!(
                    "ingest.redis_stream[{i}]: stream, group and consumer must be set and batch at least 1"
                ).into());
            }
            if !(r.url.starts_with("redis://")
                || r.url.starts_with("rediss://")
                || r.url.starts_with("unix://"))
            {
                return Err(format!(
                    "ingest.redis_stream[{i}].url {:?}: expected redis://HOST:PORT",
                    r.url
                )
                .into());
            }
        }
        for (i, n) in self.nats.iter().enumerate() {
            if n.stream.is_empty() || n.subject.is_empty() || n.consumer.is_empty() || n.batch == 0
            {
                return Err(format!(
                    "ingest.nats[{i}]: stream, subject and consumer must be set and batch at least 1"
                ).into());
            }
        }
        Ok(())
    }
}
