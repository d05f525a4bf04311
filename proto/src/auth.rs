//! JWT authentication per project: keys from the config, the algorithm pinned per key, `exp`
//! and `nbf` checked with a small leeway, the user taken from a configurable claim.
//!
//! Keys are loaded once (PEM files read at start-up and on reload) and shared read-only by every
//! shard, so verifying a token is a pure function of the token, the project and the time, which
//! the caller's `Clock` gives: this layer reads no clock of its own.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::access::{Grants, Policy};
use crate::config::{Config, Project};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_S: u64 = 5;

pub mod jwks;
pub mod revoked;

/// What tells a project's tokens from forgeries: a key pinned in the config, a published key
/// set (JWKS), or both (a token naming a `kid` is checked against the set).
struct ProjectKeys {
    alg: Algorithm,
    /// The key of the configuration, when it has one.
    decoding: Option<DecodingKey>,
    /// The project reads its keys from a JWKS (`jwks_url`, `jwks_file`).
    uses_jwks: bool,
    /// The set as last fetched (none before the first fetch succeeds).
    jwks: Option<Arc<jwks::KeySet>>,
    /// `iss` and `aud` a token must carry, when configured.
    issuer: Option<String>,
    audience: Option<String>,
    encoding: Option<EncodingKey>,
    /// The claim listing the topics a token grants, read when a policy is `claim`.
    channels_claim: Option<String>,
    /// The claim that must name the project, if the project binds its tokens to itself.
    project_claim: Option<String>,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The user it names.
    pub user: String,
    /// When it expires (Unix seconds).
    pub exp: u64,
    /// The topics it grants, when the project reads a channels claim.
    pub grants: Option<Grants>,
}

