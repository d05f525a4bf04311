//! SockJS's parsers on arbitrary bytes: the client's JSON messages (`xhr_send` bodies and
//! SockJS-over-WebSocket messages), request bodies by length or in chunks, paths under a
//! prefix, `jsonp_send` bodies and callbacks; and what the server writes back must read as the
//! same strings, with no message able to end htmlfile's script element.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringcast::sockjs::{self, http};

fuzz_target!(|data: &[u8]| {
    if let Ok(msgs) = sockjs::decode(data) {
        // What we write for these strings, a JSON parser reads back unchanged.
        let frame = sockjs::messages(msgs.iter().map(|m| m.as_bytes()));
        let back: Vec<String> = serde_json::from_slice(&frame[1..]).expect("our frame is JSON");
        assert_eq!(back, msgs);
        let (merged, taken) = http::merge(&[frame.clone().into(), frame.into()]);
        assert_eq!(taken, 2);
        let twice: Vec<String> =
            serde_json::from_slice(&merged[1..]).expect("merged frame is JSON");
        assert_eq!(twice.len(), 2 * msgs.len());
    }
    let max = 1024;
    for chunked in [false, true] {
        match http::read_body(data, data.len() / 2, chunked, max) {
            Ok(Some((body, used))) => {
                assert!(body.len() <= max && used <= data.len());
            }
            Ok(None) => {}
            Err(r) => assert!(r.status == 400 || r.status == 413),
        }
    }
    // jsonp_send bodies, form-encoded or plain, read as xhr_send's are.
    for form in [false, true] {
        if let Ok(msgs) = http::jsonp_messages(data, form) {
            assert!(msgs.iter().map(String::len).sum::<usize>() <= data.len() * 4);
        }
    }
    if let Ok(path) = std::str::from_utf8(data) {
        let _ = sockjs::match_path("/ws", path);
        // A callback that passes may only hold what cannot break out of a script.
        if let Ok(c) = http::callback(Some(path)) {
            assert!(c.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        }
        // Every frame written on every transport is one chunk, and htmlfile's cannot close
        // its script element.
        let t = http::Transport::HtmlFile.frame(path.as_bytes(), true);
        assert_eq!(t.windows(9).filter(|w| w == b"</script>").count(), 1);
    }
});
