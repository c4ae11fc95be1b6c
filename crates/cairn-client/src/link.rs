//! One replica connection: a FIFO send queue drained by a writer task, a reader task that
//! hands every reply to the session, reconnection after a failure, and the optional emulated
//! one-way delay (a timed FIFO queue in each direction: nothing is reordered).
//!
//! A message sent while the connection is down is lost; the session's retry timer resends
//! what is unfinished, which is what the protocol expects of a lossy link.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_proto::curppb::{self, client_message};
use cairn_proto::framing;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

/// Messages queued for one replica before `send` waits (backpressure).
const QUEUED_MAX: usize = 4096;

/// Wait between reconnection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// Frames a reply may be; a larger one means a broken stream.
const REPLY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Receives every reply of every replica, tagged with the replica's index.
pub(crate) trait Dispatch: Send + Sync + 'static {
    fn dispatch(&self, replica: usize, message: curppb::ServerMessage);
}

pub(crate) struct Link {
    queue: mpsc::Sender<(Instant, Bytes)>,
}

impl Link {
    pub(crate) fn start(
        replica: usize,
        endpoint: String,
        delay: Duration,
        dispatch: Arc<dyn Dispatch>,
    ) -> Link {
        let (queue, receiver) = mpsc::channel(QUEUED_MAX);
        tokio::spawn(drive(replica, endpoint, delay, receiver, dispatch));
        Link { queue }
    }

    /// Queues one message; waits while the queue is full.
    pub(crate) async fn send(&self, message: Bytes) {
        // The link stops only with the session, which then sends nothing.
        let _ = self.queue.send((Instant::now(), message)).await;
    }
}

/// One encoded `ClientMessage` frame.
pub(crate) fn frame(message: client_message::Message) -> Bytes {
    let mut buffer = Vec::new();
    framing::encode(
        &curppb::ClientMessage {
            message: Some(message),
        },
        &mut buffer,
    );
    Bytes::from(buffer)
}

async fn drive(
    replica: usize,
    endpoint: String,
    delay: Duration,
    mut queue: mpsc::Receiver<(Instant, Bytes)>,
    dispatch: Arc<dyn Dispatch>,
) {
    loop {
        let stream = match TcpStream::connect(&endpoint).await {
            Ok(stream) => stream,
            Err(error) => {
                debug!(%endpoint, %error, "native connection failed; retrying");
                // Drop what was queued meanwhile (the retry timer resends), but stop once
                // the session is gone.
                loop {
                    match queue.try_recv() {
                        Ok(_) => continue,
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let reader = tokio::spawn(read_replies(replica, read, delay, dispatch.clone()));
        let hello = frame(client_message::Message::Hello(curppb::Hello {}));
        let mut buffer = hello.to_vec();
        let mut closed = false;
        loop {
            if !buffer.is_empty() && write.write_all(&buffer).await.is_err() {
                break;
            }
            buffer.clear();
            let Some((queued_at, message)) = queue.recv().await else {
                closed = true;
                break;
            };
            hold(queued_at, delay).await;
            buffer.extend_from_slice(&message);
            // Everything else already due goes in the same write.
            while let Ok((queued_at, message)) = queue.try_recv() {
                hold(queued_at, delay).await;
                buffer.extend_from_slice(&message);
            }
        }
        reader.abort();
        if closed {
            return;
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// Holds a message queued at `queued_at` until its emulated delay has passed. Without a delay
/// it does not touch the timer: tokio's timer wheel has 1 ms ticks, and even an elapsed
/// deadline waits for the next one (it cost every message a millisecond).
async fn hold(queued_at: Instant, delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep_until(queued_at + delay).await;
    }
}

async fn read_replies(
    replica: usize,
    read: tokio::net::tcp::OwnedReadHalf,
    delay: Duration,
    dispatch: Arc<dyn Dispatch>,
) {
    // With a delay, replies wait in a timed FIFO queue of their own, so that reading the
    // next one is not held up by the previous one's wait.
    let delayed = (!delay.is_zero()).then(|| {
        let (sender, mut receiver) = mpsc::unbounded_channel::<(Instant, curppb::ServerMessage)>();
        let dispatch = dispatch.clone();
        let task = tokio::spawn(async move {
            while let Some((arrived, message)) = receiver.recv().await {
                tokio::time::sleep_until(arrived + delay).await;
                dispatch.dispatch(replica, message);
            }
        });
        (sender, task)
    });
    let mut reader = BufReader::new(read);
    loop {
        let mut header = [0; framing::HEADER_BYTES];
        if reader.read_exact(&mut header).await.is_err() {
            break;
        }
        let len = framing::body_len(header);
        if len > REPLY_BYTES_MAX {
            break;
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).await.is_err() {
            break;
        }
        let Ok(message) = curppb::ServerMessage::decode(body.as_slice()) else {
            break;
        };
        match &delayed {
            Some((sender, _)) => {
                let _ = sender.send((Instant::now(), message));
            }
            None => dispatch.dispatch(replica, message),
        }
    }
    if let Some((sender, task)) = delayed {
        drop(sender);
        let _ = task.await;
    }
}
