//! The admin API's routes: requests in, hub calls and counters out. Validation lives here so
//! every bad request gets a 4xx with a JSON `error` that says what to fix.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::http::{Request, Response};
use crate::cluster::Cluster;
use crate::dest::{Dest, Written};
use crate::hub::{Hub, HubError};
use crate::shard::inbox::SessionInfo;
use crate::stats::Stats;
use crate::stomp::frame::SERVER_HEADERS;
use ringcast_proto::publish::Publish;

/// A shard that has not turned its loop for this long is reported unhealthy.
const HEALTH_WINDOW_MS: u64 = 2000;

pub struct Api {
    pub hub: Arc<Hub>,
    pub stats: Arc<Stats>,
    /// The cluster link, on a clustered node (`scope=cluster`, cross-node disconnects).
    pub cluster: Option<Cluster>,
    /// With authentication on, the projects the configuration names (a publish to another
    /// reaches nobody, and says so); `None` with authentication off. Replaced on reload.
    pub projects: std::sync::RwLock<Option<Vec<String>>>,
    /// The node's revocations (`POST /revoke`), read by every token check.
    pub revoked: Arc<crate::auth::revoked::Revoked>,
}

impl Api {
    /// The projects a configuration makes publishable (see `projects`).
    pub fn projects_of(cfg: &crate::config::Config) -> Option<Vec<String>> {
        cfg.auth
            .enabled
            .then(|| cfg.projects.keys().cloned().collect())
    }
}

/// Who is asking: the admin socket's users may touch every project; an API key may be
/// restricted to some.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `None` = every project.
    pub projects: Option<Vec<String>>,
}

impl Caller {
    /// The admin socket's callers: every project.
    pub fn local() -> Caller {
        Caller { projects: None }
    }

    /// `Ok` if the caller may touch `project`, else the 403.
    pub fn may(&self, project: &str) -> Result<(), Response> {
        match &self.projects {
            Some(list) if !list.iter().any(|p| p == project) => Err(Response::error(
                403,
                format!("this key may not use project {project:?} (allowed: {list:?})"),
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    #[serde(default = "default_project")]
    project: String,
    destination: String,
    body: String,
    #[serde(default)]
    user: Option<String>,
    /// Extra STOMP headers for STOMP sessions; raw sessions get the body only.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    #[serde(default = "default_project")]
    project: String,
    user: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default = "default_project")]
    project: String,
    user: Option<String>,
    jti: Option<String>,
    /// Unix seconds: tokens issued at or before are refused (default: now).
    before: Option<u64>,
}

fn default_project() -> String {
    "default".into()
}

impl Api {
    /// A request from the admin socket (every project).
    pub fn handle(&self, req: &Request) -> Response {
        self.handle_as(req, &Caller::local())
    }

    /// A request from `caller`: project-restricted keys are held to their projects.
    pub fn handle_as(&self, req: &Request, caller: &Caller) -> Response {
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/publish") => self.publish(req, caller),
            ("POST", "/disconnect") => self.disconnect(&req.body, caller),
            ("POST", "/revoke") => self.revoke(&req.body, caller),
            ("GET", "/stats") => match self.scope(req) {
                Ok(None) => Response::json(200, &self.stats.to_json()),
                Ok(Some(c)) => match c.stats() {
                    Ok(v) => Response::json(200, &v),
                    Err(e) => crate::admin::failed(e),
                },
                Err(r) => r,
            },
            ("GET", "/metrics") => {
                Response::text(200, "text/plain; version=0.0.4", self.stats.to_prometheus())
            }
            ("GET", "/healthz") => {
                if self.stats.healthy(HEALTH_WINDOW_MS) {
                    Response::json(200, &json!({"ok": true}))
                } else {
                    Response::json(
                        503,
                        &json!({"ok": false, "error": "a shard's reactor is stalled"}),
                    )
                }
            }
            ("GET", "/readyz") => match self.stats.ready(HEALTH_WINDOW_MS) {
                Ok(()) => Response::json(200, &json!({"ok": true})),
                Err(why) => Response::json(503, &json!({"ok": false, "error": why})),
            },
            ("GET", "/sessions") => self.sessions(req, caller),
            (
                _,
                "/publish" | "/disconnect" | "/revoke" | "/stats" | "/metrics" | "/healthz"
                | "/readyz" | "/sessions",
            ) => Response::error(
                405,
                format!("{} is not allowed on {}", req.method, req.path),
            ),
            _ => Response::error(
                404,
                format!(
                    "no route {}: try POST /publish, POST /disconnect, POST /revoke, GET /stats, /metrics, /healthz, /readyz",
                    req.path
                ),
            ),
        }
    }

    /// `POST /publish`: one JSON object, or many (a JSON array, or NDJSON with
    /// `Content-Type: application/x-ndjson`) answered item by item.
    fn publish(&self, req: &Request, caller: &Caller) -> Response {
        let ndjson = req
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/x-ndjson"));
        let first = req.body.iter().find(|b| !b.is_ascii_whitespace());
        if !ndjson && first != Some(&b'[') {
            return match self.publish_json(&req.body, caller) {
                Ok(v) => Response::json(200, &v),
                Err(r) => r,
            };
        }
        let items = if ndjson {
            super::batch::ndjson(&req.body)
        } else {
            super::batch::array(&req.body)
        };
        match items {
            Ok(items) => self.publish_batch(items.into_iter(), caller),
            Err(e) => Response::error(e.status(), e.to_string()),
        }
    }

    /// A batch: the valid items go to the shards together (`Hub::publish_many`), each item
    /// answered in place, the invalid ones with their error.
    fn publish_batch<'a>(
        &self,
        items: impl Iterator<Item = &'a [u8]>,
        caller: &Caller,
    ) -> Response {
        let error = |r: Response| {
            let mut v: serde_json::Value =
                serde_json::from_slice(&r.body).unwrap_or_else(|_| json!({}));
            v["status"] = json!(r.status);
            v
        };
        let mut msgs = Vec::new();
        let checked: Vec<Result<(), Response>> = items
            .map(|item| self.prepare(item, caller).map(|m| msgs.push(m)))
            .collect();
        let mut reached = self.hub.publish_many(msgs).into_iter();
        let results: Vec<serde_json::Value> = checked
            .into_iter()
            .map(|p| match p {
                Err(r) => error(r),
                Ok(()) => match reached.next() {
                    Some(Ok(reach)) => {
                        self.stats.publish_latency.observe(reach.local);
                        answer_of(reach)
                    }
                    Some(Err(e)) => error(crate::admin::failed(e)),
                    None => error(crate::admin::failed(crate::hub::HubError::ShardTimedOut)),
                },
            })
            .collect();
        Response::json(200, &json!({ "results": results }))
    }

