//! The network API: the admin socket's routes (and, with `msgcenter_compat`, msg-center's) over
//! TCP for backends on other hosts, behind API keys with scopes and optional project limits.
//! Plain blocking threads, one per connection and bounded in number, like the admin socket:
//! nothing here runs on a shard, so a slow or hostile client never delays a push.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admin::api::{Api, Caller};
use crate::admin::http::{self, Parse, Request, Response};
use crate::admin::msgcenter;
use crate::config::{self, Scope};

mod slots;

/// A new connection's first request must arrive this soon (or within `request_timeout_ms`
/// if that is shorter): a socket that connects and says nothing holds a slot briefly.
const FIRST_REQUEST: Duration = Duration::from_secs(2);

/// One configured key, its secret loaded.
struct Key {
    name: String,
    secret: Vec<u8>,
    scopes: Vec<Scope>,
    projects: Option<Vec<String>>,
}

/// The configured keys.
pub struct Keys(Vec<Key>);

impl Keys {
    /// Loads every key (reading `key_file`s).
    pub fn load(cfg: &config::Api) -> Result<Keys, String> {
        let mut keys = Vec::new();
        for (name, k) in &cfg.keys {
            let secret = match (&k.key, &k.key_file) {
                (Some(v), _) => v.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| format!("api.keys.{name}.key_file {}: {e}", f.display()))?
                    .trim_end()
                    .to_string(),
                (None, None) => return Err(format!("api.keys.{name}: no key")),
            };
            if secret.len() < 16 {
                return Err(format!(
                    "api.keys.{name}: a key must be at least 16 characters"
                ));
            }
            keys.push(Key {
                name: name.clone(),
                secret: secret.into_bytes(),
                scopes: k.scopes.clone(),
                projects: (!k.projects.is_empty()).then(|| k.projects.clone()),
            });
        }
        Ok(Keys(keys))
    }

    /// The key whose secret is `presented`. Every key is compared in full, in time that does
    /// not depend on where the bytes differ.
    fn find(&self, presented: &[u8]) -> Option<&Key> {
        let mut found = None;
        for k in &self.0 {
            if constant_time_eq(&k.secret, presented) {
                found = Some(k);
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the listener threads share.
struct Shared {
    api: Arc<Api>,
    /// `[api] tls`: connections speak TLS with the listener's certificate (reloaded with it).
    tls: Option<Arc<crate::tls::Tls>>,
    keys: Keys,
    cfg: config::Api,
    /// STOMP sessions resolve `/topic/{projectId}/{topic}` to the topic alone.
    legacy: bool,
    slots: Arc<slots::Slots>,
    /// `[api] console`: the web console's routes under `/console/`.
    console: Option<crate::console::Console>,
}

impl Shared {
    /// For a console login: what an admin key may do there, or `None` for a key that is
    /// unknown or lacks the admin scope.
    fn console_grant(&self, presented: &str) -> Option<crate::console::Grant> {
        let key = self.keys.find(presented.as_bytes())?;
        key.scopes
            .contains(&Scope::Admin)
            .then(|| crate::console::Grant {
                projects: key.projects.clone(),
                publish: key.scopes.contains(&Scope::Publish),
            })
    }
}

/// The name the API's listener goes by in a hand-over (`ringcast upgrade`).
pub const SOCKET: &str = "api";

/// `cfg.listen`'s socket: `inherited` (the listener a previous process handed over, so not
/// one connection waiting in its queue is refused) when it is bound where `cfg.listen` says,
/// else one bound now.
pub fn listener(
    cfg: &config::Api,
    inherited: Option<std::os::fd::OwnedFd>,
) -> Result<TcpListener, String> {
    let addr = cfg.listen.as_deref().ok_or("api.listen is not set")?;
    match inherited.map(TcpListener::from) {
        Some(l) if fits(&l, addr) => {
            tracing::info!("network API: listening on the socket the old process handed over");
            Ok(l)
        }
        _ => TcpListener::bind(addr).map_err(|e| format!("api.listen {addr}: {e}")),
    }
}

/// Serves `listener` (see `listener`) on a thread. Returns its address and a handle on it for
/// the next hand-over.
pub fn serve(
    cfg: &config::Api,
    api: Arc<Api>,
    legacy: bool,
    tls: Option<Arc<crate::tls::Tls>>,
    ctx: Arc<crate::endpoint::Context>,
    listener: TcpListener,
) -> Result<(std::net::SocketAddr, std::os::fd::OwnedFd), String> {
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let handed = listener
        .try_clone()
        .map_err(|e| format!("api.listen {bound}: {e}"))?
        .into();
    let console = cfg
        .console
        .then(|| crate::console::Console::new(api.clone(), ctx, cfg.tls));
    let shared = Arc::new(Shared {
        console,
        api,
        tls: tls.filter(|_| cfg.tls),
        keys: Keys::load(cfg)?,
        cfg: cfg.clone(),
        legacy,
        slots: Arc::new(slots::Slots::new(
            cfg.max_connections,
            cfg.max_connections_per_ip,
        )),
    });
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_nodelay(true);
                let ip = stream
                    .peer_addr()
                    .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
                // Taken here, not in the thread: a refused connection costs no thread.
                let slot = match shared.slots.take(ip, stream.try_clone().ok()) {
                    Ok(slot) => slot,
                    Err((status, why)) => {
                        let r = Response::error(status, why);
                        let _ = stream.set_nonblocking(true);
                        let _ = (&stream).write_all(&r.to_bytes());
                        continue;
                    }
                };
                let s = shared.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name("api-conn".into())
                        .spawn(move || match &s.tls {
                            None => serve_conn(Conn::Plain(stream), &s, &slot),
                            Some(t) => match rustls::ServerConnection::new(t.current()) {
                                Ok(c) => serve_conn(
                                    Conn::Tls(Box::new(rustls::StreamOwned::new(c, stream))),
                                    &s,
                                    &slot,
                                ),
                                Err(e) => tracing::warn!("API TLS session: {e}"),
                            },
                        });
                if let Err(e) = spawned {
                    tracing::warn!("API connection thread: {e}");
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok((bound, handed))
}

/// Whether `l` is bound where `listen` asks (port 0: any port on that address).
fn fits(l: &TcpListener, listen: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Ok(have) = l.local_addr() else {
        return false;
    };
    listen.to_socket_addrs().is_ok_and(|mut want| {
        want.any(|w| w.ip() == have.ip() && (w.port() == 0 || w.port() == have.port()))
    })
}

/// An API connection: plain, or TLS over the socket (the handshake runs on the first read).
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(t) => t.flush(),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Conn::Tls(t) = self {
            t.conn.send_close_notify();
            let _ = t.conn.complete_io(&mut t.sock);
        }
    }
}

/// Serves requests on one connection until the client closes, asks to close, or is silent (or
/// trickles) for `request_timeout_ms`.
fn serve_conn(mut stream: Conn, shared: &Shared, slot: &slots::Slot) {
    let timeout = Duration::from_millis(shared.cfg.request_timeout_ms);
    let _ = stream.tcp().set_write_timeout(Some(timeout));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut first = true;
    loop {
        let wait = if first {
            timeout.min(FIRST_REQUEST)
        } else {
            timeout
        };
        first = false;
        let deadline = Instant::now() + wait;
        let req = loop {
            match http::parse(&buf, shared.cfg.max_body_bytes) {
                Ok(Parse::Done(r)) => break r,
                Err(r) => {
                    let _ = stream.write_all(&r.to_bytes());
                    return;
                }
                Ok(Parse::Partial) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if !buf.is_empty() {
                    let r = Response::error(408, "the request did not arrive in time");
                    let _ = stream.write_all(&r.to_bytes());
                }
                return;
            }
            let _ = stream.tcp().set_read_timeout(Some(left));
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        };
        buf.drain(..req.len);
        if let Some(c) = shared
            .console
            .as_ref()
            .filter(|_| crate::console::owns(&req.path))
        {
            let peer = stream.tcp().peer_addr().ok().map(|a| a.ip());
            match c.handle(&req, peer, |k| shared.console_grant(k)) {
                crate::console::Outcome::Reply(r) => {
                    if stream.write_all(&r.to_bytes_with(req.keep_alive)).is_err()
                        || !req.keep_alive
                    {
                        return;
                    }
                    continue;
                }
                crate::console::Outcome::Events { session } => {
                    slot.trust();
                    return c.events(&session, &mut stream);
                }
            }
        }
        let resp = match authorize(shared, &req) {
            Ok(caller) => {
                if required_scope(&shared.cfg, &req.path).is_some() {
                    // A key was checked: this connection is a backend's, not to be evicted.
                    slot.trust();
                }
                msgcenter_route(shared, &req, &caller)
                    .unwrap_or_else(|| shared.api.handle_as(&req, &caller))
            }
            Err(r) => r,
        };
        // A process handing over answers and lets the client come back on a new connection,
        // which the successor accepts from the same listener.
        let keep = req.keep_alive && !shared.api.hub.handing_over();
        if stream.write_all(&resp.to_bytes_with(keep)).is_err() || !keep {
            return;
        }
    }
}

fn msgcenter_route(shared: &Shared, req: &Request, caller: &Caller) -> Option<Response> {
    if !shared.cfg.msgcenter_compat {
        return None;
    }
    msgcenter::handle(&shared.api, req, caller, shared.legacy)
}

/// The scope a route needs; `None` for what anyone may call.
fn required_scope(cfg: &config::Api, path: &str) -> Option<Scope> {
    match path {
        "/healthz" | "/readyz" => None,
        "/metrics" if cfg.metrics_public => None,
        "/metrics" => Some(Scope::Metrics),
        "/publish" | "/ws_message/topic" | "/ws_message/user" => Some(Scope::Publish),
        // Everything else, unknown routes included: only admin keys learn what exists.
        _ => Some(Scope::Admin),
    }
}

/// Who is calling, from `Authorization: Bearer KEY` (or `apikey KEY`), or the refusal.
fn authorize(shared: &Shared, req: &Request) -> Result<Caller, Response> {
    let Some(scope) = required_scope(&shared.cfg, &req.path) else {
        return Ok(Caller::local());
    };
    let presented = req.authorization.as_deref().and_then(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("apikey "))
            .map(str::trim)
    });
    let Some(presented) = presented else {
        return Err(Response::error(
            401,
            "missing API key: send Authorization: Bearer KEY",
        ));
    };
    let Some(key) = shared.keys.find(presented.as_bytes()) else {
        return Err(Response::error(401, "unknown API key"));
    };
    if !key.scopes.contains(&scope) {
        return Err(Response::error(
            403,
            format!(
                "key {:?} lacks the {} scope {} needs",
                key.name,
                format!("{scope:?}").to_lowercase(),
                req.path
            ),
        ));
    }
    Ok(Caller {
        projects: key.projects.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn routes_need_their_scope() {
        let mut cfg = config::Api::default();
        assert_eq!(required_scope(&cfg, "/healthz"), None);
        assert_eq!(required_scope(&cfg, "/readyz"), None);
        assert_eq!(required_scope(&cfg, "/metrics"), Some(Scope::Metrics));
        assert_eq!(required_scope(&cfg, "/publish"), Some(Scope::Publish));
        assert_eq!(
            required_scope(&cfg, "/ws_message/user"),
            Some(Scope::Publish)
        );
        assert_eq!(required_scope(&cfg, "/sessions"), Some(Scope::Admin));
        assert_eq!(required_scope(&cfg, "/anything"), Some(Scope::Admin));
        cfg.metrics_public = true;
        assert_eq!(required_scope(&cfg, "/metrics"), None);
    }
}
