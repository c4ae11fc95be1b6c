//! The calling side of one peer connection: a task that dials, then runs a writer (queued
//! calls, batched into one write) and a reader (answers, matched to their callers by call id)
//! until either breaks. See the module doc of `network::tcp`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::{frame, Dialer, CONNECT_TIMEOUT};
use crate::limits::{PEER_CALLS_QUEUED_MAX, PEER_WRITE_BATCH_BYTES};
use crate::network::{PeerRequest, PeerResponse, TransportError};

type Reply = oneshot::Sender<Result<PeerResponse, TransportError>>;

/// A call waiting for the writer.
pub(super) struct Call {
    pub request: PeerRequest,
    pub reply: Reply,
}

/// Calls written and not answered yet, by call id. A std mutex: held for one insert or
/// remove, never across an await.
#[derive(Default)]
struct InFlight(Mutex<HashMap<u64, Reply>>);

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Reply>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts a connection to `url`; returns its call queue. The connection ends (and the queue
/// closes) when the peer cannot be reached or the connection breaks.
pub(super) fn open(dialer: Arc<dyn Dialer>, url: String) -> mpsc::Sender<Call> {
    let (queue, calls) = mpsc::channel(PEER_CALLS_QUEUED_MAX);
    tokio::spawn(run(dialer, url, calls));
    queue
}

async fn run(dialer: Arc<dyn Dialer>, url: String, mut calls: mpsc::Receiver<Call>) {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, dialer.dial(&url)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            return fail(&mut calls, &InFlight::default(), &format!("{url}: {error}"))
        }
        Err(_) => {
            return fail(
                &mut calls,
                &InFlight::default(),
                &format!("{url}: connect timed out"),
            )
        }
    };
    let (read, write) = tokio::io::split(stream);
    let in_flight = InFlight::default();
    let reason = tokio::select! {
        reason = write_calls(write, &mut calls, &in_flight) => reason,
        reason = read_answers(read, &in_flight) => reason,
    };
    debug!(url, reason, "peer connection closed");
    fail(&mut calls, &in_flight, &format!("{url}: {reason}"));
}

/// Fails every call in flight or still queued, and closes the queue.
fn fail(calls: &mut mpsc::Receiver<Call>, in_flight: &InFlight, reason: &str) {
    calls.close();
    let unreachable = || Err(TransportError::Unreachable(reason.to_string()));
    for (_, reply) in in_flight.lock().drain() {
        let _ = reply.send(unreachable());
    }
    while let Ok(call) = calls.try_recv() {
        let _ = call.reply.send(unreachable());
    }
}

/// Writes queued calls, everything queued at once in one write; returns why it stopped.
async fn write_calls<W: AsyncWrite + Unpin>(
    mut write: W,
    calls: &mut mpsc::Receiver<Call>,
    in_flight: &InFlight,
) -> String {
    let mut next_call: u64 = 0;
    let mut buffer = Vec::new();
    while let Some(first) = calls.recv().await {
        let mut call = Some(first);
        while let Some(Call { request, reply }) = call.take() {
            // A caller that gave up (timed out) needs no answer.
            if !reply.is_closed() {
                next_call += 1;
                match frame::encode(&frame::request_frame(next_call, request), &mut buffer) {
                    Ok(()) => {
                        in_flight.lock().insert(next_call, reply);
                    }
                    Err(frame::TooLarge(len)) => {
                        let _ = reply.send(Err(TransportError::Unreachable(format!(
                            "peer message of {len} bytes is over the limit"
                        ))));
                    }
                }
            }
            if buffer.len() < PEER_WRITE_BATCH_BYTES {
                call = calls.try_recv().ok();
            }
        }
        if buffer.is_empty() {
            continue;
        }
        if let Err(error) = write.write_all(&buffer).await {
            return format!("write: {error}");
        }
        buffer.clear();
    }
    "transport dropped".to_string()
}

/// Hands each answer to its caller; returns why it stopped.
async fn read_answers<R: AsyncRead + Unpin>(read: R, in_flight: &InFlight) -> String {
    let mut read = BufReader::new(read);
    loop {
        let answer = match frame::read(&mut read).await {
            Ok(answer) => answer,
            Err(error) => return format!("read: {error}"),
        };
        let Some(reply) = in_flight.lock().remove(&answer.call) else {
            return format!("answer to call {} that is not in flight", answer.call);
        };
        let _ = reply.send(frame::answer_of(answer.body));
    }
}
