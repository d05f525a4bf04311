//! Token verification on arbitrary tokens (header, claims, signature): errors, never panics,
//! and never accepts a token it did not sign.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let mut cfg = ringcast::config::Config::default();
    cfg.projects.insert(
        "p".into(),
        ringcast::config::Project {
            jwt_secret: Some("fuzz-secret".into()),
            ..Default::default()
        },
    );
    let auth = ringcast::auth::Auth::from_config(&cfg, std::sync::Arc::new(|| 1_800_000_000)).unwrap();
    if let Ok(user) = auth.verify("p", token) {
        // Only a correctly signed token can get here; the fuzzer cannot forge HMAC.
        panic!("accepted a forged token for {user:?}: {token}");
    }
});