    /// One publish from its `/publish` JSON: its answer (`{"sessions": N, ...}`), or the error
    /// response (4xx: the body is wrong; 503: the hub did not answer).
    pub fn publish_json(
        &self,
        body: &[u8],
        caller: &Caller,
    ) -> Result<serde_json::Value, Response> {
        self.deliver(self.prepare(body, caller)?)
    }

    /// A publish from its `/publish` JSON, checked (4xx when the body is wrong), not yet sent.
    pub fn prepare(&self, body: &[u8], caller: &Caller) -> Result<Publish, Response> {
        let p: PublishBody = serde_json::from_slice(body)
            .map_err(|e| Response::error(400, format!("invalid publish body: {e}")))?;
        caller.may(&p.project)?;
        if let Ok(known) = self.projects.read()
            && let Some(list) = known.as_ref()
            && !list.contains(&p.project)
        {
            return Err(Response::error(
                404,
                format!(
                    "project {:?} is not configured here: add [projects.{}] with its key",
                    p.project, p.project
                ),
            ));
        }
        let dest = destination(&p.project, &p.destination, p.user.as_deref())
            .map_err(|msg| Response::error(400, msg))?;
        if let Some(bad) = p.headers.keys().find(|k| {
            k.is_empty()
                || k.contains(['\n', '\r', ':', '\0'])
                || SERVER_HEADERS.contains(&k.as_str())
        }) {
            return Err(Response::error(
                400,
                format!("header {bad:?} cannot be set: it is empty, reserved or malformed"),
            ));
        }
        if let Some((k, _)) = p.headers.iter().find(|(_, v)| v.contains('\0')) {
            return Err(Response::error(
                400,
                format!(
                    "header {k:?} has a NUL in its value (STOMP clients read NUL as the end of a frame)"
                ),
            ));
        }
        Ok(Publish::new(
            dest,
            p.body.into(),
            p.headers.into_iter().collect(),
        ))
    }

