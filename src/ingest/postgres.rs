//! A PostgreSQL outbox: the backend inserts a row in the transaction of its business change;
//! ringcast claims rows in id order (`FOR UPDATE SKIP LOCKED`, so several nodes share one
//! table without taking a row twice), hands them to the shards, and deletes them in the same
//! transaction. Rows that do not parse move to `{table}_dead` with the reason. With a
//! `notify_channel`, a `NOTIFY` ends the wait of an empty poll at once.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

use super::{Delivery, IngestError, Source, broker};
use crate::config::Postgres as Config;

/// One outbox table.
pub struct Postgres {
    cfg: Config,
    client: Option<Client>,
    /// A message per `NOTIFY` on the channel; closed when the connection ends.
    wake: Option<mpsc::UnboundedReceiver<()>>,
    /// The claim and the delete, prepared once per connection (not on every round).
    claim: Option<Statement>,
    delete: Option<Statement>,
    /// A claim's transaction is open (rows claimed, not yet acknowledged).
    claiming: bool,
}

impl Postgres {
    /// A consumer for `cfg` (it connects on first use).
    pub fn new(cfg: Config) -> Postgres {
        Postgres {
            cfg,
            client: None,
            wake: None,
            claim: None,
            delete: None,
            claiming: false,
        }
    }

    fn client(&self) -> Result<&Client, IngestError> {
        self.client.as_ref().ok_or(IngestError::NotConnected)
    }

    fn dead_table(&self) -> String {
        format!("{}_dead", self.cfg.table)
    }

    /// Waits up to `poll_ms` for a wake-up (or, without a channel, simply that long).
    async fn wait(&mut self) -> Result<(), IngestError> {
        let poll = Duration::from_millis(self.cfg.poll_ms);
        let Some(wake) = self.wake.as_mut() else {
            tokio::time::sleep(poll).await;
            return Ok(());
        };
        match tokio::time::timeout(poll, wake.recv()).await {
            Ok(None) => {
                self.client = None;
                Err(IngestError::NotConnected)
            }
            Ok(Some(())) | Err(_) => Ok(()),
        }
    }
}

impl Source for Postgres {
    fn name(&self) -> String {
        format!("postgres outbox {}", self.cfg.table)
    }

    async fn connect(&mut self) -> Result<(), IngestError> {
        self.client = None;
        let (client, mut connection) = tokio_postgres::connect(&self.cfg.url, NoTls)
            .await
            .map_err(broker("connect"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        // The connection's own task: it carries every query and passes on notifications; when
        // it ends, `rx` closes and the next wait reconnects.
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(m)) = messages.next().await {
                if let AsyncMessage::Notification(_) = m
                    && tx.send(()).is_err()
                {
                    break;
                }
            }
        });
        let (table, dead) = (&self.cfg.table, self.dead_table());
        // Table names are checked at config load (letters, digits, _ and one dot).
        let mut setup = format!(
            "CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, payload jsonb NOT NULL, \
             created_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE IF NOT EXISTS {dead} (id bigint PRIMARY KEY, payload jsonb, \
             created_at timestamptz, failed_at timestamptz NOT NULL DEFAULT now(), reason text NOT NULL);"
        );
        if let Some(c) = &self.cfg.notify_channel {
            setup.push_str(&format!("LISTEN {c};"));
        }
        client
            .batch_execute(&setup)
            .await
            .map_err(broker("set up the outbox"))?;
        let claim = format!(
            "SELECT id, payload::text FROM {table} ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
        );
        let delete = format!("DELETE FROM {table} WHERE id = ANY($1)");
        let (claim, delete) = tokio::try_join!(client.prepare(&claim), client.prepare(&delete))
            .map_err(broker("prepare"))?;
        self.wake = self.cfg.notify_channel.is_some().then_some(rx);
        (self.claim, self.delete) = (Some(claim), Some(delete));
        self.client = Some(client);
        Ok(())
    }

    async fn fetch(&mut self) -> Result<Vec<Delivery>, IngestError> {
        if self.client.is_none() {
            self.connect().await?;
        }
        if let Some(w) = self.wake.as_mut() {
            // Wake-ups sent before this claim are answered by it.
            while w.try_recv().is_ok() {}
        }
        let limit = self.cfg.batch as i64;
        let client = self.client()?;
        let claim = self.claim.as_ref().ok_or(IngestError::NotConnected)?;
        // Pipelined: one round trip. A failed BEGIN fails the round before any row is handed
        // over, so a claim outside a transaction (its locks gone at once) is never delivered.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&limit];
        let (begun, rows) =
            tokio::join!(client.batch_execute("BEGIN"), client.query(claim, &params));
        begun.map_err(broker("BEGIN"))?;
        let rows = rows.map_err(broker("claim rows"))?;
        if rows.is_empty() {
            client
                .batch_execute("COMMIT")
                .await
                .map_err(broker("COMMIT"))?;
            self.wait().await?;
            return Ok(Vec::new());
        }
        // The transaction stays open until `ack`: the claimed rows stay locked meanwhile.
        self.claiming = true;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get(0).map_err(broker("read id"))?;
            let payload: String = row.try_get(1).map_err(broker("read payload"))?;
            out.push(Delivery {
                id: id.to_string(),
                data: Some(payload.into_bytes()),
            });
        }
        Ok(out)
    }

    async fn ack(&mut self, ids: &[String]) -> Result<(), IngestError> {
        let ids: Vec<i64> = ids.iter().filter_map(|i| i.parse().ok()).collect();
        let client = self.client()?;
        let delete = self.delete.as_ref().ok_or(IngestError::NotConnected)?;
        // Pipelined: a failed DELETE turns the COMMIT into a rollback, so the rows stay and
        // come again (at least once).
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
        let (deleted, committed) = tokio::join!(
            client.execute(delete, &params),
            client.batch_execute("COMMIT")
        );
        self.claiming = false;
        deleted.map_err(broker("delete rows"))?;
        committed.map_err(broker("COMMIT"))?;
        Ok(())
    }

    async fn release(&mut self) -> Result<(), IngestError> {
        // Deleting none of them ends the claim: its rows are unlocked for the next one.
        if self.claiming {
            self.ack(&[]).await?;
        }
        Ok(())
    }

    async fn dead_letter(&mut self, d: &Delivery, reason: &str) -> Result<(), IngestError> {
        let id: i64 = d.id.parse().map_err(broker("row id"))?;
        let keep = format!(
            "INSERT INTO {} (id, payload, created_at, reason) SELECT id, payload, created_at, $2 \
             FROM {} WHERE id = $1 ON CONFLICT (id) DO NOTHING",
            self.dead_table(),
            self.cfg.table
        );
        self.client()?
            .execute(&keep, &[&id, &reason])
            .await
            .map_err(broker("dead letter"))?;
        Ok(())
    }
}
