//! `ringcast-bench`: opens N WebSocket connections from one host (client shards with their own
//! fd tables, many source addresses), publishes through the server's admin socket, and reports
//! connect rate, server memory per connection and time to last delivery.

mod admin;
mod api;
mod brokers;
mod client;
mod compare;
mod drive;
mod floor;
mod jwt;
mod load;
mod plot;
mod storm;
mod sustained;

pub(crate) use admin::*;
pub(crate) use drive::*;
pub(crate) use load::*;
pub(crate) use sustained::*;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser)]
#[command(name = "ringcast-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Raw-mode connections subscribed at upgrade; broadcasts through the admin socket.
    Raw {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        load: Load,
    },
    /// STOMP sessions: each CONNECTs with its own token and SUBSCRIBEs; broadcasts through the
    /// admin socket; optional heart-beats both ways.
    Stomp {
        #[command(flatten)]
        server: ServerArgs,
        /// Config file with the project's key, to mint one token per session (omit when the
        /// server runs with --no-auth).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Heart-beat period both ways, in ms (0 = none).
        #[arg(long, default_value_t = 0)]
        heartbeat_ms: u32,
        /// Speak STOMP inside SockJS over WebSocket (`{path}/0/{i}/websocket`, `a["..."]`
        /// frames), as sockjs-client's websocket transport does.
        #[arg(long)]
        sockjs: bool,
        #[command(flatten)]
        load: Load,
    },
    /// The kernel floor: a bare io_uring TCP server in this process writes the same bytes to
    /// every connection. No WebSocket, no protocol: what any server's figures are divided by.
    Floor {
        /// Listen address of the floor server.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[command(flatten)]
        load: Load,
    },
    /// ringcast, its peers (tokio-tungstenite, Node ws, Netty) and the floor, one after another
    /// under the same load: a Markdown table of ratios, PNG charts and JSON. With `--stomp`:
    /// ringcast's STOMP sessions against RabbitMQ Web-STOMP and ActiveMQ.
    Compare(compare::Args),
    /// Publishes through the network API (keep-alive HTTP, single or batched) as fast as the
    /// server answers: publishes per second.
    Api(api::Args),
    /// Tokens verified per second on one core: HS256, RS256 and ES256.
    Jwt(jwt::Args),
    /// A reconnect storm: N clients connected, the server SIGKILLed and started again, every
    /// client back as fast as the server lets it; time until all are back, /healthz meanwhile.
    Storm(storm::Args),
    /// PNG charts from result files (connections over time, latency CDF).
    Plot {
        /// Folder for the PNGs.
        #[arg(long)]
        out: PathBuf,
        /// Result files written with --json.
        files: Vec<PathBuf>,
    },
}

#[derive(Parser)]
struct ServerArgs {
    /// WebSocket URL; its `topic` (and `project`) are what the bench publishes to. Repeat it
    /// for a cluster: connections are spread evenly over the URLs.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws?topic=bench")]
    url: Vec<String>,
    /// The server's admin socket (publishes and server RSS). Repeat it for a cluster: the
    /// first one publishes, memory and CPU are summed over all.
    #[arg(long, required = true)]
    admin_socket: Vec<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Raw { server, load } => ringcast_run(&server, &load, None, 0, false),
        Cmd::Stomp {
            server,
            config,
            heartbeat_ms,
            sockjs,
            load,
        } => ringcast_run(&server, &load, Some(config), heartbeat_ms, sockjs),
        Cmd::Floor { listen, load } => floor_measure(listen, &load).and_then(|v| finish(&load, v)),
        Cmd::Compare(args) => compare::run(&args),
        Cmd::Api(args) => api::run(&args),
        Cmd::Jwt(args) => jwt::run(&args),
        Cmd::Storm(args) => storm::run(&args),
        Cmd::Plot { out, files } => plot::run(&files, &out).map(|()| json!({"ok": true})),
    };
    match result {
        Ok(v) => {
            if !v["ok"].as_bool().unwrap_or(false) {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("ringcast-bench: {e}");
            std::process::exit(2);
        }
    }
}
