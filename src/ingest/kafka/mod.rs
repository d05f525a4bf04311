//! Kafka: the partitions of one topic fetched from their leaders, committed under a group after
//! hand-off, and records that do not parse produced to a dead-letter topic.
//!
//! Partitions are *assigned* (the configured list, or all of the topic's), not obtained by
//! joining the group: that needs only Metadata, ListOffsets, Fetch, FindCoordinator,
//! OffsetFetch/OffsetCommit and Produce, which every Kafka-protocol broker serves (the group
//! protocol is where brokers differ most; see README "Kafka"). Offsets are committed with
//! generation -1, as Kafka's own `assign()` consumers do.

mod conn;

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use ringcast_proto::kafka::messages::{
    ApiKey, BrokerId, FetchRequest, FindCoordinatorRequest, GroupId, ListOffsetsRequest,
    MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, TopicName,
    fetch_request, list_offsets_request, metadata_request, offset_commit_request,
    offset_fetch_request, produce_request,
};
use ringcast_proto::kafka::protocol::StrBytes;
use ringcast_proto::kafka::{check, code_name, records};

use super::{Delivery, IngestError, Source};
use crate::config::{Kafka as Config, Start};
use conn::{Conn, Tls};

/// How long a fetch waits at its leader for records to arrive.
const FETCH_WAIT_MS: i32 = 500;
/// Bytes asked for per partition and per fetch.
const PARTITION_BYTES: i32 = 4 << 20;
const FETCH_BYTES: i32 = 16 << 20;

/// One topic's consumer.
pub struct Kafka {
    cfg: Config,
    tls: Option<Tls>,
    /// Leader connections by broker id, and the brokers' addresses from metadata.
    conns: HashMap<i32, Conn>,
    brokers: HashMap<i32, String>,
    /// Each read partition's leader.
    leaders: BTreeMap<i32, i32>,
    coordinator: Option<Conn>,
    /// The next offset to fetch, per partition.
    positions: BTreeMap<i32, i64>,
    /// What was committed (or where reading began): a reconnect resumes here, so what was
    /// fetched and not handed over comes again.
    committed: BTreeMap<i32, i64>,
    /// Fetched beyond one batch, handed next.
    queued: VecDeque<Delivery>,
    /// Records behind each partition's end at the last fetch.
    lag: BTreeMap<i32, i64>,
    /// This process has committed offsets: a group without any after a reconnect means the
    /// broker lost its state (restarted empty), and its logs with it.
    has_committed: bool,
    /// The dead-letter partition's leader, kept between dead letters (they come in runs).
    dead: Option<Conn>,
}

