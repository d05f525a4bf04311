//! The TLS session on arbitrary ciphertext, cut into arbitrary pieces: it must end every
//! hostile opening with a `Failure`, never a panic (the session turns a panic inside rustls
//! into a failure named "panicked", which this target refuses).
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ringcast::tls::{self, session::Session};

fn config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tls");
            tls::server_config(&dir.join("server.pem"), &dir.join("server.key"))
                .expect("the test certificate loads")
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    // Most inputs open like a TLS handshake record, so rustls gets past the first byte.
    let mut input = vec![0x16, 0x03, 0x01];
    input.extend_from_slice(rest);
    let mut s = Session::new(config(), true).expect("a session");
    let mut plain = Vec::new();
    for piece in input.chunks(usize::from(step).max(1)) {
        let mut piece = piece.to_vec();
        if let Err(f) = s.received(&mut piece, &mut plain) {
            assert!(!f.reason.contains("panicked"), "{}", f.reason);
            return;
        }
        while s.next_chunk().is_some() {}
    }
});
