//! Projects' published key sets (`[projects.P] jwks_url`, `jwks_file`), kept off the shards.
//! A URL's set is fetched at start, then again when its `Cache-Control: max-age` runs out
//! (bounded to 5 min – 24 h; 1 h without one) and when a token names a `kid` the set lacks, at
//! most once per `REFETCH_GAP` per project, so a flood of made-up kids costs a fetch or two. A
//! fetch that fails keeps the last good set (logged once per outage, counted). A file's set is
//! read at start and on SIGHUP. A new set reaches the shards as a new `Context`, the way SIGHUP's
//! does: nothing is locked on the verify path.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::auth::Auth;
use crate::auth::jwks::KeySet;
use crate::config::Config;
use crate::context::Context;
use crate::hub::Hub;
use crate::stats::Stats;

/// The shortest time between two fetches of one project's set.
const REFETCH_GAP: Duration = Duration::from_secs(5);
/// How long a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds on a set's lifetime, and the lifetime of a set without `max-age`.
const MAX_AGE: (Duration, Duration) = (Duration::from_secs(300), Duration::from_secs(86_400));
const DEFAULT_AGE: Duration = Duration::from_secs(3600);

/// One URL project's set and its schedule.
struct Fetched {
    set: Option<Arc<KeySet>>,
    last_try: Option<Instant>,
    next: Instant,
    failing: bool,
}

struct State {
    /// The configuration in force (the last one started or reloaded with).
    cfg: Config,
    urls: HashMap<String, Fetched>,
    /// The `jwks_file` sets, as read at the last start or reload.
    files: HashMap<String, Arc<KeySet>>,
}

/// The node's key sets.
pub struct Jwks {
    /// The node's revocations, handed to every context built here.
    pub revoked: Arc<crate::auth::revoked::Revoked>,
    state: Mutex<State>,
    unknown: Sender<String>,
    stats: Arc<Stats>,
    agent: ureq::Agent,
}

