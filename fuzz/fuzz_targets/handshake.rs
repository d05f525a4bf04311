//! The HTTP upgrade parser and the router behind it, on arbitrary request bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringcast::ws::handshake::{self, Parse};

fuzz_target!(|data: &[u8]| {
    match handshake::parse(data, 8192) {
        Ok(Parse::Done { request, consumed }) => {
            assert!(consumed <= data.len());
            let _ = if let Ok(a) = &request.upgrade {
                handshake::accept_response(a, request.protocols.first().map(|s| s.as_str()))
            } else {
                Vec::new()
            };
            let ctx = ringcast_fuzz_ctx();
            let _ = ringcast::endpoint::route(&request, &ctx);
        }
        Ok(Parse::Partial) => {}
        Err(r) => {
            assert!((400..600).contains(&r.status));
            let _ = handshake::reject_response(&r);
        }
    }
});

fn ringcast_fuzz_ctx() -> ringcast::endpoint::Context {
    let mut cfg = ringcast::config::Config::embedded();
    cfg.server.echo = true;
    // Every topic keeps history, so `since=` positions go all the way through the router.
    cfg.projects.insert(
        "default".into(),
        ringcast::config::Project {
            history: Some(ringcast_proto::history::Config {
                topics: vec!["*".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let auth = ringcast::auth::Auth::from_config(&cfg, std::sync::Arc::new(|| 1_800_000_000)).expect("auth off needs no keys");
    ringcast::endpoint::Context::new(cfg, auth)
}
