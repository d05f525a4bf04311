//! Kernel TLS: after rustls finishes a handshake, the session keys go to the kernel
//! (`TCP_ULP "tls"`, `TLS_TX`/`TLS_RX`) so the socket takes plaintext again: sends stay one
//! shared encoded frame for every subscriber and the connection keeps no TLS state in the
//! process. Used only where the kernel offers it (probed at start-up); this module turns
//! rustls' extracted secrets into the kernel's `tls12_crypto_info_*` records.

use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use rustls::server::UnbufferedServerConnection;
use rustls::{ConnectionTrafficSecrets, ProtocolVersion};

use super::TlsError;

/// Whether this kernel has the TLS upper-layer protocol. The option is refused with ENOENT
/// when the module is absent; with it, an unconnected socket answers ENOTCONN instead.
pub fn available() -> bool {
    let Ok(s) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None) else {
        return false;
    };
    !matches!(
        setsockopt(&s, sockopt::TcpUlp::default(), b"tls"),
        Err(Errno::ENOENT | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP)
    )
}

/// One direction's kernel record: the key, the salt and IV split as the kernel wants them, and
/// the next record's sequence number.
pub fn crypto_info(
    version: ProtocolVersion,
    seq: u64,
    secrets: &ConnectionTrafficSecrets,
) -> Result<sockopt::TlsCryptoInfo, TlsError> {
    let version = match version {
        ProtocolVersion::TLSv1_2 => libc::TLS_1_2_VERSION,
        ProtocolVersion::TLSv1_3 => libc::TLS_1_3_VERSION,
        v => return Err(TlsError::Keys(format!("kTLS: no kernel support for {v:?}"))),
    };
    let rec_seq = seq.to_be_bytes();
    // rustls gives the 12-byte nonce base; GCM splits it into a 4-byte salt and an 8-byte IV.
    Ok(match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
            let (salt, iv) = iv.as_ref().split_at(4);
            sockopt::TlsCryptoInfo::Aes128Gcm(libc::tls12_crypto_info_aes_gcm_128 {
                info: libc::tls_crypto_info {
                    version,
                    cipher_type: libc::TLS_CIPHER_AES_GCM_128,
                },
                iv: array(iv)?,
                key: array(key.as_ref())?,
                salt: array(salt)?,
                rec_seq,
            })
        }
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
            let (salt, iv) = iv.as_ref().split_at(4);
            sockopt::TlsCryptoInfo::Aes256Gcm(libc::tls12_crypto_info_aes_gcm_256 {
                info: libc::tls_crypto_info {
                    version,
                    cipher_type: libc::TLS_CIPHER_AES_GCM_256,
                },
                iv: array(iv)?,
                key: array(key.as_ref())?,
                salt: array(salt)?,
                rec_seq,
            })
        }
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            sockopt::TlsCryptoInfo::Chacha20Poly1305(libc::tls12_crypto_info_chacha20_poly1305 {
                info: libc::tls_crypto_info {
                    version,
                    cipher_type: libc::TLS_CIPHER_CHACHA20_POLY1305,
                },
                iv: array(iv.as_ref())?,
                key: array(key.as_ref())?,
                salt: [],
                rec_seq,
            })
        }
        _ => {
            return Err(TlsError::Keys(
                "kTLS: cipher suite without kernel support".into(),
            ));
        }
    })
}

fn array<const N: usize>(b: &[u8]) -> Result<[u8; N], TlsError> {
    b.try_into().map_err(|_| {
        TlsError::Keys(format!(
            "kTLS: key material of {} bytes, wanted {N}",
            b.len()
        ))
    })
}

/// Both directions' kernel records for an established, idle session. rustls' own handle for
/// later key updates is dropped: a peer that updates its keys gets its connection closed by
/// the kernel (`EKEYEXPIRED`), which browsers do not provoke.
pub fn export(
    conn: UnbufferedServerConnection,
) -> Result<(sockopt::TlsCryptoInfo, sockopt::TlsCryptoInfo), TlsError> {
    let version = conn
        .protocol_version()
        .ok_or_else(|| TlsError::Keys("kTLS: handshake not complete".into()))?;
    let (secrets, _kernel) = conn.dangerous_into_kernel_connection()?;
    Ok((
        crypto_info(version, secrets.tx.0, &secrets.tx.1)?,
        crypto_info(version, secrets.rx.0, &secrets.rx.1)?,
    ))
}

/// Moves an established, idle session into the kernel. On error the socket is unusable for
/// TLS (the secrets are gone) and must be closed.
pub fn install(fd: &impl AsFd, conn: UnbufferedServerConnection) -> Result<(), TlsError> {
    let (tx, rx) = export(conn)?;
    setsockopt(fd, sockopt::TcpUlp::default(), b"tls")
        .map_err(|e| TlsError::Keys(format!("TCP_ULP: {e}")))?;
    setsockopt(fd, sockopt::TcpTlsTx, &tx).map_err(|e| TlsError::Keys(format!("TLS_TX: {e}")))?;
    setsockopt(fd, sockopt::TcpTlsRx, &rx).map_err(|e| TlsError::Keys(format!("TLS_RX: {e}")))?;
    Ok(())
}
