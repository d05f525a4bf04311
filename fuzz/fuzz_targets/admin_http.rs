//! The admin socket: arbitrary request bytes through the HTTP parser and every route,
//! including the JSON bodies of /publish and /disconnect.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ringcast::admin::api::Api;
use ringcast::admin::http::{Parse, parse};

fuzz_target!(|data: &[u8]| {
    let api = Api {
        // No shards: publishes reach nobody, which is all the routes need.
        hub: Arc::new(ringcast::hub::Hub::new(0).unwrap().0),
        stats: Arc::new(ringcast::stats::Stats::new(1)),
        cluster: None,
    };
    match parse(data, 1 << 16) {
        Ok(Parse::Done(req)) => {
            let r = api.handle(&req);
            assert!((200..600).contains(&r.status));
        }
        Ok(Parse::Partial) => {}
        Err(r) => assert!((400..500).contains(&r.status)),
    }
});
