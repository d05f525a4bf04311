//! Redis Streams through a consumer group: XREADGROUP (this consumer's pending entries first,
//! after a restart), XAUTOCLAIM of entries another consumer left idle, XACK after hand-off,
//! and a dead-letter stream for entries that do not parse.

use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::{Delivery, IngestError, Source, broker};
use crate::config::RedisStream as Config;

/// How long one XREADGROUP waits for new entries.
const BLOCK_MS: usize = 1000;
/// How long past its own wait an answer may take before the connection counts as broken.
const ANSWER_SLACK: Duration = Duration::from_secs(2);
/// How often entries idle with other consumers are looked for.
const CLAIM_EVERY: Duration = Duration::from_secs(5);

/// One stream, one group, this node's consumer.
pub struct RedisStream {
    cfg: Config,
    conn: Option<MultiplexedConnection>,
    /// Still reading this consumer's own pending entries (from id 0) before new ones.
    own_pending: bool,
    next_claim: Instant,
}

impl RedisStream {
    /// A consumer for `cfg` (it connects on first use).
    pub fn new(cfg: Config) -> RedisStream {
        RedisStream {
            cfg,
            conn: None,
            own_pending: true,
            next_claim: Instant::now(),
        }
    }

    fn conn(&mut self) -> Result<&mut MultiplexedConnection, IngestError> {
        self.conn.as_mut().ok_or(IngestError::NotConnected)
    }

    /// XREADGROUP from `id` (`0`: this consumer's pending entries; `>`: new ones, waiting up
    /// to `block_ms`).
    async fn read_group(
        &mut self,
        id: &str,
        block_ms: Option<usize>,
    ) -> Result<Vec<Delivery>, IngestError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.cfg.group)
            .arg(&self.cfg.consumer)
            .arg("COUNT")
            .arg(self.cfg.batch);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(&self.cfg.stream).arg(id);
        let v: Value = cmd
            .query_async(self.conn()?)
            .await
            .map_err(broker("XREADGROUP"))?;
        Ok(read_reply(&v))
    }

    fn dead_stream(&self) -> String {
        self.cfg
            .dead_letter
            .clone()
            .unwrap_or_else(|| format!("{}:dead", self.cfg.stream))
    }
}

/// Entries of a stream reply (`[[id, [field, value, ...]], ...]`), with their `data` field.
fn entries(v: &Value) -> Vec<Delivery> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|e| {
            let Value::Array(parts) = e else { return None };
            let id = match parts.first()? {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let data = match parts.get(1) {
                Some(Value::Array(fields)) => fields.chunks(2).find_map(|kv| match kv {
                    [Value::BulkString(k), Value::BulkString(v)] if k == b"data" => Some(v.clone()),
                    _ => None,
                }),
                _ => None,
            };
            Some(Delivery { id, data })
        })
        .collect()
}

/// The entries of an XREADGROUP reply: `[[stream, entries]]` (RESP2) or a map (RESP3).
fn read_reply(v: &Value) -> Vec<Delivery> {
    match v {
        Value::Array(streams) => streams
            .iter()
            .flat_map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => entries(&pair[1]),
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(m) => m.iter().flat_map(|(_, e)| entries(e)).collect(),
        _ => Vec::new(),
    }
}

impl Source for RedisStream {
    fn name(&self) -> String {
        format!(
            "redis stream {} (group {})",
            self.cfg.stream, self.cfg.group
        )
    }

    async fn connect(&mut self) -> Result<(), IngestError> {
        let client = redis::Client::open(self.cfg.url.as_str()).map_err(broker("open"))?;
        // The client's default answer timeout (500 ms) is shorter than a blocking read waits.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_millis(BLOCK_MS as u64) + ANSWER_SLACK));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(broker("connect"))?;
        let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.cfg.stream)
            .arg(&self.cfg.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return Err(broker("XGROUP CREATE")(e));
        }
        self.conn = Some(conn);
        self.own_pending = true;
        Ok(())
    }

    async fn fetch(&mut self) -> Result<Vec<Delivery>, IngestError> {
        if self.conn.is_none() {
            self.connect().await?;
        }
        if self.own_pending {
            // After a restart: what this consumer was given and never acknowledged.
            let got = self.read_group("0", None).await?;
            if !got.is_empty() {
                return Ok(got);
            }
            self.own_pending = false;
        }
        if Instant::now() >= self.next_claim {
            self.next_claim = Instant::now() + CLAIM_EVERY;
            let (stream, group, consumer) = (
                self.cfg.stream.clone(),
                self.cfg.group.clone(),
                self.cfg.consumer.clone(),
            );
            let v: Value = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(&group)
                .arg(&consumer)
                .arg(self.cfg.claim_idle_ms)
                .arg("0-0")
                .arg("COUNT")
                .arg(self.cfg.batch)
                .query_async(self.conn()?)
                .await
                .map_err(broker("XAUTOCLAIM"))?;
            if let Value::Array(parts) = &v
                && let Some(claimed) = parts.get(1)
            {
                let got = entries(claimed);
                if !got.is_empty() {
                    return Ok(got);
                }
            }
        }
        self.read_group(">", Some(BLOCK_MS)).await
    }

    async fn ack(&mut self, ids: &[String]) -> Result<(), IngestError> {
        let (stream, group) = (self.cfg.stream.clone(), self.cfg.group.clone());
        let _: i64 = redis::cmd("XACK")
            .arg(&stream)
            .arg(&group)
            .arg(ids)
            .query_async(self.conn()?)
            .await
            .map_err(broker("XACK"))?;
        Ok(())
    }

    async fn dead_letter(&mut self, d: &Delivery, reason: &str) -> Result<(), IngestError> {
        let dead = self.dead_stream();
        let data = d.data.clone().unwrap_or_default();
        let _: String = redis::cmd("XADD")
            .arg(&dead)
            .arg("*")
            .arg("data")
            .arg(data)
            .arg("reason")
            .arg(reason)
            .arg("source_id")
            .arg(&d.id)
            .query_async(self.conn()?)
            .await
            .map_err(broker(format!("XADD {dead}")))?;
        Ok(())
    }
}
