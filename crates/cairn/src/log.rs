//! `cairn log …`: run a broker, manage topics, publish and subscribe from the shell.
//!
//! Every command finds the control plane (topics, live brokers) through `--endpoints`, the
//! etcd API of a Cairn member, exactly like etcdctl.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cairn_log::broker::{Broker, BrokerConfig};
use cairn_log::client::publisher::{Publisher, PublisherConfig};
use cairn_log::client::subscriber::{StartAt, Subscriber};
use cairn_log::control::Control;
use cairn_log::topic::{AckLevel, OrderLevel, TopicConfig};
use clap::{Args, Parser, Subcommand};

/// How often the embedded broker asks whether its member answers yet.
const EMBEDDED_WAIT_RETRY: Duration = Duration::from_millis(200);
/// Every this many unanswered asks (10 s), the wait is logged at info level.
const EMBEDDED_WAIT_REPORT_EVERY: u32 = 50;

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Run a broker process (brokers on one host share the topics' memory under --shm).
    Broker(BrokerArgs),
    /// Create, list and describe topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Publish stdin lines (one message each), or generated messages with --count.
    Publish(PublishArgs),
    /// Print a topic's messages in the global order, one per line.
    Subscribe(SubscribeArgs),
}

#[derive(Args, Debug, Clone)]
pub struct Endpoints {
    /// Cairn (etcd API) endpoints holding the log's topics and brokers.
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    endpoints: Vec<String>,
}

#[derive(Parser, Debug)]
pub struct BrokerArgs {
    /// This broker's id within each topic (0 … topic's brokers - 1).
    #[arg(long)]
    id: u32,
    /// Directory of the topics' shared-memory files; every broker of the host uses the same.
    #[arg(long, default_value = "/dev/shm/cairn-log")]
    shm: PathBuf,
    /// Address publishers and subscribers connect to.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: String,
    /// Address registered for clients (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// Directory for ACK 2 segment files.
    #[arg(long, default_value = "default.cairn-log")]
    data_dir: PathBuf,
    /// Seconds after which a dead broker's registration and sequencer roles expire.
    #[arg(long, default_value_t = 3)]
    lease_ttl: i64,
    #[command(flatten)]
    endpoints: Endpoints,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Register a topic (immutable afterwards).
    Create(CreateArgs),
    /// List topics with their levels.
    List(Endpoints),
    /// Show a topic's configuration and its live brokers.
    Describe {
        name: String,
        #[command(flatten)]
        endpoints: Endpoints,
    },
}

#[derive(Parser, Debug)]
pub struct CreateArgs {
    name: String,
    /// 0: none, 1: FIFO per connection, 2: total, 5: total + per-session FIFO.
    #[arg(long, default_value_t = 2)]
    order: u32,
    /// 0: none, 1: ordered in shared memory, 2: fsynced by --replication-factor copies.
    #[arg(long, default_value_t = 1)]
    ack: u32,
    #[arg(long, default_value_t = 1)]
    replication_factor: u32,
    /// Broker ids the topic has room for.
    #[arg(long, default_value_t = 4)]
    brokers: u32,
    /// Payload memory per broker, MiB (a multiple of 4, at least 8).
    #[arg(long, default_value_t = 256)]
    payload_mib: u64,
    /// Sequencing epoch, microseconds.
    #[arg(long, default_value_t = 500)]
    epoch_us: u64,
    /// ORDER 5: how long a session's gap may stay open before it is fenced, ms.
    #[arg(long, default_value_t = 1000)]
    session_lease_ms: u64,
    #[command(flatten)]
    endpoints: Endpoints,
}

#[derive(Parser, Debug)]
pub struct PublishArgs {
    topic: String,
    /// Publish this many generated messages instead of stdin lines.
    #[arg(long)]
    count: Option<u64>,
    /// Size of generated messages, bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Seal a batch at this many bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    batch_bytes: usize,
    /// …or after its first message waited this long, ms.
    #[arg(long, default_value_t = 1)]
    linger_ms: u64,
    #[command(flatten)]
    endpoints: Endpoints,
}

#[derive(Parser, Debug)]
pub struct SubscribeArgs {
    topic: String,
    /// `earliest`, `latest`, a global message position, or `resume` (where --group stopped;
    /// earliest if it never ran).
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Subscriber group: its next position is committed to the KV store after every batch,
    /// so `--from resume` continues where it stopped (ORDER 2/5).
    #[arg(long)]
    group: Option<String>,
    /// Stop after this many messages (default: run until Ctrl-C).
    #[arg(long)]
    count: Option<u64>,
    /// Prefix each line with the message's global position.
    #[arg(long)]
    positions: bool,
    #[command(flatten)]
    endpoints: Endpoints,
}

