//! msg-center's REST routes, in the shapes its backends send (`[api] msgcenter_compat`):
//! `POST /ws_message/topic`, `POST /ws_message/user`, `GET /ws_session/list`. Each maps onto
//! the hub exactly as the equivalent `/publish` or `/sessions` would.

use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{Api, Caller};
use super::http::{Request, Response};
use crate::dest::Dest;
use ringcast_proto::publish::Publish;

/// `{"projectId","topic","playLoad","updateTime"}` (msg-center spells it `playLoad`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TopicPush {
    project_id: String,
    topic: String,
    play_load: Value,
    #[serde(default)]
    #[allow(dead_code)]
    update_time: Option<Value>,
}

/// `{"projectId","user","playLoad","updateTime"}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserPush {
    project_id: String,
    user: String,
    play_load: Value,
    #[serde(default)]
    #[allow(dead_code)]
    update_time: Option<Value>,
}

/// The route's answer, or `None` when `req` is not one of msg-center's routes. `legacy`: STOMP
/// sessions resolve `/topic/{projectId}/{topic}` to `topic` (`stomp.legacy_destinations`).
pub fn handle(api: &Api, req: &Request, caller: &Caller, legacy: bool) -> Option<Response> {
    let answer = match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/ws_message/topic") => topic(api, &req.body, caller, legacy),
        ("POST", "/ws_message/user") => user(api, &req.body, caller),
        ("GET", "/ws_session/list") => list(api, caller),
        (_, "/ws_message/topic" | "/ws_message/user" | "/ws_session/list") => Err(Response::error(
            405,
            format!("{} is not allowed on {}", req.method, req.path),
        )),
        _ => return None,
    };
    Some(answer.unwrap_or_else(|r| r))
}

/// The message subscribers get: a string as it is, anything else as its JSON text with
/// `content-type: application/json` (as Spring's JSON message converter labels it).
fn message(dest: Dest, v: Value) -> Publish {
    match v {
        Value::String(s) => Publish::new(dest, s.into(), Vec::new()),
        other => Publish::new(
            dest,
            other.to_string().into(),
            vec![("content-type".into(), "application/json".into())],
        ),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| Response::error(400, format!("invalid body: {e}")))
}

fn delivered(api: &Api, msg: Publish) -> Result<Response, Response> {
    let mut answer = api.deliver(msg)?;
    answer["data"] = json!(true);
    Ok(Response::json(200, &answer))
}

/// To the subscribers of `/topic/{projectId}/{topic}`.
fn topic(api: &Api, body: &[u8], caller: &Caller, legacy: bool) -> Result<Response, Response> {
    let p: TopicPush = parse(body)?;
    caller.may(&p.project_id)?;
    // What a session subscribed to `/topic/{projectId}/{topic}` listens to: the topic alone in
    // legacy mode, the whole `{projectId}/{topic}` otherwise.
    let name = if legacy {
        p.topic.clone()
    } else {
        format!("{}/{}", p.project_id, p.topic)
    };
    let dest = Dest::topic(&p.project_id, &name).map_err(|e| Response::error(400, e))?;
    delivered(api, message(dest, p.play_load))
}

/// To `user`'s sessions subscribed to `/user/queue/{projectId}`.
fn user(api: &Api, body: &[u8], caller: &Caller) -> Result<Response, Response> {
    let p: UserPush = parse(body)?;
    caller.may(&p.project_id)?;
    let dest = Dest::user_queue(&p.project_id, &p.user, &p.project_id)
        .map_err(|e| Response::error(400, e))?;
    delivered(api, message(dest, p.play_load))
}

/// `[{projectId, wsUserSessionVos: [{userId, wsSessionVos: [{sessionId, remoteUrl,
/// subscriptions}]}]}]` under `data`: identified sessions grouped by project and user.
/// `remoteUrl` is null: the server does not keep peers' addresses.
fn list(api: &Api, caller: &Caller) -> Result<Response, Response> {
    let all = api.hub.sessions(None, None).map_err(crate::admin::failed)?;
    let mut by_project: std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<String, Vec<Value>>,
    > = Default::default();
    for s in all {
        if caller.may(&s.project).is_err() {
            continue;
        }
        let user = s.user.clone().unwrap_or_default();
        let subscriptions: Vec<Value> = s
            .subscriptions
            .iter()
            .map(|x| Value::from(x.destination.as_str()))
            .collect();
        let project = s.project;
        by_project
            .entry(project)
            .or_default()
            .entry(user)
            .or_default()
            .push(json!({
                "sessionId": format!("{}-{}", s.shard, s.id),
                "remoteUrl": Value::Null,
                "subscriptions": subscriptions,
            }));
    }
    let data: Vec<Value> = by_project
        .into_iter()
        .map(|(project, users)| {
            json!({
                "projectId": project,
                "wsUserSessionVos": users
                    .into_iter()
                    .map(|(user, sessions)| json!({"userId": user, "wsSessionVos": sessions}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Response::json(200, &json!({ "data": data })))
}
