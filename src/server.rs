//! `ringcast serve`: sizes the shard count against the fd limit, starts the shards, the admin
//! socket and signal handling, and shuts everything down in order.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigSet, Signal};

use crate::admin;
use crate::auth::Auth;
use crate::config::Config;
use crate::endpoint::Context;
use crate::hub::Hub;
use crate::reactor::{self, ShardSpec};
use crate::shard::counts::PerIp;
use crate::stats::Stats;

/// Descriptors per fd table kept for things other than connections (listener, ring, eventfd,
/// inherited stdio).
const FD_RESERVE: u64 = 64;

/// More shard threads than this means the fd limit is far too low for `max_connections`.
const MAX_SHARDS: usize = 1024;

/// Share of a fd table planned for connections: SO_REUSEPORT spreads connections by hash, not
/// evenly, so shards are sized to be at most 90 % full on average.
const TABLE_FILL: f64 = 0.9;

/// Connections one fd table can hold.
pub fn per_table(nofile: u64) -> u64 {
    nofile.saturating_sub(FD_RESERVE).max(1)
}

/// How many shards to run, and the reasoning, for the start-up log.
pub fn plan_shards(cfg: &Config, cores: usize, nofile: u64) -> (usize, String) {
    let per_table = per_table(nofile);
    let planned = ((per_table as f64 * TABLE_FILL) as u64).max(1);
    let needed = (cfg.server.max_connections as u64).div_ceil(planned) as usize;
    let base = if cfg.server.shards == 0 {
        cores
    } else {
        cfg.server.shards
    };
    let shards = base.max(needed).max(1);
    let why = format!(
        "{shards} shards: {} requested ({}), max_connections {} / (90% of {nofile} nofile − {FD_RESERVE} reserved) per fd table = {needed} needed",
        base,
        if cfg.server.shards == 0 {
            "one per core"
        } else {
            "configured"
        },
        cfg.server.max_connections,
    );
    (shards, why)
}

/// Read buffers per shard: the configured count, or (0) about 16k buffers across all shards,
/// 64–512 per shard, so 56 shards do not hold 56 × 2 MiB of mostly idle buffers.
pub fn read_buffers(configured: u16, shards: usize) -> u16 {
    if configured != 0 {
        return configured;
    }
    let share = (16384 / shards.max(1)).clamp(64, 512) as u16;
    // Largest power of two not above the share (the buffer ring needs a power of two).
    1 << (15 - share.leading_zeros())
}

/// Raises the soft `nofile` limit to the hard one (allowed without privileges) and returns it.
/// The load generator uses it too.
pub fn raise_nofile() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// Runs the server. `reload` rebuilds the configuration on SIGHUP (from the same file and
/// overrides): keys, limits and STOMP settings take effect for what happens next; listen
/// address, shard count and buffer sizes need a restart.
pub fn run(cfg: Config, reload: impl Fn() -> Result<Config, String>) -> Result<(), String> {
    if !cfg.auth.enabled {
        tracing::warn!(
            "AUTHENTICATION IS OFF (--no-auth, [auth] enabled = false, or no --config file): any client can connect and subscribe as anyone. For production, run with a config file that has [projects.NAME] keys and leaves auth on."
        );
    }
    // Signals go to the main thread only: block them before any other thread exists.
    let mut sigs = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR2,
    ] {
        sigs.add(s);
    }
    sigs.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    let successor = crate::upgrade::Successor::from_env().transpose()?;
    let plan = Plan::new(&cfg, successor.as_ref())?;
    let running = start(cfg, plan, successor.as_ref()).inspect_err(|e| {
        if let Some(s) = &successor {
            s.fail(e);
        }
    })?;
    wait_for_signals(&running, &sigs, reload)?;
    running.stop(&sigs);
    Ok(())
}

/// What the host and the configuration decide before anything starts.
struct Plan {
    /// The listen address, with its real port when 0 was asked for.
    addr: SocketAddr,
    /// Holds that port for the shards until they listen (see `reactor::reserve_port`).
    reservation: Option<socket2::Socket>,
    cores: Vec<core_affinity::CoreId>,
    nofile: u64,
    shards: usize,
}

