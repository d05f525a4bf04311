//! The web console at `/console/` on the network API's listener (`[api] console = true`): a
//! page and its script, embedded in the binary, and the JSON routes they call. A login with an
//! API key of the `admin` scope opens a session (`login`); every route but the assets and the
//! login needs its cookie, and every one that changes something its CSRF token. Publishing and
//! disconnecting go through the admin API's own handlers, with the key's project limits.
//! Lists are paged here and in the shards: no request asks for every session or destination.

mod login;
mod overview;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::admin::api::{Api, Caller};
use crate::admin::http::{Request, Response};
use crate::dest::Dest;
use crate::endpoint::Context;
pub use login::Grant;
use login::{COOKIE, LogGate, Logins, Throttle};
pub use overview::Overview;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// Rows per page, and the most a request may ask for.
const PAGE: usize = 50;
const MAX_PAGE: usize = 500;
/// Lifetime of a "Try it" token.
const TRY_TTL_S: u64 = 300;
/// "Try it" mints tokens only for users named so: a console session can test delivery, but
/// never act as (or read the private queues of) a real user.
pub const TRY_USER_PREFIX: &str = "console-";

pub struct Console {
    api: Arc<Api>,
    ctx: Arc<Context>,
    logins: Mutex<Logins>,
    throttle: Mutex<Throttle>,
    refusals: Mutex<LogGate>,
    overview: Arc<Overview>,
    /// The API listener speaks TLS: the cookie gets `Secure`.
    secure: bool,
}

/// What a console request gets.
pub enum Outcome {
    Reply(Response),
    /// Server-sent events of the overview, for as long as the session lives.
    Events {
        session: String,
    },
}

