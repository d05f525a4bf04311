//! The local admin socket: HTTP/1.1 over a Unix domain socket, mode 0600, served by plain
//! blocking threads (it is low-rate, and keeping it off the reactors keeps them epoll-free).
//! Also the client side the CLI uses.

pub mod api;
pub mod batch;
pub mod msgcenter;
pub use ringcast_proto::admin::http;

/// The answer to a request the hub or the cluster could not carry out: 504 when something did
/// not answer in time, 503 otherwise, with the reason (the one place errors become statuses).
pub fn failed(e: impl Into<crate::hub::HubError>) -> http::Response {
    let e = e.into();
    http::Response::error(e.status(), e.to_string())
}

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use api::Api;
use http::Parse;

/// Largest publish body accepted over the admin socket.
const MAX_BODY: usize = 1 << 20;
/// A client that sends nothing for this long is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Threads kept waiting for admin requests.
const WORKERS: usize = 2;

/// `/upgrade` on the admin socket only (never the network API): `POST` upgrades, `GET` says
/// whether it could; the answer, and whether the process should stop once it is written (the
/// hand-over happened).
pub type UpgradeRoute = Arc<dyn Fn(&http::Request) -> (http::Response, bool) + Send + Sync>;

/// Binds the socket (replacing a stale one), restricts it to its owner, and serves it on a
/// thread. Connections from users other than the server's own, root and `allowed` are refused
/// (SO_PEERCRED), even if the file's mode was loosened. A successor process (`takeover`)
/// replaces its predecessor's live socket in one rename, so no client finds the path missing.
pub fn serve(
    path: &Path,
    api: Arc<Api>,
    allowed: &[u32],
    upgrade: Option<UpgradeRoute>,
    takeover: bool,
) -> io::Result<std::thread::JoinHandle<()>> {
    let mut uids = vec![0, nix::unistd::getuid().as_raw()];
    uids.extend_from_slice(allowed);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = if takeover {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let l = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        l
    } else {
        bind(path)?
    };
    serve_on(listener, api, uids, upgrade)
}

fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        // A live server answers; a stale socket file from a crashed one does not.
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another server is listening on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

fn serve_on(
    listener: UnixListener,
    api: Arc<Api>,
    uids: Vec<u32>,
    upgrade: Option<UpgradeRoute>,
) -> io::Result<std::thread::JoinHandle<()>> {
    // Idle workers wait on a rendezvous channel: a request reaches one that is already
    // running. A thread spawned per request starts at the back of a loaded core's run queue
    // (the scheduler charges new threads a slice), which under a storm cost `/healthz` over
    // 100 ms; a waiting thread woken is run soon. When every worker is busy (a slow client
    // holds one for up to IO_TIMEOUT), the request gets a thread of its own as before.
    let (idle, work) = crossbeam_channel::bounded::<UnixStream>(0);
    for i in 0..WORKERS {
        let (work, api, upgrade) = (work.clone(), api.clone(), upgrade.clone());
        std::thread::Builder::new()
            .name(format!("admin-{i}"))
            .spawn(move || {
                for stream in work {
                    serve_one(stream, &api, upgrade.as_ref());
                }
            })?;
    }
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let uid = nix::sys::socket::getsockopt(
                    &stream,
                    nix::sys::socket::sockopt::PeerCredentials,
                )
                .map(|c| c.uid());
                if !uid.is_ok_and(|u| uids.contains(&u)) {
                    refuse(stream, uid.map_or(-1, i64::from), &uids);
                    continue;
                }
                use crossbeam_channel::TrySendError::{Disconnected, Full};
                let (Err(Full(stream)) | Err(Disconnected(stream))) = idle.try_send(stream) else {
                    continue;
                };
                let (api, upgrade) = (api.clone(), upgrade.clone());
                let _ = std::thread::Builder::new()
                    .name("admin-conn".into())
                    .spawn(move || serve_one(stream, &api, upgrade.as_ref()));
            }
        })
}

