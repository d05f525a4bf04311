//! Asks projects' backends whether a session may subscribe to (or publish on) a topic
//! (`subscribe = "proxy"`, `publish = "proxy"`), off the shards: a few worker threads take the
//! shards' questions from a channel, POST `{project, user, topic, action}` to the project's
//! URL, and hand each answer back to the shard that asked. Answers are cached for
//! `auth.proxy_cache_ms` (at most `auth.proxy_cache_size` of them, the oldest evicted first).
//! A backend that is down, slow or answers nonsense means "no", with a reason the client sees.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::access::Act;
use crate::hub::Hub;
use crate::shard::Question;
use crate::shard::inbox::{Answer, Command};

/// Questions waiting for a worker; beyond it a question is refused at once.
const QUEUE: usize = 10_000;
/// Worker threads (each waits on one backend request at a time).
const WORKERS: usize = 4;

/// A question with the backend URL the shard looked up for it.
pub struct Ask {
    pub question: Question,
    pub url: String,
}

/// The handle shards' drivers hand their questions to.
pub struct AccessProxy {
    tx: Sender<Ask>,
    hub: Arc<Hub>,
}

type Key = (String, String, String, Act);

/// Answers by (project, user, topic, act), with their age; bounded, oldest out first.
struct Cache {
    answers: HashMap<Key, (bool, String, Instant)>,
    order: VecDeque<Key>,
    ttl: Duration,
    size: usize,
}

impl Cache {
    fn get(&self, k: &Key) -> Option<(bool, String)> {
        let (allowed, reason, at) = self.answers.get(k)?;
        (at.elapsed() < self.ttl).then(|| (*allowed, reason.clone()))
    }

    fn put(&mut self, k: Key, allowed: bool, reason: String) {
        if self.size == 0 || self.ttl.is_zero() {
            return;
        }
        if self
            .answers
            .insert(k.clone(), (allowed, reason, Instant::now()))
            .is_none()
        {
            self.order.push_back(k);
        }
        while self.order.len() > self.size {
            if let Some(old) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct Verdict {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
}

impl AccessProxy {
    /// Starts the workers.
    pub fn start(auth: &crate::config::Auth, hub: Arc<Hub>) -> std::io::Result<Arc<AccessProxy>> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let cache = Arc::new(Mutex::new(Cache {
            answers: HashMap::new(),
            order: VecDeque::new(),
            ttl: Duration::from_millis(auth.proxy_cache_ms),
            size: auth.proxy_cache_size,
        }));
        let timeout = Duration::from_millis(auth.proxy_timeout_ms.max(1));
        for i in 0..WORKERS {
            let (rx, hub, cache): (Receiver<Ask>, _, _) = (rx.clone(), hub.clone(), cache.clone());
            std::thread::Builder::new()
                .name(format!("access-proxy-{i}"))
                .spawn(move || work(rx, hub, cache, timeout))?;
        }
        Ok(Arc::new(AccessProxy { tx, hub }))
    }

    /// Queues a question; never blocks (a shard calls it). A full queue is a refusal.
    pub fn ask(&self, a: Ask) {
        if let Err(TrySendError::Full(a) | TrySendError::Disconnected(a)) = self.tx.try_send(a) {
            let reason = "the authorization backend is overloaded: too many questions waiting";
            answer(&self.hub, &a.question, false, reason.into());
        }
    }
}

fn answer(hub: &Hub, q: &Question, allowed: bool, reason: String) {
    hub.send_to(
        q.shard,
        Command::Answer(Answer {
            key: q.key,
            epoch: q.epoch,
            act: q.act,
            topic: q.topic.clone(),
            allowed,
            reason,
        }),
    );
}

fn work(rx: Receiver<Ask>, hub: Arc<Hub>, cache: Arc<Mutex<Cache>>, timeout: Duration) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    for Ask { question: q, url } in rx {
        let key = (q.project.clone(), q.user.clone(), q.topic.clone(), q.act);
        let cached = cache.lock().ok().and_then(|c| c.get(&key));
        let (allowed, reason) = match cached {
            Some(hit) => hit,
            None => {
                let fresh = consult(&agent, &url, &q, timeout);
                // Only the backend's own verdicts are kept: an outage must not outlive itself.
                if let Ok((allowed, reason)) = &fresh
                    && let Ok(mut c) = cache.lock()
                {
                    c.put(key, *allowed, reason.clone());
                }
                fresh.unwrap_or_else(|why| (false, why))
            }
        };
        answer(&hub, &q, allowed, reason);
    }
}

/// The backend's reason as it may reach a client: in an ERROR frame (where a NUL would end
/// the frame) and a close reason, so no control characters, and at most `MAX_REASON` chars.
fn printable(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect()
}

/// Characters of a backend's reason kept.
const MAX_REASON: usize = 200;

/// One backend request: `Ok((allowed, reason))` for a verdict, `Err(reason)` when there was none.
fn consult(
    agent: &ureq::Agent,
    url: &str,
    q: &Question,
    timeout: Duration,
) -> Result<(bool, String), String> {
    let body = serde_json::json!({
        "project": q.project,
        "user": q.user,
        "topic": q.topic,
        "action": q.act.as_str(),
    });
    let mut resp = agent.post(url).send_json(&body).map_err(|e| match e {
        ureq::Error::Timeout(_) => {
            format!(
                "the authorization backend did not answer within {} ms",
                timeout.as_millis()
            )
        }
        e => format!("the authorization backend is unreachable: {e}"),
    })?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(format!("the authorization backend answered HTTP {status}"));
    }
    let v: Verdict = resp
        .body_mut()
        .read_json()
        .map_err(|_| "the authorization backend's answer is not {\"allow\": bool}".to_string())?;
    let reason = v
        .reason
        .unwrap_or_else(|| if v.allow { "" } else { "denied by the backend" }.into());
    Ok((v.allow, printable(&reason)))
}
