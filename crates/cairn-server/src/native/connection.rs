//! One native client connection: the reader (decode, hand to the replica) and the writer
//! (replies, batched). See `native/mod.rs`.

use std::time::{SystemTime, UNIX_EPOCH};

use cairn_consensus::curp::{Command, Consistency};
use cairn_consensus::native::replica::{NativeError, ProposeReply};
use cairn_consensus::native::{command_from_pb, id_to_pb, InvalidCommand, SyncError};
use cairn_proto::curppb::{self, client_message, server_message, Code};
use cairn_proto::framing;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::limits::{NATIVE_FRAME_OVERHEAD_BYTES, NATIVE_REPLIES_QUEUED_MAX};
use crate::node::Node;

/// What the reader hands the writer: a reply now, or one that resolves later.
enum Outgoing {
    Now(curppb::ServerMessage),
    Later(BoxFuture<'static, curppb::ServerMessage>),
    NowThenLater(
        curppb::ServerMessage,
        BoxFuture<'static, curppb::ServerMessage>,
    ),
}

pub(super) async fn run(stream: TcpStream, node: Node) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let (sender, receiver) = mpsc::channel(NATIVE_REPLIES_QUEUED_MAX);
    let writer = tokio::spawn(write_replies(write, receiver));
    let announcer = tokio::spawn(announce_serving(node.clone(), sender.clone()));
    let mut stopping = node.stopping();
    let mut reader = BufReader::new(read);
    let frame_max = node.config().max_request_bytes + NATIVE_FRAME_OVERHEAD_BYTES;
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader, frame_max) => frame,
            () = super::stopped(&mut stopping) => break,
        };
        let outgoing = match frame {
            Ok(Frame::Message(message)) => handle(&node, message).await,
            Ok(Frame::TooLarge(len)) => Some(Outgoing::Now(error(
                None,
                0,
                Code::TooLarge,
                format!("etcdserver: request is too large ({len} bytes, limit {frame_max})"),
            ))),
            Ok(Frame::Undecodable(reason)) => Some(Outgoing::Now(error(
                None,
                0,
                Code::InvalidArgument,
                format!("undecodable message: {reason}"),
            ))),
            Err(_) => break,
        };
        if let Some(outgoing) = outgoing {
            if sender.send(outgoing).await.is_err() {
                break;
            }
        }
    }
    announcer.abort();
    drop(sender);
    let _ = writer.await;
}

/// Tells the client each time this member starts serving native commands as leader (after
/// its recovery), so that it resends what it has in flight at once (`curppb.Serving`). A
/// separate task: the reader must not be interrupted in the middle of a frame.
async fn announce_serving(node: Node, sender: mpsc::Sender<Outgoing>) {
    let member_id = node.identity().member_id;
    let mut serving = node.replica().native().watch_serving();
    while serving.changed().await.is_ok() {
        let term = *serving.borrow_and_update();
        if term == 0 {
            continue;
        }
        let message = reply(server_message::Message::Serving(curppb::Serving {
            member_id,
            term,
        }));
        if sender.send(Outgoing::Now(message)).await.is_err() {
            return;
        }
    }
}

enum Frame {
    Message(curppb::ClientMessage),
    /// A frame over the limit; its bytes were skipped.
    TooLarge(usize),
    Undecodable(String),
}

/// Reads one frame. An oversized frame is skipped, not buffered, so the connection stays
/// usable.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame_max: usize,
) -> std::io::Result<Frame> {
    let mut header = [0; framing::HEADER_BYTES];
    reader.read_exact(&mut header).await?;
    let len = framing::body_len(header);
    if len > frame_max {
        let skipped = tokio::io::copy(&mut reader.take(len as u64), &mut tokio::io::sink()).await?;
        if skipped < len as u64 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        return Ok(Frame::TooLarge(len));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;
    Ok(match curppb::ClientMessage::decode(body.as_slice()) {
        Ok(message) => Frame::Message(message),
        Err(error) => Frame::Undecodable(error.to_string()),
    })
}

/// Writes replies as they become ready; everything ready at once goes in one write.
async fn write_replies(mut write: OwnedWriteHalf, mut receiver: mpsc::Receiver<Outgoing>) {
    let mut later = FuturesUnordered::new();
    let mut buffer = Vec::new();
    let mut open = true;
    let take =
        |outgoing: Outgoing,
         buffer: &mut Vec<u8>,
         later: &mut FuturesUnordered<BoxFuture<'static, curppb::ServerMessage>>| {
            match outgoing {
                Outgoing::Now(message) => framing::encode(&message, buffer),
                Outgoing::Later(future) => later.push(future),
                Outgoing::NowThenLater(message, future) => {
                    framing::encode(&message, buffer);
                    later.push(future);
                }
            }
        };
    while open || !later.is_empty() {
        tokio::select! {
            received = receiver.recv(), if open => match received {
                Some(outgoing) => take(outgoing, &mut buffer, &mut later),
                // The client closed: replies still pending have nobody to go to.
                None => return,
            },
            Some(message) = later.next(), if !later.is_empty() => {
                framing::encode(&message, &mut buffer);
            }
        }
        while let Ok(outgoing) = receiver.try_recv() {
            take(outgoing, &mut buffer, &mut later);
        }
        // Replies that resolved together (one applied batch completes many) go in the same
        // write too, not one write each on the next turns of the loop. `now_or_never` polls
        // with a no-op waker; the `select!` above polls `later` again with the task's own
        // before the task sleeps, so no wake-up is lost.
        while let Some(Some(message)) = later.next().now_or_never() {
            framing::encode(&message, &mut buffer);
        }
        if buffer.is_empty() {
            continue;
        }
        if write.write_all(&buffer).await.is_err() {
            open = false;
            later.clear();
        }
        buffer.clear();
    }
}

