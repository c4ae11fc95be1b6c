//! The answering side of one peer connection. See the module doc of `network::tcp`.

use std::future::Future;
use std::sync::Arc;

use cairn_proto::raftpb::PeerFrame;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Semaphore};
use tracing::debug;

use super::{frame, PeerIo};
use crate::limits::{PEER_CALLS_SERVED_MAX, PEER_WRITE_BATCH_BYTES};
use crate::peer::{refused, PeerHandler};

/// Serves the requests of one accepted peer connection until the peer closes it, it breaks,
/// or `shutdown` resolves.
pub async fn serve(stream: impl PeerIo, handler: PeerHandler, shutdown: impl Future<Output = ()>) {
    let (read, write) = tokio::io::split(stream);
    let (answers, outgoing) = mpsc::channel(PEER_CALLS_SERVED_MAX);
    let writer = tokio::spawn(write_answers(write, outgoing));
    let serving = Arc::new(Semaphore::new(PEER_CALLS_SERVED_MAX));
    let mut read = BufReader::new(read);
    tokio::pin!(shutdown);
    let reason = loop {
        // Room for one more request first: while it is full, nothing more is read.
        let Ok(permit) = serving.clone().acquire_owned().await else {
            break "closed".to_string();
        };
        let request = tokio::select! {
            request = frame::read(&mut read) => request,
            () = &mut shutdown => break "shutting down".to_string(),
        };
        let request = match request {
            Ok(request) => request,
            Err(error) => break format!("read: {error}"),
        };
        let call = request.call;
        match frame::request_of(request.body) {
            Ok(request) => {
                let (handler, answers) = (handler.clone(), answers.clone());
                tokio::spawn(async move {
                    let answer = handler.handle(request).await;
                    let _ = answers.send(frame::answer_frame(call, answer)).await;
                    drop(permit);
                });
            }
            Err(what) => {
                let refusal = refused(0, format!("invalid peer request: {what}"));
                if answers
                    .send(frame::answer_frame(call, Err(refusal)))
                    .await
                    .is_err()
                {
                    break "writer stopped".to_string();
                }
            }
        }
    };
    debug!(reason, "peer connection served to the end");
    drop(answers);
    writer.abort();
}

/// Writes answers as they finish, everything finished at once in one write.
async fn write_answers<W: AsyncWrite + Unpin>(
    mut write: W,
    mut outgoing: mpsc::Receiver<PeerFrame>,
) {
    let mut buffer = Vec::new();
    while let Some(first) = outgoing.recv().await {
        let mut answer = Some(first);
        while let Some(frame) = answer.take() {
            if let Err(frame::TooLarge(len)) = frame::encode(&frame, &mut buffer) {
                let refusal = refused(
                    0,
                    format!("answer of {len} bytes is over the peer message limit"),
                );
                let refused = frame::answer_frame(frame.call, Err(refusal));
                if frame::encode(&refused, &mut buffer).is_err() {
                    return;
                }
            }
            if buffer.len() < PEER_WRITE_BATCH_BYTES {
                answer = outgoing.try_recv().ok();
            }
        }
        if write.write_all(&buffer).await.is_err() {
            return;
        }
        buffer.clear();
    }
}
