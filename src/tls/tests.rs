//! The TLS session against a real rustls client, in memory: no socket, no ring. The test
//! certificate and CA are in `tests/tls` (see `gen.sh` there).

use crate::tls::TlsError;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::session::Session;
use super::{ktls, server_config};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

/// A server session; `kernel`: kept in rustls for the kTLS hand-over instead of moving TLS 1.3
/// sessions to `record::Records`.
fn server(kernel: bool) -> Session {
    let sc = server_config(&fixture("server.pem"), &fixture("server.key")).unwrap();
    Session::new(sc, !kernel).unwrap()
}

fn client_config(versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixture("ca.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cc = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cc)
}

fn client(versions: &[&'static rustls::SupportedProtocolVersion]) -> ClientConnection {
    ClientConnection::new(
        client_config(versions),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap()
}

/// A client and the server session joined in memory, like a socket pair.
struct Pair {
    client: ClientConnection,
    server: Session,
    /// Plaintext the server session handed to the core.
    plain: Vec<u8>,
    /// Feed the server this many bytes at a time.
    step: usize,
    /// Plaintext the client read.
    got: Vec<u8>,
}

impl Pair {
    fn new(client: ClientConnection, server: Session) -> Pair {
        Pair {
            client,
            server,
            plain: Vec::new(),
            step: usize::MAX,
            got: Vec::new(),
        }
    }

    /// Moves bytes both ways until neither side has anything to say.
    fn run(&mut self) {
        for _ in 0..64 {
            let mut wire = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut wire).unwrap();
            }
            let mut out = Vec::new();
            while let Some(c) = self.server.next_chunk() {
                out.extend_from_slice(&c.bytes);
            }
            if wire.is_empty() && out.is_empty() {
                return;
            }
            let step = self.step.min(wire.len().max(1));
            for piece in wire.chunks_mut(step) {
                self.server.received(piece, &mut self.plain).unwrap();
            }
            let mut rd = &out[..];
            while !rd.is_empty() {
                self.client.read_tls(&mut rd).unwrap();
                self.client.process_new_packets().unwrap();
                let _ = self.client.reader().read_to_end(&mut self.got);
            }
        }
        panic!("the pair never went quiet");
    }

    fn client_reads(&mut self) -> Vec<u8> {
        let _ = self.client.reader().read_to_end(&mut self.got);
        std::mem::take(&mut self.got)
    }
}

#[test]
fn handshake_then_data_both_ways_on_tls13_and_tls12() {
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let mut p = Pair::new(client(versions), server(false));
        p.run();
        assert!(p.server.established());
        assert!(!p.client.is_handshaking());
        assert_eq!(p.client.alpn_protocol(), Some(&b"http/1.1"[..]));
        p.client
            .writer()
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .unwrap();
        p.run();
        assert_eq!(p.plain, b"GET / HTTP/1.1\r\n\r\n");
        p.server
            .send(Bytes::from_static(b"xxHTTP/1.1 101"), 2)
            .unwrap();
        p.run();
        assert_eq!(p.client_reads(), b"HTTP/1.1 101");
        // Nothing kept between records: an idle session owns no buffers.
        assert!(p.server.idle());
    }
}

#[test]
fn a_client_hello_split_byte_by_byte_still_completes() {
    let mut p = Pair::new(client(&[&rustls::version::TLS13]), server(false));
    p.step = 1;
    p.run();
    assert!(p.server.established());
    p.client.writer().write_all(b"hello").unwrap();
    p.run();
    assert_eq!(p.plain, b"hello");
    assert!(p.server.idle());
}

#[test]
fn nothing_is_sent_before_the_handshake_ends() {
    let mut p = Pair::new(client(&[&rustls::version::TLS13]), server(false));
    assert!(
        p.server
            .send(Bytes::from_static(b"HTTP/1.1 503 busy\r\n\r\n"), 0)
            .is_err()
    );
    assert!(p.server.next_chunk().is_none());
    p.run();
    assert!(p.server.established());
}

