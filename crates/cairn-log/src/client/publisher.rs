//! The publisher: batches messages (up to `batch_bytes` or `linger`), sends sealed batches
//! round-robin over one connection per broker, and keeps every unacknowledged batch so it can
//! resend it:
//! - after a lost connection, on the others under the same session epoch (the sequencer
//!   answers `Duplicate` for a batch it already ordered, so ORDER 5 stays exactly-once);
//! - after `Fenced { next_seq }`, from `next_seq` on under the next epoch.
//!
//! Batch sequence numbers are per session (this publisher's `client_id`), from 0, across all
//! brokers, which is what ORDER 5's per-session FIFO is defined on.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_proto::logpb::{self, broker_frame, client_frame, BrokerFrame, ClientFrame};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::client::batch::{write_vectored_all, BatchBuilder, Payload};
use crate::error::{LogError, Result};
use crate::limits::{BATCH_BYTES_MAX, PUBLISHER_INFLIGHT_BATCHES_MAX};
use crate::topic::AckLevel;
use crate::wire::{encode_frame, read_frame};

#[derive(Clone, Debug)]
pub struct PublisherConfig {
    pub topic: String,
    /// Broker addresses (`host:port`); one connection each.
    pub brokers: Vec<String>,
    /// A batch is sealed once it holds this many bytes.
    pub batch_bytes: usize,
    /// …or when its first message has waited this long (checked on `publish` and `flush`).
    pub linger: Duration,
    /// The session id; random by default.
    pub client_id: u64,
    /// How long the publisher waits for any broker to answer (an ack, a fence, an error) while
    /// it has batches in flight before giving up with an error instead of hanging.
    pub ack_timeout: Duration,
}

