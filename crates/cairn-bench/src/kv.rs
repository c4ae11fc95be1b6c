//! `cairn bench kv`: etcd-`benchmark`-style load against any etcd v3 endpoint.
//!
//! `--clients` closed-loop clients share `--conns` gRPC connections (HTTP/2 multiplexes them)
//! and together send `--total` requests; every latency is recorded and merged at the end. The
//! requests go through `grpc::UnaryConnection`, a thin client, so that the generator leaves
//! as much of the machine as it can to the server it measures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest, RequestOp, TxnRequest};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};

use crate::grpc::{CallError, UnaryConnection};
use crate::report::{Latencies, Report};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const PUT_PATH: &str = "/etcdserverpb.KV/Put";
const RANGE_PATH: &str = "/etcdserverpb.KV/Range";
const TXN_PATH: &str = "/etcdserverpb.KV/Txn";

/// Flags shared by every workload (etcd `benchmark`'s global flags).
#[derive(Args, Debug, Clone)]
pub struct KvBenchArgs {
    /// Comma-separated endpoints; connections are spread over them round-robin.
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Number of gRPC connections.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Number of concurrent clients (closed loop: one request in flight each).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Total requests across all clients.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Seed of the key generator (runs with the same seed send the same keys).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(subcommand)]
    pub workload: Workload,
}

/// Key and value shape of writing workloads.
#[derive(Args, Debug, Clone)]
pub struct WriteShape {
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Number of distinct keys written.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Write keys in order instead of at random.
    #[arg(long)]
    pub sequential_keys: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Workload {
    /// Puts of generated keys.
    Put(WriteShape),
    /// Ranges over [key, end) (or one key).
    Range {
        key: String,
        end: Option<String>,
        /// l = linearizable, s = serializable.
        #[arg(long, value_enum, default_value_t = Consistency::L)]
        consistency: Consistency,
    },
    /// Txns of `--txn-ops` puts each.
    TxnPut {
        #[command(flatten)]
        shape: WriteShape,
        /// Puts per txn.
        #[arg(long, default_value_t = 1)]
        txn_ops: usize,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    L,
    S,
}

impl Workload {
    fn name(&self) -> &'static str {
        match self {
            Workload::Put(_) => "put",
            Workload::Range { .. } => "range",
            Workload::TxnPut { .. } => "txn-put",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bad endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("--conns and --clients must be at least 1")]
    Zero,
}

/// Runs the benchmark and returns its report.
pub async fn run(args: &KvBenchArgs) -> Result<Report, BenchError> {
    if args.conns == 0 || args.clients == 0 {
        return Err(BenchError::Zero);
    }
    let mut connections = Vec::with_capacity(args.conns);
    for position in 0..args.conns {
        let endpoint = &args.endpoints[position % args.endpoints.len()];
        connections.push(connect(endpoint).await?);
    }
    let progress = ProgressBar::new(args.total);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    progress.set_message(args.workload.name());
    let issued = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(OnceLock::new());
    let value = vec![b'v'; value_size(&args.workload)];
    let started = Instant::now();
    let mut clients = Vec::with_capacity(args.clients);
    for client in 0..args.clients {
        let worker = Worker {
            connection: connections[client % connections.len()].clone(),
            workload: args.workload.clone(),
            total: args.total,
            issued: issued.clone(),
            errors: errors.clone(),
            first_error: first_error.clone(),
            progress: progress.clone(),
            value: value.clone(),
            rng: rand::rngs::StdRng::seed_from_u64(args.seed.wrapping_add(client as u64)),
        };
        clients.push(tokio::spawn(worker.run()));
    }
    let mut latencies = Latencies::default();
    for client in clients {
        if let Ok(client_latencies) = client.await {
            latencies.merge(&client_latencies);
        }
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    let mut report = Report::new(
        args.workload.name(),
        &latencies,
        errors.load(Ordering::Relaxed),
        elapsed,
    );
    report.first_error = first_error.get().cloned();
    Ok(report)
}

/// Connects to an `http://host:port` endpoint (the generator speaks plain HTTP/2 only).
async fn connect(endpoint: &str) -> Result<UnaryConnection, BenchError> {
    let bad = |reason: &str| BenchError::Endpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    let uri: http::Uri = endpoint.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// endpoints are supported"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host:port"))?;
    let connecting = UnaryConnection::connect(authority.clone());
    let reason = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => return Ok(connection),
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {CONNECT_TIMEOUT:?}"),
    };
    Err(BenchError::Connect {
        endpoint: endpoint.to_string(),
        reason,
    })
}

fn value_size(workload: &Workload) -> usize {
    match workload {
        Workload::Put(shape) | Workload::TxnPut { shape, .. } => shape.val_size,
        Workload::Range { .. } => 0,
    }
}

struct Worker {
    connection: UnaryConnection,
    workload: Workload,
    total: u64,
    issued: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    first_error: Arc<OnceLock<String>>,
    progress: ProgressBar,
    value: Vec<u8>,
    rng: rand::rngs::StdRng,
}

impl Worker {
    async fn run(mut self) -> Latencies {
        let mut latencies = Latencies::default();
        loop {
            let sequence = self.issued.fetch_add(1, Ordering::Relaxed);
            if sequence >= self.total {
                return latencies;
            }
            let started = Instant::now();
            match self.one(sequence).await {
                Ok(_) => latencies.record(started.elapsed()),
                Err(error) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    let _ = self.first_error.set(error.to_string());
                }
            }
            self.progress.inc(1);
        }
    }

    async fn one(&mut self, sequence: u64) -> Result<bytes::Bytes, CallError> {
        match self.workload.clone() {
            Workload::Put(shape) => {
                let key = self.key(&shape, sequence);
                let request = PutRequest {
                    key,
                    value: self.value.clone(),
                    ..Default::default()
                };
                self.connection.call(PUT_PATH, &request).await
            }
            Workload::Range {
                key,
                end,
                consistency,
            } => {
                let request = RangeRequest {
                    key: key.into_bytes(),
                    range_end: end.map(String::into_bytes).unwrap_or_default(),
                    serializable: consistency == Consistency::S,
                    ..Default::default()
                };
                self.connection.call(RANGE_PATH, &request).await
            }
            Workload::TxnPut { shape, txn_ops } => {
                let success = (0..txn_ops as u64)
                    .map(|op| {
                        let key = self.key(&shape, sequence * txn_ops as u64 + op);
                        let put = PutRequest {
                            key,
                            value: self.value.clone(),
                            ..Default::default()
                        };
                        RequestOp {
                            request: Some(Op::RequestPut(put)),
                        }
                    })
                    .collect();
                let request = TxnRequest {
                    compare: Vec::new(),
                    success,
                    failure: Vec::new(),
                };
                self.connection.call(TXN_PATH, &request).await
            }
        }
    }

    /// etcd's key shape: the key number in big-endian, zero-padded or cut to `key_size`.
    fn key(&mut self, shape: &WriteShape, sequence: u64) -> Vec<u8> {
        let space = shape.key_space_size.max(1);
        let number = match shape.sequential_keys {
            true => sequence % space,
            false => self.rng.gen_range(0..space),
        };
        let mut key = vec![0u8; shape.key_size.max(1)];
        let bytes = number.to_be_bytes();
        let take = key.len().min(bytes.len());
        let key_len = key.len();
        key[key_len - take..].copy_from_slice(&bytes[bytes.len() - take..]);
        key
    }
}