#[test]
fn a_large_message_is_split_into_records_the_client_reassembles() {
    let mut p = Pair::new(client(&[&rustls::version::TLS13]), server(false));
    p.run();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    p.server.send(Bytes::from(big.clone()), 0).unwrap();
    p.run();
    assert_eq!(p.client_reads(), big);
}

#[test]
fn garbage_instead_of_a_client_hello_fails_with_an_alert() {
    let mut s = server(false);
    let mut junk = vec![0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5];
    let f = s.received(&mut junk, &mut Vec::new()).unwrap_err();
    assert!(!f.plain_http);
    let alert = f
        .reply
        .unwrap_or_else(|| panic!("an alert for {}", f.reason));
    assert_eq!(alert[0], 21, "alert record");
    let mut s = server(false);
    let f = s.received(&mut [0xff; 64], &mut Vec::new()).unwrap_err();
    assert!(!f.reason.is_empty());
}

#[test]
fn plain_http_on_the_tls_port_gets_a_readable_400() {
    let mut s = server(false);
    let mut req = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let f = s.received(&mut req, &mut Vec::new()).unwrap_err();
    assert!(f.plain_http);
    let reply = f.reply.unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    let text = std::str::from_utf8(&reply).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let declared: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(body.len(), declared);
    assert!(body.contains("wss://"));
}

#[test]
fn close_notify_reaches_the_client() {
    let mut p = Pair::new(client(&[&rustls::version::TLS13]), server(false));
    p.run();
    let alert = p.server.close_notify().unwrap();
    let mut rd = &alert[..];
    p.client.read_tls(&mut rd).unwrap();
    let state = p.client.process_new_packets().unwrap();
    assert!(state.peer_has_closed());
}

#[test]
fn the_kernel_gets_the_keys_the_client_uses() {
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let mut cc = (*client_config(versions)).clone();
        cc.enable_secret_extraction = true;
        let c = ClientConnection::new(Arc::new(cc), ServerName::try_from("localhost").unwrap())
            .unwrap();
        let mut p = Pair::new(c, server(true));
        p.run();
        p.client.writer().write_all(b"ping").unwrap();
        p.run();
        assert!(p.server.idle());
        let (tx, rx) = ktls::export(p.server.into_rustls().unwrap()).unwrap();
        let theirs = p.client.dangerous_extract_secrets().unwrap();
        // The server's sending keys are the client's receiving ones, and the other way.
        for (ours, (seq, secrets)) in [(tx, theirs.rx), (rx, theirs.tx)] {
            let (key, iv) = match secrets {
                rustls::ConnectionTrafficSecrets::Aes256Gcm { key, iv }
                | rustls::ConnectionTrafficSecrets::Aes128Gcm { key, iv }
                | rustls::ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                    (key.as_ref().to_vec(), iv.as_ref().to_vec())
                }
                _ => unreachable!(),
            };
            let want_version = if versions[0] == &rustls::version::TLS13 {
                libc::TLS_1_3_VERSION
            } else {
                libc::TLS_1_2_VERSION
            };
            match ours {
                nix::sys::socket::sockopt::TlsCryptoInfo::Aes256Gcm(i) => {
                    assert_eq!(i.info.version, want_version);
                    assert_eq!(i.info.cipher_type, libc::TLS_CIPHER_AES_GCM_256);
                    assert_eq!(&i.key[..], &key[..]);
                    assert_eq!(&i.salt[..], &iv[..4]);
                    assert_eq!(&i.iv[..], &iv[4..]);
                    assert_eq!(u64::from_be_bytes(i.rec_seq), seq);
                }
                nix::sys::socket::sockopt::TlsCryptoInfo::Aes128Gcm(i) => {
                    assert_eq!(i.info.version, want_version);
                    assert_eq!(&i.key[..], &key[..]);
                    assert_eq!(&i.salt[..], &iv[..4]);
                    assert_eq!(u64::from_be_bytes(i.rec_seq), seq);
                }
                other => panic!("unexpected suite {other:?}"),
            }
            assert!(seq >= 1, "records were exchanged before the hand-over");
        }
    }
}

#[test]
fn kernel_tls_is_probed_without_failing() {
    // This machine's kernel has no CONFIG_TLS; elsewhere it may. Either way the probe answers.
    let _ = ktls::available();
}

