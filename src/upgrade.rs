//! `ringcast upgrade` and SIGUSR2 (issue #31): a running server starts a new binary and hands
//! it every connection, socket and state, without a disconnect. The old process's side starts
//! the successor, waits until it has checked its configuration and its shards listen for the
//! hand-over, refuses publishes meanwhile (503, retry: a publish no process would deliver is
//! never taken), has each shard give its listener and connections (`reactor::handoff`), and
//! steps aside once the successor serves. The new process's side is `Successor`, read from the
//! environment it was started with.
//!
//! If the successor fails before anything moved (it exits, its configuration is refused, it
//! does not answer in time), the old process keeps serving and the command reports why.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use serde::{Deserialize, Serialize};

use crate::hub::Hub;
use crate::reactor::handoff::Moved;
use crate::shard::inbox::Command;

/// The hand-over's directory (the control socket and one socket per new shard), 0700.
const DIR_ENV: &str = "RINGCAST_UPGRADE_DIR";
/// `PID SHARDS ADDR` of the process handing over.
const FROM_ENV: &str = "RINGCAST_UPGRADE_FROM";

/// What this slice of `ringcast upgrade` cannot hand over yet: the cluster link, whose
/// subscriptions, presence and numbering would compete with the successor's in Redis.
pub fn refused(cfg: &crate::config::Config) -> Option<String> {
    let c = &cfg.cluster;
    (c.redis.is_some() || !c.sentinels.is_empty() || !c.redis_cluster.is_empty()).then(|| {
        "this server cannot be upgraded in place yet with [cluster] (issue #31): restart it instead"
            .to_string()
    })
}

/// What the successor tells the old process, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
enum Control {
    /// Configuration read; it is starting (new → old).
    Hello,
    /// The node's history, saved once publishes stopped (old → new).
    History(Box<crate::history::Saved>),
    /// Shards listening for the hand-over.
    Ready { shards: usize },
    /// No ingest step of the old process runs any more: the successor's consumers may start
    /// (old → new).
    Quiet,
    /// Every connection taken in, listeners and admin socket up.
    Serving { moved: u64, closed: u64 },
    /// It could not start or take over.
    Failed(String),
}

/// The outcome of a hand-over, for `ringcast upgrade` and `/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub pid: u32,
    pub connections: u64,
    pub closed: u64,
    pub ms: u64,
}

/// The old process's side.
pub struct Upgrader {
    pub hub: Arc<Hub>,
    pub addr: SocketAddr,
    pub shards: usize,
    /// Why this node cannot be upgraded yet, if it cannot.
    pub refused: Option<String>,
    /// Each shard's count once it has handed over.
    pub gave: Receiver<Moved>,
    /// Where the successor will serve its admin API (this process's path, taken over).
    pub admin_socket: PathBuf,
    /// The node's listening sockets besides the shards' (the network API's), by name: they go
    /// to the successor right after the history (`give_sockets`).
    sockets: Mutex<Vec<(String, std::os::fd::OwnedFd)>>,
    busy: Mutex<()>,
    done: std::sync::atomic::AtomicBool,
}

impl Upgrader {
    pub fn new(
        hub: Arc<Hub>,
        addr: SocketAddr,
        refused: Option<String>,
        gave: Receiver<Moved>,
        admin_socket: PathBuf,
    ) -> Upgrader {
        Upgrader {
            shards: hub.shard_count(),
            hub,
            addr,
            refused,
            gave,
            admin_socket,
            sockets: Mutex::new(Vec::new()),
            busy: Mutex::new(()),
            done: Default::default(),
        }
    }

    /// The listening sockets `offer`ed (from this thread's fd table, the process's: the
    /// shards' tables do not hold them), then `Done`, to the successor's `sockets.sock`.
    fn give_sockets(&self, dir: &Path) -> std::io::Result<()> {
        use crate::reactor::handoff::{Piece, send};
        let sock = UnixStream::connect(dir.join("sockets.sock"))?;
        let offered = self
            .sockets
            .lock()
            .map_err(|_| std::io::Error::other("lock"))?;
        for (name, fd) in offered.iter() {
            send(&sock, &Piece::Socket(name.clone()), &[fd.as_raw_fd()])?;
        }
        let done = Piece::Done {
            moved: offered.len() as u64,
            closed: 0,
        };
        send(&sock, &done, &[])
    }

    /// `fd` (a listening socket of this process's) goes to the successor as `name`.
    pub fn offer(&self, name: &str, fd: std::os::fd::OwnedFd) {
        if let Ok(mut v) = self.sockets.lock() {
            v.push((name.to_string(), fd));
        }
    }

