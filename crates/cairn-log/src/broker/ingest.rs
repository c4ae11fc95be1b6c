//! A publisher connection: batches are received straight into this broker's payload log in
//! shared memory (no staging copy), their framing is checked, and only then is a descriptor
//! published with its READY flag last, so a connection that dies mid-batch never produces a
//! ready descriptor. A full payload log or ring stops reading from the socket: backpressure
//! reaches the publisher through TCP.

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::logpb::{self, broker_frame, client_frame, BrokerFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::broker::topic::{AckEvent, TopicRuntime};
use crate::error::{LogError, Result};
use crate::limits::BATCH_BYTES_MAX;
use crate::shm::Descriptor;
use crate::topic::AckLevel;
use crate::wire::{encode_frame, read_frame, validate_messages, write_frame};

/// How long a connection waits between checks of a full payload log or ring.
const BACKPRESSURE_POLL: Duration = Duration::from_micros(200);

pub async fn serve(
    topic: Arc<TopicRuntime>,
    stream: TcpStream,
    hello: logpb::Hello,
    connection_id: u32,
) -> Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let welcome = broker_frame::Frame::Welcome(logpb::Welcome {
        broker_id: topic.broker,
        order: topic.config.order.into(),
        ack: topic.config.ack.into(),
        batch_bytes_max: BATCH_BYTES_MAX,
    });
    write_frame(
        &mut wr,
        &BrokerFrame {
            frame: Some(welcome),
        },
    )
    .await?;

    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let (error_tx, error_rx) = oneshot::channel();
    topic.register_connection(connection_id, acks_tx.clone());
    let writer = tokio::spawn(write_acks(wr, acks_rx, error_rx));
    let result = receive_batches(&topic, &mut rd, hello.client_id, connection_id, &acks_tx).await;
    topic.unregister_connection(connection_id);
    if let Err(e) = &result {
        tracing::info!(
            client_id = hello.client_id,
            "publisher connection refused: {e}"
        );
        let _ = error_tx.send(logpb::Error {
            code: e.code().into(),
            message: e.to_string(),
        });
    } else {
        drop(error_tx);
    }
    // The writer drains the acks queued so far, then writes the refusal (if any) last.
    drop(acks_tx);
    let _ = writer.await;
    result
}

async fn receive_batches(
    topic: &TopicRuntime,
    rd: &mut OwnedReadHalf,
    client_id: u64,
    connection_id: u32,
    acks: &mpsc::UnboundedSender<AckEvent>,
) -> Result<()> {
    let ack_on_publish = !topic.config.order.sequenced() && topic.config.ack >= AckLevel::Ordered;
    while let Some(frame) = read_frame::<logpb::ClientFrame>(rd).await? {
        let Some(client_frame::Frame::Batch(header)) = frame.frame else {
            return Err(LogError::Protocol("expected a batch header".into()));
        };
        if header.byte_size > BATCH_BYTES_MAX {
            return Err(LogError::BatchTooLarge {
                size: header.byte_size,
                max: BATCH_BYTES_MAX,
            });
        }
        let offset = receive_payload(topic, rd, &header).await?;
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
            wait_for_space(topic).await?;
        }
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
async fn receive_payload(
    topic: &TopicRuntime,
    rd: &mut OwnedReadHalf,
    header: &logpb::BatchHeader,
) -> Result<u64> {
    let offset = loop {
        if let Some(offset) = topic.reserve_payload(header.byte_size) {
            break offset;
        }
        wait_for_space(topic).await?;
    };
    // Safety: this connection owns `offset..offset + byte_size` until it publishes or releases.
    let buf = unsafe {
        topic
            .shm
            .payload_mut(topic.broker, offset, header.byte_size)
    };
    let received = match rd.read_exact(buf).await {
        Ok(_) => validate_messages(buf, header.message_count),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = received {
        topic.release_payload(offset);
        return Err(e);
    }
    Ok(offset)
}

async fn wait_for_space(topic: &TopicRuntime) -> Result<()> {
    if topic.stopping() {
        return Err(LogError::ShuttingDown);
    }
    tokio::time::sleep(BACKPRESSURE_POLL).await;
    Ok(())
}

/// Writes cumulative acks (one frame for whatever is queued) and fence notices; on a refusal,
/// writes the error frame last.
async fn write_acks(
    mut wr: OwnedWriteHalf,
    mut acks: mpsc::UnboundedReceiver<AckEvent>,
    mut error: oneshot::Receiver<logpb::Error>,
) {
    let mut buf = Vec::new();
    loop {
        tokio::select! {
            event = acks.recv() => {
                let Some(event) = event else {
                    if let Ok(refusal) = (&mut error).await {
                        let frame = BrokerFrame { frame: Some(broker_frame::Frame::Error(refusal)) };
                        let _ = write_frame(&mut wr, &frame).await;
                    }
                    break;
                };
                let mut last_done = None;
                let push = |event, last_done: &mut Option<u64>, buf: &mut Vec<u8>| match event {
                    AckEvent::Done { batch_seq } => *last_done = Some(batch_seq),
                    AckEvent::Fenced { session_epoch, next_seq } => {
                        flush_done(last_done, buf);
                        let fenced = logpb::Fenced { session_epoch, next_seq };
                        encode_frame(&BrokerFrame { frame: Some(broker_frame::Frame::Fenced(fenced)) }, buf);
                    }
                };
                push(event, &mut last_done, &mut buf);
                while let Ok(event) = acks.try_recv() {
                    push(event, &mut last_done, &mut buf);
                }
                flush_done(&mut last_done, &mut buf);
                if wr.write_all(&buf).await.is_err() {
                    return;
                }
                buf.clear();
            }
            refusal = &mut error => {
                if let Ok(refusal) = refusal {
                    let frame = BrokerFrame { frame: Some(broker_frame::Frame::Error(refusal)) };
                    let _ = write_frame(&mut wr, &frame).await;
                }
                break;
            }
        }
    }
    let _ = wr.shutdown().await;
}

fn flush_done(last_done: &mut Option<u64>, buf: &mut Vec<u8>) {
    if let Some(batch_seq) = last_done.take() {
        encode_frame(
            &BrokerFrame {
                frame: Some(broker_frame::Frame::Ack(logpb::Ack { batch_seq })),
            },
            buf,
        );
    }
}