    /// Hands a publish to the hub; the answer says how far it went.
    pub(crate) fn deliver(&self, msg: Publish) -> Result<serde_json::Value, Response> {
        let reach = self.hub.publish(msg).map_err(crate::admin::failed)?;
        self.stats.publish_latency.observe(reach.local);
        Ok(answer_of(reach))
    }

    /// `?scope=node` (the default) or `?scope=cluster`, which needs a clustered node.
    fn scope(&self, req: &Request) -> Result<Option<&Cluster>, Response> {
        match (req.query_first("scope"), self.cluster.as_ref()) {
            (None | Some("node"), _) => Ok(None),
            (Some("cluster"), Some(c)) => Ok(Some(c)),
            (Some("cluster"), None) => Err(Response::error(
                400,
                "scope=cluster needs a clustered node: start it with --redis URL or [cluster] redis",
            )),
            (Some(other), _) => Err(Response::error(
                400,
                format!("scope must be node or cluster, not {other:?}"),
            )),
        }
    }

    /// `GET /sessions?project=P[&user=U][&offset=N][&limit=N]`.
    fn sessions(&self, req: &Request, caller: &Caller) -> Response {
        let Some(project) = req.query_first("project") else {
            return Response::error(400, "GET /sessions needs ?project=NAME");
        };
        if let Err(r) = caller.may(project) {
            return r;
        }
        let num = |name: &str, default: usize| -> Result<usize, Response> {
            req.query_first(name).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| Response::error(400, format!("{name} must be a number")))
            })
        };
        let (offset, limit) = match (num("offset", 0), num("limit", 100)) {
            (Ok(o), Ok(l)) => (o, l.min(1000)),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        let user = req.query_first("user");
        let found = match self.scope(req) {
            Ok(None) => self.hub.sessions(Some(project), user),
            Ok(Some(c)) => c.sessions(project, user).map_err(HubError::from),
            Err(r) => return r,
        };
        match found {
            Ok(mut all) => {
                all.sort_by(|a, b| {
                    let order = |s: &SessionInfo| (s.connected_at, s.node.clone(), s.shard, s.id);
                    order(a).cmp(&order(b))
                });
                let total = all.len();
                let page: Vec<_> = all.into_iter().skip(offset).take(limit).collect();
                Response::json(
                    200,
                    &json!({"total": total, "offset": offset, "limit": limit, "sessions": page}),
                )
            }
            Err(e) => crate::admin::failed(e),
        }
    }

    /// `POST /revoke`: `user`'s tokens issued at or before `before` (default: now) and the
    /// token `jti` are refused from now on; the user's sessions here are closed (STOMP
    /// `ERROR message:revoked`, close 4001).
    fn revoke(&self, body: &[u8], caller: &Caller) -> Response {
        let r: RevokeBody = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return Response::error(400, format!("invalid revoke body: {e}")),
        };
        if r.user.is_none() && r.jti.is_none() {
            return Response::error(400, "revoke needs a \"user\" or a \"jti\"");
        }
        if let Err(r) = caller.may(&r.project) {
            return r;
        }
        for (what, name) in [("user", &r.user), ("jti", &r.jti)] {
            if let Some(Err(e)) = name.as_deref().map(|n| crate::names::check(what, n)) {
                return Response::error(400, e);
            }
        }
        let now = crate::clock::now_s();
        let before = r.before.unwrap_or(now);
        // Sessions opened after `before` hold newer tokens: only a revocation up to now
        // closes the user's sessions.
        let close = r.user.is_some() && before >= now;
        self.revoked
            .revoke(&r.project, r.user.as_deref(), r.jti.as_deref(), before, now);
        let closed = match &r.user {
            Some(u) if close => match self.hub.disconnect(&r.project, u, true) {
                Ok(n) => n,
                Err(e) => return crate::admin::failed(e),
            },
            _ => 0,
        };
        let mut answer = json!({"sessions": closed, "revoked": {"project": r.project,
            "user": r.user, "jti": r.jti, "before": before}});
        if let Some(c) = &self.cluster {
            answer["cluster"] = match c.revoke(
                &r.project,
                r.user.as_deref(),
                r.jti.as_deref(),
                before,
                close,
            ) {
                Ok(()) => json!({"ok": true}),
                Err(e) => json!({"ok": false, "error": e.to_string()}),
            };
        }
        Response::json(200, &answer)
    }

    fn disconnect(&self, body: &[u8], caller: &Caller) -> Response {
        let d: DisconnectBody = match serde_json::from_slice(body) {
            Ok(d) => d,
            Err(e) => return Response::error(400, format!("invalid disconnect body: {e}")),
        };
        if let Err(r) = caller.may(&d.project) {
            return r;
        }
        let local = match self.hub.disconnect(&d.project, &d.user, false) {
            Ok(n) => n,
            Err(e) => return crate::admin::failed(e),
        };
        match self
            .cluster
            .as_ref()
            .map(|c| c.disconnect(&d.project, &d.user))
        {
            None => Response::json(200, &json!({ "sessions": local })),
            Some(Ok(remote)) => Response::json(
                200,
                &json!({ "sessions": local + remote, "cluster": {"local": local, "remote": remote} }),
            ),
            Some(Err(e)) => Response::json(
                200,
                &json!({ "sessions": local, "cluster": {"local": local, "error": e.to_string()} }),
            ),
        }
    }
}

