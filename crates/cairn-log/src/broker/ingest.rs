//! A publisher connection, served by two blocking threads: the receiver reads batches straight
//! into this broker's payload log in shared memory (no staging copy), checks their framing, and
//! only then publishes a descriptor with its READY flag last, so a connection that dies
//! mid-batch never produces a ready descriptor; the writer sends cumulative acks and fence
//! notices. A full payload log or ring stops reading from the socket: backpressure reaches the
//! publisher through TCP.
//!
//! Threads, not tasks: a broker has few publisher connections, each streaming GB/s; blocking
//! `recv` into shared memory skips the readiness round trips of the async path (measured: the
//! tokio receiver reached ~70% of the loopback ceiling, see docs/perf/log.md).

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::logpb::{self, broker_frame, client_frame, BrokerFrame};
use tokio::sync::{mpsc, oneshot};

use crate::broker::topic::{AckEvent, TopicRuntime};
use crate::error::{LogError, Result};
use crate::limits::BATCH_BYTES_MAX;
use crate::metrics::{LogMetrics, METRICS};
use crate::shm::Descriptor;
use crate::topic::AckLevel;
use crate::wire::{encode_frame, read_frame_blocking, validate_messages};

/// How long a connection waits between checks of a full payload log or ring.
const BACKPRESSURE_POLL: Duration = Duration::from_micros(200);

/// Serves the connection until the publisher leaves or is refused; returns at once (the
/// work happens on the connection's threads).
pub fn spawn(
    topic: Arc<TopicRuntime>,
    stream: TcpStream,
    hello: logpb::Hello,
    connection_id: u32,
) -> Result<()> {
    let mut writer = stream.try_clone()?;
    let welcome = broker_frame::Frame::Welcome(logpb::Welcome {
        broker_id: topic.broker,
        order: topic.config.order.into(),
        ack: topic.config.ack.into(),
        batch_bytes_max: BATCH_BYTES_MAX,
    });
    write_frame(&mut writer, broker_frame_of(welcome))?;
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let (error_tx, error_rx) = oneshot::channel();
    topic.register_connection(connection_id, acks_tx.clone());
    std::thread::Builder::new()
        .name("log-ack-writer".into())
        .spawn(move || write_acks(writer, acks_rx, error_rx))?;
    std::thread::Builder::new()
        .name("log-ingest".into())
        .spawn(move || {
            let mut reader = stream;
            let result = receive_batches(
                &topic,
                &mut reader,
                hello.client_id,
                connection_id,
                &acks_tx,
            );
            topic.unregister_connection(connection_id);
            if let Err(e) = &result {
                LogMetrics::add(&METRICS.connections_refused, 1);
                tracing::info!(
                    client_id = hello.client_id,
                    "publisher connection refused: {e}"
                );
                let _ = error_tx.send(logpb::Error {
                    code: e.code().into(),
                    message: e.to_string(),
                });
            }
            // The writer drains the acks queued so far, then writes the refusal (if any) last.
            drop(acks_tx);
        })?;
    Ok(())
}

fn receive_batches(
    topic: &TopicRuntime,
    rd: &mut TcpStream,
    client_id: u64,
    connection_id: u32,
    acks: &mpsc::UnboundedSender<AckEvent>,
) -> Result<()> {
    let ack_on_publish = !topic.config.order.sequenced() && topic.config.ack >= AckLevel::Ordered;
    while let Some(frame) = read_frame_blocking::<logpb::ClientFrame>(rd)? {
        let Some(client_frame::Frame::Batch(header)) = frame.frame else {
            return Err(LogError::Protocol("expected a batch header".into()));
        };
        if header.byte_size > BATCH_BYTES_MAX {
            return Err(LogError::BatchTooLarge {
                size: header.byte_size,
                max: BATCH_BYTES_MAX,
            });
        }
        let offset = receive_payload(topic, rd, &header)?;
        let descriptor = Descriptor {
            payload_offset: offset,
            byte_len: header.byte_size,
            message_count: header.message_count,
            client_id,
            session_epoch: header.session_epoch,
            connection_id,
            batch_seq: header.batch_seq,
        };
        while topic.publish(&descriptor).is_none() {
            wait_for_space(topic)?;
        }
        LogMetrics::add(&METRICS.batches_received, 1);
        LogMetrics::add(&METRICS.bytes_received, u64::from(header.byte_size));
        if ack_on_publish {
            let _ = acks.send(AckEvent::Done {
                batch_seq: header.batch_seq,
            });
        }
    }
    Ok(())
}

