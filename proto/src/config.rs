//! Configuration: flags > `RINGCAST_*` environment > TOML file > defaults.
//!
//! clap resolves flags and environment together (a flag wins over its variable); `merge` lays
//! what they set over the TOML file, which `serde` has already laid over the defaults. Without a
//! file the server runs on an embedded default with authentication off.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::access::{Act, Policy};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
/// The whole configuration: defaults, laid under the TOML file, laid under flags and
/// `RINGCAST_*` variables.
pub struct Config {
    /// `[server]`: the listener, shards and io_uring settings.
    pub server: Server,
    /// `[limits]`: every bound on what a connection may cost or do.
    pub limits: Limits,
    /// `[auth]`: whether tokens are required, and which claim names the user.
    pub auth: Auth,
    /// `[stomp]`: heart-beats, frame limits, legacy destinations.
    pub stomp: Stomp,
    /// `[projects.NAME]`: one table per tenant, with its key.
    pub projects: BTreeMap<String, Project>,
    /// `[cluster]`: Redis, when this node is one of several.
    pub cluster: Cluster,
    /// `[api]`: the network API for backends on other hosts.
    pub api: Api,
    /// `[[ingest.*]]`: brokers to take publishes from.
    pub ingest: Ingest,
    /// `[sockjs]`: the SockJS protocol on the STOMP endpoints, for `sockjs-client` users.
    pub sockjs: Sockjs,
    /// `[compression]`: permessage-deflate.
    pub compression: Compression,
    /// `[tls]`: `wss://` on the WebSocket listener.
    pub tls: Tls,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[tls]`: the WebSocket listener speaks TLS (`wss://`) when both files are named.
pub struct Tls {
    /// PEM certificate chain, leaf first (`--tls-cert`).
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) (`--tls-key`).
    pub key: Option<PathBuf>,
    /// Hand the session keys to the kernel after the handshake where it offers kTLS.
    pub ktls: bool,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert: None,
            key: None,
            ktls: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[compression]`: permessage-deflate (RFC 7692), without context takeover either way, so a
/// broadcast is compressed once for every subscriber that negotiated it.
pub struct Compression {
    /// Accept clients' permessage-deflate offers.
    pub enabled: bool,
    /// Messages shorter than this go uncompressed (compressing them gains nothing).
    pub min_bytes: usize,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            enabled: false,
            min_bytes: 256,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[sockjs]`: which prefixes speak SockJS (`server.path` always does while it is enabled), and
/// the protocol's timings.
pub struct Sockjs {
    /// Off: only plain WebSocket upgrades are served.
    pub enabled: bool,
    /// STOMP endpoints besides `server.path`, e.g. Spring's `/msg-center/dfocus`.
    pub endpoints: Vec<String>,
    /// `h` frames this often on an otherwise quiet session (SockJS's default: 25 s).
    pub heartbeat_ms: u64,
    /// A session over HTTP with no request receiving for it this long is closed.
    pub disconnect_delay_ms: u64,
    /// What `/info` answers for `cookie_needed` (sticky load balancers want `JSESSIONID`).
    pub cookie_needed: bool,
    /// The `sockjs-client` script `iframe.html` loads (only the iframe-based transports of
    /// very old browsers use the page); Spring's default.
    pub client_url: String,
    /// Serve the `jsonp` and `jsonp_send` transports (off, as in Spring: JSONP answers are
    /// scripts any page may load).
    pub jsonp: bool,
    /// A streaming response (`xhr_streaming`, `eventsource`, `htmlfile`) is ended once it
    /// carried this many bytes, so the browser can free them; the client opens the next.
    pub response_limit_bytes: usize,
}

impl Default for Sockjs {
    fn default() -> Self {
        Sockjs {
            enabled: true,
            endpoints: Vec::new(),
            heartbeat_ms: 25_000,
            disconnect_delay_ms: 5_000,
            cookie_needed: false,
            client_url: "https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js".into(),
            jsonp: false,
            response_limit_bytes: crate::sockjs::http::RESPONSE_LIMIT,
        }
    }
}

/// An `IP:PORT` to listen on; a bare port gets the address it probably meant.
fn check_addr(what: &str, v: &str) -> Result<(), String> {
    match v.parse::<std::net::SocketAddr>() {
        Ok(_) => Ok(()),
        Err(_) if v.parse::<u16>().is_ok() => Err(format!(
            "{what} {v:?} is a port without an address: use 127.0.0.1:{v} (this host only) or 0.0.0.0:{v} (every interface)"
        )),
        Err(e) => Err(format!(
            "{what} {v:?}: {e}: use IP:PORT, e.g. 127.0.0.1:8080"
        )),
    }
}

/// `[[ingest.redis_stream]]`, ...: consumers that take publishes (in the `/publish` JSON shape)
/// from a broker, at least once.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Ingest {
    /// Redis Streams consumer groups.
    pub redis_stream: Vec<RedisStream>,
    /// NATS JetStream durable pull consumers.
    pub nats: Vec<Nats>,
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

/// `[api]`: an HTTP listener with the admin socket's routes, for backends on other hosts,
/// guarded by API keys. Off unless `listen` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Api {
    /// Address to listen on (`--api` / `RINGCAST_API_LISTEN`); unset = no network API.
    pub listen: Option<String>,
    /// msg-center's REST routes: `POST /ws_message/topic|user`, `GET /ws_session/list`.
    pub msgcenter_compat: bool,
    /// `GET /metrics` without a key.
    pub metrics_public: bool,
    /// The web console at `/console/` (log in with a key of the `admin` scope).
    pub console: bool,
    /// Serve the API over TLS (`https://`) with the `[tls]` certificate and key.
    pub tls: bool,
    /// Connections served at once; beyond it, the oldest connection that never presented a
    /// valid key is closed to make room, or (none such) the newcomer gets 503.
    pub max_connections: usize,
    /// Connections from one address (0 = no cap); beyond it, likewise (429).
    pub max_connections_per_ip: usize,
    /// Largest request body (413 beyond it).
    pub max_body_bytes: usize,
    /// A request must arrive whole this soon after its first byte (or after the previous
    /// answer on a kept-alive connection); a silent or trickling client is then dropped.
    pub request_timeout_ms: u64,
    /// `[api.keys.NAME]`: who may call, and what.
    pub keys: BTreeMap<String, ApiKey>,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            listen: None,
            msgcenter_compat: false,
            metrics_public: false,
            console: false,
            tls: false,
            max_connections: 256,
            max_connections_per_ip: 64,
            max_body_bytes: 1 << 20,
            request_timeout_ms: 10_000,
            keys: BTreeMap::new(),
        }
    }
}

