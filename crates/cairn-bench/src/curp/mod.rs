//! `cairn bench curp`: closed-loop load over the native CURP-HO protocol, with the Go
//! prototype's knobs (see `shared/design/CURP-HO.md`, "Benchmark harness").
//!
//! `--clients × --threads` sessions, each keeping up to `--pendings` operations in flight,
//! each doing `--reqs` operations (or running for `--duration`). Every latency is recorded in
//! a histogram per class (strong/weak × read/write) and merged at the end, so percentiles come
//! from every raw sample; a ticker records operations completed per second (the series shows
//! whether throughput decays over a long run). The cluster is started separately (for
//! `--delay-ms`, with `--experimental-peer-delay` on the members too); this tool emulates the
//! client–replica delay itself.

pub mod mix;
mod plot;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_client::{Op, Path, Session, SessionConfig};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use serde::Serialize;

use crate::report::Latencies;
use mix::{Class, Keys, Mix};

#[derive(Args, Debug, Clone)]
pub struct CurpBenchArgs {
    /// Native CURP-HO addresses of the replicas (`--listen-native-addr` of each member).
    #[arg(long, default_value = "127.0.0.1:2390", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Client groups (the prototype's client processes); sessions are bound to the replicas
    /// round-robin by group.
    #[arg(long, default_value_t = 2)]
    pub clients: usize,
    /// Sessions per client group.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Operations in flight per session.
    #[arg(long, default_value_t = 10)]
    pub pendings: usize,
    /// Operations per session (ignored with --duration).
    #[arg(long, default_value_t = 10_000)]
    pub reqs: u64,
    /// Run for this long instead of --reqs, e.g. `60s`.
    #[arg(long, value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Percent of operations that are weak.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub weak_ratio: u32,
    /// Percent of strong operations that write.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub writes: u32,
    /// Percent of weak operations that write.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub weak_writes: u32,
    /// Distinct keys.
    #[arg(long, default_value_t = 1_000_000)]
    pub key_space: u64,
    /// Zipf exponent of key popularity (0: uniform).
    #[arg(long, default_value_t = 0.0)]
    pub zipf: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Emulated one-way delay in ms on every client–replica link but the bound replica's (the
    /// client sits next to it); start the members with `--experimental-peer-delay` too.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Seed of the operation and key draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG with the latency CDFs and the per-second throughput.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds = text.trim_end_matches('s');
    seconds
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|error| format!("{text}: {error} (expected e.g. 60s)"))
}

