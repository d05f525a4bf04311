//! Where a request goes: which endpoint a path names (plain WebSocket, SockJS, echo), which
//! mode an upgrade gets (STOMP or raw, and with whose identity), or which plain-HTTP answer a
//! SockJS client is owed. Decided from the request head alone.

use super::{Identity, Mode, STOMP_PROTOCOLS};
use crate::access::{self, Act, Decision, Policy};
use crate::context::Context;
use crate::dest::Dest;
use crate::sockjs::http::Exchange;
use crate::sockjs::{self, Path};
use crate::stomp;
use crate::ws::handshake::{Reject, Request};

/// What a request gets.
#[derive(Debug)]
pub enum Route {
    /// A WebSocket.
    Upgrade(Box<Upgrade>),
    /// A plain HTTP answer (SockJS `/info`, greeting, preflight).
    Answer {
        /// The whole answer.
        bytes: Vec<u8>,
        /// Read the next request after it (else close).
        keep_alive: bool,
    },
    /// A request for a SockJS session over HTTP (its body still to be read).
    Sockjs(Box<HttpRequest>),
}

/// What an upgraded connection starts with.
#[derive(Debug)]
pub struct Upgrade {
    /// What the connection will speak.
    pub mode: Mode,
    /// The subprotocol to answer with (`v12.stomp`, ...).
    pub protocol: Option<&'static str>,
    /// What a raw connection subscribes to at the upgrade.
    pub subscribe: Vec<Dest>,
    /// Topics of a raw upgrade the project's backend must allow first.
    pub ask: Vec<String>,
    /// SockJS framing (`o`, `a[...]`, `c[...]`) inside the WebSocket.
    pub sockjs: bool,
    /// The SockJS test suite's `/close` service: open, then close at once.
    pub go_away: bool,
    /// Raw topics that replay what they missed (`since=TOPIC:EPOCH:OFFSET`).
    pub recover: Vec<crate::history::Recover>,
    /// Raw messages travel in the positions envelope (`positions=1`, or any `since`).
    pub positions: bool,
}

/// What a SockJS session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// STOMP (every configured endpoint).
    Stomp,
    /// The test suite's `/echo` family: messages come back.
    Echo,
    /// The test suite's `/close`: open, then `c[3000,"Go away!"]`.
    Close,
}

/// A request for a SockJS session over HTTP, with what the session needs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The session id the client chose.
    pub session: String,
    /// Sending messages, or receiving frames (and how).
    pub exchange: Exchange,
    /// What a session this request creates speaks.
    pub service: Service,
    /// `project`/`projectId` from the query, for a session this request creates.
    pub project: Option<String>,
    /// `token` from the query or `Authorization: Bearer`, kept for CONNECT.
    pub token: Option<String>,
    /// For the answer's CORS headers.
    pub origin: Option<String>,
    /// The `JSESSIONID` the answers set, where the service asks for sticky sessions.
    pub set_cookie: Option<String>,
    /// `htmlfile`'s and `jsonp`'s callback (checked).
    pub callback: Option<String>,
    /// Whether the connection is kept alive after the answer.
    pub keep_alive: bool,
    /// An HTTP/1.0 client: streaming answers are not chunked and end with the connection.
    pub http10: bool,
    /// A form-encoded body (`jsonp_send`'s `d=`).
    pub form: bool,
    /// Bytes a streaming answer carries before it is ended.
    pub response_limit: usize,
    /// The body (`xhr_send`'s messages).
    pub body: bytes::Bytes,
}

/// How one SockJS service answers: a STOMP endpoint by the configuration, the suite's
/// services as the suite expects them.
struct Settings<'a> {
    service: Service,
    websocket: bool,
    cookie_needed: bool,
    jsonp: bool,
    response_limit: usize,
    client_url: &'a str,
}

