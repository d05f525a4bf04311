//! The TLS 1.3 record layer a session moves to after its handshake (`tls::record`), on
//! arbitrary bytes and on records of its own cut anywhere or with a byte flipped: opening never
//! panics, what was sealed opens to the same bytes, and a flipped byte is refused.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringcast::tls::record::Records;
use rustls::ConnectionTrafficSecrets;
use rustls::crypto::cipher::{AeadKey, Iv};

fn secrets(chacha: bool) -> ConnectionTrafficSecrets {
    let (key, iv) = (AeadKey::from([7; 32]), Iv::new([9; 12]));
    if chacha {
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv }
    } else {
        ConnectionTrafficSecrets::Aes256Gcm { key, iv }
    }
}

fn pair(chacha: bool) -> Records {
    Records::new((0, secrets(chacha)), (0, secrets(chacha))).expect("records")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let chacha = mode & 1 == 1;
    let mut reader = pair(chacha);
    let mut plain = Vec::new();
    if mode & 2 == 0 {
        // Arbitrary bytes as if from the socket.
        let mut buf = rest.to_vec();
        let _ = reader.open(&mut buf, &mut plain);
        return;
    }
    // Our own records (the writer's sending key is the reader's receiving key).
    let mut writer = pair(chacha);
    let mut wire = Vec::new();
    writer.seal(rest, &mut wire);
    let flip =
        (mode & 4 == 4 && !wire.is_empty()).then(|| usize::from(mode >> 3) * 131 % wire.len());
    if let Some(i) = flip {
        wire[i] ^= 0x20;
    }
    let step = usize::from(mode >> 3).max(1) * 97;
    let mut pending = Vec::new();
    let mut failed = false;
    for piece in wire.chunks(step) {
        pending.extend_from_slice(piece);
        match reader.open(&mut pending, &mut plain) {
            Ok(used) => {
                pending.drain(..used);
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if flip.is_some() {
        assert!(failed || plain != rest, "a flipped byte went unnoticed");
    } else {
        assert!(!failed && pending.is_empty());
        assert_eq!(plain, rest);
    }
});