fn refused(op: &str) -> impl FnOnce(ringcast_proto::kafka::KafkaError) -> IngestError {
    let op = op.to_string();
    move |e| IngestError::Broker {
        op,
        reason: e.to_string(),
    }
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

impl Kafka {
    /// A consumer for `cfg` (it connects on first use); refused if its TLS CAs cannot be read.
    pub fn new(cfg: Config) -> Result<Kafka, String> {
        Ok(Kafka {
            tls: conn::tls(&cfg)?,
            cfg,
            conns: HashMap::new(),
            brokers: HashMap::new(),
            leaders: BTreeMap::new(),
            coordinator: None,
            positions: BTreeMap::new(),
            committed: BTreeMap::new(),
            queued: VecDeque::new(),
            lag: BTreeMap::new(),
            has_committed: false,
            dead: None,
        })
    }

    fn dead_topic(&self) -> String {
        self.cfg
            .dead_letter
            .clone()
            .unwrap_or_else(|| format!("{}.dead", self.cfg.topic))
    }

    /// A connection to the leader of the dead-letter topic's partition 0.
    async fn dead_leader(&self, dead: &str) -> Result<Conn, IngestError> {
        let mut boot = self.bootstrap().await?;
        let (leaders, brokers) = Self::metadata(&mut boot, dead, true).await?;
        let Some(&leader) = leaders.get(&0) else {
            return Err(IngestError::Broker {
                op: format!("dead letter {dead}"),
                reason: "the topic has no partition 0".into(),
            });
        };
        let addr = brokers.get(&leader).cloned().unwrap_or_default();
        if addr == boot.addr() || addr.is_empty() {
            return Ok(boot);
        }
        Conn::open(&addr, &self.cfg, self.tls.as_ref()).await
    }

    /// Any bootstrap broker that answers.
    async fn bootstrap(&self) -> Result<Conn, IngestError> {
        let mut last = IngestError::NotConnected;
        for b in &self.cfg.brokers {
            match Conn::open(b, &self.cfg, self.tls.as_ref()).await {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The partitions of `topic` and their leaders' addresses.
    async fn metadata(
        conn: &mut Conn,
        topic: &str,
        create: bool,
    ) -> Result<(BTreeMap<i32, i32>, HashMap<i32, String>), IngestError> {
        let mut req = MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
        ]));
        if conn.version(ApiKey::Metadata) >= 4 {
            req.allow_auto_topic_creation = create;
        }
        let m = conn.call(&req).await?;
        let brokers = m
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let t = m
            .topics
            .iter()
            .find(|t| t.name.as_deref().map(|n| n.as_str()) == Some(topic))
            .ok_or_else(|| IngestError::Broker {
                op: format!("metadata {topic}"),
                reason: "topic not in the answer".into(),
            })?;
        check("Metadata", t.error_code).map_err(refused(&format!("metadata {topic}")))?;
        let leaders = t
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect();
        Ok((leaders, brokers))
    }

    async fn leader(&mut self, node: i32) -> Result<&mut Conn, IngestError> {
        if !self.conns.contains_key(&node) {
            let addr = self.brokers.get(&node).ok_or_else(|| IngestError::Broker {
                op: "metadata".into(),
                reason: format!("no address for broker {node}"),
            })?;
            let c = Conn::open(addr, &self.cfg, self.tls.as_ref()).await?;
            self.conns.insert(node, c);
        }
        Ok(self.conns.get_mut(&node).expect("inserted above"))
    }

    /// The read partitions grouped by leader.
    fn by_leader(&self, partitions: impl Iterator<Item = i32>) -> BTreeMap<i32, Vec<i32>> {
        let mut out: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in partitions {
            if let Some(&l) = self.leaders.get(&p) {
                out.entry(l).or_default().push(p);
            }
        }
        out
    }

    /// ListOffsets at `timestamp` (-2: the beginning, -1: the end) for `partitions`.
    async fn list_offsets(
        &mut self,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<BTreeMap<i32, i64>, IngestError> {
        let mut out = BTreeMap::new();
        let topic = self.cfg.topic.clone();
        for (leader, parts) in self.by_leader(partitions.iter().copied()) {
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    list_offsets_request::ListOffsetsTopic::default()
                        .with_name(topic_name(&topic))
                        .with_partitions(
                            parts
                                .iter()
                                .map(|&p| {
                                    list_offsets_request::ListOffsetsPartition::default()
                                        .with_partition_index(p)
                                        .with_timestamp(timestamp)
                                })
                                .collect(),
                        ),
                ]);
            let r = self.leader(leader).await?.call(&req).await?;
            for t in r.topics {
                for p in t.partitions {
                    check("ListOffsets", p.error_code).map_err(refused("list offsets"))?;
                    out.insert(p.partition_index, p.offset);
                }
            }
        }
        Ok(out)
    }

    async fn coordinator(&mut self) -> Result<&mut Conn, IngestError> {
        if self.coordinator.is_none() {
            let mut any = self.bootstrap().await?;
            let r = any
                .call(
                    &FindCoordinatorRequest::default()
                        .with_key(StrBytes::from_string(self.cfg.group.clone())),
                )
                .await?;
            check("FindCoordinator", r.error_code).map_err(refused("find coordinator"))?;
            let addr = format!("{}:{}", r.host.as_str(), r.port);
            let conn = if addr == any.addr() {
                any
            } else {
                Conn::open(&addr, &self.cfg, self.tls.as_ref()).await?
            };
            self.coordinator = Some(conn);
        }
        Ok(self.coordinator.as_mut().expect("set above"))
    }

    /// The group's committed offsets (-1 where none).
    async fn committed_offsets(
        &mut self,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, IngestError> {
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.cfg.group.clone())))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(topic_name(&self.cfg.topic))
                    .with_partition_indexes(partitions.to_vec()),
            ]));
        let r = self.coordinator().await?.call(&req).await?;
        check("OffsetFetch", r.error_code).map_err(refused("offset fetch"))?;
        let mut out = BTreeMap::new();
        for t in r.topics {
            for p in t.partitions {
                check("OffsetFetch", p.error_code).map_err(refused("offset fetch"))?;
                out.insert(p.partition_index, p.committed_offset);
            }
        }
        Ok(out)
    }

    /// Where each partition starts on this process's first connect.
    async fn starting_positions(
        &mut self,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, IngestError> {
        match self.cfg.start {
            Start::Earliest => self.list_offsets(partitions, -2).await,
            Start::Latest => self.list_offsets(partitions, -1).await,
            Start::Committed => {
                let mut at = self.committed_offsets(partitions).await?;
                let none: Vec<i32> = partitions
                    .iter()
                    .copied()
                    .filter(|p| at.get(p).is_none_or(|&o| o < 0))
                    .collect();
                if !none.is_empty() {
                    at.extend(self.list_offsets(&none, -2).await?);
                }
                Ok(at)
            }
        }
    }

    /// Where each partition goes on after a reconnect: the group's committed offset as the
    /// broker keeps it; where it has none, the beginning if this process had committed (the
    /// broker came back empty), else where this process was.
    async fn resume_positions(
        &mut self,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, IngestError> {
        let at = self.committed_offsets(partitions).await?;
        let mut out = BTreeMap::new();
        let mut lost = Vec::new();
        for &p in partitions {
            match at.get(&p) {
                Some(&o) if o >= 0 => {
                    out.insert(p, o);
                }
                _ if self.has_committed => lost.push(p),
                _ => {
                    out.insert(p, self.committed.get(&p).copied().unwrap_or(0));
                }
            }
        }
        if !lost.is_empty() {
            tracing::warn!(
                "ingest kafka {}: the group {} has no committed offset for partitions {lost:?} any more; reading them from their beginning",
                self.cfg.topic,
                self.cfg.group
            );
            out.extend(self.list_offsets(&lost, -2).await?);
        }
        Ok(out)
    }

    async fn fetch_from(&mut self, leader: i32, parts: Vec<i32>) -> Result<(), IngestError> {
        let wait = FETCH_WAIT_MS / self.by_leader(self.leaders.keys().copied()).len().max(1) as i32;
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(wait.max(50))
            .with_min_bytes(1)
            .with_max_bytes(FETCH_BYTES)
            .with_session_epoch(-1)
            .with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(topic_name(&self.cfg.topic))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|p| {
                                fetch_request::FetchPartition::default()
                                    .with_partition(*p)
                                    .with_fetch_offset(self.positions[p])
                                    .with_partition_max_bytes(PARTITION_BYTES)
                            })
                            .collect(),
                    ),
            ]);
        let r = self.leader(leader).await?.call(&req).await?;
        check("Fetch", r.error_code).map_err(refused("fetch"))?;
        let mut reset = Vec::new();
        for t in r.responses {
            for p in t.partitions {
                let part = p.partition_index;
                match p.error_code {
                    0 => {}
                    1 => {
                        reset.push(part);
                        continue;
                    }
                    code => {
                        return Err(IngestError::Broker {
                            op: format!("fetch {}/{part}", self.cfg.topic),
                            reason: code_name(code),
                        });
                    }
                }
                let from = self.positions[&part];
                let (recs, next) = records::decode(p.records.unwrap_or_default(), from)
                    .map_err(refused(&format!("fetch {}/{part}", self.cfg.topic)))?;
                self.positions.insert(part, next);
                self.lag.insert(part, (p.high_watermark - next).max(0));
                self.queued.extend(recs.into_iter().map(|r| Delivery {
                    id: format!("{part}:{}", r.offset),
                    data: r.value.map(|v| v.to_vec()),
                }));
            }
        }
        if !reset.is_empty() {
            // The retention removed what was next: go on from what is left.
            tracing::warn!(
                "ingest kafka {}: partitions {reset:?} out of range; going on from their beginning",
                self.cfg.topic
            );
            let at = self.list_offsets(&reset, -2).await?;
            self.positions.extend(at.clone());
            self.committed.extend(at);
        }
        Ok(())
    }
}

