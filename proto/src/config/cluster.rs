//! `[cluster]`: the Redis this node shares with the others (named directly, or found through
//! Redis Sentinel), and presence.

use super::ConfigError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[cluster]`.
pub struct Cluster {
    /// `redis://host:port[/db]`; absent (and no `sentinels`) = a standalone node.
    pub redis: Option<String>,
    /// Redis Sentinels (`redis://host:port`, their own password in the URL) that name the
    /// master of `sentinel_master`; exclusive with `redis`.
    pub sentinels: Vec<String>,
    /// The master's name in the sentinels' configuration.
    pub sentinel_master: String,
    /// The password of the master (and its replicas) the sentinels name, if it has one.
    pub sentinel_master_password: Option<String>,
    /// Seed nodes of a Redis Cluster (`redis://host:port`, any of its masters or replicas):
    /// cross-node delivery on sharded pub/sub; exclusive with `redis` and `sentinels`.
    pub redis_cluster: Vec<String>,
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
            sentinels: Vec::new(),
            sentinel_master: "mymaster".into(),
            sentinel_master_password: None,
            redis_cluster: Vec::new(),
            node: None,
            prefix: "ringcast".into(),
            presence_ttl_ms: 15_000,
            publish_queue: 10_000,
        }
    }
}

impl Cluster {
    /// Whether this node shares a Redis with others (directly or through sentinels).
    pub fn clustered(&self) -> bool {
        self.redis.is_some() || !self.sentinels.is_empty() || !self.redis_cluster.is_empty()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let redis_url = |u: &str| {
            u.starts_with("redis://")
                || u.starts_with("rediss://")
                || u.starts_with("unix://")
                || u.starts_with("redis+unix://")
        };
        if let Some(url) = &self.redis
            && !redis_url(url)
        {
            return Err(format!(
                "cluster.redis {url:?}: expected redis://HOST:PORT[/DB] (or rediss://, unix://)"
            )
            .into());
        }
        if self.redis.is_some() && !self.sentinels.is_empty() {
            return Err(
                "cluster.redis and cluster.sentinels exclude each other: name the Redis, \
                        or the sentinels that find it"
                    .into(),
            );
        }
        if let Some(url) = self.sentinels.iter().find(|u| !redis_url(u)) {
            return Err(format!("cluster.sentinels {url:?}: expected redis://HOST:PORT").into());
        }
        if !self.redis_cluster.is_empty() && (self.redis.is_some() || !self.sentinels.is_empty()) {
            return Err(
                "cluster.redis_cluster excludes cluster.redis and cluster.sentinels: \
                        a Redis Cluster fails over by itself"
                    .into(),
            );
        }
        if let Some(url) = self
            .redis_cluster
            .iter()
            .find(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
        {
            return Err(
                format!("cluster.redis_cluster {url:?}: expected redis://HOST:PORT").into(),
            );
        }
        if self.sentinel_master.is_empty() || self.sentinel_master.contains(char::is_whitespace) {
            return Err("cluster.sentinel_master must be a non-empty name without spaces".into());
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