/// Refusals draining at once; beyond it a refused connection is answered and dropped at once.
const MAX_DRAINING: usize = 16;
static DRAINING: AtomicUsize = AtomicUsize::new(0);

/// Answers a connection from a user who may not use the socket without reading a byte of it
/// on the accept thread: a silent client must never delay the next one. The 403 fits in the
/// socket buffer, so the non-blocking write cannot stall. The request is then drained on a
/// short-lived thread (closing with unread input could cost the client its answer), and only
/// a bounded number of those run at once.
fn refuse(stream: UnixStream, uid: i64, allowed: &[u32]) {
    let r = http::Response::error(
        403,
        format!("uid {uid} may not use the admin socket (allowed: {allowed:?})"),
    );
    let _ = stream.set_nonblocking(true);
    let _ = (&stream).write_all(&r.to_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
    if DRAINING.fetch_add(1, Ordering::Relaxed) >= MAX_DRAINING {
        DRAINING.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let drain = move || {
        let mut stream = stream;
        let _ = stream.set_nonblocking(false);
        let until = std::time::Instant::now() + Duration::from_millis(500);
        let mut sink = [0u8; 4096];
        // A deadline for the whole drain, not per read: a trickling client cannot keep it.
        while let Some(left) = until.checked_duration_since(std::time::Instant::now())
            && !left.is_zero()
            && stream.set_read_timeout(Some(left)).is_ok()
            && matches!(stream.read(&mut sink), Ok(n) if n > 0)
        {}
        DRAINING.fetch_sub(1, Ordering::Relaxed);
    };
    if std::thread::Builder::new()
        .name("admin-refuse".into())
        .spawn(drain)
        .is_err()
    {
        DRAINING.fetch_sub(1, Ordering::Relaxed);
    }
}

fn serve_one(mut stream: UnixStream, api: &Api, upgrade: Option<&UpgradeRoute>) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut stop = false;
    let resp = loop {
        match http::parse(&buf, MAX_BODY) {
            Ok(Parse::Done(req)) if req.path == "/upgrade" => match upgrade {
                Some(route) if req.method == "POST" || req.method == "GET" => {
                    let (resp, done) = route(&req);
                    stop = done;
                    break resp;
                }
                Some(_) => break http::Response::error(405, "use POST /upgrade (GET: can it?)"),
                None => break http::Response::error(404, "this server cannot be upgraded"),
            },
            Ok(Parse::Done(req)) => break api.handle(&req),
            Err(r) => break r,
            Ok(Parse::Partial) => {}
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let _ = stream.write_all(&resp.to_bytes());
    if stop {
        // The answer is out: the main thread stops this process as for SIGTERM.
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM);
    }
}

/// The admin socket path: configured, or the per-user default.
pub fn socket_path(cfg: &crate::config::Config) -> PathBuf {
    cfg.server
        .admin_socket
        .clone()
        .unwrap_or_else(default_admin_socket)
}

/// `$XDG_RUNTIME_DIR/ringcast/admin.sock`, else `/run/ringcast/admin.sock` for root, else a
/// per-user directory under the temp dir.
pub fn default_admin_socket() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("ringcast/admin.sock");
    }
    let uid = nix::unistd::getuid();
    if uid.is_root() {
        return PathBuf::from("/run/ringcast/admin.sock");
    }
    std::env::temp_dir().join(format!("ringcast-{uid}/admin.sock"))
}

/// The CLI's side: sends one request, returns the status and body.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), String> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the admin socket {}: {e} (is `ringcast serve` running? pass --admin-socket or --config)",
            socket.display()
        )
    })?;
    let body = body.unwrap_or(b"");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: ringcast\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| e.to_string())?;
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(&resp) {
        Ok(httparse::Status::Complete(n)) => Ok((r.code.unwrap_or(0), resp[n..].to_vec())),
        _ => Err("malformed answer from the admin socket".into()),
    }
}