impl PublisherConfig {
    pub fn new(topic: &str, brokers: Vec<String>) -> PublisherConfig {
        PublisherConfig {
            topic: topic.to_string(),
            brokers,
            batch_bytes: 1024 * 1024,
            linger: Duration::from_millis(1),
            client_id: rand::random(),
            ack_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
struct Batch {
    seq: u64,
    payload: Payload,
}

enum Event {
    Ack { conn: usize, batch_seq: u64 },
    Fenced { session_epoch: u32, next_seq: u64 },
    Failed { conn: usize, error: LogError },
}

struct Connection {
    writer: Option<OwnedWriteHalf>,
    inflight: VecDeque<Batch>,
}

pub struct Publisher {
    config: PublisherConfig,
    ack: AckLevel,
    connections: Vec<Connection>,
    events: mpsc::UnboundedReceiver<Event>,
    next_connection: usize,
    epoch: u32,
    next_seq: u64,
    building: BatchBuilder,
    building_since: Option<Instant>,
    header: Vec<u8>,
    /// Batches resent after a lost connection or a fence.
    pub resent_batches: u64,
}

impl Publisher {
    pub async fn connect(config: PublisherConfig) -> Result<Publisher> {
        if config.brokers.is_empty() {
            return Err(LogError::Protocol("no broker addresses".into()));
        }
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut connections = Vec::new();
        let mut ack = AckLevel::None;
        for (conn, address) in config.brokers.iter().enumerate() {
            let (writer, welcome) = open(address, &config, conn, events_tx.clone()).await?;
            ack = AckLevel::try_from(welcome.ack)?;
            connections.push(Connection {
                writer: Some(writer),
                inflight: VecDeque::new(),
            });
        }
        let batch_bytes = config.batch_bytes.clamp(1, BATCH_BYTES_MAX as usize);
        Ok(Publisher {
            config: PublisherConfig {
                batch_bytes,
                ..config
            },
            ack,
            connections,
            events,
            next_connection: 0,
            epoch: 0,
            next_seq: 0,
            building: BatchBuilder::new(batch_bytes),
            building_since: None,
            header: Vec::new(),
            resent_batches: 0,
        })
    }

    pub fn client_id(&self) -> u64 {
        self.config.client_id
    }

    pub fn session_epoch(&self) -> u32 {
        self.epoch
    }

    /// Appends a copy of `message`; seals and sends the batch when it is full or has lingered.
    pub async fn publish(&mut self, message: &[u8]) -> Result<()> {
        self.make_room(message.len()).await?;
        self.building.push_copy(message);
        self.after_push().await
    }

    /// Appends `message` without copying it (large messages go to the socket from the caller's
    /// buffer); otherwise like `publish`.
    pub async fn publish_bytes(&mut self, message: Bytes) -> Result<()> {
        self.make_room(message.len()).await?;
        self.building.push_shared(message);
        self.after_push().await
    }

    async fn make_room(&mut self, len: usize) -> Result<()> {
        if len + 4 > BATCH_BYTES_MAX as usize {
            return Err(LogError::BatchTooLarge {
                size: len as u32 + 4,
                max: BATCH_BYTES_MAX,
            });
        }
        if self.building.bytes() + 4 + len > self.config.batch_bytes && self.building.count() > 0 {
            self.seal().await?;
        }
        Ok(())
    }

    async fn after_push(&mut self) -> Result<()> {
        let since = *self.building_since.get_or_insert_with(Instant::now);
        if self.building.bytes() >= self.config.batch_bytes || since.elapsed() >= self.config.linger
        {
            self.seal().await?;
        }
        Ok(())
    }

    /// Sends the open batch now (without waiting for acks): a paced publisher calls this at
    /// the end of each tick so no message waits for the next `publish`.
    pub async fn send_open_batch(&mut self) -> Result<()> {
        if self.building.count() > 0 {
            self.seal().await?;
        }
        Ok(())
    }

    /// Sends the open batch and waits until every batch is acknowledged (at ACK 1/2).
    pub async fn flush(&mut self) -> Result<()> {
        self.send_open_batch().await?;
        while self.ack != AckLevel::None && self.connections.iter().any(|c| !c.inflight.is_empty())
        {
            self.handle_event().await?;
        }
        Ok(())
    }

    /// Batches sent and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.connections.iter().map(|c| c.inflight.len()).sum()
    }

    async fn seal(&mut self) -> Result<()> {
        let batch = Batch {
            seq: self.next_seq,
            payload: self.building.seal(),
        };
        self.next_seq += 1;
        self.building_since = None;
        self.send(batch).await
    }

    /// Sends on the next live connection, after waiting for room in its window.
    async fn send(&mut self, batch: Batch) -> Result<()> {
        loop {
            while let Ok(event) = self.events.try_recv() {
                self.apply(event).await?;
            }
            let conn = self.pick_connection()?;
            if self.connections[conn].inflight.len() >= PUBLISHER_INFLIGHT_BATCHES_MAX {
                self.handle_event().await?;
                continue;
            }
            if self.write_batch(conn, &batch).await {
                if self.ack != AckLevel::None {
                    self.connections[conn].inflight.push_back(batch);
                }
                return Ok(());
            }
        }
    }

    fn pick_connection(&mut self) -> Result<usize> {
        let n = self.connections.len();
        for step in 0..n {
            let conn = (self.next_connection + step) % n;
            if self.connections[conn].writer.is_some() {
                self.next_connection = conn + 1;
                return Ok(conn);
            }
        }
        Err(LogError::Protocol("every broker connection is lost".into()))
    }

    /// Writes one batch; false (and the connection marked dead) if the socket failed.
    async fn write_batch(&mut self, conn: usize, batch: &Batch) -> bool {
        self.header.clear();
        let header = logpb::BatchHeader {
            batch_seq: batch.seq,
            session_epoch: self.epoch,
            message_count: batch.payload.count,
            byte_size: batch.payload.bytes as u32,
        };
        encode_frame(
            &ClientFrame {
                frame: Some(client_frame::Frame::Batch(header)),
            },
            &mut self.header,
        );
        let Some(writer) = self.connections[conn].writer.as_mut() else {
            return false;
        };
        let ok = write_vectored_all(writer, &self.header, &batch.payload.segments)
            .await
            .is_ok();
        if !ok {
            self.connections[conn].writer = None;
        }
        ok
    }

    async fn handle_event(&mut self) -> Result<()> {
        let timeout = self.config.ack_timeout;
        let event = tokio::time::timeout(timeout, self.events.recv())
            .await
            .map_err(|_| {
                LogError::Protocol(format!(
                    "no broker answered within {timeout:?} ({} batches unacknowledged)",
                    self.unacked()
                ))
            })?
            .ok_or_else(|| LogError::Protocol("all connections closed".into()))?;
        self.apply(event).await
    }

    async fn apply(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Ack { conn, batch_seq } => {
                let inflight = &mut self.connections[conn].inflight;
                while inflight.front().is_some_and(|b| b.seq <= batch_seq) {
                    inflight.pop_front();
                }
            }
            Event::Fenced {
                session_epoch,
                next_seq,
            } if session_epoch == self.epoch => {
                self.epoch += 1;
                tracing::info!(
                    client_id = self.config.client_id,
                    next_seq,
                    epoch = self.epoch,
                    "fenced: resending the suffix"
                );
                let resend = self.take_inflight(|b| b.seq >= next_seq);
                self.resend(resend).await?;
            }
            // A notice about an epoch already left behind: its batches were resent then.
            Event::Fenced { .. } => {}
            Event::Failed { conn, error } => {
                if let LogError::Remote { .. } = error {
                    return Err(error);
                }
                tracing::warn!(broker = %self.config.brokers[conn], "broker connection lost: {error}");
                self.connections[conn].writer = None;
                let resend: Vec<Batch> = self.connections[conn].inflight.drain(..).collect();
                self.resend(resend).await?;
            }
        }
        Ok(())
    }

    /// Removes the matching inflight batches of every connection, in sequence order.
    fn take_inflight(&mut self, pick: impl Fn(&Batch) -> bool) -> Vec<Batch> {
        let mut taken = Vec::new();
        for c in &mut self.connections {
            let (take, keep): (VecDeque<Batch>, VecDeque<Batch>) =
                c.inflight.drain(..).partition(|b| pick(b));
            c.inflight = keep;
            taken.extend(take);
        }
        // Below the fence point the batches are ordered: they count as acknowledged.
        for c in &mut self.connections {
            c.inflight.clear();
        }
        taken.sort_by_key(|b| b.seq);
        taken
    }

    async fn resend(&mut self, batches: Vec<Batch>) -> Result<()> {
        self.resent_batches += batches.len() as u64;
        for batch in batches {
            Box::pin(self.send(batch)).await?;
        }
        Ok(())
    }
}

async fn open(
    address: &str,
    config: &PublisherConfig,
    conn: usize,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(OwnedWriteHalf, logpb::Welcome)> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let hello = logpb::Hello {
        topic: config.topic.clone(),
        client_id: config.client_id,
    };
    let mut frame = Vec::new();
    encode_frame(
        &ClientFrame {
            frame: Some(client_frame::Frame::Hello(hello)),
        },
        &mut frame,
    );
    wr.write_all(&frame).await?;
    let welcome = match read_frame::<BrokerFrame>(&mut rd)
        .await?
        .and_then(|f| f.frame)
    {
        Some(broker_frame::Frame::Welcome(w)) => w,
        Some(broker_frame::Frame::Error(e)) => return Err(remote(e)),
        _ => return Err(LogError::Protocol(format!("{address}: no welcome"))),
    };
    tokio::spawn(async move {
        loop {
            let event = match read_frame::<BrokerFrame>(&mut rd).await {
                Ok(Some(BrokerFrame {
                    frame: Some(broker_frame::Frame::Ack(a)),
                })) => Event::Ack {
                    conn,
                    batch_seq: a.batch_seq,
                },
                Ok(Some(BrokerFrame {
                    frame: Some(broker_frame::Frame::Fenced(f)),
                })) => Event::Fenced {
                    session_epoch: f.session_epoch,
                    next_seq: f.next_seq,
                },
                Ok(Some(BrokerFrame {
                    frame: Some(broker_frame::Frame::Error(e)),
                })) => Event::Failed {
                    conn,
                    error: remote(e),
                },
                Ok(Some(_)) => Event::Failed {
                    conn,
                    error: LogError::Protocol("unexpected frame".into()),
                },
                Ok(None) => Event::Failed {
                    conn,
                    error: LogError::Protocol("connection closed".into()),
                },
                Err(error) => Event::Failed { conn, error },
            };
            let last = matches!(event, Event::Failed { .. });
            if events.send(event).is_err() || last {
                return;
            }
        }
    });
    Ok((wr, welcome))
}

pub(crate) fn remote(e: logpb::Error) -> LogError {
    LogError::Remote {
        code: e.code(),
        message: e.message,
    }
}