fn reply(message: server_message::Message) -> curppb::ServerMessage {
    curppb::ServerMessage {
        message: Some(message),
    }
}

fn error(
    id: Option<curppb::CommandId>,
    request_id: u64,
    code: Code,
    message: String,
) -> curppb::ServerMessage {
    reply(server_message::Message::Error(curppb::Error {
        id,
        request_id,
        code: code as i32,
        message,
    }))
}

fn native_error_code(error: &NativeError) -> Code {
    match error {
        NativeError::Invalid(_) | NativeError::WeakReadOfWrite => Code::InvalidArgument,
        NativeError::TooLarge => Code::TooLarge,
        NativeError::NotReady => Code::NotReady,
        NativeError::Stale(_) | NativeError::IdReused(_) => Code::Stale,
        NativeError::Busy => Code::Busy,
        NativeError::CausalGap { .. } => Code::CausalGap,
        NativeError::Timeout => Code::Unavailable,
    }
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// Handles one client message; returns what to answer, if anything.
async fn handle(node: &Node, message: curppb::ClientMessage) -> Option<Outgoing> {
    use client_message::Message;
    let message = match message.message {
        Some(message) => message,
        None => {
            return Some(Outgoing::Now(error(
                None,
                0,
                Code::InvalidArgument,
                "empty message (unknown kind)".to_string(),
            )))
        }
    };
    if let Message::Hello(_) = message {
        let view = node.replica().cluster_view();
        return Some(Outgoing::Now(reply(server_message::Message::HelloReply(
            curppb::HelloReply {
                member_id: view.member_id,
                voters: view.voters as u64,
                leader_id: view.leader.unwrap_or(0),
            },
        ))));
    }
    // The native protocol carries no credentials: with auth on, only the etcd API serves.
    if node.store().auth().is_enabled() {
        let (id, request_id) = match &message {
            Message::Propose(p) => (p.command.as_ref().and_then(|c| c.id), 0),
            Message::CausalPropose(p) => (p.command.as_ref().and_then(|c| c.id), 0),
            Message::WeakRead(read) => (None, read.request_id),
            Message::Flush(flush) => (None, flush.request_id),
            Message::Hello(_) => (None, 0),
        };
        return Some(Outgoing::Now(error(
            id,
            request_id,
            Code::PermissionDenied,
            "etcdserver: permission denied (auth is enabled; use the etcd API)".to_string(),
        )));
    }
    match message {
        Message::Hello(_) => None,
        Message::Propose(propose) => propose_strong(node, propose.command).await,
        Message::CausalPropose(propose) => {
            causal_propose(node, propose.command, propose.reply).await
        }
        Message::WeakRead(read) => Some(weak_read(node, read)),
        Message::Flush(flush) => Some(flush_session(node, flush)),
    }
}

fn decode_command(
    command: Option<curppb::Command>,
    consistency: Consistency,
) -> Result<Command, (Option<curppb::CommandId>, InvalidCommand)> {
    let command = command.ok_or((None, InvalidCommand::MissingOp))?;
    let decoded = command_from_pb(&command).map_err(|error| (command.id, error))?;
    // The message kind decides the consistency: a Propose is strong, a CausalPropose weak.
    Ok(Command {
        consistency,
        ..decoded
    })
}

/// Hands a decoded command to the replica, stamped with this member's clock.
async fn propose(node: &Node, command: Command) -> Result<ProposeReply, NativeError> {
    let max_bytes = node.config().max_request_bytes;
    node.replica()
        .native_propose(command, now_unix_ms(), max_bytes)
        .await
}

async fn propose_strong(node: &Node, command: Option<curppb::Command>) -> Option<Outgoing> {
    let command = match decode_command(command, Consistency::Strong) {
        Ok(command) => command,
        Err((id, invalid)) => {
            return Some(Outgoing::Now(error(
                id,
                0,
                Code::InvalidArgument,
                invalid.to_string(),
            )))
        }
    };
    let id = id_to_pb(command.id);
    let outgoing = match propose(node, command).await {
        Ok(ProposeReply::Applied(result)) => Outgoing::Now(reply(
            server_message::Message::SyncReply(curppb::SyncReply {
                id: Some(id),
                result: Some(result),
            }),
        )),
        Ok(ProposeReply::Superseded) => return None,
        Ok(ProposeReply::Witness { term, ok }) => Outgoing::Now(reply(
            server_message::Message::WitnessReply(curppb::WitnessReply {
                id: Some(id),
                term,
                ok,
                member_id: node.replica().member_id(),
            }),
        )),
        Ok(ProposeReply::Leader {
            term,
            ok,
            result,
            sync,
        }) => {
            let leader_reply = reply(server_message::Message::LeaderReply(curppb::LeaderReply {
                id: Some(id),
                term,
                ok,
                result,
                member_id: node.replica().member_id(),
            }));
            // The leader reply goes now; the sync reply once the entry applies.
            let Some(sync) = sync else {
                // A strong read answered from the applied state: the witnesses complete it.
                return Some(Outgoing::Now(leader_reply));
            };
            let synced = Box::pin(async move {
                match sync.await {
                    Ok(result) => reply(server_message::Message::SyncReply(curppb::SyncReply {
                        id: Some(id),
                        result: Some(result),
                    })),
                    Err(failure) => {
                        let code = match failure {
                            SyncError::Stale => Code::Stale,
                            SyncError::Refused(_) => Code::InvalidArgument,
                            SyncError::LeaderChanged => Code::NotReady,
                            SyncError::CausalGap => Code::CausalGap,
                        };
                        error(Some(id), 0, code, failure.to_string())
                    }
                }
            });
            Outgoing::NowThenLater(leader_reply, synced)
        }
        Err(failure) => Outgoing::Now(error(
            Some(id),
            0,
            native_error_code(&failure),
            failure.to_string(),
        )),
    };
    Some(outgoing)
}

async fn causal_propose(
    node: &Node,
    command: Option<curppb::Command>,
    wants_reply: bool,
) -> Option<Outgoing> {
    let command = match decode_command(command, Consistency::Weak) {
        Ok(command) => command,
        Err((id, invalid)) => {
            return wants_reply
                .then(|| Outgoing::Now(error(id, 0, Code::InvalidArgument, invalid.to_string())))
        }
    };
    let client_id = command.id.client_id;
    let id = id_to_pb(command.id);
    let proposed = propose(node, command).await;
    // Only the bound replica answers a weak write; the others pool (or order) it silently.
    if !wants_reply {
        return None;
    }
    Some(Outgoing::Now(match proposed {
        Ok(_) => {
            let (applied_seq, applied_revision) = node.replica().native_applied(client_id);
            reply(server_message::Message::CausalReply(curppb::CausalReply {
                id: Some(id),
                applied_seq,
                applied_revision,
            }))
        }
        Err(failure) => error(
            Some(id),
            0,
            native_error_code(&failure),
            failure.to_string(),
        ),
    }))
}

fn weak_read(node: &Node, read: curppb::WeakRead) -> Outgoing {
    let replica = node.replica().clone();
    Outgoing::Later(Box::pin(async move {
        let request_id = read.request_id;
        let Some(op) = read.op.and_then(|op| op.op) else {
            return error(
                None,
                request_id,
                Code::InvalidArgument,
                "weak read without an op".to_string(),
            );
        };
        match replica
            .native_weak_read(read.client_id, &op, read.min_revision)
            .await
        {
            Ok(answer) => reply(server_message::Message::WeakReadReply(
                curppb::WeakReadReply {
                    request_id,
                    result: Some(answer.result),
                    applied_revision: answer.applied_revision,
                    applied_seq: answer.applied_seq,
                },
            )),
            Err(failure) => error(
                None,
                request_id,
                native_error_code(&failure),
                failure.to_string(),
            ),
        }
    }))
}

fn flush_session(node: &Node, flush: curppb::Flush) -> Outgoing {
    let replica = node.replica().clone();
    Outgoing::Later(Box::pin(async move {
        match replica.native_flush(flush.client_id, flush.seq).await {
            Ok(applied_revision) => {
                reply(server_message::Message::FlushReply(curppb::FlushReply {
                    request_id: flush.request_id,
                    applied_revision,
                }))
            }
            Err(failure) => error(
                None,
                flush.request_id,
                native_error_code(&failure),
                failure.to_string(),
            ),
        }
    }))
}