/// Where tokens' times are judged (`exp`, `nbf`, a minted token's `iat`): seconds since the
/// Unix epoch. The server passes the system clock; tests and fuzzers pass a fixed one.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Called with a project's name when one of its tokens names a key its set lacks.
pub type KidHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Every project's keys, and how a token is read.
pub struct Auth {
    /// Tokens are required.
    pub enabled: bool,
    user_claim: String,
    projects: HashMap<String, ProjectKeys>,
    clock: Clock,
    /// Told the project whenever a token names a `kid` its set lacks (the set may have
    /// rotated: the server refetches it, at a bounded rate).
    unknown_kid: Option<KidHook>,
    /// The node's revocations (`POST /revoke`), shared by every context.
    revoked: Option<Arc<revoked::Revoked>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Auth")
            .field("enabled", &self.enabled)
            .field("user_claim", &self.user_claim)
            .field("projects", &self.projects.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Auth {
    /// Loads every project's keys; a project whose key cannot be read is a start-up error.
    /// Token times are judged on `clock`.
    pub fn from_config(cfg: &Config, clock: Clock) -> Result<Auth, String> {
        let mut projects = HashMap::new();
        for (name, p) in &cfg.projects {
            if let Some(keys) = load_keys(p).map_err(|e| format!("project {name}: {e}"))? {
                projects.insert(name.clone(), keys);
            }
        }
        if cfg.auth.enabled && projects.is_empty() {
            return Err(
                "authentication is on but no [projects.NAME] has a key: add one, or run with --no-auth"
                    .into(),
            );
        }
        Ok(Auth {
            enabled: cfg.auth.enabled,
            user_claim: cfg.auth.user_claim.clone(),
            projects,
            clock,
            unknown_kid: None,
            revoked: None,
        })
    }

    /// Uses `set` for `project`'s tokens from now on (a project without `jwks_*` ignores it).
    pub fn set_jwks(&mut self, project: &str, set: Arc<jwks::KeySet>) {
        if let Some(k) = self.projects.get_mut(project).filter(|k| k.uses_jwks) {
            k.jwks = Some(set);
        }
    }

    /// Refuses the tokens `revoked` holds.
    pub fn with_revoked(&mut self, revoked: Arc<revoked::Revoked>) {
        self.revoked = Some(revoked);
    }

    /// Calls `hook` with the project when a token names a key its set does not hold.
    pub fn on_unknown_kid(&mut self, hook: KidHook) {
        self.unknown_kid = Some(hook);
    }

    /// Verifies `token` for `project`; returns what it says, or why it was refused. The
    /// reason is ours (it reaches clients in ERROR frames and HTTP bodies), never the JWT
    /// library's internal names.
    pub fn verify(&self, project: &str, token: &str) -> Result<Verified, TokenError> {
        let keys = self
            .projects
            .get(project)
            .ok_or_else(|| TokenError::UnknownProject(project.to_string()))?;
        // RFC 7515 §4.1.11: a token that names critical extensions this server does not
        // implement (it implements none) must be refused, whatever its signature.
        let header = jsonwebtoken::decode_header(token).map_err(|e| refusal(e.kind()))?;
        if let Some(crit) = header.crit {
            return Err(TokenError::Critical(crit));
        }
        let (alg, decoding) = self.key_for(project, keys, &header)?;
        let mut v = Validation::new(alg);
        // The times are checked below, on the injected clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        if let Some(iss) = &keys.issuer {
            v.set_issuer(&[iss]);
        }
        if let Some(aud) = &keys.audience {
            v.set_audience(&[aud]);
            v.validate_aud = true;
        }
        v.required_spec_claims = ["exp".to_string()].into();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, decoding, &v)
            .map_err(|e| refusal(e.kind()))?;
        let exp = self.check_times(&data.claims)?;
        let user = match data.claims.get(&self.user_claim) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(TokenError::MissingClaim(self.user_claim.clone())),
        };
        // The user name becomes a STOMP header, a hub key and a log field: it must not be
        // able to smuggle a line break (or any control character) into any of them.
        if !crate::names::valid(&user) {
            return Err(TokenError::InvalidUser(self.user_claim.clone()));
        }
        if let Some(r) = self.revoked.as_ref().filter(|r| !r.is_empty()) {
            let iat = data.claims.get("iat").and_then(Value::as_u64);
            let jti = data.claims.get("jti").and_then(Value::as_str);
            if r.refuses(project, &user, iat, jti, (self.clock)()) {
                return Err(TokenError::Revoked);
            }
        }
        if let Some(claim) = &keys.project_claim
            && data.claims.get(claim).and_then(Value::as_str) != Some(project)
        {
            return Err(TokenError::OtherProject(claim.clone(), project.to_string()));
        }
        let grants = match &keys.channels_claim {
            None => None,
            Some(claim) => Some(match data.claims.get(claim) {
                None => Grants::default(),
                Some(Value::Array(items)) => Grants::new(
                    items
                        .iter()
                        .map(|v| v.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| TokenError::ClaimType(claim.clone()))?,
                ),
                Some(_) => return Err(TokenError::ClaimType(claim.clone())),
            }),
        };
        Ok(Verified { user, exp, grants })
    }

    /// The key and algorithm a token is checked with: from the project's set when the token
    /// names a `kid` or the project has no pinned key, else the pinned one.
    fn key_for<'a>(
        &self,
        project: &str,
        keys: &'a ProjectKeys,
        header: &Header,
    ) -> Result<(Algorithm, &'a DecodingKey), TokenError> {
        let pinned = keys.decoding.as_ref();
        if keys.uses_jwks && (header.kid.is_some() || pinned.is_none()) {
            let set = keys.jwks.as_ref().ok_or(TokenError::NoKeySet)?;
            return match set.select(header.kid.as_deref(), header.alg) {
                Some(k) => Ok((header.alg, k.decoding())),
                None => {
                    if let (Some(kid), Some(hook)) = (&header.kid, &self.unknown_kid)
                        && !set.holds(kid)
                    {
                        hook(project);
                    }
                    Err(TokenError::UnknownKey(
                        header.kid.clone().unwrap_or_default(),
                    ))
                }
            };
        }
        pinned.map(|d| (keys.alg, d)).ok_or(TokenError::NoKeySet)
    }

    /// `exp` passed or `nbf` not reached (each with `LEEWAY_S` of skew) refuses the token;
    /// returns `exp`.
    fn check_times(&self, claims: &Map<String, Value>) -> Result<u64, TokenError> {
        let time = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| TokenError::ClaimType(name.to_string())),
        };
        let now = (self.clock)();
        let exp = time("exp")?.ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        if exp.saturating_add(LEEWAY_S) < now {
            return Err(TokenError::Expired);
        }
        if time("nbf")?.is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_S)) {
            return Err(TokenError::NotYetValid);
        }
        Ok(exp)
    }

    /// Warnings for HS256 secrets anyone could guess: a placeholder left in (`CHANGE-ME`, as
    /// the installed sample has) or fewer than 32 bytes (RFC 7518 §3.2 wants at least the
    /// hash's 256 bits). Empty with authentication off, where no token is checked.
    pub fn weak_secrets(cfg: &Config) -> Vec<String> {
        if !cfg.auth.enabled {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (name, p) in &cfg.projects {
            let Some(secret) = p.jwt_secret.as_deref() else {
                continue;
            };
            if p.jwt_alg.as_deref().unwrap_or("HS256") != "HS256" {
                continue;
            }
            if secret.to_ascii_uppercase().contains("CHANGE-ME") {
                out.push(format!(
                    "projects.{name}.jwt_secret is still the placeholder: set a long random secret (e.g. `openssl rand -hex 32`)"
                ));
            } else if secret.len() < 32 {
                out.push(format!(
                    "projects.{name}.jwt_secret has {} bytes: an HS256 secret needs at least 32 to resist guessing",
                    secret.len()
                ));
            }
        }
        out
    }

    /// Pairs of projects that share a key: a token of one then opens the other.
    pub fn shared_keys(cfg: &Config) -> Vec<(String, String)> {
        let key_of = |p: &Project| -> Option<Vec<u8>> {
            match p.jwt_alg.as_deref().unwrap_or("HS256") {
                "HS256" => p.jwt_secret.as_ref().map(|s| s.as_bytes().to_vec()),
                _ => p.jwt_public_key.as_ref().map(|f| {
                    std::fs::read(f).unwrap_or_else(|_| f.as_os_str().as_encoded_bytes().to_vec())
                }),
            }
        };
        let keyed: Vec<(&String, Vec<u8>)> = cfg
            .projects
            .iter()
            .filter_map(|(n, p)| Some((n, key_of(p)?)))
            .collect();
        let mut pairs = Vec::new();
        for (i, (a, ka)) in keyed.iter().enumerate() {
            for (b, kb) in &keyed[i + 1..] {
                if ka == kb {
                    pairs.push(((*a).clone(), (*b).clone()));
                }
            }
        }
        pairs
    }

    /// Mints a token for `user` in `project`, valid for `ttl_s` seconds.
    pub fn mint(&self, project: &str, user: &str, ttl_s: u64) -> Result<String, String> {
        self.mint_granting(project, user, ttl_s, None)
    }

    /// Mints a token as `mint` does, granting `channels` (in the project's channels claim)
    /// when given; names the project when the project binds tokens to itself.
    pub fn mint_granting(
        &self,
        project: &str,
        user: &str,
        ttl_s: u64,
        channels: Option<&[String]>,
    ) -> Result<String, String> {
        let keys = self
            .projects
            .get(project)
            .ok_or_else(|| {
                let mut known: Vec<&str> = self.projects.keys().map(|k| k.as_ref()).collect();
                known.sort_unstable();
                format!(
                    "project {project:?} has no key in the config (configured: {}): pass --project NAME",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )
            })?;
        let enc = keys.encoding.as_ref().ok_or_else(|| {
            format!("project {project:?} has no jwt_private_key (or jwt_secret) to sign with")
        })?;
        let now = (self.clock)();
        let mut claims = Map::new();
        claims.insert(self.user_claim.clone(), Value::String(user.into()));
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + ttl_s).into());
        if let Some(c) = &keys.project_claim {
            claims.insert(c.clone(), project.into());
        }
        if let Some(list) = channels {
            let claim = keys.channels_claim.as_deref().unwrap_or("channels");
            claims.insert(claim.into(), list.to_vec().into());
        }
        jsonwebtoken::encode(&Header::new(keys.alg), &claims, enc).map_err(|e| e.to_string())
    }
}

