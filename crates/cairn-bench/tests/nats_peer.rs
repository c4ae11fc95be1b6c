//! The NATS JetStream peer of `cairn bench log` against a real `nats-server -js` (Debian's
//! nats-server package): acks are matched to publishes, and the figures reported are for bytes
//! the server really stored.
//!
//! Without nats-server on PATH these tests fail under CI=true and are skipped (with a note)
//! elsewhere.

use cairn_bench::log::nats::{
    nats_server_available, run_jetstream, NatsArgs, NatsConnection, NatsServer, Storage,
};

/// A running server, or `None` when this machine has no nats-server and is not CI.
async fn start_server() -> Option<NatsServer> {
    if !nats_server_available() {
        let ci = std::env::var("CI").is_ok_and(|value| value == "true");
        assert!(
            !ci,
            "CI: nats-server is not on PATH; install Debian's nats-server package \
             (scripts/test and .ci/run do)"
        );
        eprintln!("note: nats-server is not on PATH; skipping (apt-get install nats-server)");
        return None;
    }
    Some(NatsServer::start().await.expect("nats-server starts"))
}

#[tokio::test]
async fn jetstream_acks_each_pipelined_publish_exactly_once_with_seqs_in_publish_order() {
    let Some(server) = start_server().await else {
        return;
    };
    const COUNT: u64 = 2_000;

    // A fresh file-backed stream: its seqs start at 1.
    let mut connection = NatsConnection::connect(&server.url())
        .await
        .expect("connect");
    connection
        .create_stream("PEER_TEST", "peer.test", Storage::File)
        .await
        .expect("create stream");

    // 2,000 publishes of 1 KiB with at most 64 unacked.
    let payload = vec![b'p'; 1024];
    let run = connection
        .publish_acked("peer.test", &payload, COUNT, 64)
        .await
        .expect("every publish acked");

    // Exactly one ack per publish, and one connection's publishes are stored in the order sent,
    // so publish n holds seq n + 1: strictly increasing 1..=2000 without gaps.
    assert_eq!(run.acks.len() as u64, COUNT, "one ack per publish");
    let mut seq_of_publish = vec![None; COUNT as usize];
    for ack in &run.acks {
        let slot = &mut seq_of_publish[ack.publish as usize];
        assert!(slot.is_none(), "publish {} acked twice", ack.publish);
        *slot = Some(ack.seq);
    }
    let seqs: Vec<u64> = seq_of_publish
        .into_iter()
        .map(|seq| seq.expect("every publish acked"))
        .collect();
    assert!(
        seqs.iter().copied().eq(1..=COUNT),
        "seqs in publish order are not 1..={COUNT}: first {:?}",
        &seqs[..8]
    );
    assert_eq!(run.ack_latency_us.len(), COUNT, "one latency per publish");

    // The server agrees it holds every message.
    let stored = connection
        .stream_message_count("PEER_TEST")
        .await
        .expect("stream info");
    assert_eq!(stored, COUNT);
}

#[tokio::test]
async fn run_jetstream_reports_every_stored_byte_over_two_connections() {
    let Some(server) = start_server().await else {
        return;
    };

    // 1,001 messages of 1 KiB (total rounded up to whole messages), split 501 + 500.
    let args = NatsArgs {
        url: server.url(),
        message_size: 1024,
        total_bytes: 1000 * 1024 + 1,
        window: 32,
        storage: Storage::Memory,
        connections: 2,
    };
    let result = run_jetstream(&args).await.expect("run");

    assert_eq!(result.messages, 1001);
    assert_eq!(result.bytes, 1001 * 1024);
    assert!(
        result.publish_gbps.is_finite() && result.publish_gbps > 0.0,
        "{result:?}"
    );
    let (p50, p99) = result.ack_latency_ms;
    assert!(0.0 < p50 && p50 <= p99, "{result:?}");
}
