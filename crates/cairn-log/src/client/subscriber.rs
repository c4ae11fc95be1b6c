//! The subscriber: one connection per live broker, each carrying the batches of the broker ids
//! assigned to it (a broker can serve any broker's batches from shared memory, so ids without
//! a live broker are spread over the live ones). For ORDER 2/5 the streams are merged back into
//! the single global order by batch index; an index no connection carries (a void left by a
//! sequencer takeover) is skipped once every connection's progress has passed it. For ORDER
//! 0/1 batches are delivered as they arrive (each broker's own order is kept).

use std::collections::BTreeMap;

use cairn_proto::logpb::{
    self, broker_frame, client_frame, subscribe::Start, BrokerFrame, ClientFrame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::client::publisher::remote;
use crate::error::{LogError, Result};
use crate::limits::BATCH_BYTES_MAX;
use crate::wire::{encode_frame, read_frame};

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    /// A global message position (ORDER 2/5), or a ring position (ORDER 0/1).
    Position(u64),
}

/// One delivered batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub batch_index: u64,
    /// Global position of the batch's first message (ORDER 2/5).
    pub first_message: u64,
    pub message_count: u32,
    pub broker: u32,
    pub client_id: u64,
    pub batch_seq: u64,
    pub payload: Vec<u8>,
}

impl Delivered {
    pub fn messages(&self) -> impl Iterator<Item = &[u8]> {
        crate::wire::messages(&self.payload)
    }
}

enum Incoming {
    Data { conn: usize, batch: Delivered },
    Progress { conn: usize, index: u64 },
    Failed { error: LogError },
}

pub struct Subscriber {
    incoming: mpsc::Receiver<Incoming>,
    sequenced: bool,
    /// Next global batch index to deliver (known once every connection has spoken).
    next: Option<u64>,
    first_seen: Vec<Option<u64>>,
    progress: Vec<u64>,
    pending: BTreeMap<u64, Delivered>,
    /// ORDER 2/5 start position: messages before it in the first batch are trimmed.
    start_message: Option<u64>,
}

impl Subscriber {
    /// Subscribes through `brokers` (`(id, address)`, as the control plane lists them) to a
    /// topic with `brokers_max` broker ids; `sequenced` is the topic's order level ≥ 2.
    pub async fn connect(
        topic: &str,
        brokers: &[(u32, String)],
        brokers_max: u32,
        sequenced: bool,
        start: StartAt,
    ) -> Result<Subscriber> {
        if brokers.is_empty() {
            return Err(LogError::Protocol(
                "no live broker to subscribe through".into(),
            ));
        }
        let assignments = assign(brokers, brokers_max, sequenced);
        let (tx, incoming) = mpsc::channel(1024);
        for (conn, (address, ids)) in assignments.iter().enumerate() {
            let stream = TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            let subscribe = logpb::Subscribe {
                topic: topic.to_string(),
                start: Some(wire_start(start)),
                brokers: ids.clone(),
            };
            tokio::spawn(read_stream(stream, subscribe, conn, tx.clone()));
        }
        let n = assignments.len();
        let start_message = match start {
            StartAt::Position(p) if sequenced => Some(p),
            _ => None,
        };
        Ok(Subscriber {
            incoming,
            sequenced,
            next: None,
            first_seen: vec![None; n],
            progress: vec![0; n],
            pending: BTreeMap::new(),
            start_message,
        })
    }

    /// The next batch in order; errors end the subscription (e.g. `OUT_OF_RANGE` when the
    /// requested position is no longer retained).
    pub async fn next_batch(&mut self) -> Result<Delivered> {
        loop {
            if let Some(mut batch) = self.ready() {
                if let Some(start) = self.start_message.take() {
                    trim_before(&mut batch, start);
                }
                return Ok(batch);
            }
            let incoming = self
                .incoming
                .recv()
                .await
                .ok_or_else(|| LogError::Protocol("subscription closed".into()))?;
            match incoming {
                Incoming::Data { batch, .. } if !self.sequenced => return Ok(batch),
                Incoming::Data { conn, batch } => {
                    self.first_seen[conn].get_or_insert(batch.batch_index);
                    self.progress[conn] = self.progress[conn].max(batch.batch_index + 1);
                    self.pending.insert(batch.batch_index, batch);
                }
                Incoming::Progress { conn, index } => {
                    self.first_seen[conn].get_or_insert(index);
                    self.progress[conn] = self.progress[conn].max(index);
                }
                Incoming::Failed { error } => return Err(error),
            }
        }
    }