impl Plan {
    fn new(cfg: &Config, successor: Option<&crate::upgrade::Successor>) -> Result<Plan, String> {
        let mut addr: SocketAddr = cfg
            .server
            .listen
            .parse()
            .map_err(|e| format!("listen address: {e}"))?;
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let nofile = raise_nofile();
        let (shards, why) = plan_shards(cfg, cores.len().max(1), nofile);
        if shards > MAX_SHARDS {
            return Err(format!(
                "{why}: more than {MAX_SHARDS} shards. Raise the nofile limit (make tune, LimitNOFILE) or lower --max-connections"
            ));
        }
        tracing::info!("{why}");
        if let Some(s) = successor {
            // The old process's listeners come over, and any extra shard joins their port.
            if addr.ip() != s.addr.ip() || (addr.port() != 0 && addr.port() != s.addr.port()) {
                return Err(format!(
                    "an upgrade keeps the listen address: the running server listens on {}, this configuration says {addr}",
                    s.addr
                ));
            }
            addr = s.addr;
            return Ok(Plan {
                addr,
                reservation: None,
                cores,
                nofile,
                shards,
            });
        }
        // With port 0 every shard must still share one port: reserve it with a bound,
        // non-listening SO_REUSEPORT socket (which takes no connections) until the shards
        // listen on it.
        if addr.port() != 0 {
            reactor::probe_free(addr, &crate::admin::socket_path(cfg))?;
        }
        let (addr, reservation) = if addr.port() == 0 {
            let (s, bound) = reactor::reserve_port(addr)
                .map_err(|e| format!("reserving a port on {addr}: {e}"))?;
            (bound, Some(s))
        } else {
            (addr, None)
        };
        Ok(Plan {
            addr,
            reservation,
            cores,
            nofile,
            shards,
        })
    }
}

/// A started server: what stopping it needs.
struct Running {
    jwks: Arc<crate::jwks::Jwks>,
    ctx: Arc<Context>,
    tls: Option<Arc<crate::tls::Tls>>,
    api: Arc<admin::api::Api>,
    hub: Arc<Hub>,
    cluster: Option<crate::cluster::Cluster>,
    handles: Vec<std::thread::JoinHandle<()>>,
    socket: std::path::PathBuf,
    upgrader: Arc<crate::upgrade::Upgrader>,
}

