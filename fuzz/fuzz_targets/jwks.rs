//! JWKS documents as an identity provider (or whoever answers its URL) sends them: parsed into
//! keys or refused, never a panic, and every kept key can be looked up by its own `kid`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringcast::auth::jwks::{Algorithm, KeySet};

fuzz_target!(|data: &[u8]| {
    let Ok(set) = KeySet::parse(data) else {
        return;
    };
    for kid in set.kids() {
        for alg in [
            Algorithm::RS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ] {
            let _ = set.select(Some(kid), alg);
        }
    }
    let _ = set.select(None, Algorithm::RS256);
});
