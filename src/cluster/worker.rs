//! The cluster thread: one connection for publishing and presence, one for subscriptions,
//! reconnected with back-off whenever Redis goes away.
//!
//! While Redis is down the thread keeps answering at once (publishes and queries fail, and are
//! counted) and keeps tracking which destinations have a local audience, so that on reconnect it
//! resubscribes exactly those and rewrites its presence.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tokio::net::UnixStream;
use tokio::time::timeout;

use super::history as script;
use super::link::{self, Conn, Push, Subscriber};
use super::presence::{NodeInfo, Presence};
use super::target::{self, Target};
use super::wire::{self, Control};
use super::{Kind, Outgoing, Request};

mod history;
use crate::dest::Dest;
use crate::history::Snapshot;
use crate::hub::Hub;
use crate::relay::{Numbered, RelayError, Ticket};
use ringcast_proto::history::Position;
use ringcast_proto::publish::Publish;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Kept short: after Redis returns, cross-node delivery resumes within about this long.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Any single Redis operation slower than this counts as Redis being unavailable.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Publishes sent to Redis in one pipeline (one round trip).
const BATCH: usize = 512;
/// How often the node publishes to its own probe channel. It is ready while a probe came back
/// within three periods: a Redis that hangs (SIGSTOP, a cut link) turns `/readyz` 503 within
/// about 3 s, which a connection that is merely open, or a PING every third of the presence
/// TTL, would not.
pub(super) const PROBE_PERIOD: Duration = Duration::from_secs(1);

pub(super) struct Setup {
    pub target: Target,
    pub info: Arc<NodeInfo>,
}

/// Runs `work` off the loop (bounded by `OP_TIMEOUT`) and hands its outcome to `reply`.
fn answer<T: Send + 'static>(
    reply: crossbeam_channel::Sender<Result<T, RelayError>>,
    work: impl Future<Output = Result<T, RelayError>> + Send + 'static,
) {
    tokio::spawn(async move {
        let r = timeout(OP_TIMEOUT, work).await;
        let _ = reply
            .send(r.unwrap_or_else(|_| Err(RelayError::TimedOut("Redis did not answer in time"))));
    });
}

/// The reading end of the wake-up pair: readable when a shard or the admin thread sent.
struct Wake(UnixStream);