/// Starts the shards (each with its own fd table), the cluster link and the admin socket.
fn start(
    cfg: Config,
    plan: Plan,
    successor: Option<&crate::upgrade::Successor>,
) -> Result<Running, String> {
    let Plan {
        addr,
        reservation,
        cores,
        nofile,
        shards,
    } = plan;
    let tls = crate::tls::Tls::from_config(&cfg.tls).map_err(|e| e.to_string())?;
    warn_shared_keys(&cfg);
    let stats = Arc::new(Stats::new(shards));
    let (jwks, unknown_kids) = crate::jwks::Jwks::start(&cfg, stats.clone());
    let ctx = Arc::new(jwks.context(cfg)?);
    let cfg = &ctx.cfg;
    let (hub, inboxes) = Hub::new(shards).map_err(|e| format!("eventfd: {e}"))?;
    let mut history = crate::history::History::new(cfg, stats.clone());
    if let Some(s) = successor {
        let saved = s.hello()?;
        tracing::info!(
            "taking over from pid {}: history of {} destination(s), epoch {}",
            s.from_pid,
            saved.streams.len(),
            saved.epoch
        );
        history = history.restored(saved);
    }
    let hub = hub.with_history(Arc::new(history));
    // Bound (or taken over) before a connection moves: a listen address that cannot be had
    // ends this process while the old one still serves.
    let api_listener = match &cfg.api.listen {
        Some(_) => Some(crate::api::listener(
            &cfg.api,
            successor.and_then(|s| s.socket(crate::api::SOCKET)),
        )?),
        None => None,
    };
    let per_user = Arc::new(crate::shard::counts::PerUser::new(
        cfg.limits.max_sessions_per_user,
    ));
    let tables = crate::cluster::Tables {
        revoked: jwks.revoked.clone(),
        per_user: per_user.clone(),
    };
    let (hub, cluster, worker) = match crate::cluster::new(cfg, addr, stats.clone(), tables)? {
        Some((handle, worker)) => (
            hub.with_relay(Arc::new(handle.clone())),
            Some(handle),
            Some(worker),
        ),
        None => (hub, None, None),
    };
    let hub = Arc::new(hub);
    jwks.spawn(unknown_kids, hub.clone())
        .map_err(|e| format!("spawning the key-set thread: {e}"))?;
    // Started whatever the policies say, so a reload that turns one to `proxy` finds it.
    let proxy = crate::access_proxy::AccessProxy::start(&cfg.auth, hub.clone())
        .map_err(|e| format!("starting the authorization proxy threads: {e}"))?;
    let shared = Shared {
        ctx: ctx.clone(),
        hub: hub.clone(),
        per_user,
        proxy,
        tls: tls.clone(),
        stats: stats.clone(),
    };
    let (handles, io_path, took) = spawn_shards(shared, inboxes, addr, &cores, nofile, successor)?;
    drop(reservation);
    let (mut moved, mut closed) = (0, 0);
    for m in took.try_iter() {
        moved += m.moved;
        closed += m.closed;
    }
    if let Some(worker) = worker {
        worker
            .start(hub.clone())
            .map_err(|e| format!("spawning the cluster thread: {e}"))?;
    }
    let socket = admin::socket_path(cfg);
    let api = Arc::new(admin::api::Api {
        hub: hub.clone(),
        stats,
        cluster: cluster.clone(),
        projects: std::sync::RwLock::new(admin::api::Api::projects_of(cfg)),
        revoked: jwks.revoked.clone(),
    });
    let upgrader = Arc::new(crate::upgrade::Upgrader::new(
        hub.clone(),
        addr,
        crate::upgrade::refused(cfg),
        took,
        admin::socket_path(cfg),
    ));
    admin::serve(
        &socket,
        api.clone(),
        &cfg.server.admin_uids,
        Some(crate::upgrade::route(upgrader.clone())),
        successor.is_some(),
    )
    .map_err(|e| format!("admin socket {}: {e}", socket.display()))?;
    if let Some(s) = successor {
        s.quiet()?;
    }
    if let Some(l) = start_edges(&api, tls.as_ref(), &ctx, api_listener)? {
        upgrader.offer(crate::api::SOCKET, l);
    }
    announce(cfg, addr, shards, &io_path, tls.as_deref(), &socket);
    crate::notify::notify(&match successor {
        Some(_) => format!("MAINPID={}\nREADY=1", std::process::id()),
        None => "READY=1".into(),
    });
    if let Some(s) = successor {
        let report = s.serving(moved, closed);
        tracing::info!(
            "took over from pid {}: {moved} connection(s) moved ({closed} closed by the old process), {} ms since this process started",
            report.pid,
            report.ms
        );
        if let Ok(mut u) = api.stats.upgrade.lock() {
            *u = Some(serde_json::json!({
                "connections": moved, "closed": closed, "ms": report.ms, "from_pid": report.pid,
            }));
        }
    }
    Ok(Running {
        jwks,
        ctx: ctx.clone(),
        tls,
        api,
        hub,
        cluster,
        handles,
        socket,
        upgrader,
    })
}

/// What every shard shares with the node.
struct Shared {
    ctx: Arc<Context>,
    hub: Arc<Hub>,
    per_user: Arc<crate::shard::counts::PerUser>,
    proxy: Arc<crate::access_proxy::AccessProxy>,
    tls: Option<Arc<crate::tls::Tls>>,
    stats: Arc<Stats>,
}

/// Spawns one reactor per inbox and waits until each has its fd table and listener; returns
/// their threads and the io path they run on.
#[allow(clippy::type_complexity)]
fn spawn_shards(
    shared: Shared,
    inboxes: Vec<crate::shard::inbox::Inbox>,
    addr: SocketAddr,
    cores: &[core_affinity::CoreId],
    nofile: u64,
    successor: Option<&crate::upgrade::Successor>,
) -> Result<
    (
        Vec<std::thread::JoinHandle<()>>,
        String,
        crossbeam_channel::Receiver<reactor::handoff::Moved>,
    ),
    String,
