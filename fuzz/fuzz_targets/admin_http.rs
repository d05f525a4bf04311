//! The admin socket and the network API: arbitrary request bytes through the HTTP parser and
//! every route, including the JSON bodies of /publish (single, array, NDJSON), /disconnect and
//! msg-center's routes, as an unrestricted and as a project-restricted caller. Bodies are read
//! with the framing rule every listener shares (`ringcast_proto::http`).
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ringcast::admin::api::{Api, Caller};
use ringcast::admin::http::{Parse, parse};

fuzz_target!(|data: &[u8]| {
    let api = Api {
        // No shards: publishes reach nobody, which is all the routes need.
        hub: Arc::new(ringcast::hub::Hub::new(0).unwrap().0),
        stats: Arc::new(ringcast::stats::Stats::new(1)),
        cluster: None,
        projects: std::sync::RwLock::new(None),
        revoked: Arc::default(),
    };
    match parse(data, 1 << 16) {
        Ok(Parse::Done(req)) => {
            let r = api.handle(&req);
            assert!((200..600).contains(&r.status));
            // A batch is capped: however many items the body holds, the answer stays small.
            assert!(r.body.len() < 1 << 18, "an answer of {} bytes", r.body.len());
            let limited = Caller {
                projects: Some(vec!["p".into()]),
            };
            let r = ringcast::admin::msgcenter::handle(&api, &req, &limited, req.len % 2 == 0)
                .unwrap_or_else(|| api.handle_as(&req, &limited));
            assert!((200..600).contains(&r.status));
            assert!(req.len <= data.len());
        }
        Ok(Parse::Partial) => {}
        Err(r) => assert!((400..500).contains(&r.status)),
    }
});
