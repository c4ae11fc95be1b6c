//! Brokers on real loopback sockets inside the test process (standalone: no control plane,
//! broker 0 runs the sequencers), plus raw-protocol helpers for the bad-input tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_log::broker::{Broker, BrokerConfig};
use cairn_log::client::publisher::{Publisher, PublisherConfig};
use cairn_log::client::subscriber::{StartAt, Subscriber};
use cairn_log::topic::{AckLevel, OrderLevel, TopicConfig};
use cairn_log::wire::{encode_frame, read_frame};
use cairn_proto::logpb::{self, broker_frame, client_frame, BrokerFrame, ClientFrame};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub struct TestBroker {
    pub id: u32,
    pub address: String,
    pub broker: Arc<Broker>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestBroker {
    pub async fn start(
        id: u32,
        shm_dir: &Path,
        data_dir: &Path,
        topic: &TopicConfig,
    ) -> TestBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let config = BrokerConfig {
            id,
            shm_dir: shm_dir.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            advertise: address.clone(),
            endpoints: Vec::new(),
            lease_ttl_s: 2,
        };
        let broker = Broker::new(config).await.unwrap();
        broker.add_topic(topic.clone()).await.unwrap();
        let (stop, stopped) = oneshot::channel();
        let runner = Arc::clone(&broker);
        let task = tokio::spawn(async move {
            runner
                .run(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        TestBroker {
            id,
            address,
            broker,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

pub struct Dirs {
    _root: tempfile::TempDir,
    pub shm: PathBuf,
    pub data: PathBuf,
}

pub fn dirs() -> Dirs {
    let root = tempfile::tempdir().unwrap();
    let shm = root.path().join("shm");
    let data = root.path().join("data");
    Dirs {
        shm,
        data,
        _root: root,
    }
}

/// A small topic: 8 MiB of payload per broker, so tests exercise recycling quickly.
pub fn topic(name: &str, order: OrderLevel, ack: AckLevel) -> TopicConfig {
    TopicConfig {
        payload_bytes_per_broker: 8 * 1024 * 1024,
        ring_slots: 256,
        goi_slots: 1 << 14,
        brokers_max: 2,
        session_lease_ms: 300,
        ..TopicConfig::new(name, order, ack)
    }
}

pub fn addresses(brokers: &[&TestBroker]) -> Vec<String> {
    brokers.iter().map(|b| b.address.clone()).collect()
}

pub fn ids(brokers: &[&TestBroker]) -> Vec<(u32, String)> {
    brokers.iter().map(|b| (b.id, b.address.clone())).collect()
}

/// Publishes `count` messages `"<tag>-<n>"` and flushes.
pub async fn publish_numbered(
    topic: &str,
    brokers: Vec<String>,
    tag: &str,
    count: usize,
    batch_bytes: usize,
) -> Publisher {
    let mut config = PublisherConfig::new(topic, brokers);
    config.batch_bytes = batch_bytes;
    let mut publisher = Publisher::connect(config).await.unwrap();
    for n in 0..count {
        publisher
            .publish(format!("{tag}-{n}").as_bytes())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    publisher
}

/// Reads `count` messages in delivery order, with their global positions.
pub async fn read_messages(sub: &mut Subscriber, count: usize) -> Vec<(u64, String)> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let batch = tokio::time::timeout(Duration::from_secs(20), sub.next_batch())
            .await
            .unwrap_or_else(|_| {
                panic!("subscriber stalled after {} of {count} messages", out.len())
            })
            .unwrap();
        for (i, m) in batch.messages().enumerate() {
            out.push((
                batch.first_message + i as u64,
                String::from_utf8(m.to_vec()).unwrap(),
            ));
        }
    }
    out
}

pub async fn subscribe(
    topic: &str,
    brokers: &[&TestBroker],
    sequenced: bool,
    start: StartAt,
) -> Subscriber {
    Subscriber::connect(topic, &ids(brokers), 2, sequenced, start)
        .await
        .unwrap()
}

/// Per tag, the message numbers in delivery order.
pub fn by_tag(messages: &[(u64, String)]) -> HashMap<String, Vec<usize>> {
    let mut tags: HashMap<String, Vec<usize>> = HashMap::new();
    for (_, m) in messages {
        let (tag, n) = m.rsplit_once('-').unwrap();
        tags.entry(tag.to_string())
            .or_default()
            .push(n.parse().unwrap());
    }
    tags
}

/// A raw publisher connection speaking the wire protocol by hand.
pub struct RawPublisher {
    pub stream: TcpStream,
}

impl RawPublisher {
    pub async fn connect(
        address: &str,
        topic: &str,
        client_id: u64,
    ) -> Result<RawPublisher, logpb::Error> {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let hello = logpb::Hello {
            topic: topic.into(),
            client_id,
        };
        send_frame(
            &mut stream,
            ClientFrame {
                frame: Some(client_frame::Frame::Hello(hello)),
            },
        )
        .await;
        match read_frame::<BrokerFrame>(&mut stream)
            .await
            .unwrap()
            .and_then(|f| f.frame)
        {
            Some(broker_frame::Frame::Welcome(_)) => Ok(RawPublisher { stream }),
            Some(broker_frame::Frame::Error(e)) => Err(e),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub async fn send_batch(&mut self, seq: u64, epoch: u32, messages: &[&str]) {
        let mut payload = Vec::new();
        for m in messages {
            cairn_log::wire::push_message(&mut payload, m.as_bytes());
        }
        self.send_raw(seq, epoch, messages.len() as u32, &payload)
            .await;
    }

    pub async fn send_raw(&mut self, seq: u64, epoch: u32, count: u32, payload: &[u8]) {
        self.send_header(seq, epoch, count, payload.len() as u32)
            .await;
        self.stream.write_all(payload).await.unwrap();
    }

    /// A batch header alone: the payload (if any) is up to the caller.
    pub async fn send_header(&mut self, seq: u64, epoch: u32, count: u32, byte_size: u32) {
        let header = logpb::BatchHeader {
            batch_seq: seq,
            session_epoch: epoch,
            message_count: count,
            byte_size,
        };
        let frame = ClientFrame {
            frame: Some(client_frame::Frame::Batch(header)),
        };
        send_frame(&mut self.stream, frame).await;
    }

    pub async fn next_frame(&mut self) -> broker_frame::Frame {
        tokio::time::timeout(
            Duration::from_secs(10),
            read_frame::<BrokerFrame>(&mut self.stream),
        )
        .await
        .expect("broker answered")
        .unwrap()
        .and_then(|f| f.frame)
        .expect("a frame")
    }
}

pub async fn send_frame(stream: &mut TcpStream, frame: ClientFrame) {
    let mut buf = Vec::new();
    encode_frame(&frame, &mut buf);
    stream.write_all(&buf).await.unwrap();
}
