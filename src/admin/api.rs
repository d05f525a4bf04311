//! The admin API's routes: requests in, hub calls and counters out. Validation lives here so
//! every bad request gets a 4xx with a JSON `error` that says what to fix.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::http::{Request, Response};
use crate::cluster::Cluster;
use crate::dest::{Dest, Written};
use crate::hub::{Hub, Publish};
use crate::stats::Stats;
use crate::stomp::frame::SERVER_HEADERS;

/// A shard that has not turned its loop for this long is reported unhealthy.
const HEALTH_WINDOW_MS: u64 = 2000;

pub struct Api {
    pub hub: Arc<Hub>,
    pub stats: Arc<Stats>,
    /// The cluster link, on a clustered node (`scope=cluster`, cross-node disconnects).
    pub cluster: Option<Cluster>,
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

fn default_project() -> String {
    "default".into()
}

impl Api {
    pub fn handle(&self, req: &Request) -> Response {
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/publish") => self.publish(&req.body),
            ("POST", "/disconnect") => self.disconnect(&req.body),
            ("GET", "/stats") => match self.scope(req) {
                Ok(None) => Response::json(200, &self.stats.to_json()),
                Ok(Some(c)) => match c.stats() {
                    Ok(v) => Response::json(200, &v),
                    Err(e) => Response::error(503, e),
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
            ("GET", "/sessions") => self.sessions(req),
            (_, "/publish" | "/disconnect" | "/stats" | "/metrics" | "/healthz" | "/sessions") => {
                Response::error(
                    405,
                    format!("{} is not allowed on {}", req.method, req.path),
                )
            }
            _ => Response::error(
                404,
                format!(
                    "no route {}: try POST /publish, POST /disconnect, GET /stats, /metrics, /healthz",
                    req.path
                ),
            ),
        }
    }

    fn publish(&self, body: &[u8]) -> Response {
        let p: PublishBody = match serde_json::from_slice(body) {
            Ok(p) => p,
            Err(e) => return Response::error(400, format!("invalid publish body: {e}")),
        };
        let dest = match destination(&p.project, &p.destination, p.user.as_deref()) {
            Ok(d) => d,
            Err(msg) => return Response::error(400, msg),
        };
        if let Some(bad) = p.headers.keys().find(|k| {
            k.is_empty()
                || k.contains(['\n', '\r', ':', '\0'])
                || SERVER_HEADERS.contains(&k.as_str())
        }) {
            return Response::error(
                400,
                format!("header {bad:?} cannot be set: it is empty, reserved or malformed"),
            );
        }
        if let Some((k, _)) = p.headers.iter().find(|(_, v)| v.contains('\0')) {
            return Response::error(
                400,
                format!(
                    "header {k:?} has a NUL in its value (STOMP clients read NUL as the end of a frame)"
                ),
            );
        }
        let msg = Publish::new(dest, p.body.into(), p.headers.into_iter().collect());
        match self.hub.publish(msg) {
            Ok(reach) => {
                let mut answer = json!({ "sessions": reach.sessions });
                match reach.cluster {
                    Some(Ok(nodes)) => answer["cluster"] = json!({ "nodes": nodes }),
                    Some(Err(e)) => answer["cluster"] = json!({ "error": e }),
                    None => {}
                }
                Response::json(200, &answer)
            }
            Err(e) => Response::error(503, e),
        }
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
    fn sessions(&self, req: &Request) -> Response {
        let Some(project) = req.query_first("project") else {
            return Response::error(400, "GET /sessions needs ?project=NAME");
        };
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
            Ok(Some(c)) => c.sessions(project, user),
            Err(r) => return r,
        };
        match found {
            Ok(mut all) => {
                let order = |s: &serde_json::Value| {
                    (
                        s["connected_at"].as_u64(),
                        s["node"].as_str().map(str::to_string),
                        s["shard"].as_u64(),
                        s["id"].as_u64(),
                    )
                };
                all.sort_by_key(order);
                let total = all.len();
                let page: Vec<_> = all.into_iter().skip(offset).take(limit).collect();
                Response::json(
                    200,
                    &json!({"total": total, "offset": offset, "limit": limit, "sessions": page}),
                )
            }
            Err(e) => Response::error(503, e),
        }
    }

    fn disconnect(&self, body: &[u8]) -> Response {
        let d: DisconnectBody = match serde_json::from_slice(body) {
            Ok(d) => d,
            Err(e) => return Response::error(400, format!("invalid disconnect body: {e}")),
        };
        let local = match self.hub.disconnect(&d.project, &d.user) {
            Ok(n) => n,
            Err(e) => return Response::error(503, e),
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
                &json!({ "sessions": local, "cluster": {"local": local, "error": e} }),
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
        };
        let req = |m: &str, p: &str, b: &str| Request {
            method: m.into(),
            path: p.into(),
            query: vec![],
            body: b.as_bytes().to_vec(),
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
