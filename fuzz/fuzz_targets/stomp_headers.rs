//! STOMP header values the server writes (user names, publishers' headers, subscription ids):
//! whatever they hold, the encoded frame parses back with the same number of headers and the
//! same body, so no value can add a line, start another frame or end this one early.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ringcast::stomp::frame::{Command, Frame, Limits, Parsed, parse};

#[derive(Arbitrary, Debug)]
struct Input {
    command: u8,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

const COMMANDS: [Command; 4] = [
    Command::Connected,
    Command::Message,
    Command::Receipt,
    Command::Error,
];

fuzz_target!(|input: Input| {
    let command = COMMANDS[input.command as usize % COMMANDS.len()];
    let mut f = Frame::new(command);
    // `content-length` is the server's to write (computed from the body; a publisher's is
    // dropped: `SERVER_HEADERS`), so it is not an input. CONNECTED cannot escape, and every
    // header name in it is the server's own: only its values are arbitrary.
    const CONNECTED_NAMES: [&str; 4] = ["version", "heart-beat", "server", "user-name"];
    for (i, (k, v)) in input.headers.iter().take(16).enumerate() {
        let name = if command == Command::Connected {
            CONNECTED_NAMES[i % 4]
        } else {
            k.as_str()
        };
        if name != "content-length" {
            f = f.header(name, v.as_str());
        }
    }
    // Without content-length a body ends at its first NUL; that is the body's business.
    f.body = input.body.into_iter().filter(|&b| b != 0).collect();
    let bytes = f.encode();
    let limits = Limits {
        max_frame_bytes: 1 << 20,
        max_headers: 64,
        max_header_bytes: 1 << 20,
    };
    match parse(&bytes, &limits) {
        Ok(Parsed::Frame(g, n)) => {
            assert_eq!(n, bytes.len(), "one frame, all of it");
            assert_eq!(g.command, command);
            assert_eq!(
                g.headers.len(),
                f.headers.len(),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(g.body, f.body);
        }
        other => panic!("{other:?} for {:?}", String::from_utf8_lossy(&bytes)),
    }
});