impl<'a> Settings<'a> {
    fn of(cfg: &'a crate::config::Sockjs, service: Service) -> Settings<'a> {
        Settings {
            service,
            websocket: true,
            cookie_needed: cfg.cookie_needed,
            jsonp: cfg.jsonp,
            response_limit: cfg.response_limit_bytes,
            client_url: &cfg.client_url,
        }
    }
}

/// The suite's services stream at most this much per response (what it sends to test it).
const SUITE_RESPONSE_LIMIT: usize = 4096;

/// The SockJS test suite's services, served with `--echo` (see `route`).
const ECHO_SERVICES: [&str; 3] = ["/close", "/disabled_websocket_echo", "/cookie_needed_echo"];

/// Decides what a request gets: an upgrade (mode and subscriptions), an HTTP answer, or a
/// refusal.
pub fn route(req: &Request, ctx: &Context) -> Result<Route, Reject> {
    let cfg = &ctx.cfg;
    if !cfg.server.allowed_origins.is_empty()
        && !req
            .origin
            .as_ref()
            .is_some_and(|o| cfg.server.allowed_origins.iter().any(|a| a == o))
    {
        return Err(Reject::new(403, "origin not allowed"));
    }
    if cfg.server.echo {
        if req.path == cfg.server.echo_path && req.upgrade.is_ok() {
            return upgrade(Mode::Echo, None, Vec::new(), false);
        }
        for prefix in std::iter::once(cfg.server.echo_path.as_str()).chain(ECHO_SERVICES) {
            if let Some(p) = sockjs::match_path(prefix, &req.path) {
                return echo_service(prefix, p, req, ctx);
            }
        }
    }
    if req.path == cfg.server.path {
        return stomp_endpoint(req, ctx, false);
    }
    if cfg.sockjs.enabled {
        let prefixes = std::iter::once(&cfg.server.path).chain(&cfg.sockjs.endpoints);
        for prefix in prefixes {
            if let Some(p) = sockjs::match_path(prefix, &req.path) {
                return match p {
                    Ok(Path::RawWebSocket) => {
                        sockjs_upgrade(req)?;
                        stomp_endpoint(req, ctx, false)
                    }
                    Ok(Path::Greeting) if req.upgrade.is_ok() => stomp_endpoint(req, ctx, false),
                    Ok(Path::Session {
                        transport: "websocket",
                        ..
                    }) => {
                        sockjs_upgrade(req)?;
                        stomp_endpoint(req, ctx, true)
                    }
                    p => http_with(p, req, &Settings::of(&cfg.sockjs, Service::Stomp)),
                };
            }
        }
    }
    Err(Reject::new(
        404,
        format!("no WebSocket endpoint at {}", req.path),
    ))
}

fn upgrade(
    mode: Mode,
    protocol: Option<&'static str>,
    subscribe: Vec<Dest>,
    sockjs: bool,
) -> Result<Route, Reject> {
    Ok(Route::Upgrade(Box::new(Upgrade {
        mode,
        protocol,
        subscribe,
        ask: Vec::new(),
        sockjs,
        go_away: false,
        recover: Vec::new(),
        positions: false,
    })))
}

/// A SockJS WebSocket URL's refusals, in the protocol's words: only GET (405 with `Allow`
/// and no body), and only an upgrade to WebSocket (400).
fn sockjs_upgrade(req: &Request) -> Result<(), Reject> {
    if req.method != "GET" {
        return Err(Reject::method_not_allowed("GET"));
    }
    match &req.upgrade {
        Ok(_) => Ok(()),
        Err(r)
            if r.status == 426 && r.reason.starts_with("this endpoint speaks WebSocket only") =>
        {
            Err(Reject::new(400, "Can \"Upgrade\" only to \"WebSocket\"."))
        }
        Err(r) if r.reason == "missing Connection: Upgrade" => {
            Err(Reject::new(400, "\"Connection\" must be \"Upgrade\"."))
        }
        Err(r) => Err(r.clone()),
    }
}

/// The SockJS protocol suite's four services: `/echo` echoes, `/close` closes at once,
/// `/disabled_websocket_echo` says it has no WebSocket, `/cookie_needed_echo` asks for one.
/// All serve JSONP and end streaming responses after `SUITE_RESPONSE_LIMIT`, as the suite's
/// reference server does.
fn echo_service(
    prefix: &str,
    p: Result<Path<'_>, ()>,
    req: &Request,
    ctx: &Context,
) -> Result<Route, Reject> {
    let websocket = prefix != "/disabled_websocket_echo";
    let sockjs_ws = matches!(
        p,
        Ok(Path::Session {
            transport: "websocket",
            ..
        })
    );
    if websocket && (sockjs_ws || p == Ok(Path::RawWebSocket)) {
        sockjs_upgrade(req)?;
        return Ok(Route::Upgrade(Box::new(Upgrade {
            mode: Mode::Echo,
            protocol: None,
            subscribe: Vec::new(),
            ask: Vec::new(),
            sockjs: sockjs_ws,
            go_away: prefix == "/close",
            recover: Vec::new(),
            positions: false,
        })));
    }
    let service = if prefix == "/close" {
        Service::Close
    } else {
        Service::Echo
    };
    let settings = Settings {
        websocket,
        cookie_needed: prefix == "/cookie_needed_echo",
        jsonp: true,
        response_limit: SUITE_RESPONSE_LIMIT,
        ..Settings::of(&ctx.cfg.sockjs, service)
    };
    http_with(p, req, &settings)
}

/// A SockJS URL that is not a WebSocket: the plain-HTTP answers, or a session request.
fn http_with(p: Result<Path<'_>, ()>, req: &Request, s: &Settings<'_>) -> Result<Route, Reject> {
    let origin = req.origin.as_deref();
    let ka = req.keep_alive;
    let method = req.method.as_str();
    let cors = req.cors_headers.as_deref();
    match p {
        Ok(Path::Greeting) if method == "GET" => answer(sockjs::greeting(ka), ka),
        Ok(Path::Info) if method == "GET" => {
            answer(sockjs::info(origin, s.cookie_needed, s.websocket, ka), ka)
        }
        Ok(Path::Info) if method == "OPTIONS" => {
            answer(sockjs::preflight(origin, cors, "OPTIONS, GET", ka), ka)
        }
        Ok(Path::Iframe) if method == "GET" => {
            let inm = req.if_none_match.as_deref();
            answer(sockjs::iframe(s.client_url, inm, ka), ka)
        }
        Ok(Path::Greeting | Path::Iframe) => Err(Reject::method_not_allowed("GET")),
        Ok(Path::Info) => Err(Reject::method_not_allowed("OPTIONS, GET")),
        Ok(Path::RawWebSocket)
        | Ok(Path::Session {
            transport: "websocket",
            ..
        }) => Err(Reject::new(404, "WebSocket is disabled on this endpoint")),
        Ok(Path::Session {
            transport, session, ..
        }) => {
            if method == "OPTIONS" && transport.starts_with("xhr") {
                return answer(sockjs::preflight(origin, cors, "OPTIONS, POST", ka), ka);
            }
            let Some(exchange) = Exchange::parse(transport, method, s.jsonp) else {
                return Err(Reject::new(
                    404,
                    format!(
                        "no SockJS transport {transport:?} for {method}: websocket, xhr, xhr_streaming, eventsource, htmlfile and xhr_send are served{}",
                        if s.jsonp {
                            ", and jsonp"
                        } else {
                            " (jsonp is off: [sockjs] jsonp)"
                        }
                    ),
                ));
            };
            let callback = if exchange.needs_callback() {
                Some(sockjs::http::callback(req.query_first("c"))?)
            } else {
                None
            };
            let (token, project) = credentials(req);
            let set_cookie = sockjs::jsessionid(req.cookie.as_deref(), s.cookie_needed);
            Ok(Route::Sockjs(Box::new(HttpRequest {
                session: session.to_string(),
                exchange,
                service: s.service,
                project: project.map(str::to_string),
                token: token.map(str::to_string),
                origin: req.origin.clone(),
                set_cookie: set_cookie.map(str::to_string),
                callback,
                keep_alive: ka,
                http10: req.http10,
                form: req.form,
                response_limit: s.response_limit,
                body: bytes::Bytes::new(),
            })))
        }
        Err(()) => Err(Reject::new(
            404,
            format!("no SockJS resource at {}", req.path),
        )),
    }
}

/// The token (`?token=` or `Authorization: Bearer`) and project (`?project=`/`?projectId=`) a
/// request names.
fn credentials(req: &Request) -> (Option<&str>, Option<&str>) {
    let token = req.query_first("token").or_else(|| {
        req.authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim)
    });
    let project = req
        .query_first("project")
        .or_else(|| req.query_first("projectId"));
    (token, project)
}