pub async fn run(
    command: LogCommand,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    match command {
        LogCommand::Broker(args) => broker(args, shutdown).await,
        LogCommand::Topic(TopicCommand::Create(args)) => create(args).await,
        LogCommand::Topic(TopicCommand::List(endpoints)) => list(endpoints).await,
        LogCommand::Topic(TopicCommand::Describe { name, endpoints }) => {
            describe(&name, endpoints).await
        }
        LogCommand::Publish(args) => publish(args).await,
        LogCommand::Subscribe(args) => subscribe(args, shutdown).await,
    }
}

async fn broker(
    args: BrokerArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let config = BrokerConfig {
        id: args.id,
        shm_dir: args.shm,
        data_dir: args.data_dir,
        advertise: args.advertise.unwrap_or_else(|| {
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or(args.listen)
        }),
        endpoints: args.endpoints.endpoints,
        lease_ttl_s: args.lease_ttl,
    };
    let broker = Broker::new(config)
        .await
        .context("connecting to the control plane")?;
    broker.run(listener, shutdown).await.context("log broker")
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let topic = TopicConfig {
        replication_factor: args.replication_factor,
        brokers_max: args.brokers,
        payload_bytes_per_broker: args.payload_mib * 1024 * 1024,
        epoch_us: args.epoch_us,
        session_lease_ms: args.session_lease_ms,
        ..TopicConfig::new(
            &args.name,
            OrderLevel::try_from(args.order)?,
            AckLevel::try_from(args.ack)?,
        )
    };
    topic.validate()?;
    let control = Control::connect(&args.endpoints.endpoints).await?;
    control.create_topic(&topic).await?;
    println!(
        "created topic {} (order {}, ack {}, replication factor {})",
        topic.name, args.order, args.ack, topic.replication_factor
    );
    Ok(())
}

async fn list(endpoints: Endpoints) -> anyhow::Result<()> {
    let control = Control::connect(&endpoints.endpoints).await?;
    for t in control.topics().await? {
        println!(
            "{}\torder={}\tack={}\trf={}",
            t.name,
            u32::from(t.order),
            u32::from(t.ack),
            t.replication_factor
        );
    }
    Ok(())
}

async fn describe(name: &str, endpoints: Endpoints) -> anyhow::Result<()> {
    let control = Control::connect(&endpoints.endpoints).await?;
    let Some(topic) = control.topic(name).await? else {
        bail!("unknown topic {name:?}")
    };
    println!("{}", serde_json::to_string_pretty(&topic)?);
    let sequencer = control.sequencer_holder(name).await?;
    for (id, address) in control.brokers().await? {
        let role = if sequencer == Some(id) {
            "\tsequencer"
        } else {
            ""
        };
        println!("broker {id}\t{address}{role}");
    }
    Ok(())
}

/// The topic's record and its live brokers, or a clear error.
async fn locate(
    topic: &str,
    endpoints: &Endpoints,
) -> anyhow::Result<(TopicConfig, Vec<(u32, String)>)> {
    let control = Control::connect(&endpoints.endpoints).await?;
    let Some(config) = control.topic(topic).await? else {
        bail!("unknown topic {topic:?}")
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Brokers register once a topic exists; give them a moment after `topic create`.
        let brokers: Vec<_> = control
            .brokers()
            .await?
            .into_iter()
            .filter(|(id, _)| *id < config.brokers_max)
            .collect();
        if !brokers.is_empty() {
            return Ok((config, brokers));
        }
        if Instant::now() > deadline {
            bail!("no live broker serves topic {topic:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let (_, brokers) = locate(&args.topic, &args.endpoints).await?;
    let mut config =
        PublisherConfig::new(&args.topic, brokers.into_iter().map(|(_, a)| a).collect());
    config.batch_bytes = args.batch_bytes;
    config.linger = Duration::from_millis(args.linger_ms);
    let mut publisher = Publisher::connect(config).await?;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut bytes = 0u64;
    if let Some(count) = args.count {
        let mut message = vec![b'x'; args.size];
        for n in 0..count {
            let tag = n.to_le_bytes();
            let k = tag.len().min(message.len());
            message[..k].copy_from_slice(&tag[..k]);
            publisher.publish(&message).await?;
            bytes += message.len() as u64;
        }
        sent = count;
    } else {
        // Stdin is read on a blocking thread and handed over line by line.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1024);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if tx.blocking_send(line).is_err() {
                    return;
                }
            }
        });
        while let Some(line) = rx.recv().await {
            publisher.publish(line.as_bytes()).await?;
            sent += 1;
            bytes += line.len() as u64;
        }
    }
    publisher.flush().await?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "published {sent} messages ({bytes} bytes) in {secs:.3} s: {:.1} MB/s, all acknowledged",
        bytes as f64 / secs / 1e6
    );
    Ok(())
}