/// Whether `path` is the console's.
pub fn owns(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

fn hardened(r: Response) -> Response {
    r.with_header("Cache-Control", "no-store")
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("Referrer-Policy", "no-referrer")
        .with_header("X-Frame-Options", "DENY")
}

fn asset(content_type: &'static str, body: &str) -> Response {
    Response::text(200, content_type, body.to_string())
}

impl Console {
    pub fn new(api: Arc<Api>, ctx: Arc<Context>, secure: bool) -> Console {
        Console {
            overview: Overview::start(api.clone()),
            api,
            ctx,
            logins: Mutex::new(Logins::default()),
            throttle: Mutex::new(Throttle::default()),
            refusals: Mutex::new(LogGate::default()),
            secure,
        }
    }

    fn logins(&self) -> std::sync::MutexGuard<'_, Logins> {
        self.logins.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers a console request from `peer`; `admin_key` tells whether a presented key has
    /// the admin scope, and what it may do.
    pub fn handle(
        &self,
        req: &Request,
        peer: Option<std::net::IpAddr>,
        admin_key: impl Fn(&str) -> Option<Grant>,
    ) -> Outcome {
        Outcome::Reply(hardened(match self.route(req, peer, admin_key) {
            Ok(Outcome::Reply(r)) => r,
            Ok(events) => return events,
            Err(r) => r,
        }))
    }

    fn route(
        &self,
        req: &Request,
        peer: Option<std::net::IpAddr>,
        admin_key: impl Fn(&str) -> Option<Grant>,
    ) -> Result<Outcome, Response> {
        let now = crate::stats::now_ms();
        let reply = |r| Ok(Outcome::Reply(r));
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/console") => {
                return reply(
                    Response::text(301, "text/plain", "/console/\n".into())
                        .with_header("Location", "/console/"),
                );
            }
            ("GET", "/console/") => {
                return reply(asset("text/html; charset=utf-8", INDEX).with_header(
                    "Content-Security-Policy",
                    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                     style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
                ));
            }
            ("GET", "/console/console.js") => {
                return reply(asset("text/javascript; charset=utf-8", SCRIPT));
            }
            ("GET", "/console/console.css") => {
                return reply(asset("text/css; charset=utf-8", STYLE));
            }
            ("POST", "/console/login") => return reply(self.login(req, peer, admin_key, now)),
            _ => {}
        }
        let id = login::cookie(req.cookie.as_deref(), COOKIE)
            .ok_or_else(|| Response::error(401, "log in first: POST /console/login"))?
            .to_string();
        let seen = self
            .logins()
            .check(&id, now)
            .ok_or_else(|| Response::error(401, "the console session has ended: log in again"))?;
        if req.method != "GET" && !self.logins().csrf_ok(&id, req.csrf.as_deref(), now) {
            return Err(Response::error(
                403,
                "missing or wrong X-CSRF-Token: reload the console",
            ));
        }
        let caller = Caller {
            projects: seen.grant.projects.clone(),
        };
        let r = match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/console/api/session") => {
                Response::json(200, &self.session(&seen.csrf, &seen.grant, &caller))
            }
            ("GET", "/console/api/overview") => {
                let samples: Vec<Value> = (self.overview.history().into_iter())
                    .map(|v| overview::scoped(v, &caller))
                    .collect();
                Response::json(200, &json!({ "samples": samples }))
            }
            ("GET", "/console/api/events") => return Ok(Outcome::Events { session: id }),
            ("GET", "/console/api/destinations") => self.destinations(req, &caller),
            ("GET", "/console/api/sessions") => self.sessions(req, &caller),
            ("POST", "/console/api/publish") if !seen.grant.publish => Response::error(
                403,
                "the key this console session logged in with lacks the publish scope",
            ),
            ("POST", "/console/api/publish") => self.forward(req, "/publish", &caller),
            ("POST", "/console/api/disconnect") => self.forward(req, "/disconnect", &caller),
            ("POST", "/console/api/token") => self.token(req, &caller),
            ("POST", "/console/logout") => {
                self.logins().close(&id);
                Response::json(200, &json!({"ok": true})).with_header(
                    "Set-Cookie",
                    format!("{COOKIE}=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict"),
                )
            }
            (_, path) => Response::error(404, format!("no console route {} {path}", req.method)),
        };
        reply(r)
    }

    fn login(
        &self,
        req: &Request,
        peer: Option<std::net::IpAddr>,
        admin_key: impl Fn(&str) -> Option<Grant>,
        now: u64,
    ) -> Response {
        let mut throttle = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ip) = peer
            && !throttle.allows(ip, now)
        {
            return Response::error(
                429,
                "too many failed logins from this address: wait a minute",
            );
        }
        let key = serde_json::from_slice::<Value>(&req.body)
            .ok()
            .and_then(|v| v["key"].as_str().map(str::to_string));
        let Some(key) = key else {
            return Response::error(400, "send {\"key\": \"an API key with the admin scope\"}");
        };
        let Some(grant) = admin_key(&key) else {
            if let Some(ip) = peer {
                throttle.failed(ip, now);
            }
            let gate = self
                .refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .open(now);
            if let Some(held) = gate {
                tracing::warn!(
                    suppressed = held,
                    "console: a login from {peer:?} with a key that is unknown or lacks the admin scope"
                );
            }
            return Response::error(401, "unknown API key, or one without the admin scope");
        };
        let (id, csrf) = self.logins().open(now, grant);
        let secure = if self.secure { "; Secure" } else { "" };
        Response::json(200, &json!({"csrf": csrf})).with_header(
            "Set-Cookie",
            format!(
                "{COOKIE}={id}; Path=/console; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
                login::IDLE_MS / 1000
            ),
        )
    }

    /// What the page needs to know: its CSRF token, where the WebSocket endpoint is, which
    /// of the caller's projects can mint "Try it" tokens, whether it may publish.
    fn session(&self, csrf: &str, grant: &Grant, caller: &Caller) -> Value {
        let cfg = &self.ctx.cfg;
        let signing: Vec<&String> = cfg
            .projects
            .iter()
            .filter(|(name, _)| caller.may(name).is_ok())
            .filter(|(name, _)| self.ctx.auth.mint(name, "probe", 1).is_ok())
            .map(|(name, _)| name)
            .collect();
        json!({
            "csrf": csrf,
            "ws": {
                "port": cfg.server.listen.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()),
                "path": cfg.server.path,
                "tls": cfg.tls.cert.is_some(),
            },
            "auth": cfg.auth.enabled,
            "signing_projects": signing,
            "try_user_prefix": TRY_USER_PREFIX,
            "publish": grant.publish,
            "clustered": self.api.cluster.is_some(),
        })
    }

    fn limit(req: &Request) -> usize {
        req.query_first("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(PAGE)
            .clamp(1, MAX_PAGE)
    }

    fn destinations(&self, req: &Request, caller: &Caller) -> Response {
        let limit = Self::limit(req);
        let q = req.query_first("q").unwrap_or("");
        let after = req.query_first("after").unwrap_or("");
        match (self.api.hub).destinations(caller.projects.as_deref(), q, after, limit + 1) {
            Ok(mut rows) => {
                let more = rows.len() > limit;
                rows.truncate(limit);
                let next = more.then(|| rows.last().map(|(k, _)| k.clone())).flatten();
                let items: Vec<Value> = rows
                    .iter()
                    .filter_map(|(key, n)| {
                        let d = Dest::from_key(key)?;
                        caller.may(d.project()).ok()?;
                        Some(match &d {
                            Dest::Topic { project, topic } => json!({
                                "kind": "topic", "project": project,
                                "destination": format!("/topic/{topic}"), "subscribers": n}),
                            Dest::User {
                                project,
                                user,
                                queue,
                            } => json!({
                                "kind": "user queue", "project": project, "user": user,
                                "destination": format!("/user/queue/{queue}"), "subscribers": n}),
                        })
                    })
                    .collect();
                Response::json(200, &json!({"items": items, "next": next}))
            }
            Err(e) => crate::admin::failed(e),
        }
    }

    fn sessions(&self, req: &Request, caller: &Caller) -> Response {
        let limit = Self::limit(req);
        let project = req.query_first("project").filter(|p| !p.is_empty());
        if let Some(Err(r)) = project.map(|p| caller.may(p)) {
            return r;
        }
        let user = req.query_first("user").filter(|u| !u.is_empty());
        let after = req.query_first("after").and_then(|a| {
            let (s, i) = a.split_once(':')?;
            Some((s.parse().ok()?, i.parse().ok()?))
        });
        // Filtered in the shards, before the page is cut: other projects' sessions neither
        // show nor take up a limited caller's page.
        let projects = project.map_or(caller.projects.clone(), |p| Some(vec![p.to_string()]));
        match (self.api.hub).sessions_page(projects.as_deref(), user, after, limit + 1) {
            Ok(mut rows) => {
                rows.retain(|s| caller.may(&s.project).is_ok());
                let more = rows.len() > limit;
                rows.truncate(limit);
                let next = more
                    .then(|| rows.last().map(|s| format!("{}:{}", s.shard, s.id)))
                    .flatten();
                Response::json(200, &json!({"items": rows, "next": next}))
            }
            Err(e) => crate::admin::failed(e),
        }
    }

    /// The admin API's own route, with this session's project limits.
    fn forward(&self, req: &Request, path: &str, caller: &Caller) -> Response {
        let inner = Request {
            path: path.to_string(),
            ..req.clone()
        };
        self.api.handle_as(&inner, caller)
    }

    /// A short-lived token for a test user of a project with a signing key ("Try it").
    fn token(&self, req: &Request, caller: &Caller) -> Response {
        let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let (Some(project), Some(user)) = (v["project"].as_str(), v["user"].as_str()) else {
            return Response::error(400, "send {\"project\": \"…\", \"user\": \"…\"}");
        };
        if let Err(r) = caller.may(project) {
            return r;
        }
        if !user.starts_with(TRY_USER_PREFIX) || !crate::names::valid(user) {
            return Response::error(
                403,
                format!(
                    "Try it mints tokens only for test users whose name starts with {TRY_USER_PREFIX:?}"
                ),
            );
        }
        match self.ctx.auth.mint(project, user, TRY_TTL_S) {
            Ok(token) => Response::json(
                200,
                &json!({"token": token, "project": project, "user": user, "expires_in": TRY_TTL_S}),
            ),
            Err(e) => Response::error(400, e),
        }
    }

    /// Streams the overview as server-sent events until the session ends or the page goes.
    pub fn events(&self, session: &str, out: &mut impl Write) {
        let Some(seen) = self.logins().check(session, crate::stats::now_ms()) else {
            return;
        };
        let caller = Caller {
            projects: seen.grant.projects,
        };
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
                    X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n";
        let history: Vec<Value> = (self.overview.history().into_iter())
            .map(|v| overview::scoped(v, &caller))
            .collect();
        let mut last = history.last().and_then(|v| v["t"].as_u64()).unwrap_or(0);
        let first = format!("event: history\ndata: {}\n\n", Value::Array(history));
        if out.write_all(head.as_bytes()).is_err() || out.write_all(first.as_bytes()).is_err() {
            return;
        }
        loop {
            if self
                .logins()
                .check(session, crate::stats::now_ms())
                .is_none()
            {
                let _ = out.write_all(b"event: ended\ndata: {}\n\n");
                return;
            }
            let chunk = match self.overview.next(last, Duration::from_secs(2)) {
                Some(v) => {
                    last = v["t"].as_u64().unwrap_or(last);
                    format!("data: {}\n\n", overview::scoped(v, &caller))
                }
                None => ": quiet\n\n".to_string(),
            };
            if out.write_all(chunk.as_bytes()).is_err() || out.flush().is_err() {
                return;
            }
        }
    }
}
