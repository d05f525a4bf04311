//! A JSON Web Key Set (RFC 7517), as identity providers publish theirs (Keycloak, Auth0, Okta,
//! Spring Authorization Server): parsed from bytes into verification keys, each with the
//! algorithms it may check, and looked up by a token's `kid`. Fetching and refreshing the set
//! is the server's (`src/jwks.rs`); this is the pure part, fuzzed.

pub use jsonwebtoken::Algorithm;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};

/// One usable key of a set.
pub struct Key {
    /// Its `kid`, if it has one.
    pub kid: Option<String>,
    /// What it may verify: its `alg` when the set names one, else its family's algorithms.
    pub algs: &'static [Algorithm],
    decoding: DecodingKey,
}

impl Key {
    /// The verification key.
    pub fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// The keys of a set that can verify signatures.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
    /// Keys of the document that were left out (encryption keys, unknown types, bad values).
    pub skipped: usize,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids())
            .field("skipped", &self.skipped)
            .finish()
    }
}

const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

impl KeySet {
    /// Parses a JWKS document. A key this server cannot use is skipped and counted, not an
    /// error; a document that is not a JWKS at all is.
    pub fn parse(json: &[u8]) -> Result<KeySet, String> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut out = KeySet::default();
        for jwk in &set.keys {
            match usable(jwk) {
                Some(k) => out.keys.push(k),
                None => out.skipped += 1,
            }
        }
        Ok(out)
    }

    /// How many keys can verify.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No key can verify.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys' ids, in the document's order.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref()).collect()
    }

    /// Whether some key has id `kid` (whatever it may verify).
    pub fn holds(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The key for a token signed with `alg` under `kid`: the one with that id, or without an
    /// id in the token, the only key that may check `alg`.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Option<&Key> {
        let fits = |k: &&Key| k.algs.contains(&alg);
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .filter(fits),
            None => {
                let mut it = self.keys.iter().filter(fits);
                let first = it.next();
                first.filter(|_| it.next().is_none())
            }
        }
    }
}

fn usable(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let family: &'static [Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => return None,
        },
        // A shared secret has no place in a published set; nor has what this build cannot read.
        _ => return None,
    };
    let algs = match jwk.common.key_algorithm {
        None => family,
        Some(named) => {
            let one = family.iter().find(|a| same(**a, named))?;
            std::slice::from_ref(one)
        }
    };
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        algs,
        decoding,
    })
}

fn same(a: Algorithm, k: KeyAlgorithm) -> bool {
    format!("{a:?}") == format!("{k:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &str = r#"{"keys": [
        {"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256", "e": "AQAB",
         "n": "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw"},
        {"kty": "EC", "kid": "e1", "crv": "P-256",
         "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
         "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "e": "AQAB", "n": "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw"},
        {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"}
    ]}"#;

    #[test]
    fn signing_keys_are_kept_and_looked_up_by_kid_and_algorithm() {
        let set = KeySet::parse(SET.as_bytes()).unwrap();
        assert_eq!(set.kids(), ["r1", "e1"]);
        assert_eq!(set.skipped, 2, "the encryption key and the shared secret");
        assert!(set.select(Some("r1"), Algorithm::RS256).is_some());
        assert!(
            set.select(Some("r1"), Algorithm::PS256).is_none(),
            "its alg is named: RS256 only"
        );
        assert!(set.select(Some("e1"), Algorithm::ES256).is_some());
        assert!(set.select(Some("e1"), Algorithm::RS256).is_none());
        assert!(set.select(Some("nope"), Algorithm::RS256).is_none());
        // Without a kid, the only key that fits the algorithm.
        assert!(set.select(None, Algorithm::ES256).is_some());
    }

    #[test]
    fn what_is_not_a_key_set_is_refused() {
        assert!(KeySet::parse(b"{}").is_err());
        assert!(KeySet::parse(b"not json").is_err());
        assert!(KeySet::parse(br#"{"keys": []}"#).unwrap().is_empty());
    }
}
