//! Presence in Redis: which nodes are alive, what each one counts, and its identified sessions.
//!
//! Every third of the TTL a node rewrites, in one MULTI, the hash of its sessions and its
//! counters, both expiring after the TTL, and its score (the time) in the set of nodes. A node
//! that stops refreshing (killed, cut off) therefore drops out of every cluster-wide answer
//! within the TTL, with no other node having to notice. Cluster-wide answers read this node's
//! state live and the others' from Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::link::Conn;
use serde_json::{Value, json};

use super::wire::{Control, Names};
use crate::hub::Hub;
use crate::relay::RelayError;
use crate::shard::inbox::SessionInfo;
use crate::stats::{Stats, now_ms};

/// Sessions per HSET when rewriting a node's hash.
const HSET_CHUNK: usize = 1000;

/// What a node knows of itself, shared by the cluster thread and its presence tasks.
pub(super) struct NodeInfo {
    pub name: String,
    pub names: Names,
    pub listen: std::net::SocketAddr,
    pub ttl: Duration,
    pub stats: Arc<Stats>,
    /// The node's revocations, which the cluster's fill in.
    pub revoked: Arc<crate::auth::revoked::Revoked>,
    /// `[auth] revoke_ttl_s`: how long the revocations hash is kept.
    pub revoke_ttl_s: u64,
    /// Sessions per user, told what the other nodes hold on every presence beat (when
    /// `max_sessions_per_user` is on).
    pub per_user: Arc<crate::shard::counts::PerUser>,
}

pub(super) struct Presence {
    pub conn: Conn,
    pub hub: Arc<Hub>,
    pub info: Arc<NodeInfo>,
}

fn redis_err(e: redis::RedisError) -> RelayError {
    RelayError::Redis(format!("Redis: {e}"))
}

impl Presence {
    /// This node's identified sessions (every project if `project` is `None`), labelled with it.
    async fn local_sessions(
        &self,
        project: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<SessionInfo>, RelayError> {
        let hub = self.hub.clone();
        let (project, user) = (project.map(str::to_string), user.map(str::to_string));
        // The hub waits for every shard's answer: not on the runtime's thread.
        let mut list =
            tokio::task::spawn_blocking(move || hub.sessions(project.as_deref(), user.as_deref()))
                .await
                .map_err(|_| RelayError::Stopped)??;
        for s in &mut list {
            s.node = Some(self.info.name.to_string());
        }
        Ok(list)
    }

    fn describe(&self) -> Value {
        let mut stats = self.info.stats.to_json();
        if let Some(m) = stats.as_object_mut() {
            m.remove("shards");
        }
        json!({"node": self.info.name.as_str(), "listen": self.info.listen.to_string(), "stats": stats})
    }

    /// Rewrites this node's presence; failures are counted, the next beat tries again.
    pub async fn refresh(self) {
        let c = &self.info.stats.cluster;
        if self.info.per_user.enabled()
            && let Err(e) = self.count_users().await
        {
            tracing::debug!("cluster: counting the other nodes' users failed: {e}");
        }
        match self.write().await {
            Ok(()) => c.presence_refreshed.fetch_add(1, Relaxed),
            Err(e) => {
                tracing::debug!("cluster: presence refresh failed: {e}");
                c.presence_failed.fetch_add(1, Relaxed)
            }
        };
    }

    async fn write(&self) -> Result<(), RelayError> {
        let sessions = self.local_sessions(None, None).await?;
        let ttl_ms = self.info.ttl.as_millis() as u64;
        let now = now_ms();
        let key = self.info.names.sessions(&self.info.name);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(&key).ignore();
        for chunk in sessions.chunks(HSET_CHUNK) {
            let cmd = pipe.cmd("HSET").arg(&key);
            for s in chunk {
                let value = serde_json::to_string(s).unwrap_or_default();
                cmd.arg(format!("{}:{}", s.shard, s.id)).arg(value);
            }
            cmd.ignore();
        }
        if !sessions.is_empty() {
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms).ignore();
        }
        pipe.cmd("SET")
            .arg(self.info.names.node(&self.info.name))
            .arg(self.describe().to_string())
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        pipe.cmd("ZADD")
            .arg(self.info.names.nodes())
            .arg(now)
            .arg(self.info.name.as_str())
            .ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(self.info.names.nodes())
            .arg("-inf")
            .arg(now.saturating_sub(ttl_ms))
            .ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(redis_err)
    }

