//! `cairn bench log`: the ordered log measured against the machine's own ceilings in one run.
//!
//! For every combination of message size × order level × ack level × broker count: brokers run
//! in this process on loopback sockets (real TCP, real shared memory under /dev/shm), publisher
//! tasks push `total_bytes` through them, then
//! - **publish throughput** = payload bytes / (first send → last ack);
//! - **subscribe throughput** = one subscriber reading all of it back from the earliest position;
//! - **end-to-end latency** = publish → delivery to a live subscriber, at 50% of the measured
//!   peak (the lower of publish and subscribe throughput; messages carry their send time).
//!
//! The ceilings — loopback TCP with as many connections as the run's publishers use, and
//! single-core memcpy — are measured first, in the same process.

use std::time::{Duration, Instant};

use cairn_log::broker::{Broker, BrokerConfig};
use cairn_log::client::publisher::{Publisher, PublisherConfig};
use cairn_log::client::subscriber::{StartAt, Subscriber};
use cairn_log::topic::{AckLevel, OrderLevel, TopicConfig};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::log::ceiling;
use crate::log::nats::{self, NatsArgs, NatsServer, Storage};
use crate::report::Latencies;

#[derive(Parser, Debug, Clone)]
pub struct LogBenchArgs {
    /// Message sizes in bytes (comma-separated).
    #[arg(long, default_value = "1024,4096", value_delimiter = ',')]
    pub message_size: Vec<usize>,
    /// Order levels to run (0, 1, 2, 5).
    #[arg(long, default_value = "0,2,5", value_delimiter = ',')]
    pub order: Vec<u32>,
    /// Ack levels to run (1, 2; 2 only with order 2/5).
    #[arg(long, default_value = "1", value_delimiter = ',')]
    pub ack: Vec<u32>,
    /// Broker counts to run.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    pub brokers: Vec<u32>,
    /// Payload bytes published per run.
    #[arg(long, default_value_t = 1 << 30)]
    pub total_bytes: u64,
    /// Publisher batch size.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub batch_bytes: usize,
    /// Publisher tasks (each connects to every broker).
    #[arg(long, default_value_t = 2)]
    pub publishers: usize,
    /// Seconds of the 50%-load end-to-end latency phase (0 skips it).
    #[arg(long, default_value_t = 2.0)]
    pub e2e_seconds: f64,
    /// Run the end-to-end phase at this fixed rate (MB/s) instead of 50% of the peak (LOG.md's
    /// reference latency is at 100 MB/s).
    #[arg(long)]
    pub e2e_rate_mbps: Option<f64>,
    /// Also run NATS JetStream (Debian nats-server) with acked publishes of each size.
    #[arg(long)]
    pub nats: bool,
    /// Runs of each configuration (and of each ceiling); the median by throughput is reported.
    /// A 2-core host drifts by ±15% between runs; the median of 3 holds the ratios steady.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct Ceilings {
    pub memcpy_gbps: f64,
    /// Loopback TCP bandwidth by connection count.
    pub loopback_gbps: Vec<(usize, f64)>,
    /// The same, with receivers landing the bytes in a log-sized buffer (as a broker must).
    pub loopback_into_memory_gbps: Vec<(usize, f64)>,
}

#[derive(Debug, Serialize)]
pub struct E2eMs {
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, Serialize)]
pub struct LogRun {
    pub order: u32,
    pub ack: u32,
    pub message_size: usize,
    pub brokers: u32,
    pub publishers: usize,
    pub bytes: u64,
    pub publish_gbps: f64,
    pub ceiling_gbps: f64,
    pub ratio_to_ceiling: f64,
    /// Against the loopback ceiling whose receivers land bytes in memory like a broker.
    pub ratio_to_memory_ceiling: f64,
    pub e2e_ms: Option<E2eMs>,
    pub subscribe_gbps: f64,
}

