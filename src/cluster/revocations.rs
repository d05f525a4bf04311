//! Revocations across the cluster (`POST /revoke` on any node): the node that takes one
//! carries it out itself, writes it to one Redis hash (so a node that starts or reconnects
//! later reads it back) and announces it on the control channel, where every other node records
//! it and closes the user's sessions it holds. The hash expires `[auth] revoke_ttl_s` after the
//! newest revocation; an entry older than that refuses nothing any more, and is skipped.

use std::sync::Arc;

use super::link::Conn;
use ringcast_proto::cluster::wire::Control;

use super::presence::NodeInfo;
use crate::hub::Hub;
use crate::relay::RelayError;

fn redis_err(e: redis::RedisError) -> RelayError {
    RelayError::Redis(format!("Redis: {e}"))
}

/// The hash field of a revocation: names hold no control characters, so `\n` cannot be part of
/// one.
fn field(project: &str, user: Option<&str>, jti: Option<&str>) -> String {
    format!(
        "{project}\n{}\n{}",
        user.unwrap_or_default(),
        jti.unwrap_or_default()
    )
}

/// Keeps `revoke` in Redis and announces it to the other nodes.
pub(super) async fn publish(
    mut conn: Conn,
    info: &NodeInfo,
    revoke: &Control,
) -> Result<(), RelayError> {
    let Control::Revoke {
        project,
        user,
        jti,
        before,
        ..
    } = revoke
    else {
        return Ok(());
    };
    // A jti entry is judged from when it was made, a user entry from its moment.
    let at = if user.is_some() {
        *before
    } else {
        crate::clock::now_s()
    };
    let key = info.names.revoked();
    redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(&key)
        .arg(field(project, user.as_deref(), jti.as_deref()))
        .arg(at)
        .ignore()
        .cmd("EXPIRE")
        .arg(&key)
        .arg(info.revoke_ttl_s.max(1))
        .ignore()
        .cmd(info.names.publish_command())
        .arg(info.names.control())
        .arg(revoke.encode())
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .map_err(redis_err)
}

/// Records every revocation Redis keeps into this node's; returns how many were read.
pub(super) async fn load(mut conn: Conn, info: &NodeInfo) -> Result<usize, RelayError> {
    let all: Vec<(String, u64)> = redis::cmd("HGETALL")
        .arg(info.names.revoked())
        .query_async(&mut conn)
        .await
        .map_err(redis_err)?;
    let now = crate::clock::now_s();
    for (f, at) in &all {
        let mut parts = f.splitn(3, '\n');
        let (Some(project), Some(user), Some(jti)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let (user, jti) = (some(user), some(jti));
        // A jti's entry was stored with when it was made: judged from then, not from now.
        let ttl = info.revoke_ttl_s;
        if let Some(u) = &user {
            info.revoked
                .revoke_user(project, u, *at, at.saturating_add(ttl), now);
        }
        if let Some(j) = &jti {
            info.revoked
                .revoke_id(project, j, at.saturating_add(ttl), now);
        }
    }
    Ok(all.len())
}

/// Another node's revocation: recorded here, and the user's sessions here closed.
pub(super) fn carry_out(info: &Arc<NodeInfo>, hub: &Arc<Hub>, revoke: Control) {
    let Control::Revoke {
        from,
        project,
        user,
        jti,
        before,
        close,
    } = revoke
    else {
        return;
    };
    if from == info.name {
        return;
    }
    let now = crate::clock::now_s();
    info.revoked
        .revoke(&project, user.as_deref(), jti.as_deref(), before, now);
    if let (Some(user), true) = (user, close) {
        let hub = hub.clone();
        // The hub waits for every shard's answer: not on the runtime's thread.
        tokio::task::spawn_blocking(move || hub.disconnect(&project, &user, true));
    }
}
