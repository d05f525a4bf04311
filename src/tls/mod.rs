//! `wss://` on the shards: the certificate and key (reloaded on SIGHUP without touching open
//! sessions), the choice between the kernel's TLS and rustls records, and the per-connection
//! session (`session`) the driver runs beside each socket. The shard core never sees TLS.

pub mod ktls;
pub mod record;
pub mod session;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config;

/// Why TLS could not be set up, or a session's keys could not leave rustls.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file that does not load.
    #[error("[tls] {what} {}: {reason}", .path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("[tls] key {} does not fit cert {}: {reason}", .key.display(), .cert.display())]
    Mismatch {
        key: PathBuf,
        cert: PathBuf,
        reason: String,
    },
    /// `[tls]` lost its files on reload.
    #[error("[tls] cert and key were removed: TLS stays on until a restart")]
    Removed,
    /// rustls refused the configuration or the session.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// A session's secrets do not fit the record layer (ours or the kernel's).
    #[error("TLS: {0}")]
    Keys(String),
}

fn file_error(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError {
    let path = path.to_path_buf();
    move |e| TlsError::File {
        what,
        path,
        reason: e.to_string(),
    }
}

/// The listener's TLS: the configuration new connections get, and which record path runs.
pub struct Tls {
    current: RwLock<Arc<ServerConfig>>,
    /// The kernel takes the keys after each handshake (kTLS); otherwise rustls seals records.
    pub kernel: bool,
}

impl Tls {
    /// `None` when `[tls]` names no certificate (plain `ws://`).
    pub fn from_config(cfg: &config::Tls) -> Result<Option<Arc<Tls>>, TlsError> {
        let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) else {
            return Ok(None);
        };
        let kernel = cfg.ktls && ktls::available();
        let current = server_config(cert, key)?;
        Ok(Some(Arc::new(Tls {
            current: RwLock::new(current),
            kernel,
        })))
    }

    /// The configuration for a connection accepted now.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Reads the certificate and key again (SIGHUP). Open sessions keep theirs; a file that
    /// fails to load leaves the running pair in place.
    pub fn reload(&self, cfg: &config::Tls) -> Result<(), TlsError> {
        let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) else {
            return Err(TlsError::Removed);
        };
        let fresh = server_config(cert, key)?;
        match self.current.write() {
            Ok(mut c) => *c = fresh,
            Err(p) => *p.into_inner() = fresh,
        }
        Ok(())
    }

    /// Which record path runs, for the start-up line.
    pub fn describe(&self) -> &'static str {
        if self.kernel {
            "kernel TLS (kTLS) after a rustls handshake"
        } else {
            "rustls records in the shard (this kernel has no kTLS)"
        }
    }
}

/// Loads a certificate chain and its key into a server configuration: TLS 1.2 and 1.3,
/// ALPN `http/1.1`. Errors name the file at fault.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(file_error("cert", cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(file_error("cert", cert))?;
    if chain.is_empty() {
        return Err(TlsError::File {
            what: "cert",
            path: cert.to_path_buf(),
            reason: "no certificate in the file".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(file_error("key", key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsError::Mismatch {
            key: key.to_path_buf(),
            cert: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    // After a handshake the keys leave rustls: for the kernel (kTLS), or for `record`.
    sc.enable_secret_extraction = true;
    Ok(Arc::new(sc))
}

#[cfg(test)]
mod tests;