#[test]
fn bad_files_are_named_in_the_error() {
    let e = server_config(&fixture("missing.pem"), &fixture("server.key")).unwrap_err();
    assert!(matches!(e, TlsError::File { what: "cert", .. }), "{e}");
    assert!(e.to_string().contains("missing.pem"), "{e}");
    let e = server_config(&fixture("server.pem"), &fixture("gen.sh")).unwrap_err();
    assert!(matches!(e, TlsError::File { what: "key", .. }), "{e}");
    assert!(e.to_string().contains("gen.sh"), "{e}");
    let e = server_config(&fixture("server.pem"), &fixture("other.key")).unwrap_err();
    assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
    assert!(e.to_string().contains("does not fit"), "{e}");
}

#[test]
fn a_tls13_session_leaves_rustls_and_still_talks_both_ways() {
    let mut p = Pair::new(client(&[&rustls::version::TLS13]), server(false));
    p.run();
    assert!(p.server.compacted(), "TLS 1.3 moves to record::Records");
    for round in 0..3 {
        let msg = format!("ping {round}");
        p.client.writer().write_all(msg.as_bytes()).unwrap();
        p.run();
        assert_eq!(std::mem::take(&mut p.plain), msg.as_bytes());
        let big: Vec<u8> = (0..40_000u32).map(|i| (i * 7 + round) as u8).collect();
        p.server.send(Bytes::from(big.clone()), 0).unwrap();
        p.run();
        assert_eq!(p.client_reads(), big);
    }
    // The client's close_notify ends the stream; ours reaches the client.
    let alert = p.server.close_notify().unwrap();
    let mut rd = &alert[..];
    p.client.read_tls(&mut rd).unwrap();
    assert!(p.client.process_new_packets().unwrap().peer_has_closed());
    p.client.send_close_notify();
    let mut wire = Vec::new();
    while p.client.wants_write() {
        p.client.write_tls(&mut wire).unwrap();
    }
    assert!(
        p.server
            .received(&mut wire, &mut p.plain)
            .unwrap()
            .peer_closed
    );
}

#[test]
fn a_tls12_session_stays_in_rustls() {
    let mut p = Pair::new(client(&[&rustls::version::TLS12]), server(false));
    p.run();
    assert!(p.server.established() && !p.server.compacted());
}

#[test]
fn records_split_anywhere_are_reassembled_after_the_hand_over() {
    let mut p = Pair::new(client(&[&rustls::version::TLS13]), server(false));
    p.run();
    assert!(p.server.compacted());
    p.client.writer().write_all(&[b'a'; 20_000]).unwrap();
    p.client.writer().write_all(b"end").unwrap();
    let mut wire = Vec::new();
    while p.client.wants_write() {
        p.client.write_tls(&mut wire).unwrap();
    }
    for piece in wire.chunks_mut(1000) {
        p.server.received(piece, &mut p.plain).unwrap();
    }
    assert_eq!(p.plain.len(), 20_003);
    assert!(p.plain.ends_with(b"end"));
    assert!(p.server.idle());
}

#[test]
fn a_tampered_record_or_a_key_update_ends_the_session_with_an_alert_the_client_reads() {
    // A flipped bit: bad_record_mac.
    let mut p = Pair::new(client(&[&rustls::version::TLS13]), server(false));
    p.run();
    p.client.writer().write_all(b"hello").unwrap();
    let mut wire = Vec::new();
    while p.client.wants_write() {
        p.client.write_tls(&mut wire).unwrap();
    }
    let last = wire.len() - 1;
    wire[last] ^= 1;
    let f = p.server.received(&mut wire, &mut p.plain).unwrap_err();
    assert!(f.reason.contains("decrypt"), "{}", f.reason);
    let reply = f.reply.unwrap();
    let mut rd = &reply[..];
    p.client.read_tls(&mut rd).unwrap();
    let e = p.client.process_new_packets().unwrap_err();
    assert!(format!("{e:?}").contains("BadRecordMac"), "{e:?}");

    // A key update: this layer keeps no secret to follow it with, so the session ends.
    let mut p = Pair::new(client(&[&rustls::version::TLS13]), server(false));
    p.run();
    p.client.refresh_traffic_keys().unwrap();
    p.client.writer().write_all(b"after").unwrap();
    let mut wire = Vec::new();
    while p.client.wants_write() {
        p.client.write_tls(&mut wire).unwrap();
    }
    let f = p.server.received(&mut wire, &mut p.plain).unwrap_err();
    assert!(f.reason.contains("key update"), "{}", f.reason);
}