impl Source for Kafka {
    fn name(&self) -> String {
        format!("kafka topic {} (group {})", self.cfg.topic, self.cfg.group)
    }

    async fn connect(&mut self) -> Result<(), IngestError> {
        self.conns.clear();
        self.coordinator = None;
        self.queued.clear();
        self.dead = None;
        let mut boot = self.bootstrap().await?;
        let (leaders, brokers) = Self::metadata(&mut boot, &self.cfg.topic, false).await?;
        let wanted: Vec<i32> = match &self.cfg.partitions {
            Some(p) => p.clone(),
            None => leaders.keys().copied().collect(),
        };
        if let Some(missing) = wanted.iter().find(|p| !leaders.contains_key(p)) {
            return Err(IngestError::Broker {
                op: format!("metadata {}", self.cfg.topic),
                reason: format!("no partition {missing} (the topic has {})", leaders.len()),
            });
        }
        self.leaders = leaders
            .into_iter()
            .filter(|(p, _)| wanted.contains(p))
            .collect();
        self.brokers = brokers;
        self.committed = if self.committed.is_empty() {
            self.starting_positions(&wanted).await?
        } else {
            self.resume_positions(&wanted).await?
        };
        // What was fetched and not handed over is fetched again.
        self.positions = self.committed.clone();
        Ok(())
    }