/// Receives a batch's payload into a fresh reservation; on any failure the reservation is
/// released (it becomes a hole no descriptor points at).
fn receive_payload(
    topic: &TopicRuntime,
    rd: &mut TcpStream,
    header: &logpb::BatchHeader,
) -> Result<u64> {
    let offset = loop {
        if let Some(offset) = topic.reserve_payload(header.byte_size) {
            break offset;
        }
        wait_for_space(topic)?;
    };
    // Safety: this connection owns `offset..offset + byte_size` until it publishes or releases.
    let buf = unsafe {
        topic
            .shm
            .payload_mut(topic.broker, offset, header.byte_size)
    };
    let received = match std::io::Read::read_exact(rd, buf) {
        Ok(()) => validate_messages(buf, header.message_count),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = received {
        topic.release_payload(offset);
        return Err(e);
    }
    Ok(offset)
}

fn wait_for_space(topic: &TopicRuntime) -> Result<()> {
    if topic.stopping() {
        return Err(LogError::ShuttingDown);
    }
    std::thread::sleep(BACKPRESSURE_POLL);
    Ok(())
}

/// Writes cumulative acks (one frame for whatever is queued) and fence notices; on a refusal,
/// writes the error frame last.
fn write_acks(
    mut wr: TcpStream,
    mut acks: mpsc::UnboundedReceiver<AckEvent>,
    error: oneshot::Receiver<logpb::Error>,
) {
    let mut buf = Vec::new();
    while let Some(first) = acks.blocking_recv() {
        let mut last_done = None;
        let mut event = Some(first);
        while let Some(e) = event.take().or_else(|| acks.try_recv().ok()) {
            match e {
                AckEvent::Done { batch_seq } => last_done = Some(batch_seq),
                AckEvent::Fenced {
                    session_epoch,
                    next_seq,
                } => {
                    flush_done(&mut last_done, &mut buf);
                    let fenced = logpb::Fenced {
                        session_epoch,
                        next_seq,
                    };
                    encode_frame(
                        &broker_frame_of(broker_frame::Frame::Fenced(fenced)),
                        &mut buf,
                    );
                }
            }
        }
        flush_done(&mut last_done, &mut buf);
        if wr.write_all(&buf).is_err() {
            return;
        }
        buf.clear();
    }
    if let Ok(refusal) = error.blocking_recv() {
        let _ = write_frame(
            &mut wr,
            broker_frame_of(broker_frame::Frame::Error(refusal)),
        );
    }
    let _ = wr.shutdown(std::net::Shutdown::Write);
}

fn flush_done(last_done: &mut Option<u64>, buf: &mut Vec<u8>) {
    if let Some(batch_seq) = last_done.take() {
        encode_frame(
            &broker_frame_of(broker_frame::Frame::Ack(logpb::Ack { batch_seq })),
            buf,
        );
    }
}

fn broker_frame_of(frame: broker_frame::Frame) -> BrokerFrame {
    BrokerFrame { frame: Some(frame) }
}

fn write_frame(wr: &mut TcpStream, frame: BrokerFrame) -> Result<()> {
    let mut buf = Vec::new();
    encode_frame(&frame, &mut buf);
    wr.write_all(&buf)?;
    Ok(())
}