/// A TLS 1.3 client offering only `suite`.
fn client_with(suite: rustls::SupportedCipherSuite) -> ClientConnection {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixture("ca.pem")).unwrap())
        .unwrap();
    let cc = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ClientConnection::new(Arc::new(cc), ServerName::try_from("localhost").unwrap()).unwrap()
}

const TLS13_SUITES: [rustls::SupportedCipherSuite; 3] = [
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
];

#[test]
fn every_cipher_suite_round_trips_after_the_hand_over() {
    for suite in TLS13_SUITES {
        let mut p = Pair::new(client_with(suite), server(false));
        p.run();
        assert!(p.server.compacted());
        p.client.writer().write_all(b"up").unwrap();
        p.server.send(Bytes::from_static(b"down"), 0).unwrap();
        p.run();
        assert_eq!(p.plain, b"up");
        assert_eq!(p.client_reads(), b"down");
    }
}

#[test]
fn a_session_exported_mid_stream_goes_on_in_another_process() {
    for suite in TLS13_SUITES {
        let mut p = Pair::new(client_with(suite), server(false));
        p.run();
        p.client.writer().write_all(b"before").unwrap();
        p.server.send(Bytes::from_static(b"one"), 0).unwrap();
        p.run();
        assert_eq!(std::mem::take(&mut p.plain), b"before");
        assert_eq!(p.client_reads(), b"one");
        // Sealed and not written, and half a record read: both must survive the move.
        p.server.send(Bytes::from_static(b"queued"), 0).unwrap();
        p.server.send(Bytes::from(vec![7u8; 30_000]), 0).unwrap();
        p.client.writer().write_all(b"split record").unwrap();
        let mut wire = Vec::new();
        while p.client.wants_write() {
            p.client.write_tls(&mut wire).unwrap();
        }
        let (head, tail) = wire.split_at_mut(9);
        p.server.received(head, &mut p.plain).unwrap();
        assert!(p.plain.is_empty());
        let (moved, acks) = p.server.export().unwrap();
        assert_eq!(acks.len(), 2, "both sends count as done");
        let json = serde_json::to_string(&moved).unwrap();
        assert!(
            !format!("{moved:?}").contains("tx_key: ["),
            "keys stay out of logs"
        );
        let back: super::session::Moved = serde_json::from_str(&json).unwrap();
        assert_eq!(back, moved);
        p.server = Session::import(back).unwrap();
        p.server.received(tail, &mut p.plain).unwrap();
        assert_eq!(std::mem::take(&mut p.plain), b"split record");
        p.server.send(Bytes::from_static(b"after"), 0).unwrap();
        p.client.writer().write_all(b"later").unwrap();
        p.run();
        assert_eq!(p.plain, b"later");
        let mut want = b"queued".to_vec();
        want.extend_from_slice(&[7u8; 30_000]);
        want.extend_from_slice(b"after");
        assert_eq!(p.client_reads(), want);
    }
}

#[test]
fn a_tls12_session_does_not_move_but_can_say_goodbye() {
    let mut p = Pair::new(client(&[&rustls::version::TLS12]), server(false));
    p.run();
    assert!(p.server.export().is_none());
    let bytes = p.server.farewell(&[Bytes::from_static(b"bye")]).unwrap();
    let mut rd = &bytes[..];
    p.client.read_tls(&mut rd).unwrap();
    let state = p.client.process_new_packets().unwrap();
    assert!(state.peer_has_closed());
    assert_eq!(p.client_reads(), b"bye");
    // Nor does a session whose handshake is not over.
    let mut half = server(false);
    assert!(half.export().is_none() && half.farewell(&[]).is_none());
}