#[derive(Debug, thiserror::Error)]
pub enum CurpBenchError {
    #[error("--clients, --threads, --pendings and --key-space must be positive")]
    Zero,
    #[error("connecting a session: {0}")]
    Connect(#[from] cairn_client::ClientError),
    #[error("writing the plot: {0}")]
    Plot(#[from] std::io::Error),
}

/// Percentiles of one class, in ms.
#[derive(Debug, Serialize)]
pub struct ClassLatency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct ReadWrite {
    pub read: ClassLatency,
    pub write: ClassLatency,
}

/// What `cairn bench curp --json` prints.
#[derive(Debug, Serialize)]
pub struct CurpReport {
    pub throughput_ops: f64,
    pub ops: u64,
    pub duration_s: f64,
    pub fast_path: u64,
    pub slow_path: u64,
    pub errors: u64,
    /// Errors by message, so a run says what went wrong.
    pub error_kinds: std::collections::BTreeMap<String, u64>,
    /// Weak writes the sessions sent again (retries, gap refusals, new leaders).
    pub weak_resends: u64,
    pub strong: ReadWrite,
    pub weak: ReadWrite,
    /// Operations completed in each second of the run.
    pub per_second: Vec<u64>,
}

/// One worker's samples, by class.
#[derive(Default)]
struct Samples {
    classes: [Latencies; 4],
    fast: u64,
    slow: u64,
    errors: u64,
    error_kinds: std::collections::BTreeMap<String, u64>,
}

impl Samples {
    fn merge(&mut self, other: &Samples) {
        for (mine, theirs) in self.classes.iter_mut().zip(&other.classes) {
            mine.merge(theirs);
        }
        self.fast += other.fast;
        self.slow += other.slow;
        self.errors += other.errors;
        for (kind, count) in &other.error_kinds {
            *self.error_kinds.entry(kind.clone()).or_default() += count;
        }
    }
}

fn class_latency(latencies: &Latencies) -> ClassLatency {
    let round = |ms: f64| (ms * 1000.0).round() / 1000.0;
    ClassLatency {
        count: latencies.count(),
        p50_ms: round(latencies.millis_at(0.5)),
        p99_ms: round(latencies.millis_at(0.99)),
        p999_ms: round(latencies.millis_at(0.999)),
    }
}

/// Runs the benchmark and returns its report.
pub async fn run(args: &CurpBenchArgs) -> Result<CurpReport, CurpBenchError> {
    if args.clients == 0 || args.threads == 0 || args.pendings == 0 || args.key_space == 0 {
        return Err(CurpBenchError::Zero);
    }
    let mix = Mix {
        weak_ratio: args.weak_ratio,
        writes: args.writes,
        weak_writes: args.weak_writes,
    };
    let keys = Arc::new(Keys::new(args.key_space, args.zipf));
    let value = Bytes::from(vec![b'v'; args.value_size]);
    let mut sessions = Vec::new();
    for client in 0..args.clients {
        for _ in 0..args.threads {
            let config = SessionConfig {
                bound: client % args.endpoints.len(),
                delay: Duration::from_millis(args.delay_ms),
                ..SessionConfig::new(args.endpoints.clone())
            };
            sessions.push(Arc::new(Session::connect(config).await?));
        }
    }
    let total = match args.duration {
        Some(_) => None,
        None => Some(args.reqs * sessions.len() as u64),
    };
    let progress = match (total, args.duration) {
        (Some(total), _) => ProgressBar::new(total),
        (None, Some(duration)) => ProgressBar::new(duration.as_secs()),
        (None, None) => ProgressBar::hidden(),
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} curp [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    let completed = Arc::new(AtomicU64::new(0));
    let per_second = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let deadline = args.duration.map(|duration| started + duration);
    let ticker = tokio::spawn(tick(
        completed.clone(),
        per_second.clone(),
        progress.clone(),
        total.is_some(),
    ));
    let mut workers = Vec::new();
    for (index, session) in sessions.iter().enumerate() {
        let remaining = Arc::new(AtomicU64::new(args.reqs));
        for pending in 0..args.pendings {
            let worker = Worker {
                session: session.clone(),
                remaining: remaining.clone(),
                bounded: total.is_some(),
                deadline,
                mix,
                keys: keys.clone(),
                value: value.clone(),
                completed: completed.clone(),
                rng: rand::rngs::StdRng::seed_from_u64(
                    args.seed ^ ((index as u64) << 20) ^ pending as u64,
                ),
            };
            workers.push(tokio::spawn(worker.run()));
        }
    }
    let mut samples = Samples::default();
    for worker in workers {
        if let Ok(done) = worker.await {
            samples.merge(&done);
        }
    }
    let elapsed = started.elapsed();
    ticker.abort();
    progress.finish_and_clear();
    let mut per_second =
        std::mem::take(&mut *per_second.lock().unwrap_or_else(PoisonError::into_inner));
    // The last, partial second.
    let counted: u64 = per_second.iter().sum();
    let ops: u64 = samples.classes.iter().map(Latencies::count).sum();
    if ops > counted {
        per_second.push(ops - counted);
    }
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let report = CurpReport {
        throughput_ops: (ops as f64 / seconds).round(),
        ops,
        duration_s: (seconds * 100.0).round() / 100.0,
        fast_path: samples.fast,
        slow_path: samples.slow,
        errors: samples.errors,
        error_kinds: samples.error_kinds.clone(),
        weak_resends: sessions.iter().map(|s| s.weak_resends()).sum(),
        strong: ReadWrite {
            read: class_latency(&samples.classes[Class::StrongRead as usize]),
            write: class_latency(&samples.classes[Class::StrongWrite as usize]),
        },
        weak: ReadWrite {
            read: class_latency(&samples.classes[Class::WeakRead as usize]),
            write: class_latency(&samples.classes[Class::WeakWrite as usize]),
        },
        per_second,
    };
    if let Some(path) = &args.plot {
        std::fs::write(path, plot::svg(&report, &samples.classes))?;
    }
    Ok(report)
}

/// Once a second: the operations completed in that second, and the progress bar.
async fn tick(
    completed: Arc<AtomicU64>,
    per_second: Arc<Mutex<Vec<u64>>>,
    progress: ProgressBar,
    by_ops: bool,
) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.tick().await;
    let mut last = 0;
    loop {
        interval.tick().await;
        let now = completed.load(Ordering::Relaxed);
        per_second
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(now - last);
        last = now;
        if by_ops {
            progress.set_position(now);
        } else {
            progress.inc(1);
        }
    }
}

/// One of a session's `--pendings` closed loops.
struct Worker {
    session: Arc<Session>,
    /// Operations the session still has to do (shared by its loops).
    remaining: Arc<AtomicU64>,
    bounded: bool,
    deadline: Option<Instant>,
    mix: Mix,
    keys: Arc<Keys>,
    value: Bytes,
    completed: Arc<AtomicU64>,
    rng: rand::rngs::StdRng,
}

impl Worker {
    async fn run(mut self) -> Samples {
        let mut samples = Samples::default();
        loop {
            if self.bounded {
                let took =
                    self.remaining
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                            left.checked_sub(1)
                        });
                if took.is_err() {
                    break;
                }
            } else if self
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
            {
                break;
            }
            let class = self.mix.draw(&mut self.rng);
            let key = Bytes::from(format!("key{:010}", self.keys.draw(&mut self.rng)));
            let op = match class {
                Class::StrongWrite | Class::WeakWrite => Op::Put {
                    key,
                    value: self.value.clone(),
                },
                Class::StrongRead | Class::WeakRead => Op::Get { key },
            };
            let started = Instant::now();
            let outcome = match class {
                Class::StrongRead | Class::StrongWrite => self.session.strong(op).await,
                Class::WeakRead | Class::WeakWrite => self.session.weak(op).await,
            };
            match outcome {
                Ok(outcome) => {
                    samples.classes[class as usize].record(started.elapsed());
                    match outcome.path {
                        Some(Path::Fast) => samples.fast += 1,
                        Some(Path::Slow) => samples.slow += 1,
                        None => {}
                    }
                    self.completed.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    samples.errors += 1;
                    *samples.error_kinds.entry(error.to_string()).or_default() += 1;
                }
            }
        }
        samples
    }
}
