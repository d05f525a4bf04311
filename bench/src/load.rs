//! What a run opens: its size, topics, source addresses, the target URL, and the bytes each
//! connection starts with.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::*;

#[derive(Parser, Clone)]
pub(crate) struct Load {
    /// Connections to open.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub(crate) connections: usize,
    /// Client shards (threads with their own fd table); 0 = as many as the fd limit needs.
    #[arg(long, default_value_t = 0)]
    pub(crate) shards: usize,
    /// Source addresses: a range `127.0.0.2-127.0.0.40` or a comma list.
    #[arg(long, default_value = "127.0.0.2-127.0.0.41")]
    pub(crate) sources: String,
    /// Connects in flight per client shard.
    #[arg(long, default_value_t = 256)]
    pub(crate) concurrency: usize,
    /// Broadcasts to send once everyone is connected.
    #[arg(long, default_value_t = 1)]
    pub(crate) messages: usize,
    /// Message body size in bytes (a timestamp, then padding).
    #[arg(long, default_value_t = 64)]
    pub(crate) size: usize,
    /// Pause between broadcasts.
    #[arg(long, default_value_t = 500)]
    pub(crate) interval_ms: u64,
    /// Give up on connecting or on a delivery after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub(crate) timeout: u64,
    /// Keep the connections open this many seconds after the last delivery.
    #[arg(long, default_value_t = 0)]
    pub(crate) hold: u64,
    /// Spread the connections over this many topics (`TOPIC-0` …), connection i on topic
    /// i mod K; 1 = everyone on the URL's topic.
    #[arg(long, default_value_t = 1)]
    pub(crate) topics: usize,
    /// Sustained load instead of broadcasts: this many publishes per second, round-robin over
    /// the topics, for `--duration` seconds; latency is per delivery.
    #[arg(long, default_value_t = 0)]
    pub(crate) rate: u32,
    #[arg(long, default_value_t = 30)]
    pub(crate) duration: u64,
    /// STOMP only: every session (user `bench-I`) subscribes to its own `/user/queue/bench`,
    /// and the sustained publishes go each to one random user instead of round-robin topics.
    #[arg(long)]
    pub(crate) unicast: bool,
    /// Sustained publishes per admin request (a JSON array when above 1).
    #[arg(long, default_value_t = 1)]
    pub(crate) batch: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// For `wss://` URLs: the CA certificate (PEM) the server's certificate chains to; the
    /// server is checked under the name `localhost`.
    #[arg(long, default_value = "tests/tls/ca.pem")]
    pub(crate) tls_ca: PathBuf,
    /// Offer permessage-deflate (no context takeover either way) and inflate what comes.
    #[arg(long)]
    pub(crate) deflate: bool,
    /// Pad bodies with JSON (varied numbers, repeated keys) instead of `x`: compression then
    /// gains what it would on real pushes.
    #[arg(long)]
    pub(crate) json_body: bool,
    /// Set from the URL: connect with TLS.
    #[arg(skip)]
    pub(crate) tls: bool,
}

impl Load {
    /// The topic of connection `i`.
    pub(crate) fn topic_of(&self, base: &str, i: usize) -> String {
        if self.topics <= 1 {
            base.to_string()
        } else {
            format!("{base}-{}", i % self.topics)
        }
    }
}

pub(crate) fn parse_sources(s: &str) -> Result<Vec<IpAddr>, String> {
    if let Some((a, b)) = s.split_once('-') {
        let a: Ipv4Addr = a.trim().parse().map_err(|e| format!("{a}: {e}"))?;
        let b: Ipv4Addr = b.trim().parse().map_err(|e| format!("{b}: {e}"))?;
        let (a, b) = (u32::from(a), u32::from(b));
        if b < a {
            return Err("source range is backwards".into());
        }
        return Ok((a..=b).map(|x| IpAddr::V4(Ipv4Addr::from(x))).collect());
    }
    s.split(',')
        .map(|p| p.trim().parse().map_err(|e| format!("{p}: {e}")))
        .collect()
}

#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) topic: String,
    pub(crate) project: String,
    /// `wss://`.
    pub(crate) tls: bool,
    /// Offer permessage-deflate in the upgrade.
    pub(crate) deflate: bool,
}

pub(crate) fn parse_url(url: &str) -> Result<Target, String> {
    let (tls, rest) = match url.strip_prefix("wss://") {
        Some(rest) => (true, rest),
        None => (
            false,
            url.strip_prefix("ws://")
                .ok_or("only ws:// and wss:// URLs are supported")?,
        ),
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or("no address")?;
    let path = if path.is_empty() { "/" } else { path }.to_string();
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    Ok(Target {
        addr,
        host: host.into(),
        topic: param("topic").ok_or("the URL needs a ?topic= to publish to")?,
        project: param("project").unwrap_or_else(|| "default".into()),
        path,
        tls,
        deflate: false,
    })
}

pub(crate) fn upgrade_request(t: &Target, path: &str, protocol: Option<&str>) -> Bytes {
    let mut proto = protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    if t.deflate {
        proto.push_str("Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover\r\n");
    }
    Bytes::from(format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{proto}\r\n",
        t.host
    ))
}

/// Raw-mode upgrades: connection i asks for its own topic (see `Load::topic_of`).
pub(crate) fn raw_proto(t: &Target, load: &Load) -> client::Proto {
    if load.topics <= 1 {
        let req = upgrade_request(t, &t.path, None);
        return client::Proto::Raw {
            request: Arc::new(move |_| req.clone()),
        };
    }
    let (t, load) = (t.clone(), load.clone());
    let needle = format!("topic={}", t.topic);
    client::Proto::Raw {
        request: Arc::new(move |i| {
            let path =
                t.path
                    .replacen(&needle, &format!("topic={}", load.topic_of(&t.topic, i)), 1);
            upgrade_request(&t, &path, None)
        }),
    }
}

/// The client TLS configuration for `wss://` targets: trusts `ca` only.
pub(crate) fn tls_client(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots
            .add(cert.map_err(|e| format!("{}: {e}", ca.display()))?)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
