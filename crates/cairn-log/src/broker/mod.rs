//! A broker process: accepts publisher and subscriber connections for every topic, keeps its
//! registration alive in Cairn's KV store, and competes for each sequenced topic's sequencer
//! role (the winner runs it; the others stand by).
//!
//! Layout:
//! - `topic` — one topic as this broker holds it (shared memory, allocator, ring, sequencer).
//! - `payload` — the payload log allocator.
//! - `ingest` — publisher connections (receive into shared memory, acks).
//! - `acker` — per topic: sequencer outcomes → acks, payload release, ring recycling.
//! - `subscribe` — subscriber connections.

pub mod acker;
pub mod ingest;
pub mod payload;
pub mod subscribe;
pub mod topic;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cairn_proto::logpb::{self, broker_frame, client_frame, BrokerFrame};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::control::{BrokerLease, Control};
use crate::error::{LogError, Result};
use crate::topic::TopicConfig;
use crate::wire::{read_frame, write_frame};
use topic::TopicRuntime;

/// Connections a broker serves at once; more wait in the accept queue.
const CONNECTIONS_MAX: usize = 1024;
/// How often the broker re-reads topics and re-checks its sequencer roles.
const CONTROL_PERIOD: Duration = Duration::from_millis(250);

#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub id: u32,
    /// Directory of the topics' shared-memory files (`/dev/shm/...` by default).
    pub shm_dir: PathBuf,
    /// Directory of ACK 2 segment files.
    pub data_dir: PathBuf,
    /// Address publishers and subscribers should use, as registered in the KV store.
    pub advertise: String,
    /// Cairn (etcd API) endpoints of the control plane; empty = standalone (tests, embedded
    /// single node): topics are added by hand and broker 0 runs every sequencer.
    pub endpoints: Vec<String>,
    pub lease_ttl_s: i64,
}

pub struct Broker {
    config: BrokerConfig,
    control: Option<Control>,
    topics: RwLock<HashMap<String, Arc<TopicRuntime>>>,
    /// Held while a topic is opened: a publisher's hello and the control loop both open a
    /// new topic, and two runtimes of one topic would run two ackers over one ring.
    opening: tokio::sync::Mutex<()>,
    next_connection: AtomicU32,
}

impl Broker {
    /// A broker; with control-plane endpoints, only once the control plane answers.
    pub async fn new(config: BrokerConfig) -> Result<Arc<Broker>> {
        let control = if config.endpoints.is_empty() {
            None
        } else {
            let control = Control::connect(&config.endpoints).await?;
            // The client connects lazily: ask once, so a broker whose control plane does not
            // answer fails here, with the reason, instead of warning from its control loop.
            control.ping().await?;
            Some(control)
        };
        Ok(Arc::new(Broker {
            config,
            control,
            topics: RwLock::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
            next_connection: AtomicU32::new(1),
        }))
    }

    pub fn id(&self) -> u32 {
        self.config.id
    }

    /// Maps a topic (creating its shared memory if this broker is first). Pre-faulting can take
    /// a while, so it runs on a blocking thread.
    pub async fn add_topic(&self, config: TopicConfig) -> Result<Arc<TopicRuntime>> {
        if let Some(topic) = self.local_topic(&config.name) {
            return Ok(topic);
        }
        let _opening = self.opening.lock().await;
        if let Some(topic) = self.local_topic(&config.name) {
            return Ok(topic);
        }
        if self.config.id >= config.brokers_max {
            return Err(LogError::Protocol(format!(
                "broker id {} is outside topic {:?}'s {} brokers",
                self.config.id, config.name, config.brokers_max
            )));
        }
        let (id, shm_dir, data_dir) = (
            self.config.id,
            self.config.shm_dir.clone(),
            self.config.data_dir.clone(),
        );
        let topic = tokio::task::spawn_blocking(move || {
            TopicRuntime::open(config, id, &shm_dir, &data_dir)
        })
        .await
        .map_err(|e| LogError::Protocol(format!("topic open task: {e}")))??;
        let previous = self
            .topics
            .write()
            .expect("topics lock")
            .insert(topic.config.name.clone(), Arc::clone(&topic));
        assert!(previous.is_none(), "a topic is opened once");
        if self.control.is_none() && self.config.id == 0 && topic.config.order.sequenced() {
            topic.start_sequencer(&self.config.data_dir)?;
        }
        Ok(topic)
    }

    fn mapped_topics(&self) -> Vec<Arc<TopicRuntime>> {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect()
    }

    fn local_topic(&self, name: &str) -> Option<Arc<TopicRuntime>> {
        self.topics.read().expect("topics lock").get(name).cloned()
    }

