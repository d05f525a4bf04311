//! The `ringcast` command: `serve`, and the client subcommands on top of the admin socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use ringcast::cli;
use ringcast::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "ringcast",
    version,
    about = "WebSocket/STOMP push server on io_uring"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// TOML configuration file.
    #[arg(long, env = "RINGCAST_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The admin Unix socket a server listens on and `push`, `stats` talk to (default: from
    /// the config, else a per-user runtime dir); `doctor` asks it whether upgrades work; unused by
    /// `token`.
    #[arg(long, env = "RINGCAST_ADMIN_SOCKET", global = true)]
    admin_socket: Option<PathBuf>,
    /// `serve`'s log lines as text (coloured on a terminal unless NO_COLOR is set) or as JSON
    /// objects, one per line. What is logged: RINGCAST_LOG
    /// (e.g. `info`, `debug`, `ringcast=debug`).
    #[arg(
        long,
        env = "RINGCAST_LOG_FORMAT",
        global = true,
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr: JSON lines, or text coloured only for a terminal that wants colour.
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    // The redis crate warns on each of its many attempts to reach a Redis Cluster node that is
    // down; the cluster thread says so once, in its own words.
    let filter = tracing_subscriber::EnvFilter::try_from_env("RINGCAST_LOG")
        .unwrap_or_else(|_| "info,redis=error".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            logs.with_ansi(colour).init();
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server in the foreground.
    Serve(Serve),
    /// Publish to a topic or to a user's queue.
    Push(Push),
    /// Print the server's counters as JSON.
    Stats(StatsArgs),
    /// Mint a JWT with a project's configured key (for testing clients).
    Token(Token),
    /// Check this host against what N connections need: each wall OK, or its fix.
    Doctor(Doctor),
    /// Hand every connection of the running server to a new process of a binary, without a
    /// disconnect (also SIGUSR2, with the binary the server was started from).
    Upgrade(Upgrade),
}

#[derive(Args)]
struct Upgrade {
    /// The binary to run (default: the one the server was started from).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// How long the new process may take to get ready and take over: 60s, 2m.
    #[arg(long, default_value = "60s")]
    timeout: String,
    /// Print the server's JSON answer instead of a sentence.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct StatsArgs {
    /// Every node of the cluster (this one live, the others as of their last heart-beat).
    #[arg(long)]
    cluster: bool,
}

#[derive(Args)]
struct Doctor {
    /// Connections to plan for: 1000000, 1M, 250k (default: the config's max_connections).
    #[arg(long, value_parser = parse_count)]
    connections: Option<u64>,
    /// Print the checks as JSON instead of lines.
    #[arg(long)]
    json: bool,
    /// The load generator runs on this host too (both socket ends, ports per source address).
    #[arg(long)]
    local_bench: bool,
    /// Source addresses the local load generator uses.
    #[arg(long, default_value_t = 40)]
    sources: u64,
}

#[derive(Args)]
struct Token {
    /// The user the token names (in the configured user claim).
    #[arg(long)]
    user: String,
    /// The project whose key signs it.
    #[arg(long, default_value = "default")]
    project: String,
    /// Lifetime: 90, 45s, 30m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Topics the token grants (the project's channels claim), comma-separated: exact names
    /// and `*` patterns, e.g. `orders.7,news.*`.
    #[arg(long, value_delimiter = ',')]
    channels: Option<Vec<String>>,
}

#[derive(Args)]
struct Serve {
    /// WebSocket listen address.
    #[arg(long, env = "RINGCAST_LISTEN")]
    listen: Option<String>,
    /// Reactor shards (0 = one per core; raised to what --max-connections needs).
    #[arg(long, env = "RINGCAST_SHARDS")]
    shards: Option<usize>,
    /// Connections the server accepts at most (beyond it: 503); also sizes the shard plan.
    #[arg(long, env = "RINGCAST_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Accept anonymous sessions (loudly warned about).
    #[arg(long, env = "RINGCAST_NO_AUTH", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0, default_missing_value = "true")]
    no_auth: bool,
    /// Serve the echo endpoint (/echo), for conformance testing.
    #[arg(long, env = "RINGCAST_ECHO", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0, default_missing_value = "true")]
    echo: bool,
    /// Force the single-shot io_uring path that pre-6.0 kernels get.
    #[arg(long, env = "RINGCAST_IO_COMPAT", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0, default_missing_value = "true")]
    io_compat: bool,
    /// Redis URL for clustering.
    #[arg(long, env = "RINGCAST_REDIS")]
    redis: Option<String>,
    /// Network API listen address (HTTP with API keys; see [api] in the config).
    #[arg(long = "api", env = "RINGCAST_API_LISTEN")]
    api: Option<String>,
    /// PEM certificate chain: the listener speaks TLS (wss://) ([tls] cert).
    #[arg(long, env = "RINGCAST_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls-cert ([tls] key).
    #[arg(long, env = "RINGCAST_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Print the merged configuration (secrets masked) and exit.
    #[arg(long)]
    print_config: bool,
    /// Check the configuration (syntax, values, algorithms, key files) and exit: 0 when the
    /// server would start with it.
    #[arg(long)]
    check_config: bool,
}