impl Jwks {
    /// Fetches every URL project's set once (a failure is logged: those tokens are refused
    /// until a fetch succeeds); returns the keeper and the channel of unknown-kid notices.
    pub fn start(cfg: &Config, stats: Arc<Stats>) -> (Arc<Jwks>, Receiver<String>) {
        let (tx, rx) = bounded(64);
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(FETCH_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let jwks = Arc::new(Jwks {
            revoked: Arc::default(),
            state: Mutex::new(State {
                cfg: cfg.clone(),
                urls: HashMap::new(),
                files: HashMap::new(),
            }),
            unknown: tx,
            stats,
            agent,
        });
        jwks.track(cfg);
        if !jwks.lock().urls.is_empty() {
            jwks.stats.jwks.enabled.store(true, Relaxed);
        }
        let now = Instant::now();
        for project in jwks.due(now) {
            jwks.fetch(&project);
        }
        (jwks, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps one entry per URL project of `cfg` (a URL that changed starts over).
    fn track(&self, cfg: &Config) {
        let mut st = self.lock();
        let now = Instant::now();
        let wanted: HashMap<&String, &String> = cfg
            .projects
            .iter()
            .filter_map(|(n, p)| Some((n, p.jwks_url.as_ref()?)))
            .collect();
        st.urls.retain(|n, _| wanted.contains_key(n));
        for (name, _) in wanted {
            st.urls.entry(name.clone()).or_insert(Fetched {
                set: None,
                last_try: None,
                next: now,
                failing: false,
            });
        }
    }

    /// The keys and configuration `cfg` describes, with the sets known now: what the server
    /// starts with and what SIGHUP swaps in. Reads the `jwks_file`s (only here: a new URL set
    /// reuses them, see `rebuild`).
    pub fn context(self: &Arc<Self>, cfg: Config) -> Result<Context, String> {
        let mut files = HashMap::new();
        for (name, p) in &cfg.projects {
            if let Some(path) = &p.jwks_file {
                let read = std::fs::read(path).map_err(|e| e.to_string());
                let set = read
                    .and_then(|b| KeySet::parse(&b))
                    .map_err(|e| format!("projects.{name}.jwks_file {}: {e}", path.display()))?;
                files.insert(name.clone(), Arc::new(set));
            }
        }
        self.track(&cfg);
        self.lock().files = files;
        self.rebuild(cfg)
    }

    /// `cfg`'s keys with every set known now (files as last read, URLs as last fetched).
    fn rebuild(self: &Arc<Self>, cfg: Config) -> Result<Context, String> {
        let mut auth = Auth::from_config(&cfg, crate::clock::unix_s())?;
        self.revoked.set_ttl(cfg.auth.revoke_ttl_s);
        auth.with_revoked(self.revoked.clone());
        let mut st = self.lock();
        let fetched = st
            .urls
            .iter()
            .filter_map(|(n, f)| Some((n, f.set.as_ref()?)));
        for (name, set) in st.files.iter().chain(fetched) {
            auth.set_jwks(name, set.clone());
        }
        let tx = self.unknown.clone();
        let stats = self.stats.clone();
        auth.on_unknown_kid(Arc::new(move |project: &str| {
            stats.jwks.unknown_kid.fetch_add(1, Relaxed);
            // Full: a refetch is asked for already.
            let _ = tx.try_send(project.to_string());
        }));
        st.cfg = cfg.clone();
        drop(st);
        Ok(Context::new(cfg, auth))
    }

    /// One line per URL project: how many keys its set holds, or that none could be fetched.
    pub fn describe(&self) -> Vec<String> {
        let st = self.lock();
        let mut lines: Vec<String> = st
            .urls
            .iter()
            .map(|(name, f)| match &f.set {
                Some(set) => format!(
                    "projects.{name}: key set with {} keys ({})",
                    set.len(),
                    set.kids().join(", ")
                ),
                None => format!("projects.{name}: key set could not be fetched"),
            })
            .collect();
        lines.sort();
        lines
    }

    /// URL projects whose set is due.
    fn due(&self, now: Instant) -> Vec<String> {
        let st = self.lock();
        st.urls
            .iter()
            .filter(|(_, f)| f.next <= now)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Fetches `project`'s set; true when a set came (the shards need a new context).
    fn fetch(&self, project: &str) -> bool {
        let url = {
            let st = self.lock();
            st.cfg
                .projects
                .get(project)
                .and_then(|p| p.jwks_url.clone())
        };
        let Some(url) = url else {
            return false;
        };
        let got = self.get(&url);
        let mut st = self.lock();
        let now = Instant::now();
        let Some(f) = st.urls.get_mut(project) else {
            return false;
        };
        f.last_try = Some(now);
        match got {
            Ok((set, age)) => {
                self.stats.jwks.fetches.fetch_add(1, Relaxed);
                tracing::info!(
                    "projects.{project}: key set from {url}: {} keys ({} skipped), next in {} s",
                    set.len(),
                    set.skipped,
                    age.as_secs()
                );
                f.set = Some(Arc::new(set));
                f.next = now + age;
                f.failing = false;
                true
            }
            Err(e) => {
                self.stats.jwks.fetch_failed.fetch_add(1, Relaxed);
                if !f.failing {
                    tracing::warn!(
                        "projects.{project}: fetching the key set from {url} failed: {e}; keeping the last one ({})",
                        if f.set.is_some() {
                            "in use"
                        } else {
                            "none yet: its tokens are refused"
                        }
                    );
                }
                f.failing = true;
                // Sooner than a max-age: the set may be needed.
                f.next = now + Duration::from_secs(30);
                false
            }
        }
    }

    /// One GET of a set: the parsed keys and how long to keep them.
    fn get(&self, url: &str) -> Result<(KeySet, Duration), String> {
        let mut resp = self.agent.get(url).call().map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(format!("HTTP {status}"));
        }
        let age = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .map_or(DEFAULT_AGE, |a| a.clamp(MAX_AGE.0, MAX_AGE.1));
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        let set = KeySet::parse(&body)?;
        if set.is_empty() {
            return Err("the set holds no signing key this server can use".into());
        }
        Ok((set, age))
    }

    /// Keeps the URL sets fresh on a thread of its own, handing each new one to the shards.
    pub fn spawn(
        self: &Arc<Self>,
        unknown: Receiver<String>,
        hub: Arc<Hub>,
    ) -> std::io::Result<()> {
        if self.lock().urls.is_empty() {
            return Ok(());
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("jwks".into())
            .spawn(move || me.run(&unknown, &hub))
            .map(drop)
    }

    fn run(self: &Arc<Self>, unknown: &Receiver<String>, hub: &Hub) {
        loop {
            let wait = {
                let st = self.lock();
                let now = Instant::now();
                st.urls
                    .values()
                    .map(|f| f.next.saturating_duration_since(now))
                    .min()
                    .unwrap_or(DEFAULT_AGE)
            };
            let mut changed = false;
            match unknown.recv_timeout(wait) {
                Ok(project) => {
                    let recent = {
                        let st = self.lock();
                        st.urls
                            .get(&project)
                            .and_then(|f| f.last_try)
                            .is_some_and(|t| t.elapsed() < REFETCH_GAP)
                    };
                    if !recent {
                        changed |= self.fetch(&project);
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
            for project in self.due(Instant::now()) {
                changed |= self.fetch(&project);
            }
            if changed {
                let cfg = self.lock().cfg.clone();
                match self.rebuild(cfg) {
                    Ok(ctx) => hub.reload(Arc::new(ctx)),
                    Err(e) => tracing::error!("key sets: building the new keys failed: {e}"),
                }
            }
        }
    }
}

/// `max-age=N` of a `Cache-Control` value.
fn max_age(v: &str) -> Option<Duration> {
    v.split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|n| n.trim().parse().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("max-age=x"), None);
    }
}