impl Wake {
    async fn woken(&self) {
        if self.0.readable().await.is_ok() {
            // Emptied before the channels are: a send after this wakes us again.
            let mut buf = [0u8; 256];
            while matches!(self.0.try_read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

pub struct Worker {
    setup: Setup,
    requests: Receiver<Request>,
    outgoing: Receiver<Outgoing>,
    /// Taken by `run`, which makes it a tokio socket inside the runtime.
    woken: Option<std::os::unix::net::UnixStream>,
    /// Destinations (by index key) with a local audience: how many shards have one.
    interest: HashMap<String, u32>,
    /// When the node last started listening to each destination (a generation number): a
    /// history read merges into the cache only if the node listened throughout.
    listening: HashMap<String, u64>,
    generation: u64,
    /// Numbered publishes of this node, by (key, offset), waiting for their own copy to come
    /// back from Redis to count local sessions: the reply and how many other nodes got it.
    awaiting: HashMap<(String, u64), (crossbeam_channel::Sender<Numbered>, u64)>,
    /// History reads in flight, by key, and the recovering subscriptions waiting on each.
    fetching: HashMap<String, Vec<(Position, Ticket)>>,
    reads: (
        tokio::sync::mpsc::UnboundedSender<ReadDone>,
        tokio::sync::mpsc::UnboundedReceiver<ReadDone>,
    ),
    number: Arc<redis::Script>,
    read: Arc<redis::Script>,
    /// Probes sent and not yet back (the newest three), by sequence number.
    probes: VecDeque<(u64, Instant)>,
    probe_seq: u64,
    /// This node's probe channel (compared with every incoming message's).
    probe_channel: String,
}

/// A history read's outcome, back on the cluster thread.
struct ReadDone {
    dest: Dest,
    generation: Option<u64>,
    result: Result<Snapshot, RelayError>,
}

/// Why a connected spell ended.
enum End {
    Lost(String),
    Stop,
}

struct Connected {
    /// The Redis's address, for the logs.
    addr: String,
    conn: Conn,
    subscriber: Subscriber,
    /// The Redis Cluster's slot map when connected (`link::slot_map`).
    slots: Option<Vec<String>>,
}

impl Worker {
    pub(super) fn new(
        setup: Setup,
        requests: Receiver<Request>,
        outgoing: Receiver<Outgoing>,
        woken: std::os::unix::net::UnixStream,
    ) -> Worker {
        Worker {
            requests,
            outgoing,
            woken: Some(woken),
            interest: HashMap::new(),
            listening: HashMap::new(),
            generation: 0,
            awaiting: HashMap::new(),
            fetching: HashMap::new(),
            reads: tokio::sync::mpsc::unbounded_channel(),
            number: Arc::new(redis::Script::new(script::NUMBER)),
            read: Arc::new(redis::Script::new(script::READ)),
            probes: VecDeque::new(),
            probe_seq: 0,
            probe_channel: setup.info.names.probe(&setup.info.name),
            setup,
        }
    }

    /// Runs the cluster link on its own thread until the process ends.
    pub fn start(self, hub: Arc<Hub>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("cluster".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(self.run(hub)),
                    Err(e) => tracing::error!("cluster: cannot start its runtime: {e}"),
                }
            })
    }

    fn presence(&self, hub: &Arc<Hub>, conn: &Conn) -> Presence {
        Presence {
            conn: conn.clone(),
            hub: hub.clone(),
            info: self.setup.info.clone(),
        }
    }

    async fn run(mut self, hub: Arc<Hub>) {
        let wake = match self.woken.take().map(UnixStream::from_std) {
            Some(Ok(w)) => Wake(w),
            Some(Err(e)) => {
                tracing::error!("cluster: cannot watch its wake-up socket: {e}");
                return;
            }
            None => return,
        };
        let mut backoff = MIN_BACKOFF;
        let mut ever_connected = false;
        let mut down_logged = false;
        loop {
            match timeout(OP_TIMEOUT, self.connect()).await {
                Ok(Ok(link)) => {
                    if ever_connected {
                        self.setup
                            .info
                            .stats
                            .cluster
                            .reconnects
                            .fetch_add(1, Relaxed);
                    }
                    ever_connected = true;
                    down_logged = false;
                    backoff = MIN_BACKOFF;
                    tracing::info!(
                        "cluster: node {} connected to {} ({} channels)",
                        self.setup.info.name,
                        link.addr,
                        self.interest.len() + 1
                    );
                    // Ready once the first probe comes back, not merely connected.
                    self.setup.info.stats.cluster.redis_up.store(1, Relaxed);
                    let end = self.serve(&hub, &wake, link).await;
                    self.setup.info.stats.cluster.redis_up.store(0, Relaxed);
                    match end {
                        End::Stop => return,
                        End::Lost(why) => tracing::warn!(
                            "cluster: lost Redis ({why}); local delivery goes on, cross-node publishes fail until it returns"
                        ),
                    }
                }
                Ok(Err(e)) if !down_logged => {
                    down_logged = true;
                    // `e` names the address (or what every sentinel answered).
                    tracing::warn!("cluster: cannot reach Redis: {e}; retrying");
                }
                Err(_) if !down_logged => {
                    down_logged = true;
                    let to = self.setup.target.describe();
                    tracing::warn!("cluster: {to} did not answer; retrying");
                }
                _ => {}
            }
            if let End::Stop = self.idle(&hub, &wake, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The `cluster.channels` gauge: destinations with a local audience.
    fn count_channels(&self) {
        let c = &self.setup.info.stats.cluster;
        c.channels.store(self.interest.len() as u64, Relaxed);
    }

    async fn connect(&mut self) -> Result<Connected, String> {
        let (mut conn, mut subscriber, addr) = link::open(&self.setup.target).await?;
        let failed = |e: redis::RedisError| format!("{addr}: {e}");
        // Loaded up front: the pipelines call them by hash (EVALSHA).
        self.number
            .prepare_invoke()
            .load_async(&mut conn)
            .await
            .map_err(failed)?;
        self.read
            .prepare_invoke()
            .load_async(&mut conn)
            .await
            .map_err(failed)?;
        let mut channels = vec![self.setup.info.names.control(), self.probe_channel.clone()];
        channels.extend(
            self.interest
                .keys()
                .map(|k| self.setup.info.names.channel_of_key(k)),
        );
        subscriber.subscribe(&channels).await.map_err(failed)?;
        let keys: Vec<String> = self.interest.keys().cloned().collect();
        for k in keys {
            self.listen(&k);
        }
        self.count_channels();
        // What was revoked while this node was away (or before it started).
        if let Err(e) = super::revocations::load(conn.clone(), &self.setup.info).await {
            tracing::warn!("cluster: reading the revocations failed: {e}");
        }
        let slots = link::slot_map(&mut conn).await.map_err(failed)?;
        Ok(Connected {
            addr,
            conn,
            subscriber,
            slots,
        })
    }

    /// Connected: relays messages both ways and refreshes presence until Redis goes away.
    async fn serve(&mut self, hub: &Arc<Hub>, wake: &Wake, mut link: Connected) -> End {
        let end = self.relay(hub, wake, &mut link).await;
        self.deafen(hub, None);
        end
    }

    async fn relay(&mut self, hub: &Arc<Hub>, wake: &Wake, link: &mut Connected) -> End {
        let mut beat = tokio::time::interval(self.setup.info.ttl / 3);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probe = tokio::time::interval(PROBE_PERIOD);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.probes.clear();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                push = link.subscriber.next() => match push {
                    Push::Message(msg) => self.incoming(hub, &msg),
                    Push::Gap => return End::Lost("a node of the Redis Cluster dropped its connection".into()),
                    Push::Unsubscribed(channel) if self.expects(&channel) => {
                        return End::Lost("the Redis Cluster moved a subscribed slot".into());
                    }
                    Push::Unsubscribed(_) | Push::Other => {}
                    Push::Closed => return End::Lost("the subscription connection closed".into()),
                },
                Some(done) = self.reads.1.recv() => self.read_done(hub, done),
                _ = wake.woken() => {
                    while let Ok(req) = self.requests.try_recv() {
                        if let Err(end) = self.request(hub, link, req).await {
                            return end;
                        }
                    }
                    loop {
                        batch.extend(self.outgoing.try_iter().take(BATCH));
                        if batch.is_empty() {
                            break;
                        }
                        if let Err(why) = self.send(&mut link.conn, &mut batch).await {
                            return End::Lost(why.to_string());
                        }
                    }
                }
                _ = probe.tick() => self.probe(&link.conn),
                _ = beat.tick() => {
                    // A Redis cut off without a FIN/RST would leave the subscription silently
                    // dead: a PING on it each beat notices.
                    match timeout(OP_TIMEOUT, link.subscriber.ping()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return End::Lost(format!("PING failed: {e}")),
                        Err(_) => return End::Lost("Redis did not answer a PING".into()),
                    }
                    if let (true, Conn::One(conn)) = (self.setup.target.follows_failover(), &mut link.conn) {
                        match timeout(OP_TIMEOUT, target::is_master(conn)).await {
                            Ok(Ok(true)) => {}
                            Ok(Ok(false)) => return End::Lost(format!("{} is no longer the master", link.addr)),
                            Ok(Err(e)) => return End::Lost(format!("ROLE failed: {e}")),
                            Err(_) => return End::Lost("Redis did not answer ROLE".into()),
                        }
                    }
                    if link.slots.is_some() {
                        match timeout(OP_TIMEOUT, link::slot_map(&mut link.conn)).await {
                            Ok(Ok(now)) if now == link.slots => {}
                            Ok(Ok(_)) => return End::Lost("the Redis Cluster's slots moved".into()),
                            Ok(Err(e)) => return End::Lost(format!("CLUSTER SLOTS failed: {e}")),
                            Err(_) => return End::Lost("Redis did not answer CLUSTER SLOTS".into()),
                        }
                    }
                    let p = self.presence(hub, &link.conn);
                    tokio::spawn(async move { p.refresh().await });
                }
            }
        }
    }

    /// Sends a batch of publishes as one pipeline (on a Redis Cluster, one per partition, sent
    /// at once: a pipeline's keys must share a slot) and tells each waiting caller the outcome.
    async fn send(&mut self, conn: &mut Conn, batch: &mut Vec<Outgoing>) -> Result<(), RelayError> {
        let names = &self.setup.info.names;
        // (indices into the batch, their pipeline), in the batch's order within each.
        let mut pipes: Vec<(Vec<usize>, redis::Pipeline)> = Vec::new();
        let mut by_partition: HashMap<Option<u32>, usize> = HashMap::new();
        for (i, o) in batch.iter().enumerate() {
            let channel = names.channel_of_key(&o.key);
            let partition = names.is_sharded().then(|| wire::partition(&o.key));
            let at = *by_partition.entry(partition).or_insert_with(|| {
                pipes.push((Vec::new(), redis::pipe()));
                pipes.len() - 1
            });
            let (indices, pipe) = &mut pipes[at];
            indices.push(i);
            match &o.kind {
                Kind::Plain(_) => {
                    pipe.cmd(names.publish_command())
                        .arg(channel)
                        .arg(&o.payload);
                }
                Kind::Numbered { size, ttl_ms, .. } => {
                    pipe.cmd("EVALSHA")
                        .arg(self.number.get_hash())
                        .arg(3)
                        .arg(names.history_meta(&o.key))
                        .arg(names.history_stream(&o.key))
                        .arg(channel)
                        .arg(&o.payload)
                        .arg(crate::history::new_epoch())
                        .arg(size)
                        .arg(ttl_ms)
                        .arg(script::META_TTL_MS)
                        .arg(names.publish_command());
                }
            }
        }
        let sent = pipes.into_iter().map(|(indices, pipe)| {
            let (mut conn, number) = (conn.clone(), self.number.clone());
            async move {
                let mut r =
                    timeout(OP_TIMEOUT, pipe.query_async::<Vec<redis::Value>>(&mut conn)).await;
                // A replica promoted on a Redis Cluster lacks the scripts the node loaded on
                // the masters of its day: load them there too and send once more. (The NOSCRIPT
                // is inside the crate's pipeline error, whose kind does not say it: by its text.)
                if matches!(&r, Ok(Err(e)) if e.to_string().contains("NoScript"))
                    && number.prepare_invoke().load_async(&mut conn).await.is_ok()
                {
                    r = timeout(OP_TIMEOUT, pipe.query_async::<Vec<redis::Value>>(&mut conn)).await;
                }
                let r = match r {
                    Ok(Ok(answers)) => Ok(answers),
                    Ok(Err(e)) => Err(RelayError::Redis(format!("PUBLISH failed: {e}"))),
                    Err(_) => Err(RelayError::TimedOut("PUBLISH timed out")),
                };
                (indices, r)
            }
        });
        let mut outcome: Vec<Result<Option<redis::Value>, RelayError>> =
            (0..batch.len()).map(|_| Ok(None)).collect();
        let mut result = Ok(());
        for (indices, r) in futures_util::future::join_all(sent).await {
            match r {
                Ok(answers) => {
                    for (i, v) in indices.into_iter().zip(answers) {
                        outcome[i] = Ok(Some(v));
                    }
                }
                Err(e) => {
                    for i in indices {
                        outcome[i] = Err(e.clone());
                    }
                    result = Err(e);
                }
            }
        }
        let c = &self.setup.info.stats.cluster;
        let failed = outcome.iter().filter(|r| r.is_err()).count() as u64;
        c.published.fetch_add(batch.len() as u64 - failed, Relaxed);
        c.publish_failed.fetch_add(failed, Relaxed);
        for (o, out) in batch.drain(..).zip(outcome) {
            let answer = match out {
                Ok(answer) => answer,
                Err(e) => {
                    o.kind.fail(e);
                    continue;
                }
            };
            let answer = answer.as_ref();
            // Redis counts this node too when it has an audience for the channel.
            let this = u64::from(self.interest.contains_key(&o.key));
            match o.kind {
                Kind::Plain(reply) => {
                    if let Some(reply) = reply {
                        let n = answer.and_then(|v| redis::from_redis_value_ref::<u64>(v).ok());
                        let _ = reply.send(Ok(n.unwrap_or(0).saturating_sub(this)));
                    }
                }
                Kind::Numbered { reply, .. } => {
                    let Some((offset, subscribers)) = answer.and_then(script::numbered) else {
                        let why = RelayError::Redis("Redis did not number the message".into());
                        Kind::Numbered {
                            size: 0,
                            ttl_ms: 0,
                            reply,
                        }
                        .fail(why);
                        continue;
                    };
                    let others = subscribers.saturating_sub(this);
                    match reply {
                        // Its own copy, on its way back from Redis, will be counted.
                        Some(r) if this == 1 => {
                            self.awaiting.insert((o.key, offset), (r, others));
                        }
                        Some(r) => drop(r.send(Ok((0, others)))),
                        None => {}
                    }
                }
            }
        }
        result
    }

    /// Counts a shard's change of audience; true when the node's audience for `key` appeared
    /// (first shard) or vanished (last shard), i.e. when Redis must hear of it.
    fn count_interest(&mut self, key: &str, add: bool) -> bool {
        let edge = if add {
            let n = self.interest.entry(key.to_string()).or_insert(0);
            *n += 1;
            *n == 1
        } else {
            match self.interest.get_mut(key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    self.interest.remove(key);
                    true
                }
                None => false,
            }
        };
        self.count_channels();
        edge
    }

    async fn request(
        &mut self,
        hub: &Arc<Hub>,
        link: &mut Connected,
        req: Request,
    ) -> Result<(), End> {
        match req {
            Request::Interest { key, add } => {
                if self.count_interest(&key, add) {
                    let channel = self.setup.info.names.channel_of_key(&key);
                    let op = if add {
                        timeout(OP_TIMEOUT, link.subscriber.subscribe(&[channel])).await
                    } else {
                        self.deafen(hub, Some(&key));
                        timeout(OP_TIMEOUT, link.subscriber.unsubscribe(&channel)).await
                    };
                    match op {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(End::Lost(format!("SUBSCRIBE failed: {e}"))),
                        Err(_) => return Err(End::Lost("SUBSCRIBE timed out".into())),
                    }
                    if add {
                        // Confirmed: whatever Redis numbers from now on reaches this node.
                        self.listen(&key);
                    }
                }
            }
            Request::Fetch { dest, since, to } => self.fetch(hub, &link.conn, dest, since, to),
            Request::Sessions {
                project,
                user,
                reply,
            } => {
                let p = self.presence(hub, &link.conn);
                answer(
                    reply,
                    async move { p.sessions(&project, user.as_deref()).await },
                );
            }
            Request::Stats { reply } => {
                let p = self.presence(hub, &link.conn);
                answer(reply, async move { p.stats().await });
            }
            Request::Disconnect {
                project,
                user,
                reply,
            } => {
                let p = self.presence(hub, &link.conn);
                answer(
                    reply,
                    async move { p.disconnect_others(project, user).await },
                );
            }
            Request::Revoke { revoke, reply } => {
                let (conn, info) = (link.conn.clone(), self.setup.info.clone());
                answer(reply, async move {
                    super::revocations::publish(conn, &info, &revoke).await
                });
            }
            Request::Leave { reply } => {
                let p = self.presence(hub, &link.conn);
                let r = timeout(OP_TIMEOUT, p.leave()).await;
                let _ = reply
                    .send(r.unwrap_or(Err(RelayError::TimedOut("Redis did not answer in time"))));
                return Err(End::Stop);
            }
        }
        Ok(())
    }

    /// A message from Redis: another node's publish, or a control message.
    /// Publishes the next probe to this node's own channel; `probe_back` sees it return. A
    /// publish that fails or hangs is not reported here: its probe simply never comes back.
    fn probe(&mut self, conn: &Conn) {
        self.probe_seq += 1;
        if self.probes.len() == 3 {
            self.probes.pop_front();
        }
        self.probes.push_back((self.probe_seq, Instant::now()));
        let (mut conn, channel, seq) = (conn.clone(), self.probe_channel.clone(), self.probe_seq);
        let mut publish = redis::cmd(self.setup.info.names.publish_command());
        tokio::spawn(async move {
            publish.arg(channel).arg(seq);
            let _ = timeout(OP_TIMEOUT, publish.query_async::<redis::Value>(&mut conn)).await;
        });
    }

    fn probe_back(&mut self, payload: &[u8]) {
        let Some(seq) = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return;
        };
        let Some(i) = self.probes.iter().position(|&(s, _)| s == seq) else {
            return;
        };
        let rtt = self.probes[i].1.elapsed();
        // Older probes still out were lost or overtaken: this one answers for them.
        self.probes.drain(..=i);
        let c = &self.setup.info.stats.cluster;
        c.probe_rtt_us.store(rtt.as_micros() as u64, Relaxed);
        c.answered_ms.store(crate::stats::now_ms(), Relaxed);
    }

    /// Whether `channel` is one this node means to be subscribed to.
    fn expects(&self, channel: &[u8]) -> bool {
        let names = &self.setup.info.names;
        channel == self.probe_channel.as_bytes()
            || channel == names.control().as_bytes()
            || names
                .dest(channel)
                .is_some_and(|d| self.interest.contains_key(&d.key()))
    }

    fn incoming(&mut self, hub: &Arc<Hub>, msg: &redis::Msg) {
        let Ok(channel) = msg.get_channel::<Vec<u8>>() else {
            return;
        };
        let payload = msg.get_payload_bytes();
        let names = &self.setup.info.names;
        if channel == self.probe_channel.as_bytes() {
            self.probe_back(payload);
            return;
        }
        if channel == names.control().as_bytes() {
            if let Some(Control::Disconnect {
                from,
                project,
                user,
            }) = Control::decode(payload)
                && from != *self.setup.info.name
            {
                let hub = hub.clone();
                // The hub waits for every shard's answer: not on this thread.
                tokio::task::spawn_blocking(move || hub.disconnect(&project, &user, false));
            } else if let Some(r @ Control::Revoke { .. }) = Control::decode(payload) {
                super::revocations::carry_out(&self.setup.info, hub, r);
            }
            return;
        }
        if let Some(numbered) = wire::decode_positioned(payload) {
            self.incoming_numbered(hub, &channel, numbered);
            return;
        }
        let (Some(dest), Some(m)) = (names.dest(&channel), wire::decode(payload)) else {
            tracing::debug!("cluster: ignored a malformed message on {channel:?}");
            return;
        };
        // The publishing node delivered its own copy already.
        if m.origin != *self.setup.info.name {
            self.setup.info.stats.cluster.received.fetch_add(1, Relaxed);
            hub.deliver_nowait(Publish::new(dest, m.body, m.headers));
        }
    }

    /// Disconnected for `wait`: answers every request at once with a failure, and keeps the
    /// audience count current for the next connection.
    async fn idle(&mut self, hub: &Hub, wake: &Wake, wait: Duration) -> End {
        let down = RelayError::Redis("Redis is unavailable: cross-node delivery failed".into());
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return End::Lost(String::new()),
                _ = wake.woken() => {
                    while let Ok(req) = self.requests.try_recv() {
                        match req {
                            Request::Interest { key, add } => {
                                self.count_interest(&key, add);
                            }
                            leave @ Request::Leave { .. } => {
                                leave.fail(down.clone(), hub);
                                return End::Stop;
                            }
                            other => other.fail(down.clone(), hub),
                        }
                    }
                    for o in self.outgoing.try_iter() {
                        self.setup.info.stats.cluster.publish_failed.fetch_add(1, Relaxed);
                        o.kind.fail(down.clone());
                    }
                }
            }
        }
    }
}
