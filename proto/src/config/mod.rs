//! Configuration: flags > `RINGCAST_*` environment > TOML file > defaults.
//!
//! clap resolves flags and environment together (a flag wins over its variable); `merge` lays
//! what they set over the TOML file, which `serde` has already laid over the defaults. Without a
//! file the server runs on an embedded default with authentication off.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod api;
mod auth;
mod cluster;
mod compression;
mod ingest;
mod limits;
mod project;
mod server;
mod sockjs;
mod stomp;
mod tls;

pub use api::{Api, ApiKey, Scope};
pub use auth::Auth;
pub use cluster::Cluster;
pub use compression::Compression;
pub use ingest::{Ingest, Kafka, Nats, Postgres, RedisStream, Start};
pub use limits::{Limits, SlowPolicy};
pub use project::Project;
pub use server::Server;
pub use sockjs::Sockjs;
pub use stomp::Stomp;
pub use tls::Tls;

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

impl From<String> for ConfigError {
    fn from(message: String) -> ConfigError {
        ConfigError::Invalid(message)
    }
}

impl From<&str> for ConfigError {
    fn from(message: &str) -> ConfigError {
        ConfigError::Invalid(message.into())
    }
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

    /// Reads and parses a TOML file (unknown keys are errors, named). The one read of a
    /// file here; everything else works on text.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses `text`, the contents of the file at `path` (named in errors; key files it names
    /// are relative to its folder, not to wherever the server happens to be started from).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if let Some(dir) = path.parent() {
            c.rebase(dir);
        }
        Ok(c)
    }

    fn rebase(&mut self, dir: &Path) {
        let rebase = |p: &mut Option<PathBuf>| {
            if let Some(f) = p.as_mut()
                && f.is_relative()
            {
                *f = dir.join(&*f);
            }
        };
        for p in self.projects.values_mut() {
            rebase(&mut p.jwt_public_key);
            rebase(&mut p.jwt_private_key);
        }
        for k in self.api.keys.values_mut() {
            rebase(&mut k.key_file);
        }
        rebase(&mut self.tls.cert);
        rebase(&mut self.tls.key);
    }

    /// Loads the file if given (else the embedded default) and applies overrides.
    pub fn load(file: Option<&Path>, o: &Overrides) -> Result<Config, ConfigError> {
        let mut c = match file {
            Some(p) => Config::from_file(p)?,
            None => Config::embedded(),
        };
        c.merge(o);
        c.validate()?;
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

    /// Each section checks its own values; what spans sections is checked here.
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        for (name, p) in &self.projects {
            p.validate(name)?;
        }
        self.sockjs.validate()?;
        self.api.validate()?;
        if self.api.tls && self.tls.cert.is_none() {
            return Err("api.tls needs [tls] cert and key (or --tls-cert and --tls-key)".into());
        }
        self.tls.validate()?;
        self.ingest.validate()?;
        self.limits.validate()?;
        self.cluster.validate()?;
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
        for url in shown
            .cluster
            .sentinels
            .iter_mut()
            .chain(shown.cluster.redis_cluster.iter_mut())
        {
            *url = mask_password(url);
        }
        if shown.cluster.sentinel_master_password.is_some() {
            shown.cluster.sentinel_master_password = Some(MASK.into());
        }
        for r in &mut shown.ingest.redis_stream {
            r.url = mask_password(&r.url);
        }
        for p in &mut shown.ingest.postgres {
            p.url = mask_password(&p.url);
        }
        for k in &mut shown.ingest.kafka {
            if k.sasl_password.is_some() {
                k.sasl_password = Some(MASK.into());
            }
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
mod tests;