    /// The hand-over happened: this process has nothing left to serve.
    pub fn done(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Starts `binary` with this process's arguments and hands everything over to it.
    pub fn run(&self, binary: &Path, timeout: Duration) -> Result<Report, String> {
        if let Some(why) = &self.refused {
            return Err(why.clone());
        }
        let _busy = self
            .busy
            .try_lock()
            .map_err(|_| "an upgrade is already under way".to_string())?;
        if self.done() {
            return Err("this process has already handed over".into());
        }
        let start = Instant::now();
        let deadline = start + timeout;
        let dir = std::env::temp_dir().join(format!(
            "ringcast-upgrade-{}-{}",
            std::process::id(),
            crate::stats::now_ms()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let r = self.hand_over(binary, &dir, start, deadline);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    fn hand_over(
        &self,
        binary: &Path,
        dir: &Path,
        start: Instant,
        deadline: Instant,
    ) -> Result<Report, String> {
        let control = UnixListener::bind(dir.join("control.sock"))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| format!("control socket: {e}"))?;
        let mut child = std::process::Command::new(binary)
            .args(std::env::args_os().skip(1))
            .env(DIR_ENV, dir)
            .env(
                FROM_ENV,
                format!("{} {} {}", std::process::id(), self.shards, self.addr),
            )
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let pid = child.id();
        let failed = |child: &mut std::process::Child, why: String| {
            let _ = child.kill();
            let _ = child.wait();
            tracing::error!("upgrade to {}: {why}; still serving", binary.display());
            Err(why)
        };
        let stream = loop {
            match control.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return failed(&mut child, format!("control socket: {e}")),
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the new process ({}) exited with {status} before taking over; still serving",
                    binary.display()
                ));
            }
            if Instant::now() > deadline {
                return failed(
                    &mut child,
                    "the new process did not get ready in time".into(),
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut lines = BufReader::new(stream);
        let said = |lines: &mut BufReader<UnixStream>, child: &mut std::process::Child| match read(
            lines, deadline,
        ) {
            Ok(Control::Failed(why)) => Err(format!("the new process: {why}")),
            Ok(c) => Ok(c),
            Err(e) => Err(match child.try_wait().ok().flatten() {
                Some(s) => format!("the new process exited with {s} before taking over"),
                None => format!("the new process: {e}"),
            }),
        };
        match said(&mut lines, &mut child) {
            Ok(Control::Hello) => {}
            Ok(other) => return failed(&mut child, format!("the new process said {other:?}")),
            Err(why) => return failed(&mut child, why),
        }
        // From here on no publish is taken that only this process would have delivered, and
        // the history the successor starts from is complete.
        self.hub.hand_over();
        let saved = self.hub.history().map(|h| h.save()).unwrap_or_default();
        let streams = saved.streams.len();
        if let Err(e) = write(lines.get_mut(), &Control::History(Box::new(saved))) {
            self.hub.take_publishes();
            return failed(&mut child, format!("sending the history: {e}"));
        }
        // Before anything moves, so the successor can tell whether it serves on them.
        if let Err(e) = self.give_sockets(dir) {
            self.hub.take_publishes();
            return failed(
                &mut child,
                format!("handing over the listening sockets: {e}"),
            );
        }
        let shards = match said(&mut lines, &mut child) {
            Ok(Control::Ready { shards }) => shards.max(1),
            Ok(other) => {
                self.hub.take_publishes();
                return failed(&mut child, format!("the new process said {other:?}"));
            }
            Err(why) => {
                self.hub.take_publishes();
                return failed(&mut child, why);
            }
        };
        tracing::info!(
            "upgrade: pid {pid} is ready with {shards} shard(s) and the history of {streams} destination(s); handing over the listeners and connections"
        );
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        for i in 0..self.shards {
            let to = dir.join(format!("shard-{}.sock", i % shards));
            self.hub.send_to(i, Command::HandOver(to));
        }
        // The successor's consumers start once told: by then no fetch of ours may still bring
        // messages (its consumers would not see them as unacknowledged yet).
        if !self
            .hub
            .sources_quiet(Instant::now() + Duration::from_secs(5))
        {
            tracing::warn!(
                "upgrade: an ingest fetch still runs after 5 s; what it brings is redelivered late"
            );
        }
        let _ = write(lines.get_mut(), &Control::Quiet);
        let mut closed = 0;
        for _ in 0..self.shards {
            if let Ok(m) = self
                .gave
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                closed += m.closed;
            }
        }
        match read(&mut lines, deadline) {
            Ok(Control::Serving { moved, closed: c }) => {
                self.forward_held();
                let report = Report {
                    pid,
                    connections: moved,
                    closed: closed.max(c),
                    ms: start.elapsed().as_millis() as u64,
                };
                tracing::info!(
                    "upgrade: pid {pid} serves {} connection(s) ({} closed), {} ms; this process steps aside",
                    report.connections,
                    report.closed,
                    report.ms
                );
                Ok(report)
            }
            other => {
                let why = format!(
                    "the new process failed while taking over ({other:?}): the connections it had not taken are closed"
                );
                tracing::error!("upgrade: {why}");
                Err(why)
            }
        }
    }
}

impl Upgrader {
    /// Client SENDs the shards read while the gate was closed, published through the
    /// successor's admin socket (the path is its now), in order.
    fn forward_held(&self) {
        let held = self.hub.held();
        let (mut sent, mut lost) = (0, 0);
        for msg in &held {
            let Some(body) = publish_body(msg) else {
                lost += 1;
                continue;
            };
            match crate::admin::request(
                &self.admin_socket,
                "POST",
                "/publish",
                Some(body.as_bytes()),
            ) {
                Ok((200, _)) => sent += 1,
                _ => lost += 1,
            }
        }
        if !held.is_empty() {
            tracing::info!(
                "upgrade: {sent} client publish(es) read during the hand-over given to the successor ({lost} could not be)"
            );
        }
    }
}

/// `msg` as the admin API's publish body; `None` for a body JSON cannot carry (not UTF-8).
fn publish_body(msg: &ringcast_proto::publish::Publish) -> Option<String> {
    use crate::dest::Dest;
    let body = std::str::from_utf8(&msg.body).ok()?;
    let headers: std::collections::BTreeMap<&str, &str> = msg
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let v = match &msg.dest {
        Dest::Topic { project, topic } => serde_json::json!({
            "project": project, "destination": format!("/topic/{topic}"), "body": body, "headers": headers,
        }),
        Dest::User {
            project,
            user,
            queue,
        } => serde_json::json!({
            "project": project, "user": user, "destination": format!("/queue/{queue}"), "body": body, "headers": headers,
        }),
    };
    Some(v.to_string())
}

/// `POST /upgrade {"binary": PATH, "timeout_ms": N}` on the admin socket (`GET`: whether
/// this server can be upgraded, and why not).
pub fn route(upgrader: Arc<Upgrader>) -> crate::admin::UpgradeRoute {
    use crate::admin::http::Response;
    Arc::new(move |req| {
        if req.method == "GET" {
            let why = upgrader.refused.as_deref();
            let v = serde_json::json!({"possible": why.is_none(), "why": why, "pid": std::process::id()});
            return (Response::json(200, &v), false);
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            binary: Option<std::path::PathBuf>,
            timeout_ms: Option<u64>,
        }
        let body: Body = if req.body.is_empty() {
            Body {
                binary: None,
                timeout_ms: None,
            }
        } else {
            match serde_json::from_slice(&req.body) {
                Ok(b) => b,
                Err(e) => return (Response::error(400, format!("upgrade body: {e}")), false),
            }
        };
        let binary = match body.binary.map_or_else(own_binary, Ok) {
            Ok(b) => b,
            Err(e) => return (Response::error(500, e), false),
        };
        let timeout = Duration::from_millis(body.timeout_ms.unwrap_or(60_000));
        match upgrader.run(&binary, timeout) {
            Ok(r) => (Response::json(200, &serde_json::json!(r)), true),
            Err(e) if upgrader.done() => (Response::error(500, e), true),
            Err(e) => (Response::error(409, e), false),
        }
    })
}

/// The binary this process was started from (where it is now, if it was replaced on disk).
pub fn own_binary() -> Result<std::path::PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    let s = exe.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(p) => p.into(),
        None => exe,
    })
}

