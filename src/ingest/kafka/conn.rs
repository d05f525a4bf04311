//! One connection to one Kafka broker: TLS if configured, versions agreed at open, SASL if
//! configured, then one request at a time (the consumer never pipelines; a broker answers in
//! order anyway).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringcast_proto::kafka::messages::{
    ApiKey, ApiVersionsRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use ringcast_proto::kafka::protocol::{Request, StrBytes};
use ringcast_proto::kafka::scram::{self, Mechanism, Scram};
use ringcast_proto::kafka::{self, KafkaError, Versions, check};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::config::Kafka as Config;
use crate::ingest::IngestError;

/// How long a connect may take.
const CONNECT: Duration = Duration::from_secs(5);
/// How long past its own wait an answer may take before the connection counts as broken.
const ANSWER: Duration = Duration::from_secs(10);

/// A plain or TLS byte stream to a broker.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The TLS client settings of a consumer: its brokers' CAs (`tls_ca`, else the system's).
pub type Tls = Arc<ClientConfig>;

/// The client settings for `cfg`, or None without `tls`; an unreadable CA file is an error
/// at start, not an outage retried forever.
pub fn tls(cfg: &Config) -> Result<Option<Tls>, String> {
    if !cfg.tls {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    match &cfg.tls_ca {
        Some(path) => {
            let certs: Vec<_> = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| format!("kafka tls_ca {path}: {e}"))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("kafka tls_ca {path}: no certificate in it"));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("kafka tls: no system CA certificates found; set tls_ca".into());
            }
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let cc = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("kafka tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(cc)))
}

/// A broker connection.
pub struct Conn {
    addr: String,
    stream: Box<dyn Io>,
    versions: Versions,
    correlation: i32,
    client_id: String,
}

fn io(addr: &str, op: &str) -> impl FnOnce(std::io::Error) -> IngestError {
    let op = format!("{op} {addr}");
    move |e| IngestError::Broker {
        op,
        reason: e.to_string(),
    }
}

fn kafka_err(addr: &str) -> impl FnOnce(KafkaError) -> IngestError {
    let op = format!("kafka {addr}");
    move |e| IngestError::Broker {
        op,
        reason: e.to_string(),
    }
}

impl Conn {
    /// Connects to `addr` (over TLS with `tls`), learns its versions and authenticates.
    pub async fn open(addr: &str, cfg: &Config, tls: Option<&Tls>) -> Result<Conn, IngestError> {
        let timed_out = || IngestError::Broker {
            op: format!("connect {addr}"),
            reason: "timed out".into(),
        };
        let stream = tokio::time::timeout(CONNECT, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out())?
            .map_err(io(addr, "connect"))?;
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Io> = match tls {
            None => Box::new(stream),
            Some(tls) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name =
                    ServerName::try_from(host.to_string()).map_err(|e| IngestError::Broker {
                        op: format!("tls {addr}"),
                        reason: e.to_string(),
                    })?;
                let shake = TlsConnector::from(tls.clone()).connect(name, stream);
                let tls = tokio::time::timeout(CONNECT, shake)
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(io(addr, "tls handshake with"))?;
                Box::new(tls)
            }
        };
        let mut conn = Conn {
            addr: addr.to_string(),
            stream,
            versions: Versions::default(),
            correlation: 0,
            client_id: cfg.client_id.clone(),
        };
        let answer = conn.exchange(&ApiVersionsRequest::default(), 0).await?;
        conn.versions = Versions::new(&answer).map_err(kafka_err(addr))?;
        if let (Some(user), Some(password)) = (&cfg.sasl_username, &cfg.sasl_password) {
            conn.authenticate(&cfg.sasl_mechanism, user, password)
                .await?;
        }
        Ok(conn)
    }

    /// Where it is connected, for logs and errors.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `req` at the highest version both sides speak and reads its answer.
    pub async fn call<R: Request>(&mut self, req: &R) -> Result<R::Response, IngestError> {
        let api = ApiKey::try_from(R::KEY).map_err(|()| IngestError::Broker {
            op: format!("kafka {}", self.addr),
            reason: format!("unknown API key {}", R::KEY),
        })?;
        let version = self.versions.pick(api).map_err(kafka_err(&self.addr))?;
        self.exchange(req, version).await
    }

    /// The version `call` would use for `api` (some fields exist only in some versions).
    pub fn version(&self, api: ApiKey) -> i16 {
        self.versions.pick(api).unwrap_or(-1)
    }

    async fn exchange<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, IngestError> {
        self.correlation = self.correlation.wrapping_add(1);
        let correlation = self.correlation;
        let wire = kafka::encode_request(req, version, correlation, &self.client_id)
            .map_err(kafka_err(&self.addr))?;
        let addr = self.addr.clone();
        let frame = tokio::time::timeout(ANSWER, async {
            self.stream
                .write_all(&wire)
                .await
                .map_err(io(&addr, "write"))?;
            let mut prefix = [0u8; 4];
            self.stream
                .read_exact(&mut prefix)
                .await
                .map_err(io(&addr, "read"))?;
            let len = kafka::frame_len(&prefix).map_err(kafka_err(&addr))?;
            let mut body = vec![0u8; len.unwrap_or(4) - 4];
            self.stream
                .read_exact(&mut body)
                .await
                .map_err(io(&addr, "read"))?;
            Ok::<_, IngestError>(body)
        })
        .await
        .map_err(|_| IngestError::Broker {
            op: format!("kafka {addr}"),
            reason: "no answer in time".into(),
        })??;
        kafka::decode_response::<R>(Bytes::from(frame), version, correlation)
            .map_err(kafka_err(&self.addr))
    }

    async fn authenticate(
        &mut self,
        mechanism: &str,
        user: &str,
        password: &str,
    ) -> Result<(), IngestError> {
        let addr = self.addr.clone();
        let shook = self
            .call(
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_string(mechanism.into())),
            )
            .await?;
        check("SaslHandshake", shook.error_code).map_err(kafka_err(&addr))?;
        let mech = match mechanism {
            "SCRAM-SHA-256" => Some(Mechanism::Sha256),
            "SCRAM-SHA-512" => Some(Mechanism::Sha512),
            _ => None,
        };
        let Some(mech) = mech else {
            self.sasl_step(scram::plain(user, password)).await?;
            return Ok(());
        };
        let nonce = nonce();
        let (mut s, first) = Scram::start(mech, user, password, &nonce);
        let server_first = self.sasl_step(first).await?;
        let last = s.answer(&server_first).map_err(kafka_err(&addr))?;
        let server_final = self.sasl_step(last).await?;
        s.finish(&server_final).map_err(kafka_err(&addr))
    }

    async fn sasl_step(&mut self, bytes: Vec<u8>) -> Result<Bytes, IngestError> {
        let r = self
            .call(&SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes)))
            .await?;
        if r.error_code != 0 {
            let why = r.error_message.map(|m| m.to_string()).unwrap_or_default();
            return Err(kafka_err(&self.addr)(KafkaError::Sasl(format!(
                "{} {why}",
                kafka::code_name(r.error_code)
            ))));
        }
        Ok(r.auth_bytes)
    }
}

/// A SCRAM client nonce: 24 random bytes, base64.
fn nonce() -> String {
    use base64::Engine;
    let mut b = [0u8; 24];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)
}