> {
    let shards = inboxes.len();
    let Shared {
        ctx,
        hub,
        per_user,
        proxy,
        tls,
        stats,
    } = shared;
    let cfg = &ctx.cfg;
    let tables_ready = Arc::new(Barrier::new(shards + 1));
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
    let per_ip = Arc::new(PerIp::new(cfg.limits.max_connections_per_ip));
    let pending_per_ip = Arc::new(PerIp::new(cfg.limits.max_pending_per_ip));
    let rate = Arc::new(crate::shard::admission::Rate::default());
    let (took_tx, took_rx) = crossbeam_channel::unbounded();
    let (bound_tx, bound_rx) = crossbeam_channel::unbounded();
    let mut handles = Vec::with_capacity(shards);
    for (id, inbox) in inboxes.into_iter().enumerate() {
        let spec = ShardSpec {
            id,
            per_ip: per_ip.clone(),
            pending_per_ip: pending_per_ip.clone(),
            per_user: per_user.clone(),
            rate: rate.clone(),
            read_buffers: read_buffers(cfg.server.read_buffers, shards),
            ctx: ctx.clone(),
            hub: hub.clone(),
            proxy: proxy.clone(),
            tls: tls.clone(),
            stats: stats.clone(),
            inbox,
            addr,
            capacity: per_table(nofile) as usize,
            core: cores.get(id % cores.len().max(1)).copied(),
            tables_ready: tables_ready.clone(),
            ready: ready_tx.clone(),
            takeover: successor.map(|s| reactor::handoff::Takeover {
                socket: s.shard_socket(id),
                senders: s.senders(id, shards),
                bound: bound_tx.clone(),
            }),
            took: took_tx.clone(),
        };
        handles.push(reactor::spawn(spec).map_err(|e| format!("spawning shard {id}: {e}"))?);
    }
    tables_ready.wait();
    let mut wait = Duration::from_secs(10);
    if let Some(s) = successor {
        for _ in 0..shards {
            match bound_rx.recv_timeout(wait) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("a shard did not listen for the hand-over within 10 s".into()),
            }
        }
        s.ready(shards)?;
        // Taking a million connections in takes longer than starting empty.
        wait = Duration::from_secs(600);
    }
    let mut io_path = String::new();
    for _ in 0..shards {
        match ready_rx.recv_timeout(wait) {
            Ok(Ok(p)) => io_path = p,
            Ok(Err(e)) => {
                hub.shutdown();
                return Err(e);
            }
            Err(_) => {
                hub.shutdown();
                return Err(format!("a shard did not start within {} s", wait.as_secs()));
            }
        }
    }
    Ok((handles, io_path, took_rx))
}

/// The slow paths that feed the hub from outside: ingest consumers and the network API (on
/// `api_listener`). Returns the API's listener for the next upgrade.
fn start_edges(
    api: &Arc<admin::api::Api>,
    tls: Option<&Arc<crate::tls::Tls>>,
    ctx: &Arc<Context>,
    api_listener: Option<std::net::TcpListener>,
) -> Result<Option<std::os::fd::OwnedFd>, String> {
    let cfg = &ctx.cfg;
    let mut offered = None;
    for r in &cfg.ingest.redis_stream {
        let what = format!(
            "redis stream {} (group {}, consumer {})",
            r.stream, r.group, r.consumer
        );
        start_ingest(
            crate::ingest::redis_stream::RedisStream::new(r.clone()),
            api,
            &what,
        )?;
    }
    for n in &cfg.ingest.nats {
        let what = format!(
            "nats stream {} (subject {}, consumer {})",
            n.stream, n.subject, n.consumer
        );
        start_ingest(crate::ingest::nats::Nats::new(n.clone()), api, &what)?;
    }
    for k in &cfg.ingest.kafka {
        let parts = match &k.partitions {
            Some(p) => format!("partitions {p:?}"),
            None => "every partition".into(),
        };
        let what = format!(
            "kafka topic {} ({parts}, group {}, brokers {})",
            k.topic,
            k.group,
            k.brokers.join(",")
        );
        start_ingest(crate::ingest::kafka::Kafka::new(k.clone())?, api, &what)?;
    }
    for p in &cfg.ingest.postgres {
        let what = format!(
            "postgres outbox {}{}",
            p.table,
            p.notify_channel
                .as_ref()
                .map(|c| format!(" (LISTEN {c})"))
                .unwrap_or_default()
        );
        start_ingest(
            crate::ingest::postgres::Postgres::new(p.clone()),
            api,
            &what,
        )?;
    }
    if let Some(l) = api_listener {
        let (bound, listener) = crate::api::serve(
            &cfg.api,
            api.clone(),
            cfg.stomp.legacy_destinations,
            tls.cloned(),
            ctx.clone(),
            l,
        )?;
        offered = Some(listener);
        tracing::info!(
            "network API on {}://{bound} ({} keys{})",
            if cfg.api.tls { "https" } else { "http" },
            cfg.api.keys.len(),
            if cfg.api.msgcenter_compat {
                ", msg-center routes on"
            } else {
                ""
            }
        );
        if cfg.api.console {
            let scheme = if cfg.api.tls { "https" } else { "http" };
            tracing::info!(
                "web console at {scheme}://{bound}/console/ (log in with an API key of the admin scope)"
            );
        }
    }
    Ok(offered)
}

