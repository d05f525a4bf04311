//! What arrives from Redis: any process that can reach it may PUBLISH on a cluster's channels,
//! so channel names and payloads are decoded as untrusted bytes. A decoded message must encode
//! back to the same bytes, and a channel that names a destination must name it exactly.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringcast::cluster::wire::{Control, Names, decode, decode_positioned, encode, encode_positioned};

fuzz_target!(|data: &[u8]| {
    let names = Names::new("ringcast");
    if let Some(m) = decode(data) {
        assert_eq!(encode(&m.origin, &m.headers, &m.body), data);
    }
    if let Some(dest) = names.dest(data) {
        assert_eq!(names.channel(&dest).as_bytes(), data);
    }
    if let Some((epoch, offset, m)) = decode_positioned(data) {
        let inner = encode(&m.origin, &m.headers, &m.body);
        assert_eq!(encode_positioned(&epoch, offset, &inner), data);
    }
    let _ = Control::decode(data);
});