async fn subscribe(
    args: SubscribeArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (topic, brokers) = locate(&args.topic, &args.endpoints).await?;
    if args.group.is_some() && !topic.order.sequenced() {
        bail!(
            "--group needs global positions: topic {:?} has order {}",
            topic.name,
            u32::from(topic.order)
        );
    }
    let control = Control::connect(&args.endpoints.endpoints).await?;
    let start = match (args.from.as_str(), &args.group) {
        ("earliest", _) => StartAt::Earliest,
        ("latest", _) => StartAt::Latest,
        ("resume", Some(group)) => match control.committed_offset(&topic.name, group).await? {
            Some(position) => StartAt::Position(position),
            None => StartAt::Earliest,
        },
        ("resume", None) => bail!("--from resume needs --group"),
        (n, _) => StartAt::Position(n.parse().with_context(|| {
            format!("--from {n:?}: expected earliest, latest, resume or a position")
        })?),
    };
    let mut subscriber = Subscriber::connect(
        &args.topic,
        &brokers,
        topic.brokers_max,
        topic.order.sequenced(),
        start,
    )
    .await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    let mut next_position = 0u64;
    tokio::pin!(shutdown);
    while args.count.is_none_or(|c| printed < c) {
        let batch = tokio::select! {
            batch = subscriber.next_batch() => batch?,
            _ = &mut shutdown => break,
        };
        for (i, message) in batch.messages().enumerate() {
            if args.count.is_some_and(|c| printed >= c) {
                break;
            }
            if args.positions {
                write!(out, "{}\t", batch.first_message + i as u64)?;
            }
            out.write_all(message)?;
            out.write_all(b"\n")?;
            printed += 1;
            next_position = batch.first_message + i as u64 + 1;
        }
        out.flush()?;
        if let Some(group) = &args.group {
            control
                .commit_offset(&topic.name, group, next_position)
                .await?;
        }
    }
    Ok(())
}

/// The broker `cairn serve` runs beside the etcd API for the one-node default setup.
pub struct EmbeddedBroker {
    pub listen: String,
    pub shm_dir: PathBuf,
    pub data_dir: PathBuf,
    /// This member's own client URL: the broker reaches the KV store like any client.
    pub endpoint: String,
}

/// `/dev/shm/cairn-log-<hash of the data dir>`: two members on one host never share topics
/// by accident.
pub fn default_shm_dir(data_dir: &std::path::Path) -> PathBuf {
    let hash = data_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    PathBuf::from(format!("/dev/shm/cairn-log-{hash:016x}"))
}

impl EmbeddedBroker {
    /// Runs until `stopped` turns true. Never fails the member: a taken port is logged and the
    /// broker stays off; an unreachable member is waited for.
    pub async fn run(self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let listener = match tokio::net::TcpListener::bind(&self.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(listen = %self.listen, "embedded log broker disabled: {e}");
                return;
            }
        };
        let config = BrokerConfig {
            id: 0,
            shm_dir: self.shm_dir,
            data_dir: self.data_dir,
            advertise: listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or(self.listen),
            endpoints: vec![self.endpoint],
            lease_ttl_s: 3,
        };
        // The member's client port opens once it has replayed its data and published itself
        // (which waits for a quorum up to a few election timeouts): wait for it as long as the
        // member runs, saying so now and then.
        let mut attempts = 0u32;
        let broker = loop {
            match Broker::new(config.clone()).await {
                Ok(broker) => break broker,
                Err(e) => {
                    attempts += 1;
                    if attempts % EMBEDDED_WAIT_REPORT_EVERY == 0 {
                        tracing::info!("embedded log broker still waiting for the member: {e}");
                    } else {
                        tracing::debug!("embedded log broker waiting for the member: {e}");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(EMBEDDED_WAIT_RETRY) => {}
                _ = stopped.wait_for(|stop| *stop) => return,
            }
        };
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        tracing::info!(shm_dir = %config.shm_dir.display(), "embedded log broker (id 0); other brokers of this host use the same --shm");
        if let Err(e) = broker.run(listener, shutdown).await {
            tracing::error!("embedded log broker: {e}");
        }
    }
}
