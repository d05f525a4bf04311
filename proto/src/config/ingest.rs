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
    /// Kafka topics.
    pub kafka: Vec<Kafka>,
    /// PostgreSQL outbox tables.
    pub postgres: Vec<Postgres>,
}

/// Where a Kafka consumer starts reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// The group's committed offset; the partition's beginning where it has none.
    #[default]
    Committed,
    /// The partition's beginning, whatever was committed (a replay).
    Earliest,
    /// The partition's end, whatever was committed (a backlog is skipped).
    Latest,
}

/// `[[ingest.kafka]]`: one topic, its partitions assigned (not joined as a group member), its
/// offsets committed under `group` after hand-off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Kafka {
    /// Bootstrap brokers, `HOST:PORT`; the partitions' leaders are found from them.
    pub brokers: Vec<String>,
    /// The topic; each record's value is the `/publish` JSON (keys are ignored).
    pub topic: String,
    /// The group whose committed offsets are read at start and written after hand-off.
    pub group: String,
    /// The partitions this node reads; unset: all of the topic's.
    pub partitions: Option<Vec<i32>>,
    /// Where records that do not parse go, with a `reason` header; unset = `{topic}.dead`.
    pub dead_letter: Option<String>,
    /// Records handed to the shards per round (and committed together).
    pub batch: usize,
    /// Where to start a partition.
    pub start: Start,
    /// TLS to the brokers.
    pub tls: bool,
    /// The CA certificates (PEM) that sign the brokers' certificates, with `tls`.
    pub tls_ca: Option<String>,
    /// SASL user (with `sasl_password`).
    pub sasl_username: Option<String>,
    /// SASL password.
    pub sasl_password: Option<String>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl_mechanism: String,
    /// The client id the brokers log.
    pub client_id: String,
}

impl Default for Kafka {
    fn default() -> Self {
        Kafka {
            brokers: vec!["127.0.0.1:9092".into()],
            topic: "pushes".into(),
            group: "ringcast".into(),
            partitions: None,
            dead_letter: None,
            batch: 500,
            start: Start::Committed,
            tls: false,
            tls_ca: None,
            sasl_username: None,
            sasl_password: None,
            sasl_mechanism: "PLAIN".into(),
            client_id: "ringcast".into(),
        }
    }
}

/// `[[ingest.postgres]]`: an outbox table the backend writes in its own transactions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Postgres {
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (or key=value pairs).
    pub url: String,
    /// The outbox (`id bigserial primary key, payload jsonb not null, created_at
    /// timestamptz`); rows that do not parse move to `{table}_dead`.
    pub table: String,
    /// Rows claimed per transaction.
    pub batch: usize,
    /// How long to wait for rows when the table is empty (a wake-up ends the wait early).
    pub poll_ms: u64,
    /// A channel to `LISTEN` on: a `NOTIFY` wakes the consumer at once.
    pub notify_channel: Option<String>,
}

impl Default for Postgres {
    fn default() -> Self {
        Postgres {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            table: "ringcast_outbox".into(),
            batch: 500,
            poll_ms: 1000,
            notify_channel: None,
        }
    }
}

/// A table or channel name ringcast writes into SQL: letters, digits and `_`, optionally one
/// schema before a dot, so it never needs quoting.
fn sql_name(s: &str) -> bool {
    let word = |w: &str| {
        !w.is_empty()
            && w.len() <= 63
            && !w.starts_with(|c: char| c.is_ascii_digit())
            && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    match s.split_once('.') {
        Some((schema, table)) => word(schema) && word(table),
        None => word(s),
    }
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
        for (i, k) in self.kafka.iter().enumerate() {
            k.validate()
                .map_err(|e| format!("ingest.kafka[{i}]: {e}"))?;
        }
        for (i, p) in self.postgres.iter().enumerate() {
            p.validate()
                .map_err(|e| format!("ingest.postgres[{i}]: {e}"))?;
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

impl Kafka {
    fn validate(&self) -> Result<(), String> {
        if self.brokers.is_empty() || self.topic.is_empty() || self.group.is_empty() {
            return Err("brokers, topic and group must be set".into());
        }
        if self.batch == 0 {
            return Err("batch must be at least 1".into());
        }
        for b in &self.brokers {
            match b.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => return Err(format!("broker {b:?}: expected HOST:PORT")),
            }
        }
        if matches!(&self.partitions, Some(p) if p.is_empty() || p.iter().any(|&n| n < 0)) {
            return Err("partitions: list at least one, none negative".into());
        }
        if self.sasl_username.is_some() != self.sasl_password.is_some() {
            return Err("sasl_username and sasl_password go together".into());
        }
        if !matches!(
            self.sasl_mechanism.as_str(),
            "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512"
        ) {
            return Err(format!(
                "sasl_mechanism {:?}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                self.sasl_mechanism
            ));
        }
        if self.tls_ca.is_some() && !self.tls {
            return Err("tls_ca without tls = true".into());
        }
        Ok(())
    }
}

impl Postgres {
    fn validate(&self) -> Result<(), String> {
        if self.batch == 0 || self.poll_ms == 0 {
            return Err("batch and poll_ms must be at least 1".into());
        }
        if !sql_name(&self.table) {
            return Err(format!(
                "table {:?}: letters, digits and _ only (optionally SCHEMA.TABLE)",
                self.table
            ));
        }
        if let Some(c) = &self.notify_channel
            && (!sql_name(c) || c.contains('.'))
        {
            return Err(format!("notify_channel {c:?}: letters, digits and _ only"));
        }
        if !(self.url.starts_with("postgres://")
            || self.url.starts_with("postgresql://")
            || self.url.contains("host="))
        {
            return Err(format!(
                "url {:?}: expected postgres://USER@HOST:PORT/DB",
                self.url
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_and_postgres_sources_are_checked() {
        let ok = Kafka::default();
        assert!(ok.validate().is_ok());
        for bad in [
            Kafka {
                brokers: vec![],
                ..Kafka::default()
            },
            Kafka {
                brokers: vec!["nohost".into()],
                ..Kafka::default()
            },
            Kafka {
                partitions: Some(vec![]),
                ..Kafka::default()
            },
            Kafka {
                sasl_username: Some("u".into()),
                ..Kafka::default()
            },
            Kafka {
                sasl_mechanism: "GSSAPI".into(),
                ..Kafka::default()
            },
            Kafka {
                tls_ca: Some("ca.pem".into()),
                ..Kafka::default()
            },
            Kafka {
                batch: 0,
                ..Kafka::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(Postgres::default().validate().is_ok());
        assert!(
            Postgres {
                table: "app.outbox".into(),
                ..Postgres::default()
            }
            .validate()
            .is_ok()
        );
        for bad in [
            Postgres {
                table: "x; drop table y".into(),
                ..Postgres::default()
            },
            Postgres {
                table: "1x".into(),
                ..Postgres::default()
            },
            Postgres {
                notify_channel: Some("a.b".into()),
                ..Postgres::default()
            },
            Postgres {
                url: "mysql://x".into(),
                ..Postgres::default()
            },
            Postgres {
                poll_ms: 0,
                ..Postgres::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