#[derive(Args)]
struct Push {
    /// Publish to /topic/NAME: every session subscribed to it.
    #[arg(long, conflicts_with_all = ["user", "queue"])]
    topic: Option<String>,
    /// Publish to this user's sessions (with --queue).
    #[arg(long, requires = "queue")]
    user: Option<String>,
    /// The user's queue: sessions subscribed to /user/queue/NAME.
    #[arg(long, requires = "user")]
    queue: Option<String>,
    /// The project (tenant) the destination lives in.
    #[arg(long, default_value = "default")]
    project: String,
    /// Print the admin API's JSON answer instead of a sentence.
    #[arg(long)]
    json: bool,
    /// The message body; `-` reads it from standard input.
    body: String,
}

/// `1000000`, `1_000_000`, `1M`, `250k`.
fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1_000),
        Some((i, 'm' | 'M')) => (&t[..i], 1_000_000),
        _ => (t.as_str(), 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a count: use e.g. 1000000, 1M or 250k"))?;
    if !(n >= 0.0 && n.is_finite()) {
        return Err(format!("{s:?} is not a count"));
    }
    Ok((n * mult as f64).round() as u64)
}

fn main() -> ExitCode {
    // `ringcast stats | head`: a closed pipe ends the command quietly, as for any Unix tool.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    init_logs(cli.common.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringcast: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let common = cli.common;
    match cli.cmd {
        Cmd::Serve(s) => {
            let o = Overrides {
                listen: s.listen,
                shards: s.shards,
                max_connections: s.max_connections,
                admin_socket: common.admin_socket,
                no_auth: s.no_auth,
                echo: s.echo,
                io_compat: s.io_compat,
                redis: s.redis,
                api_listen: s.api,
                tls_cert: s.tls_cert,
                tls_key: s.tls_key,
            };
            let cfg = Config::load(common.config.as_deref(), &o)?;
            if s.check_config {
                let stats = std::sync::Arc::new(ringcast::stats::Stats::new(1));
                let (jwks, _) = ringcast::jwks::Jwks::start(&cfg, stats);
                jwks.context(cfg.clone())?;
                for line in jwks.describe() {
                    println!("{line}");
                }
                ringcast::tls::Tls::from_config(&cfg.tls).map_err(|e| e.to_string())?;
                for w in ringcast::auth::Auth::weak_secrets(&cfg) {
                    eprintln!("warning: {w}");
                }
                let n = cfg.projects.len();
                println!(
                    "configuration OK: {n} project(s), auth {}",
                    if cfg.auth.enabled { "on" } else { "off" }
                );
                return Ok(());
            }
            if s.print_config {
                let mut shown = cfg.clone();
                shown.server.admin_socket = Some(ringcast::admin::socket_path(&cfg));
                print!("{}", shown.to_toml());
                return Ok(());
            }
            let file = common.config.clone();
            ringcast::server::run(cfg, move || Ok(Config::load(file.as_deref(), &o)?))
        }
        Cmd::Push(p) => {
            let socket = cli::admin_socket(common.config.as_deref(), common.admin_socket)?;
            let v = cli::push::run(
                &socket,
                &cli::push::PushArgs {
                    project: &p.project,
                    topic: p.topic.as_deref(),
                    user: p.user.as_deref(),
                    queue: p.queue.as_deref(),
                    body: &p.body,
                },
            )?;
            if p.json {
                println!("{v}");
            } else {
                println!("{}", cli::push::describe(&v));
            }
            if v["cluster"]["error"].is_string() {
                return Err("cross-node delivery failed (local delivery done)".into());
            }
            Ok(())
        }
        Cmd::Doctor(d) => {
            let cfg = Config::load(common.config.as_deref(), &Overrides::default())?;
            let n = d.connections.unwrap_or(cfg.server.max_connections as u64);
            let from_file = common.config.is_some();
            let socket = common
                .admin_socket
                .clone()
                .unwrap_or_else(|| ringcast::admin::socket_path(&cfg));
            if cli::doctor::run(
                &cfg,
                &socket,
                from_file,
                n,
                d.local_bench,
                d.sources,
                d.json,
            ) {
                Ok(())
            } else {
                Err(format!("this host cannot hold {n} connections yet"))
            }
        }
        Cmd::Token(t) => {
            let token = cli::token::run(
                common.config.as_deref(),
                &t.project,
                &t.user,
                &t.ttl,
                t.channels.as_deref(),
            )?;
            println!("{token}");
            Ok(())
        }
        Cmd::Upgrade(u) => {
            let socket = cli::admin_socket(common.config.as_deref(), common.admin_socket)?;
            let v = cli::upgrade::run(&socket, u.binary.as_deref(), &u.timeout)?;
            if u.json {
                println!("{v}");
            } else {
                println!("{}", cli::upgrade::describe(&v));
            }
            Ok(())
        }
        Cmd::Stats(st) => {
            let socket = cli::admin_socket(common.config.as_deref(), common.admin_socket)?;
            let v = cli::stats::run(&socket, st.cluster)?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(())
        }
    }
}