    /// The topic, looked up in the KV store if this broker has not mapped it yet.
    async fn topic(&self, name: &str) -> Result<Arc<TopicRuntime>> {
        if let Some(topic) = self.local_topic(name) {
            return Ok(topic);
        }
        let Some(control) = &self.control else {
            return Err(LogError::UnknownTopic(name.into()));
        };
        match control.topic(name).await? {
            Some(config) => self.add_topic(config).await,
            None => Err(LogError::UnknownTopic(name.into())),
        }
    }

    /// Serves `listener` until `shutdown` resolves, then stops every topic's threads.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let control_loop = self
            .control
            .is_some()
            .then(|| tokio::spawn(Arc::clone(&self).control_loop()));
        let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
        tracing::info!(broker = self.config.id, address = %self.config.advertise, "log broker serving");
        tokio::pin!(shutdown);
        loop {
            let permit = Arc::clone(&permits)
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = &mut shutdown => break,
            };
            let broker = Arc::clone(&self);
            tokio::spawn(async move {
                if let Err(e) = broker.handle_connection(stream).await {
                    tracing::debug!(%peer, "log connection ended: {e}");
                }
                drop(permit);
            });
        }
        if let Some(task) = control_loop {
            task.abort();
        }
        let topics = self.mapped_topics();
        tokio::task::spawn_blocking(move || topics.iter().for_each(|t| t.shutdown()))
            .await
            .map_err(|e| LogError::Protocol(format!("shutdown task: {e}")))?;
        tracing::info!(broker = self.config.id, "log broker stopped");
        Ok(())
    }

    async fn handle_connection(self: Arc<Self>, mut stream: TcpStream) -> Result<()> {
        stream.set_nodelay(true)?;
        let first = read_frame::<logpb::ClientFrame>(&mut stream).await?;
        let result = match first.and_then(|f| f.frame) {
            Some(client_frame::Frame::Hello(hello)) => match self.topic(&hello.topic).await {
                Ok(topic) => {
                    let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
                    let stream = stream.into_std()?;
                    stream.set_nonblocking(false)?;
                    return ingest::spawn(topic, stream, hello, id);
                }
                Err(e) => Err(e),
            },
            Some(client_frame::Frame::Subscribe(subscribe)) => {
                match self.topic(&subscribe.topic).await {
                    Ok(topic) => {
                        let stream = stream.into_std()?;
                        stream.set_nonblocking(false)?;
                        std::thread::Builder::new()
                            .name("log-subscriber".into())
                            .spawn(move || subscribe::serve(topic, stream, subscribe))?;
                        return Ok(());
                    }
                    Err(e) => Err(e),
                }
            }
            _ => Err(LogError::Protocol(
                "first frame must be hello or subscribe".into(),
            )),
        };
        if let Err(e) = &result {
            let refusal = logpb::Error {
                code: e.code().into(),
                message: e.to_string(),
            };
            write_frame(
                &mut stream,
                &BrokerFrame {
                    frame: Some(broker_frame::Frame::Error(refusal)),
                },
            )
            .await?;
        }
        result
    }

    /// Maps newly created topics and keeps this broker's sequencer roles in step with the KV.
    /// The broker registers (lease + key) only once a topic exists, so an idle embedded broker
    /// writes nothing into the user's keyspace.
    async fn control_loop(self: Arc<Self>) {
        let control = self
            .control
            .clone()
            .expect("control loop runs with a control plane");
        let mut lease: Option<BrokerLease> = None;
        loop {
            if let Err(e) = self.reconcile(&control, &mut lease).await {
                tracing::warn!("log control plane: {e}");
            }
            tokio::time::sleep(CONTROL_PERIOD).await;
        }
    }

    async fn reconcile(&self, control: &Control, lease: &mut Option<BrokerLease>) -> Result<()> {
        let topics = control.topics().await?;
        if topics.is_empty() {
            return Ok(());
        }
        if !lease.as_ref().is_some_and(BrokerLease::alive) {
            *lease = Some(
                control
                    .register_broker(
                        self.config.id,
                        &self.config.advertise,
                        self.config.lease_ttl_s,
                    )
                    .await?,
            );
        }
        let lease = lease.as_ref().expect("registered above");
        for config in topics {
            if config.brokers_max > self.config.id {
                self.add_topic(config).await?;
            }
        }
        let topics = self.mapped_topics();
        for topic in topics.iter().filter(|t| t.config.order.sequenced()) {
            let holds = lease.alive()
                && control
                    .acquire_sequencer(&topic.config.name, self.config.id, lease.lease)
                    .await?;
            match (holds, topic.is_sequencer()) {
                (true, false) => topic.start_sequencer(&self.config.data_dir)?,
                (false, true) => topic.stop_sequencer(),
                _ => {}
            }
        }
        Ok(())
    }
}