/// Why a token was refused, in words a client developer can act on (it reaches clients in the
/// ERROR frame's body or the 401's). Never the JWT library's internal names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `[projects.NAME]` with a key for this project.
    // Clients see this: it names no configured project (tenants stay private), but says how
    // a project is chosen, since the usual cause is a CONNECT without projectId.
    #[error(
        "unknown project {0:?}: name your project in the projectId header (STOMP) or ?project= (raw)"
    )]
    UnknownProject(String),
    /// Past its `exp` (with the leeway).
    #[error("token expired")]
    Expired,
    /// Before its `nbf`.
    #[error("token not valid yet (nbf is in the future)")]
    NotYetValid,
    /// Signed with another key.
    #[error("token signature does not verify with this project's key")]
    BadSignature,
    /// Signed with another algorithm than the project's pinned one.
    #[error("token algorithm is not the one this project accepts")]
    WrongAlgorithm,
    /// A required claim (`exp`, or the user claim) is missing.
    #[error("token has no {0:?} claim")]
    MissingClaim(String),
    /// A claim of the wrong JSON type.
    #[error("token claim {0:?} has the wrong type")]
    ClaimType(String),
    /// RFC 7515 `crit`: extensions this server does not implement.
    #[error("token has critical header parameters this server does not understand: {0:?}")]
    Critical(Vec<String>),
    /// The user claim is not a valid name (empty, too long, or with control characters).
    #[error(
        "the token's {0:?} claim is not a valid user name (1–256 bytes, no control characters)"
    )]
    InvalidUser(String),
    /// Not a signed JWT at all.
    #[error("malformed token: not a signed JWT (header.payload.signature, base64url JSON)")]
    Malformed,
    /// Revoked (`POST /revoke`): by its user and issue time, or by its id.
    #[error("token revoked")]
    Revoked,
    /// A JWKS project: the token's `kid` (and algorithm) matches no key of the set.
    #[error("token key {0:?} is not in the project's key set")]
    UnknownKey(String),
    /// A JWKS project whose set has not been fetched yet.
    #[error("the project's key set is not available yet")]
    NoKeySet,
    /// `iss` or `aud` is not the project's.
    #[error("token issuer or audience is not this project's")]
    WrongIssuer,
    /// The project binds tokens to itself and this one names another (or none).
    #[error("the token's {0:?} claim does not name project {1:?}")]
    OtherProject(String, String),
}

