//! `cairn` — the command line: `serve` runs a member, `bench` measures one.

mod cluster;
mod kv;
mod log;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cairn_bench::kv::KvBenchArgs;
use cairn_server::config::parse_duration;
use cairn_server::tls::TlsFiles;
use cairn_server::{ClusterState, ServerConfig};
use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc instead of glibc malloc: the request path allocates small, short-lived buffers
/// (protobuf messages, HTTP/2 frames) on several threads, where glibc spent ~8% of server CPU
/// under a 100-client put load (measured with `perf record`; see docs/perf/kv-single-node.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a drop-in etcd v3 server (and more)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads of the async runtime (default: one per core). Processes that share a host with
    /// others (members of a local cluster, a load generator beside them) do better with fewer:
    /// each spare worker costs wake-ups and context switches the others pay for.
    #[arg(long, global = true, env = WORKER_THREADS_VAR, value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
}

/// The environment variable `--worker-threads` falls back to (`cluster up` sets it for its
/// members).
const WORKER_THREADS_VAR: &str = "CAIRN_WORKER_THREADS";

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a member serving the etcd v3 API (flags as etcd's).
    Serve(Box<ServeArgs>),
    /// Local development clusters.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// One native CURP-HO operation (put, get, del, scan), strong or --weak.
    Kv(kv::KvArgs),
    /// The ordered publish/subscribe log: brokers, topics, publish, subscribe.
    #[command(subcommand)]
    Log(log::LogCommand),
    /// Load generators.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Start N members as local processes; print endpoints; Ctrl-C stops them all.
    Up(cluster::ClusterUpArgs),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// etcd v3 API load, like etcd's `benchmark` tool (works against etcd too).
    Kv(KvBenchArgs),
    /// The ordered log: publish, subscribe and end-to-end figures against the loopback and
    /// memcpy ceilings (and NATS JetStream with --nats).
    Log(cairn_bench::log::run::LogBenchArgs),
    /// The native CURP-HO protocol: strong/weak op mix, Zipf keys, emulated delay (the
    /// prototype's knobs); throughput, per-class percentiles, fast/slow paths, per-second series.
    Curp(cairn_bench::curp::CurpBenchArgs),
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum StateArg {
    New,
    Existing,
}

/// Flags named and defaulted like etcd's.
#[derive(Parser, Debug)]
struct ServeArgs {
    /// Human-readable name of this member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Directory for the WAL, snapshots and member identity.
    #[arg(long, default_value = "default.cairn")]
    data_dir: PathBuf,
    /// URLs to listen on for client traffic (comma-separated).
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    listen_client_urls: Vec<String>,
    /// Client URLs advertised to the cluster and to clients (MemberList).
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    advertise_client_urls: Vec<String>,
    /// URLs to listen on for peer traffic.
    #[arg(long, default_value = "http://127.0.0.1:2380", value_delimiter = ',')]
    listen_peer_urls: Vec<String>,
    /// Peer URLs advertised to the cluster.
    #[arg(long, default_value = "http://127.0.0.1:2380", value_delimiter = ',')]
    initial_advertise_peer_urls: Vec<String>,
    /// Initial cluster configuration: name=peer-url,…
    #[arg(long, default_value = "default=http://127.0.0.1:2380")]
    initial_cluster: String,
    /// `new` for a new cluster, `existing` to join one.
    #[arg(long, value_enum, default_value_t = StateArg::New)]
    initial_cluster_state: StateArg,
    /// Token that makes cluster and member ids unique per cluster.
    #[arg(long, default_value = "cairn-cluster")]
    initial_cluster_token: String,
    /// Storage quota in bytes; beyond it the NOSPACE alarm refuses writes (0: 2 GiB default).
    #[arg(long, default_value_t = 0)]
    quota_backend_bytes: u64,
    /// Largest client request in bytes.
    #[arg(long, default_value_t = 1_572_864)]
    max_request_bytes: usize,
    /// Most operations in one txn.
    #[arg(long, default_value_t = 128)]
    max_txn_ops: usize,
    /// Applied entries between two snapshots of the state.
    #[arg(long, default_value_t = 100_000)]
    snapshot_count: u64,
    /// Period of watch progress notifications (etcd: --experimental-watch-progress-notify-interval).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    experimental_watch_progress_notify_interval: Duration,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000)]
    election_timeout: u64,
    /// Token kind: `simple`, or `jwt,priv-key=FILE,sign-method=HS256[,ttl=5m]` (HMAC key file;
    /// HS256, HS384 or HS512).
    #[arg(long, default_value = "simple")]
    auth_token: String,
    /// Seconds an unused simple token stays valid.
    #[arg(long, default_value_t = 300)]
    auth_token_ttl: u64,
    /// Cost of bcrypt password hashing (4..=31); lower is faster and weaker.
    #[arg(long, default_value_t = 10)]
    bcrypt_cost: u32,
    /// Certificate (PEM) served on https client URLs.
    #[arg(long)]
    cert_file: Option<PathBuf>,
    /// Private key (PEM) of --cert-file.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// CA (PEM) that signs client certificates.
    #[arg(long)]
    trusted_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate signed by --trusted-ca-file.
    #[arg(long)]
    client_cert_auth: bool,
    /// Certificate (PEM) for https peer URLs, served and presented to other members.
    #[arg(long)]
    peer_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --peer-cert-file.
    #[arg(long)]
    peer_key_file: Option<PathBuf>,
    /// CA (PEM) that signs the other members' certificates.
    #[arg(long)]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Refuse peers without a certificate signed by --peer-trusted-ca-file.
    #[arg(long)]
    peer_client_cert_auth: bool,
    /// Emulated one-way delay on every peer link, e.g. `25ms` (benchmarks of wide-area
    /// clusters on one host; messages stay in order).
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    experimental_peer_delay: Duration,
    /// Address of the embedded ordered-log broker (id 0; `cairn log …` talks to it); empty
    /// disables it. If the port is taken the member runs without it.
    #[arg(long, default_value = "127.0.0.1:9092")]
    log_listen: String,
    /// Directory of the embedded broker's shared-memory topic files (default: a directory
    /// under /dev/shm named after --data-dir).
    #[arg(long)]
    log_shm_dir: Option<PathBuf>,
    /// Address of the native CURP-HO listener (`cairn kv`, `cairn bench curp` and
    /// cairn-client talk to it); empty disables it. If the port is taken the member runs
    /// without it.
    #[arg(long, default_value = "127.0.0.1:2390")]
    listen_native_addr: String,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info`, `cairn_server=debug`.
    #[arg(long, default_value = "info", env = "CAIRN_LOG")]
    log_level: String,
}

impl ServeArgs {
    /// The embedded broker's settings, if it is enabled and can reach this member over http.
    fn embedded_broker(&self) -> Option<log::EmbeddedBroker> {
        let endpoint = self.advertise_client_urls.first()?.clone();
        if self.log_listen.is_empty() || !endpoint.starts_with("http://") {
            return None;
        }
        let data_dir =
            std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        let shm_dir = self
            .log_shm_dir
            .clone()
            .unwrap_or_else(|| log::default_shm_dir(&data_dir));
        Some(log::EmbeddedBroker {
            listen: self.log_listen.clone(),
            shm_dir,
            data_dir: data_dir.join("log"),
            endpoint,
        })
    }

    fn into_config(self) -> ServerConfig {
        let defaults = ServerConfig::default();
        ServerConfig {
            name: self.name,
            data_dir: self.data_dir,
            listen_client_urls: self.listen_client_urls,
            advertise_client_urls: self.advertise_client_urls,
            listen_peer_urls: self.listen_peer_urls,
            initial_advertise_peer_urls: self.initial_advertise_peer_urls,
            initial_cluster: self.initial_cluster,
            initial_cluster_state: match self.initial_cluster_state {
                StateArg::New => ClusterState::New,
                StateArg::Existing => ClusterState::Existing,
            },
            initial_cluster_token: self.initial_cluster_token,
            quota_backend_bytes: match self.quota_backend_bytes {
                0 => defaults.quota_backend_bytes,
                bytes => bytes,
            },
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops,
            heartbeat_interval_ms: self.heartbeat_interval,
            election_timeout_ms: self.election_timeout,
            snapshot_count: self.snapshot_count,
            watch_progress_notify_interval: self.experimental_watch_progress_notify_interval,
            auth_token: self.auth_token,
            auth_token_ttl_s: self.auth_token_ttl,
            bcrypt_cost: self.bcrypt_cost,
            client_tls: TlsFiles {
                cert_file: self.cert_file,
                key_file: self.key_file,
                trusted_ca_file: self.trusted_ca_file,
                client_cert_auth: self.client_cert_auth,
            },
            peer_delay: self.experimental_peer_delay,
            peer_tls: TlsFiles {
                cert_file: self.peer_cert_file,
                key_file: self.peer_key_file,
                trusted_ca_file: self.peer_trusted_ca_file,
                client_cert_auth: self.peer_client_cert_auth,
            },
            extra_metrics: None,
            listen_native_addr: self.listen_native_addr,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // No LIFO slot: with it, a task woken by another runs right after it. When an applied
    // batch wakes the handlers of twenty requests of one HTTP/2 connection, each handler then
    // woke the connection task into that slot, which wrote its one response: a `writev` per
    // request (54k writev for 60k puts). Without it the connection task queues behind the
    // handlers and writes their responses together: 100-client puts 24k -> 33k req/s on
    // this 2-core host, p99 7.5 -> 6.3 ms (etcd with the same load generator: +6%).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.worker_threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = builder.enable_all().disable_lifo_slot().build()?;
    // Signal handlers (`shutdown_signal`) are installed outside `block_on`.
    let _runtime_context = runtime.enter();
    match cli.command {
        Command::Serve(args) => {
            init_logging(&args.log_level);
            let embedded = args.embedded_broker();
            let config = ServerConfig {
                extra_metrics: embedded
                    .is_some()
                    .then_some(cairn_log::metrics::render as fn(&mut String)),
                ..args.into_config()
            };
            runtime.block_on(async move {
                let (stop, stopped) = tokio::sync::watch::channel(false);
                let broker = embedded.map(|e| tokio::spawn(e.run(stopped)));
                let served = cairn_server::run(config, shutdown_signal()).await;
                let _ = stop.send(true);
                if let Some(broker) = broker {
                    let _ = broker.await;
                }
                served.context("cairn serve")
            })
        }
        Command::Cluster(ClusterCommand::Up(args)) => {
            runtime.block_on(cluster::up(args, shutdown_signal()))
        }
        Command::Kv(args) => {
            init_logging("warn");
            runtime.block_on(kv::run(args))
        }
        Command::Log(command) => {
            // A broker logs like a server; the client commands only speak up about trouble.
            let default = if matches!(command, log::LogCommand::Broker(_)) {
                "info"
            } else {
                "warn"
            };
            init_logging(&std::env::var("CAIRN_LOG").unwrap_or_else(|_| default.to_string()));
            runtime.block_on(log::run(command, shutdown_signal()))
        }
        Command::Bench(BenchCommand::Log(args)) => runtime.block_on(async move {
            let report = cairn_bench::log::run::run(&args)
                .await
                .context("cairn bench log")?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            }
            Ok(())
        }),
        Command::Bench(BenchCommand::Curp(args)) => runtime.block_on(async move {
            init_logging("warn");
            let report = cairn_bench::curp::run(&args)
                .await
                .context("cairn bench curp")?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            Ok(())
        }),
        Command::Bench(BenchCommand::Kv(args)) => runtime.block_on(async move {
            let report = cairn_bench::kv::run(&args)
                .await
                .context("cairn bench kv")?;
            if let Some(error) = &report.first_error {
                eprintln!("{} requests failed; the first with: {error}", report.errors);
            }
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", report.render());
            }
            Ok(())
        }),
    }
}

fn init_logging(filter: &str) {
    // openraft reports every vote and replication state change at info; keep its warnings
    // unless the filter asks for openraft explicitly.
    let filter = if filter.contains("openraft") {
        filter.to_string()
    } else {
        format!("{filter},openraft=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: `cluster up` and service managers send stderr to files.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled: a signal that arrives while a command is still
/// starting (`cluster up` waiting for its members) is kept for it, where the default action
/// would have killed the process and left its members running. Call it inside the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    }
}