fn answer(bytes: Vec<u8>, keep_alive: bool) -> Result<Route, Reject> {
    Ok(Route::Answer { bytes, keep_alive })
}

/// A STOMP endpoint (`server.path`, `{prefix}/websocket`, or a SockJS WebSocket session).
///
/// STOMP when the client offers a STOMP subprotocol, or offers none and names no `topic` (as
/// Spring treats every connection on its endpoint: `stomp.py`'s `WSStompConnection` offers
/// none); raw when it names topics to subscribe at the upgrade.
fn stomp_endpoint(req: &Request, ctx: &Context, sockjs: bool) -> Result<Route, Reject> {
    req.upgrade.as_ref().map_err(Clone::clone)?;
    let cfg = &ctx.cfg;
    let (token, project) = credentials(req);
    let offered = STOMP_PROTOCOLS
        .iter()
        .find(|p| req.protocols.iter().any(|o| o == *p))
        .copied();
    if offered.is_none() && !sockjs {
        // Without a subprotocol a URL's query is all a raw client says: a misspelt parameter
        // must not quietly give a session with no subscriptions.
        const RAW_PARAMS: [&str; 6] = [
            "topic",
            "project",
            "projectId",
            "token",
            "since",
            "positions",
        ];
        if let Some((k, _)) = req
            .query
            .iter()
            .find(|(k, _)| !RAW_PARAMS.contains(&k.as_str()))
        {
            return Err(Reject::new(
                400,
                format!(
                    "unknown query parameter {k:?}: a raw-mode URL takes topic (repeatable), project, token, since (repeatable) and positions"
                ),
            ));
        }
    }
    if offered.is_some() || sockjs || req.query_all("topic").next().is_none() {
        // STOMP authenticates at CONNECT; a handshake token is kept for then.
        return upgrade(
            Mode::Stomp(Box::new(stomp::session::Session::new(
                ctx.project(project.unwrap_or("default")),
                token,
                cfg.stomp.legacy_destinations,
            ))),
            offered,
            Vec::new(),
            sockjs,
        );
    }
    let project = project.unwrap_or("default");
    check_name("project", project)?;
    let identity = if ctx.auth.enabled {
        let token = token.ok_or_else(|| {
            Reject::new(
                401,
                "authentication required: pass a JWT as ?token= or Authorization: Bearer",
            )
        })?;
        let v = ctx
            .auth
            .verify(project, token)
            .map_err(|e| Reject::new(401, e.to_string()))?;
        let id = Box::new(Identity {
            project: project.into(),
            user: v.user.into(),
            exp: u32::try_from(v.exp).unwrap_or(u32::MAX),
            asking: Vec::new(),
        });
        Some((v.grants, id))
    } else {
        None
    };
    let policy = identity
        .as_ref()
        .and_then(|_| cfg.projects.get(project))
        .map_or(Policy::Any, |p| p.subscribe);
    let mut subscribe = Vec::new();
    let mut ask: Vec<String> = Vec::new();
    for topic in req.query_all("topic") {
        crate::names::check_topic(topic).map_err(|e| Reject::new(400, e))?;
        let grants = identity.as_ref().and_then(|(g, _)| g.as_ref());
        match access::decide(policy, Act::Subscribe, grants, topic) {
            Decision::Allow => {}
            Decision::Deny(why) => {
                let reason = format!("forbidden: subscribe {topic}: {why}");
                return Err(Reject::new(403, reason));
            }
            Decision::Ask => {
                if !ask.iter().any(|t| t == topic) {
                    ask.push(topic.to_string());
                }
                continue;
            }
        }
        let d = Dest::Topic {
            project: project.to_string(),
            topic: topic.to_string(),
        };
        if !subscribe.contains(&d) {
            subscribe.push(d);
        }
    }
    let identity = identity.map(|(_, mut id)| {
        id.asking = ask.iter().map(|t| t.as_str().into()).collect();
        id
    });
    let recover = recoveries(req, cfg.projects.get(project), &subscribe)?;
    let positions = match req.query_all("positions").next() {
        None => !recover.is_empty(),
        Some("1" | "true") => true,
        Some("0" | "false") => !recover.is_empty(),
        Some(v) => {
            return Err(Reject::new(400, format!("positions={v:?}: give 1 or 0")));
        }
    };
    if subscribe.len() + ask.len() > cfg.limits.max_topics_per_session {
        return Err(Reject::new(
            400,
            format!(
                "too many topics: at most {} per connection",
                cfg.limits.max_topics_per_session
            ),
        ));
    }
    Ok(Route::Upgrade(Box::new(Upgrade {
        mode: Mode::Raw(identity),
        protocol: None,
        subscribe,
        ask,
        sockjs: false,
        go_away: false,
        recover,
        positions,
    })))
}