fn refusal(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => TokenError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" || c == "aud" => TokenError::WrongIssuer,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => TokenError::WrongAlgorithm,
        ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => TokenError::ClaimType(c.clone()),
        _ => TokenError::Malformed,
    }
}

fn load_keys(p: &Project) -> Result<Option<ProjectKeys>, String> {
    let alg = match p.jwt_alg.as_deref().unwrap_or("HS256") {
        "HS256" => Algorithm::HS256,
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        other => return Err(format!("jwt_alg {other:?}: use HS256, RS256 or ES256")),
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
    };
    let keys = match alg {
        Algorithm::HS256 => {
            let Some(secret) = &p.jwt_secret else {
                return Ok(jwks_only(p, alg));
            };
            ProjectKeys {
                alg,
                decoding: Some(DecodingKey::from_secret(secret.as_bytes())),
                encoding: Some(EncodingKey::from_secret(secret.as_bytes())),
                ..ProjectKeys::none(alg)
            }
        }
        _ => {
            let Some(public) = &p.jwt_public_key else {
                return Ok(jwks_only(p, alg));
            };
            let pem = read(public)?;
            let decoding = if alg == Algorithm::RS256 {
                DecodingKey::from_rsa_pem(&pem)
            } else {
                DecodingKey::from_ec_pem(&pem)
            }
            .map_err(|e| format!("{}: {e}", public.display()))?;
            let encoding = match &p.jwt_private_key {
                Some(path) => {
                    let pem = read(path)?;
                    Some(
                        if alg == Algorithm::RS256 {
                            EncodingKey::from_rsa_pem(&pem)
                        } else {
                            EncodingKey::from_ec_pem(&pem)
                        }
                        .map_err(|e| format!("{}: {e}", path.display()))?,
                    )
                }
                None => None,
            };
            ProjectKeys {
                alg,
                decoding: Some(decoding),
                encoding,
                ..ProjectKeys::none(alg)
            }
        }
    };
    Ok(Some(with_claims(p, keys)))
}