/// `[api.keys.NAME]`: one API key.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ApiKey {
    /// The key itself (sent as `Authorization: Bearer KEY`), or
    pub key: Option<String>,
    /// a file holding it (trailing whitespace ignored).
    pub key_file: Option<PathBuf>,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Projects it may touch; empty = every project.
    pub projects: Vec<String>,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /publish`, msg-center's `POST /ws_message/*`.
    Publish,
    /// `/sessions`, `/disconnect`, `/stats`, msg-center's `GET /ws_session/list`.
    Admin,
    /// `GET /metrics`.
    Metrics,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[server]`.
pub struct Server {
    /// The WebSocket listener's address (`--listen`).
    pub listen: String,
    /// The WebSocket endpoint (raw and STOMP sessions).
    pub path: String,
    /// Whether `echo_path` echoes messages back (what the Autobahn suite drives).
    pub echo: bool,
    /// Where the echo endpoint answers (with `echo` on).
    pub echo_path: String,
    /// 0 = one per core, more when `max_connections` needs more fd tables.
    pub shards: usize,
    /// Connections the whole server holds; beyond it, 503 (`--max-connections`).
    pub max_connections: usize,
    /// Unset = a per-user runtime directory (see `default_admin_socket`).
    pub admin_socket: Option<PathBuf>,
    /// Force the single-shot io_uring path (what 5.10–5.18 kernels get).
    pub io_compat: bool,
    /// Per shard: read buffers shared by all its connections (a power of two; 0 = sized from
    /// the shard count, 64–512) and their size.
    pub read_buffers: u16,
    /// Bytes per read buffer.
    pub read_buffer_size: u32,
    /// Submission queue entries per shard ring.
    pub ring_entries: u32,
    /// If non-empty, upgrades whose `Origin` is not listed get 403.
    pub allowed_origins: Vec<String>,
    /// On SIGTERM, how long sessions get to answer our close before the process exits.
    pub shutdown_grace_ms: u64,
    /// On SIGTERM, close the sessions spread evenly over this window (WebSocket 1012, STOMP
    /// `ERROR message:server restart`, each with a jittered `retry-after` hint), so that
    /// their reconnects do not all land at once; 0 = close every session at once (1001).
    pub drain_ms: u64,
    /// Unix users allowed on the admin socket besides the server's own user and root (checked
    /// with SO_PEERCRED on every connection, on top of the socket file's 0600 mode).
    pub admin_uids: Vec<u32>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:8080".into(),
            path: "/ws".into(),
            echo: false,
            echo_path: "/echo".into(),
            shards: 0,
            max_connections: 100_000,
            admin_socket: None,
            io_compat: false,
            read_buffers: 0,
            read_buffer_size: 4096,
            ring_entries: 4096,
            allowed_origins: Vec::new(),
            shutdown_grace_ms: 3000,
            drain_ms: 0,
            admin_uids: Vec::new(),
        }
    }
}

/// What to do with a session whose send queue is full (it is not reading).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SlowPolicy {
    /// Drop the oldest queued message (never the one being written) and count it.
    DropOldest,
    /// Close the session with 1008.
    Close,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[limits]`.
pub struct Limits {
    /// An upgrade request must be complete this soon after the connection is accepted (408).
    pub handshake_timeout_ms: u64,
    /// Largest upgrade request head (431 beyond it).
    pub max_header_bytes: usize,
    /// Largest WebSocket message, reassembled (1009 beyond it).
    pub max_message_bytes: usize,
    /// Messages queued per session beyond the one being written.
    pub send_queue: usize,
    /// What happens to a session whose send queue is full.
    pub slow_consumer: SlowPolicy,
    /// How long our close frame waits for the peer's before the socket is dropped.
    pub close_timeout_ms: u64,
    /// Raw topics and STOMP subscriptions per session.
    pub max_topics_per_session: usize,
    /// Raw and echo sessions silent this long get a ping; silent for another period after it,
    /// they are closed (a vanished peer). 0 = never. STOMP sessions use their heart-beats.
    pub ping_interval_ms: u64,
    /// Open connections allowed from one source address (0 = no limit); beyond it, 429.
    /// Off by default: many real users share one address behind carrier-grade NAT.
    pub max_connections_per_ip: usize,
    /// STOMP: CONNECT must arrive within this after the upgrade, or the session gets an ERROR
    /// and is closed (an unauthenticated connection must not hold a slot forever).
    pub connect_timeout_ms: u64,
    /// Connections from one source address not yet authenticated (upgrades in progress and
    /// STOMP sessions before CONNECTED); beyond it, 429. 0 = no limit.
    pub max_pending_per_ip: usize,
    /// Largest WebSocket message and STOMP frame a session may send before it is
    /// authenticated (a CONNECT is a few hundred bytes; a token a few KB at most).
    pub max_connect_bytes: usize,
    /// New connections the node takes on per second; beyond it they are answered at once with
    /// 503 and a `Retry-After`. 0 = automatic: a shard sheds while it holds more unfinished
    /// handshakes than it can finish within `handshake_timeout_ms`.
    pub max_handshakes_per_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout_ms: 10_000,
            max_header_bytes: 8192,
            max_message_bytes: 64 * 1024,
            send_queue: 1024,
            slow_consumer: SlowPolicy::DropOldest,
            close_timeout_ms: 2000,
            max_topics_per_session: 64,
            ping_interval_ms: 30_000,
            max_connections_per_ip: 0,
            connect_timeout_ms: 10_000,
            max_pending_per_ip: 1000,
            max_connect_bytes: 8192,
            max_handshakes_per_s: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[auth]`.
pub struct Auth {
    /// Tokens are required (`--no-auth` turns this off; the embedded default has it off).
    pub enabled: bool,
    /// The claim that names the user (`sub`, or `userName` for the seed's tokens).
    pub user_claim: String,
    /// How long a project's backend (`subscribe_proxy`, `publish_proxy`) may take to answer;
    /// beyond it the request is refused.
    pub proxy_timeout_ms: u64,
    /// How long a backend's answer for one (project, user, topic, act) is reused.
    pub proxy_cache_ms: u64,
    /// Answers kept at most (the oldest go first).
    pub proxy_cache_size: usize,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            enabled: true,
            user_claim: "sub".into(),
            proxy_timeout_ms: 2000,
            proxy_cache_ms: 30_000,
            proxy_cache_size: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[stomp]`.
pub struct Stomp {
    /// What the server offers in CONNECTED `heart-beat` (send, expect), in ms; 0 = never.
    pub heartbeat_send_ms: u32,
    /// What CONNECTED asks of the client, in ms; 0 = nothing.
    pub heartbeat_receive_ms: u32,
    /// Largest STOMP frame (headers and body).
    pub max_frame_bytes: usize,
    /// Headers per STOMP frame.
    pub max_headers: usize,
    /// Longest header line.
    pub max_header_bytes: usize,
    /// Accept the seed's forms: `/topic/{projectId}/{topic}` is `{topic}` when the segment is the
    /// session's project; `/user/queue/{projectId}` (msg-center's `convertAndSendToUser(user,
    /// "/queue/{projectId}")`) is simply the queue named after the project.
    pub legacy_destinations: bool,
}

impl Default for Stomp {
    fn default() -> Self {
        Stomp {
            heartbeat_send_ms: 10_000,
            heartbeat_receive_ms: 10_000,
            max_frame_bytes: 64 * 1024,
            max_headers: 32,
            max_header_bytes: 4096,
            legacy_destinations: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
/// `[projects.NAME]`: one tenant and the key its tokens are checked with.
pub struct Project {
    /// `HS256` (default), `RS256` or `ES256`; the algorithm is pinned per project.
    pub jwt_alg: Option<String>,
    /// The shared secret (HS256).
    pub jwt_secret: Option<String>,
    /// PEM public key file (RS256 / ES256).
    pub jwt_public_key: Option<PathBuf>,
    /// PEM private key file: lets `ringcast token` mint tokens for RS256 / ES256 projects.
    pub jwt_private_key: Option<PathBuf>,
    /// Clients may publish with STOMP SEND (`publish = "any"`; kept for older files).
    pub client_publish: bool,
    /// Who may subscribe to which topics: `any` (default), `none`, `claim`, `proxy`.
    pub subscribe: Policy,
    /// Who may SEND to which topics: `none` (default unless `client_publish`), `any`, `claim`,
    /// `proxy`.
    pub publish: Option<Policy>,
    /// The token claim listing the topics it grants (`claim`): exact names and `*` patterns.
    pub channels_claim: Option<String>,
    /// When set, the token must carry this claim with the project's name (a key shared by two
    /// projects then opens only the one its token names).
    pub project_claim: Option<String>,
    /// `http://…` that answers `{project, user, topic, action}` with `{"allow": bool,
    /// "reason": "…"}` (`subscribe = "proxy"`).
    pub subscribe_proxy: Option<String>,
    /// The same for SEND (`publish = "proxy"`).
    pub publish_proxy: Option<String>,
    /// `[projects.NAME.history]`: destinations that keep recent messages for recovery.
    pub history: Option<crate::history::Config>,
}

impl Project {
    /// The rule for client SEND.
    pub fn publish_policy(&self) -> Policy {
        self.publish.unwrap_or(if self.client_publish {
            Policy::Any
        } else {
            Policy::None
        })
    }

    /// The claim naming the topics a token grants.
    pub fn channels_claim(&self) -> &str {
        self.channels_claim.as_deref().unwrap_or("channels")
    }

    /// The history `dest` keeps, if any.
    pub fn history_for(&self, dest: &crate::dest::Dest) -> Option<&crate::history::Config> {
        self.history.as_ref().filter(|h| h.covers(dest))
    }

    /// The backend to ask about `act`, if the policy is `proxy`.
    pub fn proxy_for(&self, act: Act) -> Option<&str> {
        match act {
            Act::Subscribe => self.subscribe_proxy.as_deref(),
            Act::Publish => self.publish_proxy.as_deref(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[cluster]`.
pub struct Cluster {
    /// `redis://host:port[/db]`; absent = a standalone node.
    pub redis: Option<String>,
    /// This node's name in the cluster; unset = `HOST:PORT:PID`.
    pub node: Option<String>,
    /// Prefix of every Redis key and channel, so clusters can share one Redis.
    pub prefix: String,
    /// A node's sessions and counters vanish from Redis this long after its last heart-beat
    /// (it refreshes them every third of it).
    pub presence_ttl_ms: u64,
    /// Publishes waiting for Redis; beyond it they are dropped and counted as failed.
    pub publish_queue: usize,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            redis: None,
            node: None,
            prefix: "ringcast".into(),
            presence_ttl_ms: 15_000,
            publish_queue: 10_000,
        }
    }
}

/// Why a configuration cannot be used; the text names the file or key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown key or a value of the wrong type.
    #[error("config {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's account, with line and column.
        message: String,
    },
    /// A value out of its range (the text names the key).
    #[error("{0}")]
    Invalid(String),
}

impl From<ConfigError> for String {
    fn from(e: ConfigError) -> String {
        e.to_string()
    }
}

/// Settings given as flags or `RINGCAST_*` variables; `None` = not given.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen` / `RINGCAST_LISTEN`.
    pub listen: Option<String>,
    /// `--shards` / `RINGCAST_SHARDS`.
    pub shards: Option<usize>,
    /// `--max-connections` / `RINGCAST_MAX_CONNECTIONS`.
    pub max_connections: Option<usize>,
    /// `--admin-socket` / `RINGCAST_ADMIN_SOCKET`.
    pub admin_socket: Option<PathBuf>,
    /// `--no-auth`.
    pub no_auth: bool,
    /// `--echo`.
    pub echo: bool,
    /// `--io-compat`.
    pub io_compat: bool,
    /// `--redis` / `RINGCAST_REDIS`.
    pub redis: Option<String>,
    /// `--api` / `RINGCAST_API_LISTEN`.
    pub api_listen: Option<String>,
    /// `--tls-cert` / `RINGCAST_TLS_CERT`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key` / `RINGCAST_TLS_KEY`.
    pub tls_key: Option<PathBuf>,
}

impl Config {
    /// The embedded default: no file, authentication off (the server warns loudly).
    pub fn embedded() -> Config {
        let mut c = Config::default();
        c.auth.enabled = false;
        c
    }

    /// Reads and parses a TOML file (unknown keys are errors, named).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut c: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        // Key files are named relative to the file that names them, not to wherever the
        // server happens to be started from.
        if let Some(dir) = path.parent() {
            let rebase = |p: &mut Option<PathBuf>| {
                if let Some(f) = p.as_mut()
                    && f.is_relative()
                {
                    *f = dir.join(&*f);
                }
            };
            for p in c.projects.values_mut() {
                rebase(&mut p.jwt_public_key);
                rebase(&mut p.jwt_private_key);
            }
            for k in c.api.keys.values_mut() {
                rebase(&mut k.key_file);
            }
            rebase(&mut c.tls.cert);
            rebase(&mut c.tls.key);
        }
        Ok(c)
    }

    /// Loads the file if given (else the embedded default) and applies overrides.
    pub fn load(file: Option<&Path>, o: &Overrides) -> Result<Config, ConfigError> {
        let mut c = match file {
            Some(p) => Config::from_file(p)?,
            None => Config::embedded(),
        };
        c.merge(o);
        c.validate().map_err(ConfigError::Invalid)?;
        Ok(c)
    }

    fn merge(&mut self, o: &Overrides) {
        if let Some(v) = &o.listen {
            self.server.listen = v.clone();
        }
        if let Some(v) = o.shards {
            self.server.shards = v;
        }
        if let Some(v) = o.max_connections {
            self.server.max_connections = v;
        }
        if let Some(v) = &o.admin_socket {
            self.server.admin_socket = Some(v.clone());
        }
        if o.no_auth {
            self.auth.enabled = false;
        }
        if o.echo {
            self.server.echo = true;
        }
        if o.io_compat {
            self.server.io_compat = true;
        }
        if let Some(v) = &o.redis {
            self.cluster.redis = Some(v.clone());
        }
        if let Some(v) = &o.api_listen {
            self.api.listen = Some(v.clone());
        }
        if let Some(v) = &o.tls_cert {
            self.tls.cert = Some(v.clone());
        }
        if let Some(v) = &o.tls_key {
            self.tls.key = Some(v.clone());
        }
    }

    fn validate(&self) -> Result<(), String> {
        check_addr("server.listen (--listen)", &self.server.listen)?;
        let rb = self.server.read_buffers;
        if rb != 0 && (!rb.is_power_of_two() || rb > 32768) {
            return Err("server.read_buffers must be 0 (auto) or a power of two ≤ 32768".into());
        }
        if self.server.read_buffer_size < 512 {
            return Err("server.read_buffer_size must be at least 512".into());
        }
        if !self.server.path.starts_with('/') || !self.server.echo_path.starts_with('/') {
            return Err("server.path and server.echo_path must start with /".into());
        }
        for (name, p) in &self.projects {
            for (act, policy) in [
                (Act::Subscribe, p.subscribe),
                (Act::Publish, p.publish_policy()),
            ] {
                let url = p.proxy_for(act);
                if policy == Policy::Proxy && url.is_none() {
                    return Err(format!(
                        "projects.{name}: {} = \"proxy\" needs {}_proxy = \"http://…\"",
                        act.as_str(),
                        act.as_str()
                    ));
                }
                if let Some(u) = url
                    && !u.starts_with("http://")
                {
                    return Err(format!(
                        "projects.{name}.{}_proxy {u:?}: only http:// backends are supported (keep them on the same host or network)",
                        act.as_str()
                    ));
                }
            }
        }
        for (name, p) in &self.projects {
            if let Some(h) = &p.history
                && (h.size == 0 || h.ttl_ms == 0)
            {
                return Err(format!(
                    "projects.{name}.history: size and ttl_ms must be at least 1"
                ));
            }
        }
        for e in &self.sockjs.endpoints {
            if !e.starts_with('/') || e.ends_with('/') || e.len() < 2 {
                return Err(format!(
                    "sockjs.endpoints: {e:?} must start with / and not end with one"
                ));
            }
        }
        if let Some(l) = &self.api.listen {
            check_addr("api.listen (--api)", l)?;
        }
        if self.api.tls && self.tls.cert.is_none() {
            return Err("api.tls needs [tls] cert and key (or --tls-cert and --tls-key)".into());
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(
                "tls: give both cert and key (--tls-cert and --tls-key), or neither".into(),
            );
        }
        for (name, k) in &self.api.keys {
            if k.key.is_some() == k.key_file.is_some() {
                return Err(format!(
                    "api.keys.{name}: give exactly one of key and key_file"
                ));
            }
            if k.key.as_deref().is_some_and(|v| v.len() < 16) {
                return Err(format!(
                    "api.keys.{name}: a key must be at least 16 characters"
                ));
            }
            if k.scopes.is_empty() {
                return Err(format!(
                    "api.keys.{name}: scopes is empty: give publish, admin and/or metrics"
                ));
            }
        }
        for (i, r) in self.ingest.redis_stream.iter().enumerate() {
            if r.stream.is_empty() || r.group.is_empty() || r.consumer.is_empty() || r.batch == 0 {
                return Err(format!(
                    "ingest.redis_stream[{i}]: stream, group and consumer must be set and batch at least 1"
                ));
            }
            if !(r.url.starts_with("redis://")
                || r.url.starts_with("rediss://")
                || r.url.starts_with("unix://"))
            {
                return Err(format!(
                    "ingest.redis_stream[{i}].url {:?}: expected redis://HOST:PORT",
                    r.url
                ));
            }
        }
        for (i, n) in self.ingest.nats.iter().enumerate() {
            if n.stream.is_empty() || n.subject.is_empty() || n.consumer.is_empty() || n.batch == 0
            {
                return Err(format!(
                    "ingest.nats[{i}]: stream, subject and consumer must be set and batch at least 1"
                ));
            }
        }
        if self.limits.max_connect_bytes < 512 {
            return Err("limits.max_connect_bytes must be at least 512".into());
        }
        if self.limits.send_queue == 0 {
            return Err("limits.send_queue must be at least 1".into());
        }
        if let Some(url) = &self.cluster.redis
            && !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://")
                || url.starts_with("redis+unix://"))
        {
            return Err(format!(
                "cluster.redis {url:?}: expected redis://HOST:PORT[/DB] (or rediss://, unix://)"
            ));
        }
        if self.cluster.presence_ttl_ms < 1000 || self.cluster.publish_queue == 0 {
            return Err(
                "cluster.presence_ttl_ms must be at least 1000 and cluster.publish_queue at least 1"
                    .into(),
            );
        }
        if self.cluster.prefix.is_empty() || self.cluster.prefix.contains(char::is_control) {
            return Err("cluster.prefix must be non-empty, without control characters".into());
        }
        Ok(())
    }

    /// The merged configuration as TOML, secrets masked (it is printed and pasted into
    /// issues; key files are shown as paths, never as contents).
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        for p in shown.projects.values_mut() {
            if p.jwt_secret.is_some() {
                p.jwt_secret = Some(MASK.into());
            }
        }
        if let Some(url) = &mut shown.cluster.redis {
            *url = mask_password(url);
        }
        for r in &mut shown.ingest.redis_stream {
            r.url = mask_password(&r.url);
        }
        for k in shown.api.keys.values_mut() {
            if k.key.is_some() {
                k.key = Some(MASK.into());
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

/// What `--print-config` shows instead of a secret.
const MASK: &str = "<secret: not shown>";

/// `redis://user:pass@host` → `redis://user:<secret: not shown>@host`.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:{MASK}{}", &rest[userinfo.len()..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_overrides() {
        let dir = std::env::temp_dir().join(format!("ringcast-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "[server]\nlisten = \"127.0.0.1:9000\"\nshards = 3\n[projects.demo]\njwt_alg = \"HS256\"\njwt_secret = \"s\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), &Overrides::default()).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9000");
        assert_eq!(c.server.shards, 3);
        assert!(c.auth.enabled, "a config file keeps auth on by default");
        let o = Overrides {
            shards: Some(5),
            no_auth: true,
            ..Default::default()
        };
        let c = Config::load(Some(&f), &o).unwrap();
        assert_eq!(c.server.shards, 5);
        assert!(!c.auth.enabled);
        assert!(c.to_toml().contains("[projects.demo]"));
        let shown = c.to_toml();
        assert!(
            shown.contains(MASK) && !shown.contains("jwt_secret = \"s\""),
            "{shown}"
        );
        std::fs::write(&f, "[server]\nlisten = 1\n").unwrap();
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        std::fs::write(&f, "[server]\nlistn = \"x\"\n").unwrap();
        assert!(
            Config::load(Some(&f), &Overrides::default())
                .unwrap_err()
                .to_string()
                .contains("listn")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn printed_urls_hide_their_password() {
        assert_eq!(
            mask_password("redis://u:p@h:1/0"),
            format!("redis://u:{MASK}@h:1/0")
        );
        assert_eq!(mask_password("redis://:p@h"), format!("redis://:{MASK}@h"));
        assert_eq!(mask_password("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn embedded_default_has_auth_off() {
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert!(!c.auth.enabled);
        assert_eq!(c.server.listen, "127.0.0.1:8080");
    }
}