/// Maps the contract's destination forms to a hub destination.
fn destination(project: &str, dest: &str, user: Option<&str>) -> Result<Dest, String> {
    crate::names::check("project", project)?;
    match (user, Written::parse(dest, user.is_some())) {
        (None, Some(Written::Topic(topic))) => Dest::topic(project, topic),
        (None, _) => Err(format!(
            "destination {dest:?} must be /topic/NAME (or give \"user\" for a user queue)"
        )),
        (Some(user), Some(Written::UserQueue(queue))) => Dest::user_queue(project, user, queue),
        (Some(_), _) => Err(format!(
            "destination {dest:?} for a user must be /queue/NAME"
        )),
    }
}

/// A publish's answer: sessions reached here, and what became of the other nodes' copy.
fn answer_of(reach: crate::hub::Reach) -> serde_json::Value {
    let mut answer = json!({ "sessions": reach.sessions });
    match reach.cluster {
        Some(Ok(nodes)) => answer["cluster"] = json!({ "nodes": nodes }),
        Some(Err(e)) => answer["cluster"] = json!({ "error": e.to_string() }),
        None => {}
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(
            destination("p", "/topic/news", None),
            Ok(Dest::Topic {
                project: "p".into(),
                topic: "news".into()
            })
        );
        assert!(matches!(
            destination("p", "/queue/notice", Some("alice")),
            Ok(Dest::User { .. })
        ));
        assert!(destination("p", "/user/queue/notice", Some("alice")).is_ok());
        assert!(
            destination("p", "news", None)
                .unwrap_err()
                .contains("/topic/NAME")
        );
        assert!(destination("p", "/topic/", None).is_err());
        assert!(destination("", "/topic/x", None).is_err());
    }

    #[test]
    fn routes_and_errors() {
        let (hub, _inboxes) = Hub::new(1).unwrap();
        let api = Api {
            hub: Arc::new(hub),
            stats: Arc::new(Stats::new(1)),
            cluster: None,
            projects: std::sync::RwLock::new(None),
            revoked: Arc::default(),
        };
        let req = |m: &str, p: &str, b: &str| Request {
            cookie: None,
            csrf: None,
            method: m.into(),
            path: p.into(),
            query: vec![],
            body: b.as_bytes().to_vec(),
            authorization: None,
            content_type: None,
            keep_alive: false,
            len: 0,
        };
        assert_eq!(api.handle(&req("GET", "/nope", "")).status, 404);
        assert_eq!(api.handle(&req("GET", "/publish", "")).status, 405);
        let r = api.handle(&req("POST", "/publish", "{\"destination\":1}"));
        assert_eq!(r.status, 400);
        assert!(
            String::from_utf8(r.body)
                .unwrap()
                .contains("invalid publish body")
        );
        assert_eq!(api.handle(&req("GET", "/stats", "")).status, 200);
        assert!(
            String::from_utf8(api.handle(&req("GET", "/metrics", "")).body)
                .unwrap()
                .contains("ringcast_connections")
        );
    }
}
