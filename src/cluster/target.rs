//! Which Redis the cluster thread talks to: the one `[cluster] redis` names, or the master the
//! sentinels name at this moment. Sentinels are asked again on every connect, so after a
//! failover the next connect finds the promoted replica; a node the sentinels still name but
//! that is no longer a master is refused, so this node never stays on a demoted one. A Redis
//! Cluster is reached through its seed nodes and follows its own failovers.

use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use tokio::time::timeout;

use ringcast_proto::config::Cluster as Config;

/// How long one sentinel may take to answer: a dead one must leave time to ask the next
/// within the connect's own deadline.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);

pub enum Target {
    Direct {
        client: redis::Client,
        url: String,
    },
    Sentinel {
        sentinels: Vec<(String, redis::Client)>,
        master: String,
        auth: RedisConnectionInfo,
    },
    Cluster {
        seeds: Vec<String>,
    },
}

impl Target {
    /// The target `cfg` describes (`None`: a standalone node); URLs that do not parse are
    /// refused here, at start.
    pub fn new(cfg: &Config) -> Result<Option<Target>, String> {
        if let Some(url) = &cfg.redis {
            let client = redis::Client::open(url.as_str())
                .map_err(|e| format!("cluster.redis {url:?}: {e}"))?;
            return Ok(Some(Target::Direct {
                client,
                url: url.clone(),
            }));
        }
        if !cfg.redis_cluster.is_empty() {
            for url in &cfg.redis_cluster {
                url.as_str()
                    .into_connection_info()
                    .map_err(|e| format!("cluster.redis_cluster {url:?}: {e}"))?;
            }
            return Ok(Some(Target::Cluster {
                seeds: cfg.redis_cluster.clone(),
            }));
        }
        if cfg.sentinels.is_empty() {
            return Ok(None);
        }
        let sentinels = cfg
            .sentinels
            .iter()
            .map(|u| {
                redis::Client::open(u.as_str())
                    .map(|c| (u.clone(), c))
                    .map_err(|e| format!("cluster.sentinels {u:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let mut auth = RedisConnectionInfo::default();
        if let Some(p) = &cfg.sentinel_master_password {
            auth = auth.set_password(p);
        }
        Ok(Some(Target::Sentinel {
            sentinels,
            master: cfg.sentinel_master.clone(),
            auth,
        }))
    }

    /// What the logs call it.
    pub fn describe(&self) -> String {
        match self {
            Target::Direct { url, .. } => url.clone(),
            Target::Sentinel {
                sentinels, master, ..
            } => format!("master {master:?} of {} sentinel(s)", sentinels.len()),
            Target::Cluster { seeds } => format!("Redis Cluster {}", seeds.join(", ")),
        }
    }

    /// Whether the node must keep checking that its Redis is still the master (a manual
    /// failover demotes it without closing our connections, and a replica accepts PUBLISH,
    /// reaching only its own subscribers: delivery would stop silently).
    pub fn follows_failover(&self) -> bool {
        matches!(self, Target::Sentinel { .. })
    }

    /// The Redis to connect to now, and its address for the logs (not for a Redis Cluster,
    /// which `link::open` reaches through its seeds).
    pub async fn resolve(&self) -> Result<(redis::Client, String), String> {
        let (sentinels, master, auth) = match self {
            Target::Direct { client, url } => return Ok((client.clone(), url.clone())),
            Target::Cluster { .. } => return Err("a Redis Cluster has no single server".into()),
            Target::Sentinel {
                sentinels,
                master,
                auth,
            } => (sentinels, master, auth),
        };
        let mut why = Vec::new();
        for (url, client) in sentinels {
            match timeout(SENTINEL_TIMEOUT, ask(client, master)).await {
                Ok(Ok(Some((host, port)))) => {
                    let info = format!("redis://{host}:{port}")
                        .into_connection_info()
                        .map_err(|e| format!("sentinel {url} named {host}:{port}: {e}"))?
                        .set_addr(ConnectionAddr::Tcp(host.clone(), port))
                        .set_redis_settings(auth.clone());
                    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
                    return Ok((client, format!("{host}:{port} (master {master:?})")));
                }
                Ok(Ok(None)) => why.push(format!("{url} knows no master {master:?}")),
                Ok(Err(e)) => why.push(format!("{url}: {e}")),
                Err(_) => why.push(format!("{url} did not answer")),
            }
        }
        Err(format!("no sentinel named the master: {}", why.join("; ")))
    }
}

async fn ask(client: &redis::Client, master: &str) -> redis::RedisResult<Option<(String, u16)>> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(&mut conn)
        .await
}

/// Whether the Redis behind `conn` is a master (`ROLE`'s first element).
pub async fn is_master(conn: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<bool> {
    let role: redis::Value = redis::cmd("ROLE").query_async(conn).await?;
    Ok(match role {
        redis::Value::Array(items) => matches!(
            items.first(),
            Some(redis::Value::BulkString(b)) if b == b"master"
        ),
        _ => false,
    })
}
