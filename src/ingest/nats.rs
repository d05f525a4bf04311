//! NATS JetStream through a durable pull consumer: fetch a batch, ack each message after
//! hand-off (explicit acks: what is not acked is redelivered after the ack wait), and publish
//! what does not parse to a dead-letter subject with the reason in a header.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures_util::StreamExt;

use super::{Delivery, IngestError, Source, broker};
use crate::config::Nats as Config;

/// How long one fetch waits for messages.
const FETCH_WAIT: Duration = Duration::from_secs(1);

/// One stream, one durable consumer.
pub struct Nats {
    cfg: Config,
    js: Option<jetstream::Context>,
    consumer: Option<PullConsumer>,
    /// Messages fetched and not yet acknowledged, by the id handed to the loop.
    unacked: HashMap<String, jetstream::Message>,
    next_id: u64,
}

impl Nats {
    /// A consumer for `cfg` (it connects on first use).
    pub fn new(cfg: Config) -> Nats {
        Nats {
            cfg,
            js: None,
            consumer: None,
            unacked: HashMap::new(),
            next_id: 0,
        }
    }

    fn dead_subject(&self) -> String {
        self.cfg
            .dead_letter
            .clone()
            .unwrap_or_else(|| format!("{}.dead", self.cfg.subject))
    }
}

impl Source for Nats {
    fn name(&self) -> String {
        format!(
            "nats stream {} (consumer {})",
            self.cfg.stream, self.cfg.consumer
        )
    }

    async fn connect(&mut self) -> Result<(), IngestError> {
        let client = async_nats::connect(self.cfg.url.as_str())
            .await
            .map_err(broker(format!("connect {}", self.cfg.url)))?;
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: self.cfg.stream.clone(),
                subjects: vec![self.cfg.subject.clone(), self.dead_subject()],
                ..Default::default()
            })
            .await
            .map_err(broker(format!("stream {}", self.cfg.stream)))?;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(
                &self.cfg.consumer,
                jetstream::consumer::pull::Config {
                    durable_name: Some(self.cfg.consumer.clone()),
                    filter_subject: self.cfg.subject.clone(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_millis(self.cfg.ack_wait_ms),
                    ..Default::default()
                },
            )
            .await
            .map_err(broker(format!("consumer {}", self.cfg.consumer)))?;
        self.js = Some(js);
        self.consumer = Some(consumer);
        // Unacknowledged messages of a broken connection come back after the ack wait.
        self.unacked.clear();
        Ok(())
    }

    async fn fetch(&mut self) -> Result<Vec<Delivery>, IngestError> {
        if self.consumer.is_none() {
            self.connect().await?;
        }
        let consumer = self.consumer.as_ref().ok_or(IngestError::NotConnected)?;
        let mut batch = consumer
            .fetch()
            .max_messages(self.cfg.batch)
            .expires(FETCH_WAIT)
            .messages()
            .await
            .map_err(broker("fetch"))?;
        let mut out = Vec::new();
        while let Some(m) = batch.next().await {
            let m = m.map_err(broker("fetch"))?;
            self.next_id += 1;
            let id = self.next_id.to_string();
            out.push(Delivery {
                id: id.clone(),
                data: Some(m.payload.to_vec()),
            });
            self.unacked.insert(id, m);
        }
        Ok(out)
    }

    async fn ack(&mut self, ids: &[String]) -> Result<(), IngestError> {
        for id in ids {
            if let Some(m) = self.unacked.remove(id) {
                m.ack().await.map_err(broker("ack"))?;
            }
        }
        Ok(())
    }

    async fn release(&mut self) -> Result<(), IngestError> {
        // Redelivered at once (to the successor), not after ack_wait, in the order NAKed:
        // that of their delivery. Confirmed, so the successor's first fetch finds them
        // redelivered ahead of newer messages.
        let mut left: Vec<_> = self.unacked.drain().collect();
        left.sort_by_key(|(id, _)| id.parse::<u64>().unwrap_or(u64::MAX));
        for (_, m) in left {
            m.double_ack_with(async_nats::jetstream::AckKind::Nak(None))
                .await
                .map_err(broker("nak"))?;
        }
        Ok(())
    }

    async fn dead_letter(&mut self, d: &Delivery, reason: &str) -> Result<(), IngestError> {
        let js = self.js.as_ref().ok_or(IngestError::NotConnected)?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("reason", reason.replace(['\r', '\n'], " ").as_str());
        js.publish_with_headers(
            self.dead_subject(),
            headers,
            d.data.clone().unwrap_or_default().into(),
        )
        .await
        .map_err(broker("dead letter"))?
        .await
        .map_err(broker("dead letter"))?;
        Ok(())
    }
}
