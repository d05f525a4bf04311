//! The STOMP frame parser: never panics, never consumes more than it has, and what it parses
//! re-encodes to a frame that parses the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringcast::stomp::frame::{Limits, Parsed, parse};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_frame_bytes: 4096,
        max_headers: 16,
        max_header_bytes: 512,
    };
    let mut pos = 0;
    while pos < data.len() {
        match parse(&data[pos..], &limits) {
            Ok(Parsed::Frame(f, n)) => {
                assert!(n > 0 && pos + n <= data.len());
                pos += n;
                let again = f.encode();
                if let Ok(Parsed::Frame(g, _)) = parse(
                    &again,
                    &Limits {
                        max_frame_bytes: 1 << 20,
                        ..limits
                    },
                ) {
                    assert_eq!(f.command, g.command);
                    assert_eq!(f.body, g.body);
                }
            }
            Ok(Parsed::HeartBeat(n)) => {
                assert!(n > 0);
                pos += n;
            }
            Ok(Parsed::Partial) | Err(_) => break,
        }
    }
});