fn write(s: &mut UnixStream, c: &Control) -> Result<(), String> {
    let mut line = serde_json::to_vec(c).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| e.to_string())
}

fn read(lines: &mut BufReader<UnixStream>, deadline: Instant) -> Result<Control, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    lines
        .get_ref()
        .set_nonblocking(false)
        .and_then(|()| {
            lines
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        })
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    match lines.read_line(&mut line) {
        Ok(0) => Err("it closed the control socket".into()),
        Ok(_) => serde_json::from_str(&line).map_err(|e| format!("control line: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err("no answer in time".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The new process's side: started by `Upgrader::run`, it takes over instead of binding.
pub struct Successor {
    dir: PathBuf,
    pub from_pid: u32,
    from_shards: usize,
    /// The old process's listen address (its real port, even if it was started with 0).
    pub addr: SocketAddr,
    control: Mutex<Option<BufReader<UnixStream>>>,
    started: Instant,
    /// The old process's listening sockets besides the shards', by name (after `hello`).
    sockets: Mutex<Vec<(String, std::os::fd::OwnedFd)>>,
}

impl Successor {
    /// The hand-over this process was started for, if any.
    pub fn from_env() -> Option<Result<Successor, String>> {
        let dir = std::env::var_os(DIR_ENV)?;
        let from = std::env::var(FROM_ENV).unwrap_or_default();
        let parse = || -> Option<(u32, usize, SocketAddr)> {
            let mut it = from.split(' ');
            Some((
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
            ))
        };
        Some(match parse() {
            Some((from_pid, from_shards, addr)) => Ok(Successor {
                dir: dir.into(),
                from_pid,
                from_shards,
                addr,
                control: Mutex::new(None),
                started: Instant::now(),
                sockets: Mutex::new(Vec::new()),
            }),
            None => Err(format!("{FROM_ENV}={from:?} is not `PID SHARDS ADDR`")),
        })
    }

    /// Where new shard `j` listens for the old shards.
    pub fn shard_socket(&self, j: usize) -> PathBuf {
        self.dir.join(format!("shard-{j}.sock"))
    }

    /// How many old shards hand over to new shard `j` of `shards` (old shard `i` goes to
    /// `i mod shards`).
    pub fn senders(&self, j: usize, shards: usize) -> usize {
        (0..self.from_shards).filter(|i| i % shards == j).count()
    }

    fn say(&self, c: &Control) -> Result<(), String> {
        let mut guard = self.control.lock().map_err(|_| "control lock")?;
        if guard.is_none() {
            let s = UnixStream::connect(self.dir.join("control.sock"))
                .map_err(|e| format!("the old process's control socket: {e}"))?;
            *guard = Some(BufReader::new(s));
        }
        write(guard.as_mut().expect("connected above").get_mut(), c)
    }

    /// Configuration read: the old process stops taking publishes and sends the history
    /// this process starts from, then its listening sockets other than the shards' (`socket`).
    pub fn hello(&self) -> Result<crate::history::Saved, String> {
        let sockets = UnixListener::bind(self.dir.join("sockets.sock"))
            .map_err(|e| format!("binding the upgrade's sockets.sock: {e}"))?;
        self.say(&Control::Hello)?;
        let saved = {
            let mut guard = self.control.lock().map_err(|_| "control lock")?;
            let lines = guard.as_mut().ok_or("no control socket")?;
            match read(lines, Instant::now() + Duration::from_secs(60))? {
                Control::History(saved) => *saved,
                other => return Err(format!("the old process said {other:?}")),
            }
        };
        let got = receive_sockets(&sockets)?;
        *self.sockets.lock().map_err(|_| "sockets lock")? = got;
        Ok(saved)
    }

    /// The listening socket the old process handed over as `name`, if it did.
    pub fn socket(&self, name: &str) -> Option<std::os::fd::OwnedFd> {
        let mut v = self.sockets.lock().ok()?;
        let i = v.iter().position(|(n, _)| n == name)?;
        Some(v.swap_remove(i).1)
    }

    /// Waits until the old process's ingest consumers are idle (they fetch nothing more).
    pub fn quiet(&self) -> Result<(), String> {
        let mut guard = self.control.lock().map_err(|_| "control lock")?;
        let lines = guard.as_mut().ok_or("no control socket")?;
        match read(lines, Instant::now() + Duration::from_secs(60))? {
            Control::Quiet => Ok(()),
            other => Err(format!("the old process said {other:?}")),
        }
    }

    /// Every shard listening for the hand-over.
    pub fn ready(&self, shards: usize) -> Result<(), String> {
        self.say(&Control::Ready { shards })
    }

    /// Everything taken in and served: the old process may go.
    pub fn serving(&self, moved: u64, closed: u64) -> Report {
        let _ = self.say(&Control::Serving { moved, closed });
        Report {
            pid: self.from_pid,
            connections: moved,
            closed,
            ms: self.started.elapsed().as_millis() as u64,
        }
    }

    /// It could not start or take over.
    pub fn fail(&self, why: &str) {
        let _ = self.say(&Control::Failed(why.to_string()));
    }
}

/// The old process's listening sockets besides the shards' (the network API's), by name, as
/// it sends them to `sockets.sock` (SCM_RIGHTS) after the history.
fn receive_sockets(l: &UnixListener) -> Result<Vec<(String, std::os::fd::OwnedFd)>, String> {
    use crate::reactor::handoff::{Piece, Reader};
    let fail = |e: std::io::Error| format!("the old process's listening sockets: {e}");
    l.set_nonblocking(true).map_err(fail)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let sock = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err("the old process did not send its listening sockets".into());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(fail(e)),
        }
    };
    sock.set_nonblocking(false).map_err(fail)?;
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(fail)?;
    let mut r = Reader::default();
    let mut got = Vec::new();
    loop {
        match r.next(&sock).map_err(fail)? {
            (Piece::Socket(name), fds) => {
                let fd = fds
                    .into_iter()
                    .next()
                    .ok_or("a socket without its descriptor")?;
                got.push((name, fd));
            }
            (Piece::Done { .. }, _) => return Ok(got),
            (_, _) => return Err("the old process sent a shard's piece as a socket".into()),
        }
    }
}
