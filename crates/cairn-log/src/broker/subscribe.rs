//! Serves one subscriber connection on its own thread: walks the global order index (ORDER
//! 2/5) or a broker's ring (ORDER 0/1) from the requested start and writes each batch header
//! and its payload straight from shared memory. Copies are validated after the fact: a batch
//! whose bytes were recycled while being read ends the stream with `OUT_OF_RANGE`, never with
//! wrong data.
//!
//! A blocking thread (not a task): it polls shared memory every few tens of microseconds,
//! which tokio's millisecond timer cannot do, and a host has few subscribers.

use std::io::{BufWriter, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::logpb::{self, broker_frame, subscribe::Start, BrokerFrame};

use crate::broker::topic::TopicRuntime;
use crate::error::{LogError, Result};
use crate::metrics::{LogMetrics, METRICS};
use crate::shm::layout::frontier;
use crate::shm::TopicShm;
use crate::wire::encode_frame;

const IDLE_SLEEP: Duration = Duration::from_micros(50);
/// How often an idle subscriber is told how far the order has got (lets it skip void entries
/// and notice a dead broker).
const PROGRESS_EVERY: Duration = Duration::from_millis(20);

pub fn serve(topic: Arc<TopicRuntime>, stream: TcpStream, subscribe: logpb::Subscribe) {
    // Small batches coalesce in the buffer; a payload at least this big bypasses it (BufWriter
    // writes it straight to the socket), saving a copy of every large batch.
    let mut out = BufWriter::with_capacity(64 * 1024, stream);
    let result = if topic.config.order.sequenced() {
        serve_global(&topic, &mut out, &subscribe)
    } else {
        serve_ring(&topic, &mut out, &subscribe)
    };
    if let Err(e) = result {
        if !matches!(e, LogError::Io(_)) {
            let refusal = logpb::Error {
                code: e.code().into(),
                message: e.to_string(),
            };
            let mut frame = Vec::new();
            encode_frame(
                &BrokerFrame {
                    frame: Some(broker_frame::Frame::Error(refusal)),
                },
                &mut frame,
            );
            let _ = out.write_all(&frame).and_then(|_| out.flush());
        }
    }
}

/// ORDER 2/5: the GOI in order, filtered to the requested brokers (all when none are named).
fn serve_global(
    topic: &TopicRuntime,
    out: &mut BufWriter<TcpStream>,
    subscribe: &logpb::Subscribe,
) -> Result<()> {
    let shm = &topic.shm;
    let wanted = |broker: u32| subscribe.brokers.is_empty() || subscribe.brokers.contains(&broker);
    let mut index = global_start(shm, subscribe.start.as_ref())?;
    let mut scratch = Vec::new();
    let mut last_progress = Instant::now();
    while !topic.stopping() {
        let committed = shm.committed();
        if index >= committed {
            idle(out, &mut last_progress, index)?;
            continue;
        }
        for i in index..committed {
            if shm.is_void(i) {
                continue;
            }
            let entry = shm.read_goi(i).ok_or_else(|| out_of_range(shm, i))?;
            if !wanted(entry.broker) {
                continue;
            }
            if !shm.read_payload(
                entry.broker,
                entry.payload_offset,
                entry.byte_len,
                &mut scratch,
            ) {
                return Err(out_of_range(shm, i));
            }
            let data = logpb::BatchData {
                batch_index: i,
                first_message: entry.first_message,
                message_count: entry.message_count,
                byte_size: entry.byte_len,
                broker: entry.broker,
                client_id: entry.client_id,
                batch_seq: entry.batch_seq,
            };
            write_batch(out, data, &scratch)?;
        }
        index = committed;
    }
    Err(LogError::ShuttingDown)
}

/// Resolves where a global subscription starts.
fn global_start(shm: &TopicShm, start: Option<&Start>) -> Result<u64> {
    let committed = shm.committed();
    let first = committed - committed.min(shm.layout().goi_slots);
    match start {
        None | Some(Start::Earliest(_)) => Ok((first..committed)
            .find(|&i| {
                shm.read_goi(i)
                    .is_some_and(|e| shm.payload_still_valid(e.broker, e.payload_offset))
            })
            .unwrap_or(committed)),
        Some(Start::Latest(_)) => Ok(committed),
        Some(Start::Position(position)) => find_position(shm, first, committed, *position),
    }
}

/// The GOI index of the batch holding message `position`: binary search over the retained
/// entries (message positions grow with the index; void or recycled slots are stepped over).
fn find_position(shm: &TopicShm, first: u64, committed: u64, position: u64) -> Result<u64> {
    let readable_from = |from: u64, to: u64| (from..to).find_map(|i| shm.read_goi(i));
    let (mut lo, mut hi) = (first, committed);
    let mut found = None;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match readable_from(mid, hi) {
            None => hi = mid,
            Some(e) if e.first_message + u64::from(e.message_count) <= position => {
                lo = e.batch_index + 1
            }
            Some(e) => {
                found = Some(e);
                hi = mid;
            }
        }
    }
    match found {
        Some(e) if e.first_message <= position => Ok(e.batch_index),
        // Past the end: start at the end and wait for it.
        None => Ok(committed),
        Some(e) => Err(LogError::OutOfRange {
            position,
            first: e.first_message,
            end: position,
        }),
    }
}

