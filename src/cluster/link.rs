//! The cluster thread's two connections to Redis, whatever the Redis is: one server (named
//! directly or by the sentinels) or a Redis Cluster. Commands and pipelines go through `Conn`;
//! subscriptions through `Subscriber`, which on a Redis Cluster is sharded pub/sub
//! (`SSUBSCRIBE`) carried as RESP3 pushes on the cluster connection itself.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection, PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Msg, Pipeline, PushInfo, PushKind, RedisFuture, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::target::{self, Target};
use super::wire::hash_tag;

/// Channels per SUBSCRIBE command when resubscribing everything.
const SUBSCRIBE_CHUNK: usize = 4096;

/// Where commands go: cheap to clone, every clone shares the connection(s).
#[derive(Clone)]
pub enum Conn {
    One(MultiplexedConnection),
    /// Routes each command (and each pipeline, whose keys must share a slot) to its slot's
    /// master, and follows the cluster's MOVED answers and failovers by itself.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::One(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::One(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::One(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// What the subscription side hands the cluster thread.
pub enum Push {
    Message(Msg),
    /// One of the cluster's nodes dropped its connection. The crate would reconnect and
    /// resubscribe by itself, but after a failover its resubscription was seen to leave every
    /// sharded channel unsubscribed, and what was published meanwhile never arrived anyway:
    /// the cluster thread starts over, as when a single Redis goes away.
    Gap,
    /// Redis took a channel off this subscriber (`SUNSUBSCRIBE`): its slot moved to another
    /// master, or this node asked.
    Unsubscribed(Vec<u8>),
    /// Subscription confirmations and the like.
    Other,
    Closed,
}

pub enum Subscriber {
    One {
        sink: PubSubSink,
        stream: PubSubStream,
    },
    Cluster {
        conn: ClusterConnection,
        pushes: UnboundedReceiver<PushInfo>,
    },
}

impl Subscriber {
    pub async fn subscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Subscriber::One { sink, .. } => {
                for chunk in channels.chunks(SUBSCRIBE_CHUNK) {
                    sink.subscribe(chunk).await?;
                }
            }
            Subscriber::Cluster { conn, .. } => {
                // One SSUBSCRIBE per hash tag: a command's channels must share a slot.
                let mut by_tag: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for c in channels {
                    by_tag.entry(hash_tag(c)).or_default().push(c);
                }
                for group in by_tag.values() {
                    for chunk in group.chunks(SUBSCRIBE_CHUNK) {
                        conn.ssubscribe(chunk).await?;
                    }
                }
            }
        }
        Ok(())
    }

    pub async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Subscriber::One { sink, .. } => sink.unsubscribe(channel).await,
            Subscriber::Cluster { conn, .. } => conn.sunsubscribe(channel).await,
        }
    }

    /// A PING on the subscription connection(s): a Redis cut off without a FIN/RST would
    /// leave them silently dead.
    pub async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            Subscriber::One { sink, .. } => sink.ping::<Value>().await.map(drop),
            Subscriber::Cluster { conn, .. } => redis::cmd("PING")
                .query_async::<Value>(conn)
                .await
                .map(drop),
        }
    }

    pub async fn next(&mut self) -> Push {
        match self {
            Subscriber::One { stream, .. } => {
                stream.next().await.map_or(Push::Closed, Push::Message)
            }
            Subscriber::Cluster { pushes, .. } => match pushes.recv().await {
                None => Push::Closed,
                Some(p) if p.kind == PushKind::Disconnection => Push::Gap,
                Some(p) if p.kind == PushKind::SUnsubscribe => match p.data.first() {
                    Some(Value::BulkString(channel)) => Push::Unsubscribed(channel.clone()),
                    _ => Push::Other,
                },
                Some(p) => Msg::from_push_info(p).map_or(Push::Other, Push::Message),
            },
        }
    }
}

/// Both connections to what `target` names now, and its address for the logs.
pub async fn open(target: &Target) -> Result<(Conn, Subscriber, String), String> {
    if let Target::Cluster { seeds } = target {
        let addr = target.describe();
        // A client per connect: the push channel is given at build and ends with the client.
        let (tx, pushes) = tokio::sync::mpsc::unbounded_channel();
        let client = redis::cluster::ClusterClientBuilder::new(seeds.iter().map(String::as_str))
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx)
            .build()
            .map_err(|e| format!("cluster.redis_cluster: {e}"))?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let subscriber = Subscriber::Cluster {
            conn: conn.clone(),
            pushes,
        };
        return Ok((Conn::Cluster(conn), subscriber, addr));
    }
    let (client, addr) = target.resolve().await?;
    let failed = |e: redis::RedisError| format!("{addr}: {e}");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(failed)?;
    if target.follows_failover() && !target::is_master(&mut conn).await.map_err(failed)? {
        return Err(format!(
            "{addr} is not a master (the sentinels' answer is stale)"
        ));
    }
    let (sink, stream) = client.get_async_pubsub().await.map_err(failed)?.split();
    Ok((Conn::One(conn), Subscriber::One { sink, stream }, addr))
}

/// Which master serves which slots (`CLUSTER SLOTS`: each range with its master's host and
/// port, sorted): compared each beat, so a resharding or failover that no push announced still
/// makes the node start over on the new map. `None` for one Redis.
pub async fn slot_map(conn: &mut Conn) -> redis::RedisResult<Option<Vec<String>>> {
    let Conn::Cluster(c) = conn else {
        return Ok(None);
    };
    let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(c).await?;
    let mut ranges = Vec::new();
    if let Value::Array(items) = slots {
        for item in items {
            let Value::Array(fields) = item else { continue };
            // start, end, then the master's [host, port, id, ...].
            let master = match fields.get(2) {
                Some(Value::Array(m)) => format!("{:?}", m.get(..2)),
                _ => String::new(),
            };
            ranges.push(format!("{:?}-{:?}-{master}", fields.first(), fields.get(1)));
        }
    }
    ranges.sort();
    Ok(Some(ranges))
}