/// A project whose keys all come from its JWKS, or `None` if it has no key at all.
fn jwks_only(p: &Project, alg: Algorithm) -> Option<ProjectKeys> {
    p.uses_jwks()
        .then(|| with_claims(p, ProjectKeys::none(alg)))
}

/// The claims and checks every kind of key shares.
fn with_claims(p: &Project, keys: ProjectKeys) -> ProjectKeys {
    let reads_claim = p.subscribe == Policy::Claim || p.publish_policy() == Policy::Claim;
    ProjectKeys {
        channels_claim: reads_claim.then(|| p.channels_claim().to_string()),
        project_claim: p.project_claim.clone(),
        uses_jwks: p.uses_jwks(),
        issuer: p.issuer.clone(),
        audience: p.audience.clone(),
        ..keys
    }
}

impl ProjectKeys {
    fn none(alg: Algorithm) -> ProjectKeys {
        ProjectKeys {
            alg,
            decoding: None,
            uses_jwks: false,
            jwks: None,
            issuer: None,
            audience: None,
            encoding: None,
            channels_claim: None,
            project_claim: None,
        }
    }
}

/// The real time, for this crate's tests (which mint tokens against it with `jsonwebtoken`).
#[cfg(test)]
pub(crate) fn test_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn auth(claim: &str) -> Auth {
        let mut c = Config::default();
        c.auth.user_claim = claim.into();
        c.projects.insert(
            "demo".into(),
            Project {
                jwt_secret: Some("s3cret".into()),
                ..Default::default()
            },
        );
        c.projects.insert(
            "other".into(),
            Project {
                jwt_secret: Some("different".into()),
                ..Default::default()
            },
        );
        Auth::from_config(&c, test_clock()).unwrap()
    }

    #[test]
    fn mint_then_verify() {
        let a = auth("userName");
        let t = a.mint("demo", "alice", 60).unwrap();
        assert_eq!(a.verify("demo", &t).unwrap().user, "alice");
        // The same token is no good in another project (other key).
        assert_eq!(a.verify("other", &t).unwrap_err(), TokenError::BadSignature);
        assert!(
            a.verify("nope", &t)
                .unwrap_err()
                .to_string()
                .contains("unknown project")
        );
    }

    #[test]
    fn refusals() {
        let a = auth("sub");
        let expired = {
            let mut claims = Map::new();
            claims.insert("sub".into(), "bob".into());
            claims.insert("exp".into(), 1000.into());
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(b"s3cret"),
            )
            .unwrap()
        };
        assert_eq!(a.verify("demo", &expired).unwrap_err(), TokenError::Expired);
        assert_eq!(TokenError::Expired.to_string(), "token expired");
        // alg: none, unsigned.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJib2IiLCJleHAiOjk5OTk5OTk5OTl9.";
        assert!(a.verify("demo", none).is_err());
        assert_eq!(a.verify("demo", "garbage"), Err(TokenError::Malformed));
    }

    fn signed(header: Header, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"s3cret")).unwrap()
    }

    #[test]
    fn a_critical_extension_is_refused() {
        let a = auth("sub");
        let mut h = Header::new(Algorithm::HS256);
        h.crit = Some(vec!["x-unknown".into()]);
        let t = signed(
            h,
            serde_json::json!({"sub": "bob", "exp": 9_999_999_999u64}),
        );
        let e = a.verify("demo", &t).unwrap_err().to_string();
        assert!(
            e.contains("critical header") && e.contains("x-unknown"),
            "{e}"
        );
    }

    #[test]
    fn a_user_claim_with_control_characters_is_refused() {
        let a = auth("sub");
        for bad in ["bob\nMESSAGE", "nul\0", "", &"x".repeat(300)] {
            let t = signed(
                Header::new(Algorithm::HS256),
                serde_json::json!({"sub": bad, "exp": 9_999_999_999u64}),
            );
            let e = a.verify("demo", &t).unwrap_err().to_string();
            assert!(e.contains("not a valid user name"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn errors_never_name_library_internals() {
        let a = auth("sub");
        let wrong_alg = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &serde_json::json!({"sub": "bob", "exp": 9_999_999_999u64}),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        for t in [wrong_alg.as_str(), "a.b.c", "garbage", "e30.e30."] {
            let e = a.verify("demo", t).unwrap_err().to_string();
            assert!(!e.contains("Invalid") && !e.contains("Error"), "{t}: {e}");
        }
    }

    #[test]
    fn projects_sharing_a_secret_are_found() {
        let mut c = Config::default();
        for (n, k) in [("a", "same"), ("b", "other"), ("c", "same")] {
            c.projects.insert(
                n.into(),
                Project {
                    jwt_secret: Some(k.into()),
                    ..Default::default()
                },
            );
        }
        assert_eq!(Auth::shared_keys(&c), [("a".to_string(), "c".to_string())]);
    }

    #[test]
    fn auth_on_without_keys_is_a_startup_error() {
        let c = Config::default();
        assert!(
            Auth::from_config(&c, test_clock())
                .unwrap_err()
                .contains("--no-auth")
        );
    }

    #[test]
    fn a_shared_key_opens_only_the_project_its_token_names() {
        let mut c = Config::default();
        for n in ["a", "b"] {
            c.projects.insert(
                n.into(),
                Project {
                    jwt_secret: Some("shared".into()),
                    project_claim: Some("projectId".into()),
                    subscribe: Policy::Claim,
                    ..Default::default()
                },
            );
        }
        let auth = Auth::from_config(&c, test_clock()).unwrap();
        let grants = ["news.*".to_string()];
        let t = auth.mint_granting("a", "u", 60, Some(&grants)).unwrap();
        let v = auth.verify("a", &t).unwrap();
        assert!(
            v.grants
                .as_ref()
                .is_some_and(|g| g.covers("news.eu") && !g.covers("x"))
        );
        assert!(v.exp > 0);
        assert_eq!(
            auth.verify("b", &t).unwrap_err().to_string(),
            "the token's \"projectId\" claim does not name project \"b\""
        );
        // A channels claim that is not a list of strings is refused, not ignored.
        let bad = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "u", "exp": v.exp, "projectId": "a", "channels": "news"}),
            &EncodingKey::from_secret(b"shared"),
        )
        .unwrap();
        assert_eq!(
            auth.verify("a", &bad).unwrap_err(),
            TokenError::ClaimType("channels".into())
        );
    }

    #[test]
    fn times_are_judged_on_the_injected_clock() {
        let now = Arc::new(std::sync::atomic::AtomicU64::new(1_000_000));
        let clock = now.clone();
        let mut c = Config::default();
        c.projects.insert(
            "demo".into(),
            Project {
                jwt_secret: Some("s3cret".into()),
                ..Default::default()
            },
        );
        let a = Auth::from_config(&c, Arc::new(move || clock.load(Relaxed))).unwrap();
        let t = a.mint("demo", "alice", 60).unwrap();
        let at = |s: u64| {
            now.store(s, Relaxed);
            a.verify("demo", &t)
        };
        assert_eq!(at(1_000_060).unwrap().exp, 1_000_060);
        assert!(at(1_000_065).is_ok(), "within the leeway");
        assert_eq!(at(1_000_066).unwrap_err(), TokenError::Expired);
        let nbf = {
            let mut claims = Map::new();
            claims.insert("sub".into(), "bob".into());
            claims.insert("exp".into(), 2_000_000.into());
            claims.insert("nbf".into(), 1_500_000.into());
            let key = EncodingKey::from_secret(b"s3cret");
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        };
        let b = |s: u64| {
            now.store(s, Relaxed);
            a.verify("demo", &nbf)
        };
        assert_eq!(b(1_499_990).unwrap_err(), TokenError::NotYetValid);
        assert!(b(1_499_996).is_ok(), "within the leeway");
    }
}