fn out_of_range(shm: &TopicShm, index: u64) -> LogError {
    let committed = shm.committed();
    LogError::OutOfRange {
        position: index,
        first: committed - committed.min(shm.layout().goi_slots),
        end: committed,
    }
}

/// ORDER 0/1: one broker's ring in arrival order (`brokers[0]`, or the serving broker).
fn serve_ring(
    topic: &TopicRuntime,
    out: &mut BufWriter<TcpStream>,
    subscribe: &logpb::Subscribe,
) -> Result<()> {
    let shm = &topic.shm;
    let broker = subscribe.brokers.first().copied().unwrap_or(topic.broker);
    if u64::from(broker) >= shm.layout().brokers_max {
        return Err(LogError::Protocol(format!(
            "no broker {broker} in this topic"
        )));
    }
    let head = shm.frontier(broker, frontier::RING_HEAD);
    let oldest = head.saturating_sub(shm.layout().ring_slots);
    let mut seq = match subscribe.start {
        None | Some(Start::Earliest(_)) => oldest,
        Some(Start::Latest(_)) => head,
        Some(Start::Position(p)) if p >= oldest && p <= head => p,
        Some(Start::Position(p)) => {
            return Err(LogError::OutOfRange {
                position: p,
                first: oldest,
                end: head,
            })
        }
    };
    let mut scratch = Vec::new();
    let mut last_progress = Instant::now();
    while !topic.stopping() {
        let head = shm.frontier(broker, frontier::RING_HEAD);
        if seq >= head {
            idle(out, &mut last_progress, seq)?;
            continue;
        }
        let stale = || LogError::OutOfRange {
            position: seq,
            first: head.saturating_sub(shm.layout().ring_slots),
            end: head,
        };
        let d = shm.read_descriptor(broker, seq).ok_or_else(stale)?;
        if !shm.read_payload(broker, d.payload_offset, d.byte_len, &mut scratch) {
            return Err(stale());
        }
        let data = logpb::BatchData {
            batch_index: seq,
            first_message: 0,
            message_count: d.message_count,
            byte_size: d.byte_len,
            broker,
            client_id: d.client_id,
            batch_seq: d.batch_seq,
        };
        write_batch(out, data, &scratch)?;
        seq += 1;
    }
    Err(LogError::ShuttingDown)
}

fn write_batch(
    out: &mut BufWriter<TcpStream>,
    data: logpb::BatchData,
    payload: &[u8],
) -> Result<()> {
    let mut header = Vec::with_capacity(64);
    encode_frame(
        &BrokerFrame {
            frame: Some(broker_frame::Frame::Data(data)),
        },
        &mut header,
    );
    out.write_all(&header)?;
    out.write_all(payload)?;
    LogMetrics::add(&METRICS.bytes_delivered, payload.len() as u64);
    Ok(())
}

/// Nothing new to send: flush, tell the subscriber how far it is now and then, and wait.
fn idle(out: &mut BufWriter<TcpStream>, last_progress: &mut Instant, position: u64) -> Result<()> {
    out.flush()?;
    if last_progress.elapsed() >= PROGRESS_EVERY {
        write_progress(out, position)?;
        *last_progress = Instant::now();
    }
    std::thread::sleep(IDLE_SLEEP);
    Ok(())
}

fn write_progress(out: &mut BufWriter<TcpStream>, index: u64) -> Result<()> {
    let progress = logpb::Progress {
        committed_batches: index,
        committed_messages: 0,
    };
    let mut frame = Vec::new();
    encode_frame(
        &BrokerFrame {
            frame: Some(broker_frame::Frame::Progress(progress)),
        },
        &mut frame,
    );
    out.write_all(&frame)?;
    out.flush()?;
    Ok(())
}