    async fn fetch(&mut self) -> Result<Vec<Delivery>, IngestError> {
        if self.leaders.is_empty() {
            self.connect().await?;
        }
        if self.queued.is_empty() {
            for (leader, parts) in self.by_leader(self.leaders.keys().copied()) {
                self.fetch_from(leader, parts).await?;
            }
        }
        let n = self.queued.len().min(self.cfg.batch);
        Ok(self.queued.drain(..n).collect())
    }

    async fn ack(&mut self, ids: &[String]) -> Result<(), IngestError> {
        let mut upto: BTreeMap<i32, i64> = BTreeMap::new();
        for id in ids {
            if let Some((p, o)) = id.split_once(':')
                && let (Ok(p), Ok(o)) = (p.parse::<i32>(), o.parse::<i64>())
            {
                let e = upto.entry(p).or_insert(o + 1);
                *e = (*e).max(o + 1);
            }
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.cfg.group.clone())))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic_name(&self.cfg.topic))
                    .with_partitions(
                        upto.iter()
                            .map(|(&p, &o)| {
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o)
                            })
                            .collect(),
                    ),
            ]);
        let r = self.coordinator().await?.call(&req).await?;
        for t in r.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    // The coordinator may have moved: find it again next time.
                    self.coordinator = None;
                    check("OffsetCommit", p.error_code).map_err(refused("offset commit"))?;
                }
            }
        }
        self.committed.extend(upto);
        self.has_committed = true;
        Ok(())
    }

    async fn dead_letter(&mut self, d: &Delivery, reason: &str) -> Result<(), IngestError> {
        let dead = self.dead_topic();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let source = format!("{}/{}", self.cfg.topic, d.id.replace(':', "@"));
        let batch = records::dead_letter(d.data.clone().map(Bytes::from), reason, &source, now_ms)
            .map_err(refused("dead letter"))?;
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(topic_name(&dead))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch)),
                    ]),
            ]);
        let mut conn = match self.dead.take() {
            Some(c) => c,
            None => self.dead_leader(&dead).await?,
        };
        let r = conn.call(&req).await?;
        for t in r.responses {
            for p in t.partition_responses {
                // A moved leader (or any refusal) looks the leader up again next time.
                check("Produce", p.error_code).map_err(refused(&format!("dead letter {dead}")))?;
            }
        }
        self.dead = Some(conn);
        Ok(())
    }

    fn lag(&self) -> Option<i64> {
        (!self.lag.is_empty()).then(|| self.lag.values().sum())
    }
}
