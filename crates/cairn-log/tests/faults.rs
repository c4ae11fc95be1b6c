//! Bad input and failures: clear errors while the broker keeps serving others, a connection
//! that dies mid-batch never exposes a partial batch, ACK 2 data outlives every process and the
//! shared memory itself.

mod common;

use cairn_log::client::subscriber::StartAt;
use cairn_log::limits::BATCH_BYTES_MAX;
use cairn_log::topic::{AckLevel, OrderLevel};
use cairn_proto::logpb::{broker_frame::Frame, ErrorCode};
use common::*;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_the_broker_keeps_serving() {
    let dirs = dirs();
    let topic = topic("t", OrderLevel::Total, AckLevel::Ordered);
    let b0 = TestBroker::start(0, &dirs.shm, &dirs.data, &topic).await;

    tracing::info!("unknown topic");
    let err = RawPublisher::connect(&b0.address, "nope", 1)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), ErrorCode::UnknownTopic);
    assert!(err.message.contains("nope"), "{}", err.message);

    tracing::info!("a batch larger than the limit");
    let mut big = RawPublisher::connect(&b0.address, "t", 2).await.unwrap();
    big.send_header(0, 0, 1, BATCH_BYTES_MAX + 1).await;
    match big.next_frame().await {
        Frame::Error(e) => {
            assert_eq!(e.code(), ErrorCode::BatchTooLarge);
            assert!(
                e.message.contains(&BATCH_BYTES_MAX.to_string()),
                "{}",
                e.message
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }

    tracing::info!("a batch whose message framing lies about its count");
    let mut liar = RawPublisher::connect(&b0.address, "t", 3).await.unwrap();
    let mut payload = Vec::new();
    cairn_log::wire::push_message(&mut payload, b"only one");
    liar.send_raw(0, 0, 3, &payload).await;
    assert!(matches!(liar.next_frame().await, Frame::Error(e) if e.code() == ErrorCode::Malformed));

    tracing::info!("a connection that opens with a batch instead of hello");
    let stream = tokio::net::TcpStream::connect(&b0.address).await.unwrap();
    let mut rude = RawPublisher { stream };
    rude.send_header(0, 0, 0, 0).await;
    assert!(matches!(rude.next_frame().await, Frame::Error(e) if e.code() == ErrorCode::Protocol));

    tracing::info!("none of it reached the log, and a well-behaved publisher is served");
    drop(publish_numbered("t", addresses(&[&b0]), "ok", 100, 256).await);
    let mut sub = subscribe("t", &[&b0], true, StartAt::Earliest).await;
    let seen = read_messages(&mut sub, 100).await;
    assert_eq!(seen[0], (0, "ok-0".to_string()));
    assert_eq!(by_tag(&seen)["ok"], (0..100).collect::<Vec<_>>());
    b0.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dying_mid_batch_never_exposes_a_partial_batch() {
    let dirs = dirs();
    let topic = topic("t", OrderLevel::TotalSessionFifo, AckLevel::Ordered);
    let b0 = TestBroker::start(0, &dirs.shm, &dirs.data, &topic).await;

    let mut dying = RawPublisher::connect(&b0.address, "t", 9).await.unwrap();
    let mut payload = Vec::new();
    for n in 0..100 {
        cairn_log::wire::push_message(&mut payload, format!("partial-{n}").as_bytes());
    }
    dying.send_header(0, 0, 100, payload.len() as u32).await;
    dying
        .stream
        .write_all(&payload[..payload.len() / 2])
        .await
        .unwrap();
    drop(dying);

    drop(publish_numbered("t", addresses(&[&b0]), "whole", 50, 128).await);
    let mut sub = subscribe("t", &[&b0], true, StartAt::Earliest).await;
    let seen = read_messages(&mut sub, 50).await;
    assert!(
        seen.iter().all(|(_, m)| m.starts_with("whole-")),
        "a partial batch leaked: {:?}",
        &seen[..3]
    );
    assert_eq!(seen.first().map(|(p, _)| *p), Some(0));
    b0.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack2_data_survives_losing_the_processes_and_the_shared_memory() {
    let dirs = dirs();
    let mut topic = topic("durable", OrderLevel::Total, AckLevel::Durable);
    topic.replication_factor = 2;

    tracing::info!("publish with ACK 2: every acknowledged batch is on two fsynced replicas");
    let b0 = TestBroker::start(0, &dirs.shm, &dirs.data, &topic).await;
    let publisher = publish_numbered("durable", addresses(&[&b0]), "d", 2000, 1000).await;
    assert_eq!(publisher.unacked(), 0);
    let mut sub = subscribe("durable", &[&b0], true, StartAt::Earliest).await;
    let before = read_messages(&mut sub, 2000).await;
    drop(sub);
    b0.stop().await;
    for replica in 0..2 {
        let dir = dirs.data.join("durable").join(format!("replica-{replica}"));
        let records = cairn_log::durable::read_records(&dir).unwrap();
        let messages: u32 = records.iter().map(|r| r.entry.message_count).sum();
        assert_eq!(
            messages, 2000,
            "replica {replica} holds every acknowledged message"
        );
    }

    tracing::info!("the shared memory is gone (host reboot); a new broker restores it from disk");
    std::fs::remove_file(dirs.shm.join("durable.shm")).unwrap();
    let b0 = TestBroker::start(0, &dirs.shm, &dirs.data, &topic).await;
    let mut sub = subscribe("durable", &[&b0], true, StartAt::Earliest).await;
    let after = read_messages(&mut sub, 2000).await;
    assert_eq!(before, after, "same messages at the same positions");

    tracing::info!("and the order continues after them");
    drop(publish_numbered("durable", addresses(&[&b0]), "next", 10, 1000).await);
    let more = read_messages(&mut sub, 10).await;
    assert_eq!(more[0], (2000, "next-0".to_string()));
    b0.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_gives_up_with_an_error_when_no_broker_acknowledges() {
    tracing::info!("a broker that welcomes the publisher and then never answers");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let silent = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let _hello =
            cairn_log::wire::read_frame::<cairn_proto::logpb::ClientFrame>(&mut stream).await;
        let welcome = cairn_proto::logpb::Welcome {
            broker_id: 0,
            order: 2,
            ack: 1,
            batch_bytes_max: BATCH_BYTES_MAX,
        };
        let frame = cairn_proto::logpb::BrokerFrame {
            frame: Some(Frame::Welcome(welcome)),
        };
        let mut buf = Vec::new();
        cairn_log::wire::encode_frame(&frame, &mut buf);
        stream.write_all(&buf).await.unwrap();
        // Swallow whatever comes, never ack.
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink).await;
    });
    let mut config = cairn_log::client::publisher::PublisherConfig::new("t", vec![address]);
    config.ack_timeout = std::time::Duration::from_millis(300);
    let mut publisher = cairn_log::client::publisher::Publisher::connect(config)
        .await
        .unwrap();
    publisher.publish(b"hello").await.unwrap();
    let started = std::time::Instant::now();
    let err = publisher
        .flush()
        .await
        .expect_err("flush cannot succeed without acks");
    assert!(err.to_string().contains("no broker answered"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "it gave up promptly"
    );
    assert_eq!(publisher.unacked(), 1, "the batch is kept for a retry");
    silent.abort();
}

/// Threads of this test process whose name starts with `prefix` (Linux names are cut at 15
/// bytes, so keep prefixes short).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end().starts_with(prefix))
        .count()
}

/// Waits (up to 5 s) until `threads_named(prefix)` is `count`: a new thread names itself from
/// inside, and a joined one leaves `/proc` a moment later.
async fn expect_threads_named(prefix: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while threads_named(prefix) != count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} threads named {prefix}*, expected {count}",
            threads_named(prefix)
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_opened_twice_at_once_is_mapped_once() {
    // A publisher's hello and the control loop open a new topic at the same moment; two
    // runtimes of one topic would run two ackers over one ring.
    let d = dirs();
    let broker = TestBroker::start(
        0,
        &d.shm,
        &d.data,
        &topic("base", OrderLevel::Total, AckLevel::Ordered),
    )
    .await;
    let twice = topic("twice", OrderLevel::Total, AckLevel::Ordered);
    let (a, b) = tokio::join!(
        broker.broker.add_topic(twice.clone()),
        broker.broker.add_topic(twice)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    expect_threads_named("acker-twice", 1).await;

    let published = publish_numbered("twice", addresses(&[&broker]), "m", 10, 64).await;
    assert_eq!(published.unacked(), 0);
    broker.stop().await;
    // Shutdown stops the topic's acker.
    expect_threads_named("acker-twice", 0).await;
}
