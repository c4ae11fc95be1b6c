//! An emulated wide-area link for benchmarks: every message to a peer, and every answer,
//! arrives a fixed one-way delay late, in the order it was sent (a FIFO timed queue per link,
//! no reordering). Wraps any [`Transport`]; the protocol cannot tell it from a long cable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::network::{PeerRequest, PeerResponse, Transport, TransportError, TransportFuture};
use crate::types::{Member, MemberId};

/// Messages in flight on one link before senders wait (a link is a bounded pipe).
const LINK_QUEUE_MAX: usize = 4096;

type Reply = oneshot::Sender<Result<PeerResponse, TransportError>>;

struct InFlight {
    deliver_at: Instant,
    member: Member,
    request: PeerRequest,
    reply: Reply,
}

/// See the module doc.
pub struct DelayedTransport {
    inner: Arc<dyn Transport>,
    one_way: Duration,
    links: Mutex<HashMap<MemberId, mpsc::Sender<InFlight>>>,
}

impl DelayedTransport {
    pub fn new(inner: Arc<dyn Transport>, one_way: Duration) -> DelayedTransport {
        DelayedTransport {
            inner,
            one_way,
            links: Mutex::default(),
        }
    }

    /// The queue of the link to `target`, started on first use.
    fn link(&self, target: MemberId) -> mpsc::Sender<InFlight> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        let link = links.entry(target).or_insert_with(|| {
            let (queue, pending) = mpsc::channel(LINK_QUEUE_MAX);
            tokio::spawn(deliver(self.inner.clone(), target, self.one_way, pending));
            queue
        });
        link.clone()
    }
}

/// Hands each message of one link to the real transport at its delivery time, in send order;
/// the answer waits out the delay back.
async fn deliver(
    inner: Arc<dyn Transport>,
    target: MemberId,
    one_way: Duration,
    mut pending: mpsc::Receiver<InFlight>,
) {
    while let Some(message) = pending.recv().await {
        tokio::time::sleep_until(message.deliver_at).await;
        let call = inner.call(target, &message.member, message.request);
        tokio::spawn(async move {
            let answer = call.await;
            tokio::time::sleep(one_way).await;
            let _ = message.reply.send(answer);
        });
    }
}

impl Transport for DelayedTransport {
    fn call(&self, target: MemberId, member: &Member, request: PeerRequest) -> TransportFuture {
        let link = self.link(target);
        let (reply, answer) = oneshot::channel();
        let message = InFlight {
            deliver_at: Instant::now() + self.one_way,
            member: member.clone(),
            request,
            reply,
        };
        Box::pin(async move {
            let gone = || TransportError::Unreachable(format!("link to {target:x} closed"));
            link.send(message).await.map_err(|_| gone())?;
            answer.await.map_err(|_| gone())?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::raftpb;

    /// Answers every call at once and records the order calls arrived in.
    #[derive(Default)]
    struct Echo {
        arrivals: Mutex<Vec<(u64, Instant)>>,
    }

    impl Transport for Echo {
        fn call(&self, _: MemberId, _: &Member, request: PeerRequest) -> TransportFuture {
            let PeerRequest::Forward(forward) = request else {
                panic!("test sends forwards only");
            };
            let tag = forward.request[0] as u64;
            self.arrivals.lock().unwrap().push((tag, Instant::now()));
            Box::pin(async move {
                Ok(PeerResponse::Forward(raftpb::ForwardResponse {
                    index: tag,
                }))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn messages_arrive_one_delay_late_in_send_order_and_answers_one_more() {
        let echo = Arc::new(Echo::default());
        let link = DelayedTransport::new(echo.clone(), Duration::from_millis(25));
        let member = Member::default();
        let start = Instant::now();
        let calls: Vec<_> = (0..50u8)
            .map(|tag| {
                let request = PeerRequest::Forward(raftpb::ForwardRequest {
                    request: vec![tag].into(),
                });
                link.call(7, &member, request)
            })
            .collect();
        let answers = futures::future::join_all(calls).await;
        for (tag, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(PeerResponse::Forward(response)) => assert_eq!(response.index, tag as u64),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(50),
            "one delay each way"
        );
        let arrivals = echo.arrivals.lock().unwrap();
        let order: Vec<u64> = arrivals.iter().map(|(tag, _)| *tag).collect();
        assert_eq!(order, (0..50).collect::<Vec<_>>(), "FIFO on the link");
        assert!(arrivals
            .iter()
            .all(|(_, at)| *at == start + Duration::from_millis(25)));
    }
}
