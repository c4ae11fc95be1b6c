//! `cairn kv put|get|del|scan`: one native CURP-HO operation, strong (default) or weak.
//!
//! Output follows etcdctl's: `put` prints `OK`, `get` and `scan` print each key then its
//! value on the next line, `del` prints how many keys it removed. `--verbose` adds, on
//! stderr, the path a strong operation completed on (fast or slow) and its latency. A weak
//! write is flushed before the command exits, so it is applied when `cairn kv` returns.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use cairn_client::{Op, Session, SessionConfig};
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct KvArgs {
    #[command(subcommand)]
    command: KvCommand,
    /// Native CURP-HO addresses of the replicas (`--listen-native-addr` of each member).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:2390",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
    /// Index in --endpoints of the replica that answers weak operations (the nearest).
    #[arg(long, global = true, default_value_t = 0)]
    bound: usize,
    /// Causal consistency, answered by the bound replica (default: strong, linearizable).
    #[arg(long, global = true, conflicts_with = "strong")]
    weak: bool,
    /// Linearizable (the default).
    #[arg(long, global = true)]
    strong: bool,
    /// Give up after this long, e.g. `10s`.
    #[arg(long, global = true, default_value = "10s", value_parser = cairn_server::config::parse_duration)]
    timeout: Duration,
    /// Print the completion path and latency on stderr.
    #[arg(long, short, global = true)]
    verbose: bool,
}

#[derive(Subcommand, Debug)]
enum KvCommand {
    /// Write KEY = VALUE.
    Put { key: String, value: String },
    /// Read KEY.
    Get { key: String },
    /// Delete KEY.
    Del { key: String },
    /// Keys in [START, END) in key order (END empty: to the end of the keyspace).
    Scan {
        start: String,
        #[arg(default_value = "")]
        end: String,
        /// At most this many keys (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u64,
    },
}

pub async fn run(args: KvArgs) -> anyhow::Result<()> {
    let config = SessionConfig {
        bound: args.bound,
        timeout: args.timeout,
        ..SessionConfig::new(args.endpoints.clone())
    };
    let session = Session::connect(config)
        .await
        .with_context(|| format!("connecting to {}", args.endpoints.join(",")))?;
    let op = match &args.command {
        KvCommand::Put { key, value } => Op::Put {
            key: Bytes::from(key.clone()),
            value: Bytes::from(value.clone()),
        },
        KvCommand::Get { key } => Op::Get {
            key: Bytes::from(key.clone()),
        },
        KvCommand::Del { key } => Op::Delete {
            key: Bytes::from(key.clone()),
        },
        KvCommand::Scan { start, end, limit } => Op::Scan {
            start: Bytes::from(start.clone()),
            end: Bytes::from(end.clone()),
            limit: *limit,
        },
    };
    let writes = op.writes();
    let started = Instant::now();
    let outcome = if args.weak {
        session.weak(op).await?
    } else {
        session.strong(op).await?
    };
    let latency = started.elapsed();
    if args.weak && writes {
        session.flush().await.context("flushing the weak write")?;
    }
    if args.verbose {
        let path = outcome.path.map_or("weak".to_string(), |path| {
            format!("{path:?}").to_lowercase()
        });
        eprintln!("path={path} latency={latency:?}");
    }
    match args.command {
        KvCommand::Put { .. } => println!("OK"),
        KvCommand::Del { .. } if args.weak => println!("OK"),
        KvCommand::Del { .. } => println!("{}", outcome.result.deleted),
        KvCommand::Get { .. } | KvCommand::Scan { .. } => {
            for kv in &outcome.result.kvs {
                println!("{}", String::from_utf8_lossy(&kv.key));
                println!("{}", String::from_utf8_lossy(&kv.value));
            }
        }
    }
    Ok(())
}