/// A raw URL's `since=TOPIC:EPOCH:OFFSET` parameters: each names a topic of the URL whose
/// project keeps history for it.
fn recoveries(
    req: &Request,
    project: Option<&crate::config::Project>,
    subscribe: &[Dest],
) -> Result<Vec<crate::history::Recover>, Reject> {
    let mut out: Vec<crate::history::Recover> = Vec::new();
    for since in req.query_all("since") {
        let bad = |why: String| Reject::new(400, format!("since={since:?}: {why}"));
        let (topic, position) = since
            .split_once(':')
            .ok_or_else(|| bad("give TOPIC:EPOCH:OFFSET".into()))?;
        let position = crate::history::Position::parse(position).map_err(bad)?;
        let dest = subscribe
            .iter()
            .find(|d| matches!(d, Dest::Topic { topic: t, .. } if t == topic))
            .ok_or_else(|| bad(format!("{topic} is not one of this URL's topics")))?;
        if project.and_then(|p| p.history_for(dest)).is_none() {
            return Err(bad(format!("{topic} keeps no history")));
        }
        let id = format!("topic={topic}");
        if out.iter().any(|r| r.id == id) {
            return Err(bad(format!("{topic} is named twice")));
        }
        out.push(crate::history::Recover {
            id,
            written: format!("/topic/{topic}"),
            dest: dest.clone(),
            since: position,
            receipt: None,
        });
    }
    Ok(out)
}

/// Names are bounded and free of control characters (which also keeps hub keys unambiguous);
/// a bad one in an upgrade is a 400.
pub fn check_name(what: &str, name: &str) -> Result<(), Reject> {
    crate::names::check(what, name).map_err(|e| Reject::new(400, e))
}