/// The start-up lines: where it listens, with what, and what is off.
fn announce(
    cfg: &Config,
    addr: SocketAddr,
    shards: usize,
    io_path: &str,
    tls: Option<&crate::tls::Tls>,
    socket: &std::path::Path,
) {
    let auth = if cfg.auth.enabled {
        let names: Vec<&str> = cfg.projects.keys().map(String::as_str).collect();
        format!("auth on, {} project(s): {}", names.len(), names.join(", "))
    } else {
        "auth OFF".to_string()
    };
    let sockjs = if cfg.sockjs.enabled {
        let mut at = vec![cfg.server.path.as_str()];
        at.extend(cfg.sockjs.endpoints.iter().map(String::as_str));
        format!("; SockJS on {}", at.join(", "))
    } else {
        String::new()
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    tracing::info!(
        "ringcast listening on {scheme}://{addr}{}: {auth}; {shards} shards (io_uring {io_path}){sockjs}; admin socket {}",
        cfg.server.path,
        socket.display()
    );
    if let Some(t) = &tls {
        tracing::info!("TLS 1.2/1.3 (ALPN http/1.1): {}", t.describe());
    }
    if cfg.server.echo {
        tracing::info!("echo endpoint on {scheme}://{addr}{}", cfg.server.echo_path);
    }
}

/// Starts one ingest consumer on its own thread.
fn start_ingest<S: crate::ingest::Source + Send + 'static>(
    source: S,
    api: &Arc<admin::api::Api>,
    what: &str,
) -> Result<(), String> {
    api.stats
        .ingest
        .enabled
        .store(true, std::sync::atomic::Ordering::Relaxed);
    crate::ingest::spawn(source, api.clone(), api.stats.clone())
        .map_err(|e| format!("spawning the ingest thread: {e}"))?;
    tracing::info!("ingest from {what}");
    Ok(())
}

/// The parts of a reloaded configuration that differ from the running one and that only a
/// restart applies (they are read once, by threads or sockets set up at start).
fn needs_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    // Debug, not Serialize: the serialized form masks secrets, and a new key is a change.
    fn differ(a: &impl std::fmt::Debug, b: &impl std::fmt::Debug) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let mut out = Vec::new();
    if new.server.listen != running.server.listen || new.server.shards != running.server.shards {
        out.push("[server] listen or shards");
    }
    if new.server.admin_socket != running.server.admin_socket {
        out.push("[server] admin_socket");
    }
    if differ(&new.api, &running.api) {
        out.push("[api] (listener, API keys, console)");
    }
    if differ(&new.cluster, &running.cluster) {
        out.push("[cluster]");
    }
    if differ(&new.ingest, &running.ingest) {
        out.push("[[ingest.*]]");
    }
    out
}