    /// The other nodes that refreshed their presence within the TTL.
    async fn others(&self) -> Result<Vec<String>, RelayError> {
        let since = now_ms().saturating_sub(self.info.ttl.as_millis() as u64);
        let mut conn = self.conn.clone();
        let nodes: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.info.names.nodes())
            .arg(since)
            .arg("+inf")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(nodes
            .into_iter()
            .filter(|n| *n != *self.info.name)
            .collect())
    }

    /// Every session the other live nodes registered at their last beat, labelled with its
    /// node; `keep` picks which.
    async fn others_sessions(
        &self,
        keep: impl Fn(&SessionInfo) -> bool,
    ) -> Result<Vec<SessionInfo>, RelayError> {
        let mut out = Vec::new();
        let mut conn = self.conn.clone();
        for node in self.others().await? {
            let values: Vec<String> = redis::cmd("HVALS")
                .arg(self.info.names.sessions(&node))
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            out.extend(
                values
                    .iter()
                    .filter_map(|v| serde_json::from_str::<SessionInfo>(v).ok())
                    .filter(&keep)
                    .map(|mut s| {
                        s.node = Some(node.clone());
                        s
                    }),
            );
        }
        Ok(out)
    }

    /// Counts the other live nodes' sessions per (project, user), for `max_sessions_per_user`
    /// across the cluster (as fresh as their last beat).
    async fn count_users(&self) -> Result<(), RelayError> {
        let mut counts: HashMap<(Box<str>, Box<str>), u32> = HashMap::new();
        for s in self.others_sessions(|s| s.user.is_some()).await? {
            if let Some(u) = s.user {
                *counts.entry((s.project.into(), u.into())).or_default() += 1;
            }
        }
        self.info.per_user.set_others(counts);
        Ok(())
    }

    /// Sessions of `project` (and `user`) on the other live nodes, as they last registered them.
    async fn remote_sessions(
        &self,
        project: &str,
        user: Option<&str>,
    ) -> Result<Vec<SessionInfo>, RelayError> {
        self.others_sessions(|s| {
            s.project == project && user.is_none_or(|u| s.user.as_deref() == Some(u))
        })
        .await
    }

    pub async fn sessions(
        &self,
        project: &str,
        user: Option<&str>,
    ) -> Result<Vec<SessionInfo>, RelayError> {
        let mut all = self.local_sessions(Some(project), user).await?;
        all.extend(self.remote_sessions(project, user).await?);
        Ok(all)
    }

    pub async fn stats(&self) -> Result<Value, RelayError> {
        let mut nodes = vec![self.describe()];
        let mut conn = self.conn.clone();
        for node in self.others().await? {
            let v: Option<String> = redis::cmd("GET")
                .arg(self.info.names.node(&node))
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            if let Some(v) = v.and_then(|v| serde_json::from_str::<Value>(&v).ok()) {
                nodes.push(v);
            }
        }
        let sum = |field: &str| -> u64 {
            nodes
                .iter()
                .filter_map(|n| n["stats"][field].as_u64())
                .sum()
        };
        Ok(json!({
            "scope": "cluster",
            "connections": sum("connections"),
            "messages_out": sum("messages_out"),
            "node_count": nodes.len(),
            "nodes": nodes,
        }))
    }

    /// Asks the other nodes, on the control channel, to close `user`'s sessions; answers how
    /// many of them they listed in presence.
    pub async fn disconnect_others(
        &self,
        project: String,
        user: String,
    ) -> Result<usize, RelayError> {
        let listed = self.remote_sessions(&project, Some(&user)).await?.len();
        let ask = Control::Disconnect {
            from: self.info.name.clone(),
            project,
            user,
        };
        let mut conn = self.conn.clone();
        redis::cmd(self.info.names.publish_command())
            .arg(self.info.names.control())
            .arg(ask.encode())
            .query_async::<u64>(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(listed)
    }

    /// Takes this node out of presence.
    pub async fn leave(&self) -> Result<(), RelayError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(self.info.names.sessions(&self.info.name))
            .arg(self.info.names.node(&self.info.name))
            .ignore()
            .cmd("ZREM")
            .arg(self.info.names.nodes())
            .arg(self.info.name.as_str())
            .ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(redis_err)
    }
}
