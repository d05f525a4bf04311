//! Comparison peer for `ringcast-bench compare`: the push server a tokio user would write.
//!
//! One task per connection, one `tokio::sync::broadcast` channel per topic (the pattern tokio's
//! own chat example and tungstenite's users follow), the multi-threaded runtime with its
//! default worker count. `GET /ws?topic=T` subscribes at upgrade, like ringcast's raw mode;
//! `POST /publish?topic=T` on the publish port sends the body to every subscriber and answers
//! `{"sessions":N}`. The one tuning applied is the one tungstenite documents for many
//! connections: a 4 KiB read buffer instead of the 128 KiB default; the listen backlog is the
//! 65,535 every server here gets, and accepted sockets set TCP_NODELAY as tokio servers do.
//!
//! Usage: `peer-tokio-tungstenite WS_ADDR PUBLISH_ADDR`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Topics = Arc<Mutex<HashMap<String, broadcast::Sender<Message>>>>;

/// Messages a slow subscriber may fall behind before it skips ahead (`Lagged`).
const CHANNEL_CAPACITY: usize = 1024;

fn topic_of(query: Option<&str>) -> String {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "topic")
        .map_or_else(String::new, |(_, v)| v.to_string())
}

// The handshake callback's error type is tungstenite's (an HTTP response), not ours to shrink.
#[allow(clippy::result_large_err)]
async fn subscriber(stream: TcpStream, topics: Topics) {
    let mut topic = String::new();
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let callback = |req: &Request, resp: Response| {
        topic = topic_of(req.uri().query());
        Ok(resp)
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let mut rx = topics
        .lock()
        .unwrap()
        .entry(topic)
        .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
        .subscribe();
    let (mut sink, mut incoming) = ws.split();
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(m) => if sink.send(m).await.is_err() { break },
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            frame = incoming.next() => match frame {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                _ => {}
            },
        }
    }
}

/// One `POST /publish?topic=T` per connection; the body goes out as a text message.
async fn publisher(mut stream: TcpStream, topics: Topics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (head_len, body_len) = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, len);
        }
    };
    while buf.len() < head_len + body_len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == b'\r').unwrap_or(0)])
        .to_string();
    let target = line.split(' ').nth(1).unwrap_or("");
    let topic = topic_of(target.split_once('?').map(|(_, q)| q));
    let body = String::from_utf8_lossy(&buf[head_len..head_len + body_len]).to_string();
    let sender = topics.lock().unwrap().get(&topic).cloned();
    let sessions = sender.map_or(0, |s| s.send(Message::text(body)).unwrap_or(0));
    let answer = format!("{{\"sessions\":{sessions}}}");
    stream
        .write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            )
            .as_bytes(),
        )
        .await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (ws_addr, pub_addr) = match args.as_slice() {
        [_, ws, publish] => (ws.clone(), publish.clone()),
        _ => {
            eprintln!("usage: peer-tokio-tungstenite WS_ADDR PUBLISH_ADDR");
            std::process::exit(2);
        }
    };
    let topics: Topics = Arc::default();
    // The backlog every server in the comparison gets (tokio's `bind` would use 1024, and a
    // full accept queue turns a burst of connects into 1 s SYN retries).
    let addr: std::net::SocketAddr = ws_addr
        .parse()
        .map_err(|e| std::io::Error::other(format!("{ws_addr}: {e}")))?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let ws: TcpListener = socket.listen(65535)?;
    let publish = TcpListener::bind(&pub_addr).await?;
    let t = topics.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = publish.accept().await {
            tokio::spawn(publisher(s, t.clone()));
        }
    });
    eprintln!("peer-tokio-tungstenite: ws on {ws_addr}, publish on {pub_addr}");
    loop {
        match ws.accept().await {
            Ok((s, _)) => {
                // What tokio servers usually set: small frames go out at once.
                let _ = s.set_nodelay(true);
                tokio::spawn(subscriber(s, topics.clone()));
            }
            // Out of file descriptors: wait for some to free rather than spin.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}
