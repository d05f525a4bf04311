//! Ingest: publishes taken from brokers, at least once. Each consumer runs on its own thread
//! with its own single-threaded tokio runtime (like the cluster thread), and reaches the shards
//! only through the admin API's publish path, so a broker's bytes are validated exactly like a
//! `/publish` body.
//!
//! The loop is shared; what differs per broker is a `Source`: fetch a batch, acknowledge what
//! was handed over, set aside (dead-letter) what does not parse. Redis Streams, NATS JetStream,
//! Kafka (commit offsets as its `ack`) and a PostgreSQL outbox (delete the claimed rows and
//! commit) are the four.

pub mod kafka;
pub mod nats;
pub mod postgres;
pub mod redis_stream;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::admin::api::{Api, Caller};
use crate::stats::{SourceStats, Stats};

/// One message from a broker.
pub struct Delivery {
    /// The broker's id for it (what `ack` takes).
    pub id: String,
    /// The `/publish` JSON, if the message carried one.
    pub data: Option<Vec<u8>>,
}

/// Why a step of the loop failed; every kind is retried with back-off after reconnecting
/// (the unacknowledged messages come again).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Not connected yet, or no longer.
    #[error("not connected")]
    NotConnected,
    /// The broker failed `op` (connecting, reading, acknowledging, dead-lettering).
    #[error("{op}: {reason}")]
    Broker { op: String, reason: String },
    /// The shards did not carry a batch out in time.
    #[error("hub: {0}")]
    Hub(#[from] crate::hub::HubError),
}

/// A broker's failure of `op`, for `map_err`.
fn broker<E: std::fmt::Display>(op: impl Into<String>) -> impl FnOnce(E) -> IngestError {
    let op = op.into();
    move |e| IngestError::Broker {
        op,
        reason: e.to_string(),
    }
}

/// What a broker must offer the shared loop.
#[allow(async_fn_in_trait)]
pub trait Source {
    /// For logs: which broker, which stream or subject.
    fn name(&self) -> String;
    /// (Re)connects, setting up what the broker needs (a consumer group, ...).
    async fn connect(&mut self) -> Result<(), IngestError>;
    /// The next messages: first any left unacknowledged by an earlier run, then new ones
    /// (waiting a little for them).
    async fn fetch(&mut self) -> Result<Vec<Delivery>, IngestError>;
    /// The messages were handed to the hub (or set aside): never deliver them again.
    async fn ack(&mut self, ids: &[String]) -> Result<(), IngestError>;
    /// Gives back what the last fetch took and `ack` did not take (a hand-over refused it),
    /// where the broker would hold it for this consumer a while.
    async fn release(&mut self) -> Result<(), IngestError> {
        Ok(())
    }
    /// Keeps a message that does not parse, with the reason, where an operator can see it.
    async fn dead_letter(&mut self, d: &Delivery, reason: &str) -> Result<(), IngestError>;
    /// Messages behind the broker's end, where the broker tells it.
    fn lag(&self) -> Option<i64> {
        None
    }
}

/// Runs `source` forever on a thread of its own.
pub fn spawn<S: Source + Send + 'static>(
    mut source: S,
    api: Arc<Api>,
    stats: Arc<Stats>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let own = stats.ingest.source(source.name());
    let counts = Counts { all: stats, own };
    std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("ingest: no runtime: {e}");
                    return;
                }
            };
            rt.block_on(run(&mut source, &api, &counts));
        })
}

/// The node's totals and this consumer's own.
struct Counts {
    all: Arc<Stats>,
    own: Arc<SourceStats>,
}

impl Counts {
    fn read(&self) {
        self.all.ingest.received.fetch_add(1, Relaxed);
        self.own.read.fetch_add(1, Relaxed);
    }
    fn rejected(&self) {
        self.all.ingest.rejected.fetch_add(1, Relaxed);
        self.own.rejected.fetch_add(1, Relaxed);
    }
    fn error(&self) {
        self.all.ingest.errors.fetch_add(1, Relaxed);
        self.own.errors.fetch_add(1, Relaxed);
    }
}

/// Back-off between failed attempts: 0.1 s doubling to 2 s.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

async fn run<S: Source>(source: &mut S, api: &Api, stats: &Counts) {
    let mut backoff = BACKOFF.0;
    let mut down = false;
    loop {
        let Some(counted) = api.hub.source_step() else {
            // `ringcast upgrade`: the successor consumes from here on; what this process
            // fetched now would wait for a redelivery.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let step = async {
            if down {
                source.connect().await?;
            }
            let batch = source.fetch().await?;
            if let Some(lag) = source.lag() {
                stats.own.lag.store(lag, Relaxed);
            }
            handle(source, api, stats, batch).await
        };
        let outcome = step.await;
        drop(counted);
        match outcome {
            Ok(()) => {
                if down {
                    tracing::info!("ingest {}: connected", source.name());
                }
                down = false;
                backoff = BACKOFF.0;
            }
            Err(e) => {
                stats.error();
                if !down {
                    // Once per outage, not once per retry.
                    tracing::warn!("ingest {}: {e}; retrying with back-off", source.name());
                }
                down = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

/// Hands each message to the hub without waiting per message, then waits once for every shard
/// to have carried the batch out before acknowledging it (at least once: a failure before the
/// acknowledgement means a redelivery). Messages that do not parse are set aside. From a
/// hand-over on (`ringcast upgrade`) nothing more is taken: what was handed out before it is
/// acknowledged (the shards carry it out before they hand over, and their sessions move with
/// it queued), the rest is left for the successor.
async fn handle<S: Source>(
    source: &mut S,
    api: &Api,
    stats: &Counts,
    batch: Vec<Delivery>,
) -> Result<(), IngestError> {
    let mut done = Vec::with_capacity(batch.len());
    let mut published = 0;
    for d in &batch {
        stats.read();
        let prepared = match &d.data {
            None => {
                Err("no /publish JSON in the message (a Redis entry: no field `data`)".to_string())
            }
            Some(body) => api
                .prepare(body, &Caller::local())
                .map_err(|r| String::from_utf8_lossy(&r.body).into_owned()),
        };
        match prepared {
            Ok(msg) => match api.hub.try_publish_nowait(msg) {
                Ok(()) => published += 1,
                Err(e) => {
                    stats.own.published.fetch_add(published, Relaxed);
                    if !done.is_empty() {
                        source.ack(&done).await?;
                    }
                    source.release().await?;
                    return Err(e.into());
                }
            },
            Err(reason) => {
                stats.rejected();
                source.dead_letter(d, &reason).await?;
            }
        }
        done.push(d.id.clone());
    }
    if done.is_empty() {
        return Ok(());
    }
    match api.hub.barrier() {
        // Shards gone for a hand-over took the batch first (it was handed out before).
        Err(_) if api.hub.handing_over() => {}
        r => r?,
    }
    stats.own.published.fetch_add(published, Relaxed);
    source.ack(&done).await
}