#[derive(Debug, Serialize)]
pub struct NatsRun {
    pub message_size: usize,
    pub storage: &'static str,
    pub result: nats::NatsResult,
    /// Cairn ORDER 2 / ACK 1 / 1 broker publish throughput at this size over JetStream's.
    pub cairn_ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct LogReport {
    pub ceilings: Ceilings,
    pub runs: Vec<LogRun>,
    pub nats: Vec<NatsRun>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogBenchError {
    #[error(transparent)]
    Log(#[from] cairn_log::LogError),
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Args(String),
}

pub async fn run(args: &LogBenchArgs) -> Result<LogReport, LogBenchError> {
    let connection_counts = args.brokers.iter().map(|&b| b as usize * args.publishers);
    let probe_bytes = args.total_bytes.clamp(64 << 20, 1 << 30);
    let (mut loopback, mut into_memory) = (Vec::new(), Vec::new());
    for connections in connection_counts {
        if !loopback.iter().any(|(c, _)| *c == connections) {
            let mut samples = Vec::new();
            for _ in 0..args.repeat.max(1) {
                samples
                    .push(ceiling::loopback_tcp_gbps_connections(probe_bytes, connections).await?);
            }
            loopback.push((connections, median(samples)));
            let mut samples = Vec::new();
            for _ in 0..args.repeat.max(1) {
                samples.push(ceiling::loopback_into_memory_gbps(probe_bytes, connections).await?);
            }
            into_memory.push((connections, median(samples)));
        }
    }
    let memcpy = tokio::task::spawn_blocking(move || ceiling::memcpy_gbps(probe_bytes * 4))
        .await
        .map_err(|e| LogBenchError::Args(e.to_string()))?;
    let ceilings = Ceilings {
        memcpy_gbps: memcpy,
        loopback_gbps: loopback,
        loopback_into_memory_gbps: into_memory,
    };
    eprintln!(
        "ceilings: memcpy {memcpy:.2} GB/s, loopback {:?} GB/s, loopback into memory {:?} GB/s",
        ceilings.loopback_gbps, ceilings.loopback_into_memory_gbps
    );

    let mut runs = Vec::new();
    for &size in &args.message_size {
        for &order in &args.order {
            for &ack in &args.ack {
                for &brokers in &args.brokers {
                    let order_level = OrderLevel::try_from(order)?;
                    if ack == 2 && !order_level.sequenced() {
                        continue;
                    }
                    let ceiling = ceilings
                        .loopback_gbps
                        .iter()
                        .find(|(c, _)| *c == brokers as usize * args.publishers)
                        .map_or(f64::NAN, |(_, g)| *g);
                    let mut samples = Vec::new();
                    for _ in 0..args.repeat.max(1) {
                        samples.push(
                            run_one(
                                args,
                                size,
                                order_level,
                                AckLevel::try_from(ack)?,
                                brokers,
                                ceiling,
                            )
                            .await?,
                        );
                    }
                    samples.sort_by(|a, b| a.publish_gbps.total_cmp(&b.publish_gbps));
                    let mut run = samples.swap_remove(samples.len() / 2);
                    let memory_ceiling = ceilings
                        .loopback_into_memory_gbps
                        .iter()
                        .find(|(c, _)| *c == brokers as usize * args.publishers)
                        .map_or(f64::NAN, |(_, g)| *g);
                    run.ratio_to_memory_ceiling = run.publish_gbps / memory_ceiling;
                    eprintln!(
                        "order {order} ack {ack} {size} B x{brokers} brokers: publish {:.2} GB/s ({:.0}% of loopback, {:.0}% into memory), subscribe {:.2} GB/s, e2e p50/p99 {}",
                        run.publish_gbps,
                        run.ratio_to_ceiling * 100.0,
                        run.ratio_to_memory_ceiling * 100.0,
                        run.subscribe_gbps,
                        run.e2e_ms.as_ref().map_or("-".into(), |e| format!("{:.3}/{:.3} ms", e.p50, e.p99)),
                    );
                    runs.push(run);
                }
            }
        }
    }

    let mut nats_runs = Vec::new();
    if args.nats {
        let server = NatsServer::start().await?;
        for &size in &args.message_size {
            let nats_args = NatsArgs {
                url: server.url(),
                message_size: size,
                total_bytes: args.total_bytes.min(256 << 20),
                window: 256,
                storage: Storage::File,
                connections: 1,
            };
            let result = nats::run_jetstream(&nats_args).await?;
            let cairn = runs
                .iter()
                .find(|r| r.order == 2 && r.ack == 1 && r.brokers == 1 && r.message_size == size);
            eprintln!(
                "NATS JetStream (file) {size} B: {:.3} GB/s",
                result.publish_gbps
            );
            nats_runs.push(NatsRun {
                message_size: size,
                storage: "file",
                cairn_ratio: cairn.map(|c| c.publish_gbps / result.publish_gbps),
                result,
            });
        }
    }
    Ok(LogReport {
        ceilings,
        runs,
        nats: nats_runs,
    })
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// In-process standalone brokers (broker 0 runs the sequencer) on loopback, one topic.
struct Brokers {
    addresses: Vec<(u32, String)>,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Brokers {
    async fn start(topic: &TopicConfig, count: u32) -> Result<Brokers, LogBenchError> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-bench-log")
            .tempdir_in(shm_root())?;
        let (mut addresses, mut stops, mut tasks) = (Vec::new(), Vec::new(), Vec::new());
        for id in 0..count {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let address = listener.local_addr()?.to_string();
            let config = BrokerConfig {
                id,
                shm_dir: dir.path().join("shm"),
                data_dir: dir.path().join("data"),
                advertise: address.clone(),
                endpoints: Vec::new(),
                lease_ttl_s: 3,
            };
            let broker = Broker::new(config).await?;
            broker.add_topic(topic.clone()).await?;
            let (stop, stopped) = oneshot::channel::<()>();
            tasks.push(tokio::spawn(async move {
                let _ = broker
                    .run(listener, async {
                        let _ = stopped.await;
                    })
                    .await;
            }));
            stops.push(stop);
            addresses.push((id, address));
        }
        Ok(Brokers {
            addresses,
            stops,
            tasks,
            _dir: dir,
        })
    }

    fn publisher_config(&self, topic: &str, batch_bytes: usize) -> PublisherConfig {
        let mut config = PublisherConfig::new(
            topic,
            self.addresses.iter().map(|(_, a)| a.clone()).collect(),
        );
        config.batch_bytes = batch_bytes;
        config
    }

    async fn subscribe(
        &self,
        topic: &TopicConfig,
        start: StartAt,
    ) -> Result<Subscriber, LogBenchError> {
        let sequenced = topic.order.sequenced();
        Ok(Subscriber::connect(
            &topic.name,
            &self.addresses,
            topic.brokers_max,
            sequenced,
            start,
        )
        .await?)
    }

    async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// tmpfs when the host has one (as a production broker would use), else the temp dir.
fn shm_root() -> std::path::PathBuf {
    let shm = std::path::PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

async fn run_one(
    args: &LogBenchArgs,
    size: usize,
    order: OrderLevel,
    ack: AckLevel,
    brokers: u32,
    ceiling_gbps: f64,
) -> Result<LogRun, LogBenchError> {
    const SEGMENT: u64 = cairn_log::limits::SEGMENT_BYTES;
    let per_broker = (args.total_bytes / u64::from(brokers)) * 5 / 4 + 4 * SEGMENT;
    let topic = TopicConfig {
        brokers_max: brokers,
        payload_bytes_per_broker: per_broker.div_ceil(SEGMENT) * SEGMENT,
        ..TopicConfig::new("bench", order, ack)
    };
    let cluster = Brokers::start(&topic, brokers).await?;
    let messages_per_publisher = (args.total_bytes / size as u64 / args.publishers as u64).max(1);
    let bytes = messages_per_publisher * args.publishers as u64 * size as u64;

    let progress = ProgressBar::new(bytes).with_style(
        ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("static template"),
    );
    progress.set_message(format!(
        "order {} ack {} {size} B x{brokers}",
        u32::from(order),
        u32::from(ack)
    ));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.publishers {
        let config = cluster.publisher_config("bench", args.batch_bytes);
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut publisher = Publisher::connect(config).await?;
            // Shared, like a producer handing over buffers it owns: sent without a copy.
            let message = bytes::Bytes::from(vec![0xA5u8; size]);
            for n in 0..messages_per_publisher {
                publisher.publish_bytes(message.clone()).await?;
                if n % 1024 == 1023 {
                    progress.inc(1024 * size as u64);
                }
            }
            publisher.flush().await?;
            Ok::<_, cairn_log::LogError>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| LogBenchError::Args(e.to_string()))??;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let publish_gbps = bytes as f64 / publish_secs / 1e9;

    let subscribe_gbps = subscribe_all(&cluster, &topic, bytes / size as u64).await? * 1e-9;
    let e2e_ms = if args.e2e_seconds > 0.0 {
        // Peak end-to-end load is bounded by the slower side.
        let peak_gbps = publish_gbps.min(subscribe_gbps);
        let rate_gbps = args
            .e2e_rate_mbps
            .map_or(peak_gbps * 0.5, |mbps| mbps / 1000.0);
        Some(e2e_latency(&cluster, &topic, args, size, rate_gbps).await?)
    } else {
        None
    };
    cluster.stop().await;
    Ok(LogRun {
        order: order.into(),
        ack: ack.into(),
        message_size: size,
        brokers,
        publishers: args.publishers,
        bytes,
        publish_gbps,
        ceiling_gbps,
        ratio_to_ceiling: publish_gbps / ceiling_gbps,
        ratio_to_memory_ceiling: f64::NAN,
        e2e_ms,
        subscribe_gbps,
    })
}

/// Reads every published message back from the earliest position; returns bytes/s.
async fn subscribe_all(
    cluster: &Brokers,
    topic: &TopicConfig,
    messages: u64,
) -> Result<f64, LogBenchError> {
    let started = Instant::now();
    let mut sub = cluster.subscribe(topic, StartAt::Earliest).await?;
    let (mut seen, mut bytes) = (0u64, 0u64);
    while seen < messages {
        let batch = sub.next_batch().await?;
        seen += u64::from(batch.message_count);
        bytes += batch.payload.len() as u64 - 4 * u64::from(batch.message_count);
    }
    Ok(bytes as f64 / started.elapsed().as_secs_f64())
}

/// Publishes at `gbps` for `args.e2e_seconds` (paced per millisecond) while a live subscriber
/// records each message's publish → delivery time.
async fn e2e_latency(
    cluster: &Brokers,
    topic: &TopicConfig,
    args: &LogBenchArgs,
    size: usize,
    gbps: f64,
) -> Result<E2eMs, LogBenchError> {
    // Each message carries its send time and its number (the subscriber may have attached a
    // moment after the first sends: it stops at the last number, not at a count).
    let size = size.max(16);
    let base = Instant::now();
    let mut sub = cluster.subscribe(topic, StartAt::Latest).await?;
    let messages_per_ms = ((gbps * 1e9 / 1000.0) / size as f64).max(1.0);
    let total = (messages_per_ms * args.e2e_seconds * 1000.0) as u64;
    let publisher_config = cluster.publisher_config(&topic.name, args.batch_bytes);
    let publisher = tokio::spawn(async move {
        let mut publisher = Publisher::connect(publisher_config).await?;
        let mut message = vec![0x5Au8; size];
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while sent < total {
            tick.tick().await;
            let due = ((base.elapsed().as_secs_f64() * 1000.0 * messages_per_ms) as u64).min(total);
            while sent < due {
                message[..8].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_le_bytes());
                message[8..16].copy_from_slice(&sent.to_le_bytes());
                publisher.publish(&message).await?;
                sent += 1;
            }
            publisher.send_open_batch().await?;
        }
        publisher.flush().await?;
        Ok::<_, cairn_log::LogError>(())
    });
    let mut latencies = Latencies::default();
    let mut last_seen = false;
    while !last_seen {
        let batch = tokio::time::timeout(Duration::from_secs(30), sub.next_batch())
            .await
            .map_err(|_| LogBenchError::Args("end-to-end phase stalled".into()))??;
        let now = base.elapsed().as_nanos() as u64;
        for message in batch.messages() {
            let sent = u64::from_le_bytes(message[..8].try_into().expect("8-byte timestamp"));
            latencies.record(Duration::from_nanos(now.saturating_sub(sent)));
            last_seen |=
                u64::from_le_bytes(message[8..16].try_into().expect("8-byte number")) + 1 == total;
        }
    }
    publisher
        .await
        .map_err(|e| LogBenchError::Args(e.to_string()))??;
    Ok(E2eMs {
        p50: latencies.millis_at(0.5),
        p99: latencies.millis_at(0.99),
    })
}
