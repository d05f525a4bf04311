//! WebSocket frames, fragmentation and UTF-8 after a valid upgrade: arbitrary client bytes fed
//! to an echo session in arbitrary-sized reads, and the frame decoder on its own.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringcast::endpoint::{Context, Event, Outputs, Session};

const UPGRADE: &[u8] = b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    // The bare decoder must never panic and never claim more bytes than it was given.
    let mut copy = data.to_vec();
    if let Ok(ringcast::ws::frame::Decoded::Frame(f)) =
        ringcast::ws::frame::decode(&mut copy, 1 << 16)
    {
        assert!(f.len <= data.len() && f.payload.end <= f.len);
    }
    let mut cfg = ringcast::config::Config::embedded();
    cfg.server.echo = true;
    cfg.limits.max_message_bytes = 4096;
    let auth = ringcast::auth::Auth::from_config(&cfg, std::sync::Arc::new(|| 1_800_000_000)).unwrap();
    let ctx = Context::new(cfg, auth);
    let mut s = Session::default();
    let mut out = Outputs::default();
    s.on_bytes(&mut UPGRADE.to_vec(), 0, &ctx, &mut out);
    assert!(out.events.contains(&Event::Upgraded));
    // The first byte picks the read size, so partial frames are exercised too.
    let (chunk, rest) = match data.split_first() {
        Some((c, r)) => ((*c as usize % 64) + 1, r),
        None => return,
    };
    let mut closed = false;
    for piece in rest.chunks(chunk) {
        out.clear();
        s.on_bytes(&mut piece.to_vec(), 0, &ctx, &mut out);
        assert!(
            !closed || out.is_empty(),
            "output after the connection closed"
        );
        closed |= out.closes();
        assert!(
            s.buffered() <= 2 * 4096 + 64 + chunk,
            "buffer beyond the limits"
        );
    }
});
