//! The admin API's routes: requests in, hub calls and counters out. Validation lives here so
//! every bad request gets a 4xx with a JSON `error` that says what to fix.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::http::{Request, Response};
use crate::endpoint::check_name;
use crate::hub::{Dest, Hub, Publish};
use crate::stats::Stats;
use crate::ws::frame::{self, Opcode};

/// A shard that has not turned its loop for this long is reported unhealthy.
const HEALTH_WINDOW_MS: u64 = 2000;

pub struct Api {
    pub hub: Arc<Hub>,
    pub stats: Arc<Stats>,
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
    #[allow(dead_code)]
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
            ("GET", "/stats") => Response::json(200, &self.stats.to_json()),
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
            ("GET", "/sessions") => Response::error(
                501,
                "session listing arrives with STOMP sessions; it is not in this build yet",
            ),
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
        let msg = Publish {
            dest,
            frame: frame::encode(Opcode::Text, p.body.as_bytes()),
        };
        match self.hub.publish(msg) {
            Ok(n) => Response::json(200, &json!({ "sessions": n })),
            Err(e) => Response::error(503, e),
        }
    }

    fn disconnect(&self, body: &[u8]) -> Response {
        let d: DisconnectBody = match serde_json::from_slice(body) {
            Ok(d) => d,
            Err(e) => return Response::error(400, format!("invalid disconnect body: {e}")),
        };
        match self.hub.disconnect(&d.project, &d.user) {
            Ok(n) => Response::json(200, &json!({ "sessions": n })),
            Err(e) => Response::error(503, e),
        }
    }
}

/// Maps the contract's destination forms to a hub destination.
fn destination(project: &str, dest: &str, user: Option<&str>) -> Result<Dest, String> {
    check_name("project", project).map_err(|r| r.reason)?;
    match user {
        None => {
            let topic = dest.strip_prefix("/topic/").ok_or_else(|| {
                format!(
                    "destination {dest:?} must be /topic/NAME (or give \"user\" for a user queue)"
                )
            })?;
            check_name("topic", topic).map_err(|r| r.reason)?;
            Ok(Dest::Topic {
                project: project.into(),
                topic: topic.into(),
            })
        }
        Some(user) => {
            check_name("user", user).map_err(|r| r.reason)?;
            let queue = dest
                .strip_prefix("/user/queue/")
                .or_else(|| dest.strip_prefix("/queue/"))
                .ok_or_else(|| format!("destination {dest:?} for a user must be /queue/NAME"))?;
            check_name("queue", queue).map_err(|r| r.reason)?;
            Ok(Dest::User {
                project: project.into(),
                user: user.into(),
                queue: queue.into(),
            })
        }
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
