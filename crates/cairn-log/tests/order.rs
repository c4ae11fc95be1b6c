//! Order levels end to end over real sockets: every subscriber of an ORDER 2/5 topic sees the
//! identical sequence with no gap and no duplicate, ORDER 5 keeps each session's FIFO across
//! brokers, ORDER 1 keeps per-connection FIFO, and a fenced session's resent suffix appears
//! exactly once.

mod common;

use cairn_log::client::subscriber::StartAt;
use cairn_log::topic::{AckLevel, OrderLevel};
use cairn_proto::logpb::broker_frame::Frame;
use common::*;

const PUBLISHERS: usize = 3;
const PER_PUBLISHER: usize = 3000;

async fn total_order_identical_for_every_subscriber(order: OrderLevel) -> Vec<(u64, String)> {
    let dirs = dirs();
    let topic = topic("orders", order, AckLevel::Ordered);
    let b0 = TestBroker::start(0, &dirs.shm, &dirs.data, &topic).await;
    let b1 = TestBroker::start(1, &dirs.shm, &dirs.data, &topic).await;

    tracing::info!("three publishers spread small batches over both brokers concurrently");
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let brokers = addresses(&[&b0, &b1]);
        tasks.push(tokio::spawn(async move {
            publish_numbered("orders", brokers, &format!("p{p}"), PER_PUBLISHER, 600).await
        }));
    }
    let mut early = subscribe("orders", &[&b0, &b1], true, StartAt::Earliest).await;
    for t in tasks {
        t.await.unwrap();
    }
    let total = PUBLISHERS * PER_PUBLISHER;
    let first = read_messages(&mut early, total).await;

    tracing::info!("a second subscriber through one broker only sees the very same sequence");
    let mut late = subscribe("orders", &[&b1], true, StartAt::Earliest).await;
    let second = read_messages(&mut late, total).await;
    assert_eq!(first, second, "two subscribers saw different orders");

    let positions: Vec<u64> = first.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        positions,
        (0..total as u64).collect::<Vec<_>>(),
        "positions have a gap or duplicate"
    );
    let tags = by_tag(&first);
    for p in 0..PUBLISHERS {
        let mut seen = tags[&format!("p{p}")].clone();
        seen.sort();
        assert_eq!(
            seen,
            (0..PER_PUBLISHER).collect::<Vec<_>>(),
            "p{p}: lost or duplicated messages"
        );
    }

    tracing::info!("a subscriber starting at a position gets exactly the suffix");
    let mut mid = subscribe("orders", &[&b0, &b1], true, StartAt::Position(4321)).await;
    let suffix = read_messages(&mut mid, 10).await;
    assert_eq!(&suffix[..], &first[4321..4321 + suffix.len()]);
    b0.stop().await;
    b1.stop().await;
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order2_every_subscriber_sees_one_gapless_sequence() {
    total_order_identical_for_every_subscriber(OrderLevel::Total).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order5_keeps_each_session_fifo_across_brokers() {
    let sequence = total_order_identical_for_every_subscriber(OrderLevel::TotalSessionFifo).await;
    for (tag, numbers) in by_tag(&sequence) {
        assert_eq!(
            numbers,
            (0..PER_PUBLISHER).collect::<Vec<_>>(),
            "{tag}: session FIFO broken"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order1_keeps_per_connection_fifo() {
    let dirs = dirs();
    let topic = topic("fifo", OrderLevel::ConnectionFifo, AckLevel::Ordered);
    let b0 = TestBroker::start(0, &dirs.shm, &dirs.data, &topic).await;
    let b1 = TestBroker::start(1, &dirs.shm, &dirs.data, &topic).await;
    let (a, b) = tokio::join!(
        publish_numbered("fifo", addresses(&[&b0]), "a", 2000, 300),
        publish_numbered("fifo", addresses(&[&b0]), "b", 2000, 300),
    );
    drop((a, b));
    let mut sub = subscribe("fifo", &[&b0, &b1], false, StartAt::Earliest).await;
    let seen = read_messages(&mut sub, 4000).await;
    for (tag, numbers) in by_tag(&seen) {
        assert_eq!(
            numbers,
            (0..2000).collect::<Vec<_>>(),
            "{tag}: connection FIFO broken"
        );
    }
    b0.stop().await;
    b1.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order5_fenced_session_resends_its_suffix_exactly_once() {
    let dirs = dirs();
    let topic = topic("fence", OrderLevel::TotalSessionFifo, AckLevel::Ordered);
    let b0 = TestBroker::start(0, &dirs.shm, &dirs.data, &topic).await;
    let b1 = TestBroker::start(1, &dirs.shm, &dirs.data, &topic).await;
    let client = 42;

    tracing::info!("seq 0 is ordered; seq 2 arrives but seq 1 never does");
    let mut conn0 = RawPublisher::connect(&b0.address, "fence", client)
        .await
        .unwrap();
    let mut conn1 = RawPublisher::connect(&b1.address, "fence", client)
        .await
        .unwrap();
    conn0.send_batch(0, 0, &["m0"]).await;
    assert_eq!(
        conn0.next_frame().await,
        Frame::Ack(cairn_proto::logpb::Ack { batch_seq: 0 })
    );
    conn1.send_batch(2, 0, &["m2"]).await;

    tracing::info!("the gap outlives the session lease: the session is fenced at seq 1");
    let fenced = conn1.next_frame().await;
    assert_eq!(
        fenced,
        Frame::Fenced(cairn_proto::logpb::Fenced {
            session_epoch: 0,
            next_seq: 1
        })
    );
    conn0.send_batch(1, 0, &["late-m1"]).await;
    assert!(
        matches!(conn0.next_frame().await, Frame::Fenced(f) if f.next_seq == 1),
        "the fenced epoch is closed"
    );

    tracing::info!("the publisher resends the suffix under epoch 1, one batch twice (a retry)");
    conn0.send_batch(1, 1, &["m1"]).await;
    conn1.send_batch(2, 1, &["m2"]).await;
    conn0.send_batch(2, 1, &["m2"]).await;
    // Acks are cumulative: the connection learns seq 2 (and so 1) is done, maybe in two frames.
    while conn0.next_frame().await != Frame::Ack(cairn_proto::logpb::Ack { batch_seq: 2 }) {}

    let mut sub = subscribe("fence", &[&b0, &b1], true, StartAt::Earliest).await;
    let seen = read_messages(&mut sub, 3).await;
    let texts: Vec<&str> = seen.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(texts, ["m0", "m1", "m2"]);
    conn0.send_batch(3, 1, &["m3"]).await;
    let next = read_messages(&mut sub, 1).await;
    assert_eq!(next[0].1, "m3", "nothing was ordered twice before m3");
    b0.stop().await;
    b1.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order5_restores_session_order_after_reordering_across_brokers() {
    let dirs = dirs();
    let topic = topic("reorder", OrderLevel::TotalSessionFifo, AckLevel::Ordered);
    let b0 = TestBroker::start(0, &dirs.shm, &dirs.data, &topic).await;
    let b1 = TestBroker::start(1, &dirs.shm, &dirs.data, &topic).await;
    let client = 7;
    let mut conns = [
        RawPublisher::connect(&b0.address, "reorder", client)
            .await
            .unwrap(),
        RawPublisher::connect(&b1.address, "reorder", client)
            .await
            .unwrap(),
    ];

    tracing::info!(
        "the session's batches arrive as 3, 1, 0, 2 on alternating brokers, spread over epochs"
    );
    for (i, seq) in [3u64, 1, 0, 2].into_iter().enumerate() {
        conns[i % 2].send_batch(seq, 0, &[&format!("s{seq}")]).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut sub = subscribe("reorder", &[&b0, &b1], true, StartAt::Earliest).await;
    let seen = read_messages(&mut sub, 4).await;
    let texts: Vec<&str> = seen.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(texts, ["s0", "s1", "s2", "s3"]);
    b0.stop().await;
    b1.stop().await;
}
