//! `[cluster]`: the Redis this node shares with the others, and presence.

use super::ConfigError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[cluster]`.
pub struct Cluster {
    /// `redis://host:port[/db]`; absent = a standalone node.
    pub redis: Option<String>,
    /// This node's name in the cluster; unset = `HOST:PORT:PID`.
    pub node: Option<String>,
    /// Prefix of every Redis key and channel, so clusters can share one Redis.
    pub prefix: String,
    /// A node's sessions and counters vanish from Redis this long after its last heart-beat
    /// (it refreshes them every third of it).
    pub presence_ttl_ms: u64,
    /// Publishes waiting for Redis; beyond it they are dropped and counted as failed.
    pub publish_queue: usize,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            redis: None,
            node: None,
            prefix: "ringcast".into(),
            presence_ttl_ms: 15_000,
            publish_queue: 10_000,
        }
    }
}

impl Cluster {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.redis
            && !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://")
                || url.starts_with("redis+unix://"))
        {
            return Err(format!(
                "cluster.redis {url:?}: expected redis://HOST:PORT[/DB] (or rediss://, unix://)"
            )
            .into());
        }
        if self.presence_ttl_ms < 1000 || self.publish_queue == 0 {
            return Err(
                "cluster.presence_ttl_ms must be at least 1000 and cluster.publish_queue at least 1"
                    .into(),
            );
        }
        if self.prefix.is_empty() || self.prefix.contains(char::is_control) {
            return Err("cluster.prefix must be non-empty, without control characters".into());
        }
        Ok(())
    }
}