/// Serves signals until one asks to stop: SIGHUP reloads, SIGINT and SIGTERM return.
fn wait_for_signals(
    running: &Running,
    sigs: &SigSet,
    reload: impl Fn() -> Result<Config, String>,
) -> Result<(), String> {
    let cfg = &running.ctx.cfg;
    loop {
        match sigs.wait() {
            Ok(Signal::SIGHUP) => match reload().and_then(|c| {
                warn_shared_keys(&c);
                running.jwks.context(c)
            }) {
                Ok(new) => {
                    for what in needs_restart(cfg, &new.cfg) {
                        tracing::warn!("SIGHUP: {what} changed, which needs a restart; kept");
                    }
                    if let Ok(mut p) = running.api.projects.write() {
                        *p = admin::api::Api::projects_of(&new.cfg);
                    }
                    if let Some(t) = &running.tls {
                        match t.reload(&new.cfg.tls) {
                            Ok(()) => tracing::info!(
                                "SIGHUP: TLS certificate and key reloaded (open sessions keep theirs)"
                            ),
                            Err(e) => tracing::error!(
                                "SIGHUP: TLS reload failed, keeping the running certificate: {e}"
                            ),
                        }
                    }
                    running.hub.reload(Arc::new(new));
                    tracing::info!(
                        "SIGHUP: configuration reloaded ([projects] keys and policies, [limits], [stomp], [sockjs], [compression], [tls] certificate)"
                    );
                }
                Err(e) => {
                    tracing::error!("SIGHUP: reload failed, keeping the running configuration: {e}")
                }
            },
            Ok(Signal::SIGUSR2) => {
                match crate::upgrade::own_binary()
                    .and_then(|b| running.upgrader.run(&b, Duration::from_secs(60)))
                {
                    Ok(_) => return Ok(()),
                    Err(e) if running.upgrader.done() => {
                        tracing::error!("SIGUSR2: {e}");
                        return Ok(());
                    }
                    Err(e) => tracing::error!("SIGUSR2: upgrade failed, still serving: {e}"),
                }
            }
            Ok(Signal::SIGTERM) if running.upgrader.done() => return Ok(()),
            Ok(sig) => {
                match running.ctx.cfg.server.drain_ms {
                    0 => tracing::info!("{sig}: closing every session with 1001 and stopping"),
                    ms => tracing::info!(
                        "{sig}: draining: closing the sessions over {ms} ms with 1012 (send it again to close the rest at once)"
                    ),
                }
                return Ok(());
            }
            Err(e) => return Err(format!("waiting for signals: {e}")),
        }
    }
}

impl Running {
    /// Leaves the cluster, closes every session (at once with 1001, or paced over `drain_ms`)
    /// and waits (the drain, the grace period and a second) for the shards to finish. During a
    /// drain a second SIGTERM or SIGINT closes the rest at once.
    fn stop(self, sigs: &SigSet) {
        if self.upgrader.done() {
            // The successor holds the listeners, the connections and the admin socket's path.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !self.handles.iter().all(|h| h.is_finished()) {
                std::thread::sleep(Duration::from_millis(20));
            }
            tracing::info!("handed over: this process exits");
            return;
        }
        // Not ready from now on: a balancer polling /readyz sends new clients elsewhere.
        let stopping = &self.api.stats.stopping;
        stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(c) = &self.cluster {
            c.leave();
        }
        self.hub.shutdown();
        let drain = self.ctx.cfg.server.drain_ms;
        if drain > 0 {
            let (hub, sigs) = (self.hub.clone(), *sigs);
            let _ = std::thread::Builder::new()
                .name("drain-signals".into())
                .spawn(move || {
                    while let Ok(sig) = sigs.wait() {
                        if matches!(sig, Signal::SIGTERM | Signal::SIGINT) {
                            tracing::info!("{sig} again: closing the remaining sessions now");
                            hub.shutdown();
                            return;
                        }
                    }
                });
        }
        let grace = drain + self.ctx.cfg.server.shutdown_grace_ms + 1000;
        let deadline = Instant::now() + Duration::from_millis(grace);
        while Instant::now() < deadline && !self.handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&self.socket);
        tracing::info!("stopped");
    }
}

/// Two projects with one key are one tenant as far as tokens go: a token minted for either
/// opens both. Legal (a migration may want it), so a warning, not an error.
fn warn_shared_keys(cfg: &crate::config::Config) {
    for w in Auth::weak_secrets(cfg) {
        tracing::warn!("{w}");
    }
    for (a, b) in Auth::shared_keys(cfg) {
        tracing::warn!(
            "projects {a:?} and {b:?} share a JWT key: a token of one also opens the other; give each project its own key"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_plan_follows_the_fd_table_cap() {
        let mut c = Config::embedded();
        c.server.max_connections = 1_000_000;
        let (n, why) = plan_shards(&c, 2, 20_000);
        assert_eq!(n, 56); // 1,000,000 / (0.9 × 19,936) rounded up
        assert!(why.contains("56 needed"));
        c.server.max_connections = 10_000;
        assert_eq!(plan_shards(&c, 2, 20_000).0, 2);
        c.server.shards = 4;
        assert_eq!(plan_shards(&c, 2, 20_000).0, 4);
    }

    #[test]
    fn read_buffers_shrink_with_many_shards() {
        assert_eq!(read_buffers(0, 2), 512);
        assert_eq!(read_buffers(0, 56), 256);
        assert_eq!(read_buffers(0, 1000), 64);
        assert_eq!(read_buffers(1024, 56), 1024);
    }
}