    /// Pops the next batch of the global order if it is known.
    fn ready(&mut self) -> Option<Delivered> {
        if self.next.is_none() && self.first_seen.iter().all(Option::is_some) {
            // Every connection started at the same index and carried nothing before its first
            // frame: the smallest first frame is where the order resumes.
            self.next = self.first_seen.iter().flatten().min().copied();
        }
        let next = self.next.as_mut()?;
        loop {
            if let Some(batch) = self.pending.remove(next) {
                *next += 1;
                return Some(batch);
            }
            // Nobody carries `next` and everyone has passed it: a void index.
            if self.progress.iter().all(|&p| p > *next) {
                *next += 1;
                continue;
            }
            return None;
        }
    }
}

/// Drops the messages of `batch` that precede global position `start`.
fn trim_before(batch: &mut Delivered, start: u64) {
    let skip = start
        .saturating_sub(batch.first_message)
        .min(u64::from(batch.message_count));
    let cut: usize = batch
        .messages()
        .take(skip as usize)
        .map(|m| 4 + m.len())
        .sum();
    batch.payload.drain(..cut);
    batch.first_message += skip;
    batch.message_count -= skip as u32;
}

/// Which broker ids each connection carries: its own, plus (round-robin) the ids no live
/// broker has. ORDER 0/1 need one stream per id (each ring is read on its own).
fn assign(brokers: &[(u32, String)], brokers_max: u32, sequenced: bool) -> Vec<(String, Vec<u32>)> {
    let live: Vec<u32> = brokers.iter().map(|(id, _)| *id).collect();
    let mut plan: Vec<(String, Vec<u32>)> = brokers
        .iter()
        .map(|(id, addr)| (addr.clone(), vec![*id]))
        .collect();
    let orphans = (0..brokers_max).filter(|id| !live.contains(id));
    for (i, id) in orphans.enumerate() {
        if sequenced {
            plan[i % brokers.len()].1.push(id);
        } else {
            plan.push((brokers[i % brokers.len()].1.clone(), vec![id]));
        }
    }
    plan
}

fn wire_start(start: StartAt) -> Start {
    match start {
        StartAt::Earliest => Start::Earliest(true),
        StartAt::Latest => Start::Latest(true),
        StartAt::Position(p) => Start::Position(p),
    }
}

async fn read_stream(
    mut stream: TcpStream,
    subscribe: logpb::Subscribe,
    conn: usize,
    tx: mpsc::Sender<Incoming>,
) {
    let result = async {
        let mut frame = Vec::new();
        encode_frame(
            &ClientFrame {
                frame: Some(client_frame::Frame::Subscribe(subscribe)),
            },
            &mut frame,
        );
        stream.write_all(&frame).await?;
        loop {
            let incoming = match read_frame::<BrokerFrame>(&mut stream)
                .await?
                .and_then(|f| f.frame)
            {
                Some(broker_frame::Frame::Data(d)) => {
                    if d.byte_size > BATCH_BYTES_MAX {
                        return Err(LogError::Malformed(format!(
                            "batch of {} bytes from broker",
                            d.byte_size
                        )));
                    }
                    // read_to_end fills spare capacity without zeroing it first.
                    let mut payload = Vec::with_capacity(d.byte_size as usize);
                    (&mut stream)
                        .take(u64::from(d.byte_size))
                        .read_to_end(&mut payload)
                        .await?;
                    if payload.len() != d.byte_size as usize {
                        return Err(LogError::Protocol(
                            "subscription ended inside a batch".into(),
                        ));
                    }
                    let batch = Delivered {
                        batch_index: d.batch_index,
                        first_message: d.first_message,
                        message_count: d.message_count,
                        broker: d.broker,
                        client_id: d.client_id,
                        batch_seq: d.batch_seq,
                        payload,
                    };
                    Incoming::Data { conn, batch }
                }
                Some(broker_frame::Frame::Progress(p)) => Incoming::Progress {
                    conn,
                    index: p.committed_batches,
                },
                Some(broker_frame::Frame::Error(e)) => return Err(remote(e)),
                Some(_) => {
                    return Err(LogError::Protocol(
                        "unexpected frame on a subscription".into(),
                    ))
                }
                None => return Err(LogError::Protocol("broker closed the subscription".into())),
            };
            if tx.send(incoming).await.is_err() {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(error) = result {
        let _ = tx.send(Incoming::Failed { error }).await;
    }
}
