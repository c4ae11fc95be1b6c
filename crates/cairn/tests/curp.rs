//! The native CURP-HO protocol end to end: real `cairn serve` members, the real
//! `cairn-client`, raw frames for what a well-behaved client never sends.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_client::{ClientError, Op, Path, Session, SessionConfig};
use cairn_proto::curppb::{self, client_message, server_message};
use cairn_proto::etcdserverpb::RangeRequest;
use cairn_proto::framing;
use common::cluster::CairnCluster;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LEADER_WAIT: Duration = Duration::from_secs(10);

/// The tests of this file run one at a time: each starts a 3-member cluster, and the latency
/// bands of the emulated-WAN test need a machine that is not running three other clusters.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value.to_string()),
    }
}

fn get(key: &str) -> Op {
    Op::Get {
        key: Bytes::from(key.to_string()),
    }
}

fn values(result: &curppb::Result) -> Vec<String> {
    result
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).to_string())
        .collect()
}

/// Every member's native address, in member order.
fn native_endpoints(cluster: &CairnCluster) -> Vec<String> {
    cluster
        .members
        .iter()
        .map(|m| m.native_endpoint())
        .collect()
}

async fn session(cluster: &CairnCluster, bound: usize) -> Session {
    Session::connect(SessionConfig {
        bound,
        ..SessionConfig::new(native_endpoints(cluster))
    })
    .await
    .expect("native session")
}

/// What the etcd API of member `index` holds under `key`.
/// A linearizable read: while the survivors of a kill still elect (the read's ReadIndex then
/// times out, `Unavailable`), it is retried for up to 10 s.
async fn etcd_value(cluster: &CairnCluster, index: usize, key: &str) -> Option<String> {
    let mut kv = cairn_proto::etcdserverpb::kv_client::KvClient::new(
        common::channel(&cluster.members[index].endpoint()).await,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let response = loop {
        let read = kv
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await;
        match read {
            Ok(response) => break response.into_inner(),
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("etcd range: {status}"),
        }
    };
    response
        .kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_and_weak_operations_complete_with_curp_ho_semantics() {
    let _serial = SERIAL.lock().await;
    let cluster = CairnCluster::start(3).await;
    let leader = cluster.leader(LEADER_WAIT).await;
    let follower = (leader + 1) % 3;
    let strong = session(&cluster, follower).await;

    // Non-conflicting strong writes: a superquorum answers ok, so most complete in 1 RTT.
    let mut fast = 0;
    for i in 0..20 {
        let outcome = strong
            .strong(put(&format!("s{i}"), &format!("v{i}")))
            .await
            .expect("strong put");
        fast += usize::from(outcome.path == Some(Path::Fast));
    }
    assert!(
        fast >= 10,
        "only {fast} of 20 distinct-key strong puts were fast"
    );
    let read = strong.strong(get("s7")).await.expect("strong get");
    assert_eq!(values(&read.result), ["v7"]);

    // Weak writes: read-your-writes at the bound replica, visible to others once flushed.
    let weak = session(&cluster, follower).await;
    weak.weak(put("w", "1")).await.expect("weak put");
    weak.weak(put("w", "2")).await.expect("weak put");
    let own = weak.weak(get("w")).await.expect("weak get");
    assert_eq!(
        values(&own.result),
        ["2"],
        "a session reads its own weak write"
    );
    weak.flush().await.expect("flush");
    let other = session(&cluster, leader).await;
    let seen = other
        .strong(get("w"))
        .await
        .expect("strong get of a weak write");
    assert_eq!(values(&seen.result), ["2"]);

    // A scan sees both APIs' writes; native writes are etcd writes.
    let scan = other
        .strong(Op::Scan {
            start: Bytes::from_static(b"s1"),
            end: Bytes::from_static(b"s2"),
            limit: 0,
        })
        .await
        .expect("scan");
    let keys: Vec<_> = scan.result.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys,
        [
            b"s1".to_vec(),
            b"s10".to_vec(),
            b"s11".to_vec(),
            b"s12".to_vec(),
            b"s13".to_vec(),
            b"s14".to_vec(),
            b"s15".to_vec(),
            b"s16".to_vec(),
            b"s17".to_vec(),
            b"s18".to_vec(),
            b"s19".to_vec()
        ]
    );
    for index in 0..3 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while etcd_value(&cluster, index, "w").await.as_deref() != Some("2") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "member {index} lacks w"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            etcd_value(&cluster, index, "s19").await.as_deref(),
            Some("v19")
        );
    }
    let deleted = other
        .strong(Op::Delete {
            key: Bytes::from_static(b"s0"),
        })
        .await
        .expect("delete");
    assert_eq!(deleted.result.deleted, 1);
}

/// A raw native connection: frames out, frames in.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    async fn connect(endpoint: &str) -> Raw {
        Raw {
            stream: TcpStream::connect(endpoint).await.expect("native connect"),
        }
    }

    async fn send(&mut self, message: client_message::Message) {
        let mut buffer = Vec::new();
        framing::encode(
            &curppb::ClientMessage {
                message: Some(message),
            },
            &mut buffer,
        );
        self.stream.write_all(&buffer).await.expect("send");
    }

    async fn send_bytes(&mut self, body: &[u8]) {
        let mut buffer = (body.len() as u32).to_le_bytes().to_vec();
        buffer.extend_from_slice(body);
        self.stream.write_all(&buffer).await.expect("send");
    }

    async fn receive(&mut self) -> server_message::Message {
        let read = async {
            let mut header = [0; 4];
            self.stream.read_exact(&mut header).await.expect("header");
            let mut body = vec![0; framing::body_len(header)];
            self.stream.read_exact(&mut body).await.expect("body");
            curppb::ServerMessage::decode(body.as_slice())
                .expect("decodes")
                .message
                .expect("a message")
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("a reply in time")
    }

    async fn expect_error(&mut self, code: curppb::Code) -> String {
        match self.receive().await {
            server_message::Message::Error(error) => {
                assert_eq!(error.code, code as i32, "{error:?}");
                error.message
            }
            other => panic!("expected {code:?}, got {other:?}"),
        }
    }
}

fn propose(client_id: u64, seq: u64, op: curppb::op::Op) -> client_message::Message {
    propose_after(client_id, seq, 0, op)
}

/// A strong proposal issued after the session's weak write `causal_dep`.
fn propose_after(
    client_id: u64,
    seq: u64,
    causal_dep: u64,
    op: curppb::op::Op,
) -> client_message::Message {
    client_message::Message::Propose(curppb::Propose {
        command: Some(command(
            client_id,
            seq,
            causal_dep,
            op,
            curppb::Consistency::Strong,
        )),
    })
}

fn command(
    client_id: u64,
    seq: u64,
    causal_dep: u64,
    op: curppb::op::Op,
    consistency: curppb::Consistency,
) -> curppb::Command {
    curppb::Command {
        id: Some(curppb::CommandId { client_id, seq }),
        op: Some(curppb::Op { op: Some(op) }),
        consistency: consistency as i32,
        causal_dep,
    }
}

fn raw_put(key: &str, value: Vec<u8>) -> curppb::op::Op {
    curppb::op::Op::Put(curppb::Put {
        key: key.as_bytes().to_vec(),
        value,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_apply_once_and_bad_input_gets_clear_errors() {
    let _serial = SERIAL.lock().await;
    let cluster = CairnCluster::start(3).await;
    let leader = cluster.leader(LEADER_WAIT).await;
    let mut raw = Raw::connect(&cluster.members[leader].native_endpoint()).await;
    let client = 0x5eed;

    // Two writes, each ordered by the leader and then applied.
    for (seq, value) in [(1, "first"), (2, "second")] {
        raw.send(propose(client, seq, raw_put("once", value.into())))
            .await;
        let mut synced = false;
        while !synced {
            match raw.receive().await {
                server_message::Message::LeaderReply(reply) => {
                    assert_eq!(reply.id.map(|id| id.seq), Some(seq));
                }
                server_message::Message::SyncReply(reply) => {
                    assert_eq!(reply.id.map(|id| id.seq), Some(seq));
                    synced = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    // The retry of the latest command is answered from the session table, not re-applied;
    // an older one is refused as stale, so "first" never comes back.
    raw.send(propose(client, 2, raw_put("once", "second".into())))
        .await;
    assert!(matches!(
        raw.receive().await,
        server_message::Message::SyncReply(_)
    ));
    raw.send(propose(client, 1, raw_put("once", "first".into())))
        .await;
    raw.expect_error(curppb::Code::Stale).await;
    assert_eq!(
        etcd_value(&cluster, leader, "once").await.as_deref(),
        Some("second")
    );

    // Unknown op, empty key, a weak read of a write, undecodable bytes, an oversized value:
    // each gets its error, and the connection keeps serving.
    raw.send(client_message::Message::Propose(curppb::Propose {
        command: Some(curppb::Command {
            id: Some(curppb::CommandId {
                client_id: client,
                seq: 3,
            }),
            op: Some(curppb::Op { op: None }),
            consistency: 0,
            causal_dep: 0,
        }),
    }))
    .await;
    let message = raw.expect_error(curppb::Code::InvalidArgument).await;
    assert!(message.contains("unknown op"), "{message}");
    raw.send(propose(client, 3, raw_put("", b"v".to_vec())))
        .await;
    let message = raw.expect_error(curppb::Code::InvalidArgument).await;
    assert!(message.contains("key is not provided"), "{message}");
    raw.send(client_message::Message::WeakRead(curppb::WeakRead {
        client_id: client,
        request_id: 9,
        op: Some(curppb::Op {
            op: Some(raw_put("k", b"v".to_vec())),
        }),
        min_revision: 0,
    }))
    .await;
    raw.expect_error(curppb::Code::InvalidArgument).await;
    raw.send_bytes(&[0xff, 0xff, 0xff]).await;
    raw.expect_error(curppb::Code::InvalidArgument).await;
    raw.send(propose(client, 3, raw_put("big", vec![7; 2 * 1024 * 1024])))
        .await;
    let message = raw.expect_error(curppb::Code::TooLarge).await;
    assert!(message.contains("request is too large"), "{message}");
    raw.send(client_message::Message::Hello(curppb::Hello {}))
        .await;
    match raw.receive().await {
        server_message::Message::HelloReply(hello) => assert_eq!(hello.voters, 3),
        other => panic!("expected a hello reply, got {other:?}"),
    }
    assert_eq!(etcd_value(&cluster, leader, "big").await, None);

    // The causal barrier: a command whose session's earlier weak write has not reached the
    // leader is refused, not applied over the gap; once that write arrives, both apply in
    // order. A dependency that is not before the command is malformed.
    let session = 0xca5a1;
    raw.send(propose_after(
        session,
        2,
        1,
        raw_put("gap-b", b"2".to_vec()),
    ))
    .await;
    let message = raw.expect_error(curppb::Code::CausalGap).await;
    assert!(message.contains("weak write seq 1"), "{message}");
    raw.send(client_message::Message::CausalPropose(
        curppb::CausalPropose {
            command: Some(command(
                session,
                1,
                0,
                raw_put("gap-a", b"1".to_vec()),
                curppb::Consistency::Weak,
            )),
            reply: true,
        },
    ))
    .await;
    match raw.receive().await {
        server_message::Message::CausalReply(reply) => {
            assert_eq!(reply.id.map(|id| id.seq), Some(1));
        }
        other => panic!("expected the weak write's reply, got {other:?}"),
    }
    raw.send(propose_after(
        session,
        2,
        1,
        raw_put("gap-b", b"2".to_vec()),
    ))
    .await;
    loop {
        match raw.receive().await {
            server_message::Message::LeaderReply(reply) => {
                assert_eq!(reply.id.map(|id| id.seq), Some(2));
            }
            server_message::Message::SyncReply(reply) => {
                assert_eq!(reply.id.map(|id| id.seq), Some(2));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        etcd_value(&cluster, leader, "gap-a").await.as_deref(),
        Some("1")
    );
    assert_eq!(
        etcd_value(&cluster, leader, "gap-b").await.as_deref(),
        Some("2")
    );
    raw.send(propose_after(
        session,
        3,
        3,
        raw_put("gap-c", b"3".to_vec()),
    ))
    .await;
    let message = raw.expect_error(curppb::Code::InvalidArgument).await;
    assert!(message.contains("causal dependency"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_completed_strong_write_is_lost_when_the_leader_is_killed() {
    let _serial = SERIAL.lock().await;
    let mut cluster = CairnCluster::start(3).await;
    let leader = cluster.leader(LEADER_WAIT).await;
    let mut writers = Vec::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for writer in 0..4 {
        let session = Arc::new(session(&cluster, (leader + 1 + writer) % 3).await);
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut completed = BTreeMap::new();
            let mut fast = 0;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let key = format!("w{writer}-{i}");
                if let Ok(outcome) = session.strong(put(&key, &format!("{i}"))).await {
                    fast += usize::from(outcome.path == Some(Path::Fast));
                    completed.insert(key, format!("{i}"));
                }
                i += 1;
            }
            (completed, fast)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill9(leader);
    let survivor = (leader + 1) % 3;
    let new_leader = cluster.leader(LEADER_WAIT).await;
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut completed = BTreeMap::new();
    let mut fast = 0;
    for writer in writers {
        let (done, fast_here) = writer.await.expect("writer");
        completed.extend(done);
        fast += fast_here;
    }
    assert!(
        fast > 0,
        "no write completed on the fast path before the kill"
    );
    assert!(
        completed.len() > 20,
        "only {} writes completed",
        completed.len()
    );
    for (key, value) in &completed {
        assert_eq!(
            etcd_value(&cluster, survivor, key).await.as_ref(),
            Some(value),
            "completed write {key}={value} is lost"
        );
    }
}

/// Weak writes acknowledged by a follower while the leader is killed: after `flush`, every
/// one is on both surviving members, in session order (each write's revision above the one
/// before it). What the new leader lacks reaches it through the session's resends (on its
/// `Serving` announcement, on a `CAUSAL_GAP` refusal, and while `flush` waits); the replicas
/// never apply a write over a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_weak_writes_survive_a_leader_kill_in_session_order() {
    let _serial = SERIAL.lock().await;
    let mut cluster = CairnCluster::start(3).await;
    let leader = cluster.leader(LEADER_WAIT).await;
    let bound = (leader + 1) % 3;
    let session = Arc::new(session(&cluster, bound).await);
    let writer = {
        let session = session.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
            let mut written = 0u32;
            while tokio::time::Instant::now() < deadline {
                let key = format!("causal-{written:05}");
                session
                    .weak(put(&key, &written.to_string()))
                    .await
                    .expect("the bound replica takes a weak write");
                written += 1;
                // A strong read now and then: it too waits for the session's weak writes.
                if written % 64 == 0 {
                    let _ = session.strong(get("causal-00000")).await;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            written
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.kill9(leader);
    let written = writer.await.expect("writer");
    assert!(written > 100, "only {written} weak writes in 4 s");
    session.flush().await.expect("flush after the failover");
    for member in (0..3).filter(|member| *member != leader) {
        let mut kv = cairn_proto::etcdserverpb::kv_client::KvClient::new(
            common::channel(&cluster.members[member].endpoint()).await,
        );
        let found = kv
            .range(RangeRequest {
                key: b"causal-".to_vec(),
                range_end: b"causal.".to_vec(),
                ..Default::default()
            })
            .await
            .expect("etcd range")
            .into_inner()
            .kvs;
        assert_eq!(found.len(), written as usize, "member {member}");
        let mut last_revision = 0;
        for (index, kv) in found.iter().enumerate() {
            assert_eq!(kv.value, index.to_string().into_bytes(), "member {member}");
            assert!(
                kv.mod_revision > last_revision,
                "member {member}: write {index} at revision {}, not after {last_revision}",
                kv.mod_revision
            );
            assert_eq!(
                kv.version, 1,
                "member {member}: write {index} applied twice"
            );
            last_revision = kv.mod_revision;
        }
    }
}

/// A session that only writes weakly forgets its writes once the bound replica applied them:
/// each weak write's answer says how far the replica got, so nothing piles up without reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_only_writes_weakly_keeps_only_its_unapplied_writes() {
    let _serial = SERIAL.lock().await;
    let cluster = CairnCluster::start(3).await;
    let leader = cluster.leader(LEADER_WAIT).await;
    let bound = (leader + 1) % 3;
    let session = session(&cluster, bound).await;
    let written = 500;
    for index in 0..written {
        let key = format!("weak-only-{index:03}");
        session
            .weak(put(&key, "x"))
            .await
            .expect("the bound replica takes a weak write");
    }
    let last = format!("weak-only-{:03}", written - 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while etcd_value(&cluster, bound, &last).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bound replica never applied the last weak write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    session
        .weak(put("weak-only-after", "x"))
        .await
        .expect("one more weak write");
    let kept = session.unapplied_writes();
    assert!(
        kept <= 1,
        "{kept} of {} weak writes kept after the bound replica applied {written}",
        written + 1
    );
}

/// Operations waiting on a silent bound replica share one resend of the session's unapplied
/// weak writes per retry period, instead of each resending the whole set (with many writes in
/// flight and a lagging replica, that grew into millions of messages and timed writes out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_operations_share_one_resend_of_the_unapplied_weak_writes_per_retry_period() {
    const RETRY: Duration = Duration::from_millis(200);
    const IN_FLIGHT: u64 = 20;
    let _serial = SERIAL.lock().await;
    let cluster = CairnCluster::start(3).await;
    let leader = cluster.leader(LEADER_WAIT).await;
    let bound = (leader + 1) % 3;
    let endpoints = native_endpoints(&cluster);
    let session = std::sync::Arc::new(
        Session::connect(SessionConfig {
            bound,
            retry: RETRY,
            ..SessionConfig::new(endpoints)
        })
        .await
        .expect("native session"),
    );

    cluster.pause(bound);
    let started = tokio::time::Instant::now();
    let writes: Vec<_> = (0..IN_FLIGHT)
        .map(|index| {
            let session = session.clone();
            tokio::spawn(async move { session.weak(put(&format!("paused-{index}"), "x")).await })
        })
        .collect();
    // Five retry periods with every write unanswered.
    tokio::time::sleep(RETRY * 5).await;
    let resent = session.weak_resends();
    let periods = (started.elapsed().as_millis() / RETRY.as_millis()) as u64 + 1;
    cluster.resume(bound);
    // Each period: the set once, plus each waiting write's own copy.
    let most = periods * 2 * IN_FLIGHT;
    assert!(
        resent > 0,
        "nothing was resent while the bound replica was silent"
    );
    assert!(
        resent <= most,
        "{resent} weak writes resent in {periods} retry periods with {IN_FLIGHT} waiting (at most {most})"
    );
    for write in writes {
        write
            .await
            .expect("write task")
            .expect("a weak write completes once its bound replica answers");
    }
    // The resumed member may have campaigned: strong reads retry until someone leads.
    for index in 0..IN_FLIGHT {
        let read = session
            .strong(get(&format!("paused-{index}")))
            .await
            .expect("strong read");
        let values: Vec<&[u8]> = read.result.kvs.iter().map(|kv| &kv.value[..]).collect();
        assert_eq!(values, [b"x"], "paused-{index}");
    }
}

/// An operation whose resend waits on a full link queue (its bound replica silent, the socket
/// and the queue behind it full) still ends at its deadline: it used to sit inside the resend,
/// answer and deadline unseen, until the replica read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_stuck_behind_a_full_link_still_time_out_at_their_deadline() {
    const RETRY: Duration = Duration::from_millis(200);
    const TIMEOUT: Duration = Duration::from_secs(3);
    // 4,000 writes of 8 KiB fill the loopback socket to a stopped process (a few MB) and,
    // resent every period, the link's queue of 4,096 frames behind it.
    const WRITES: usize = 4_000;
    let _serial = SERIAL.lock().await;
    let cluster = CairnCluster::start(3).await;
    let leader = cluster.leader(LEADER_WAIT).await;
    let bound = (leader + 1) % 3;
    let session = Arc::new(
        Session::connect(SessionConfig {
            bound,
            retry: RETRY,
            timeout: TIMEOUT,
            ..SessionConfig::new(native_endpoints(&cluster))
        })
        .await
        .expect("native session"),
    );
    let value = "v".repeat(8 * 1024);

    cluster.pause(bound);
    let started = tokio::time::Instant::now();
    let writes: Vec<_> = (0..WRITES)
        .map(|index| {
            let session = session.clone();
            let value = value.clone();
            tokio::spawn(async move { session.weak(put(&format!("full-{index}"), &value)).await })
        })
        .collect();
    // By now the first resends have filled the bound link's queue: a new operation's own
    // first send waits there, and must end at its deadline too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let late = tokio::time::timeout(
        TIMEOUT + Duration::from_secs(5),
        session.weak(put("full-late", &value)),
    )
    .await
    .expect("a write issued behind the full queue still ends at its deadline");
    assert!(
        matches!(late, Err(ClientError::Timeout(_))),
        "late write: {late:?}"
    );
    let limit = TIMEOUT + Duration::from_secs(5);
    let mut timed_out = 0;
    for write in writes {
        let outcome = tokio::time::timeout_at(started + limit, write)
            .await
            .unwrap_or_else(|_| {
                panic!("a write was still waiting {limit:?} after it started (timeout {TIMEOUT:?})")
            })
            .expect("write task");
        match outcome {
            Err(ClientError::Timeout(_)) => timed_out += 1,
            other => panic!("a write to a silent bound replica ended with {other:?}"),
        }
    }
    cluster.resume(bound);
    assert_eq!(timed_out, WRITES);
    assert!(
        session.weak_resends() > 0,
        "the writes were never resent, so no resend was tested"
    );
}

/// A write sent while there is no leader completes as soon as the new leader serves: the new
/// leader announces itself (`Serving`) and the session resends at once. The retry timer is set
/// far beyond the test, so only the announcement can finish the write in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_announces_itself_and_in_flight_writes_finish_without_the_retry_timer() {
    const RETRY: Duration = Duration::from_secs(60);
    let _serial = SERIAL.lock().await;
    let mut cluster = CairnCluster::start(3).await;
    let leader = cluster.leader(LEADER_WAIT).await;
    let follower = (leader + 1) % 3;
    let mut survivors = Vec::new();
    for index in (0..3).filter(|index| *index != leader) {
        let raw = Raw::connect(&cluster.members[index].native_endpoint()).await;
        survivors.push((index, raw));
    }
    let endpoints = native_endpoints(&cluster);
    let session = Session::connect(SessionConfig {
        bound: follower,
        retry: RETRY,
        timeout: RETRY,
        ..SessionConfig::new(endpoints)
    })
    .await
    .expect("native session");
    session
        .strong(put("before", "1"))
        .await
        .expect("a write with the leader up");

    cluster.kill9(leader);
    let started = tokio::time::Instant::now();
    let outcome = session
        .strong(put("during", "2"))
        .await
        .expect("the write sent while there was no leader");
    let elapsed = started.elapsed();
    assert!(
        elapsed < RETRY / 4,
        "took {elapsed:?}: finished by the retry timer, not by the announcement"
    );
    assert!(outcome.path.is_some(), "a strong write reports its path");

    let new_leader = cluster.leader(LEADER_WAIT).await;
    assert_ne!(new_leader, leader);
    assert_eq!(
        etcd_value(&cluster, new_leader, "during").await.as_deref(),
        Some("2")
    );
    // A plain connection to the member that now leads heard the announcement.
    let (_, raw) = survivors
        .iter_mut()
        .find(|(index, _)| *index == new_leader)
        .expect("the new leader survived");
    let serving = match raw.receive().await {
        server_message::Message::Serving(serving) => serving,
        other => panic!("expected the new leader's announcement, got {other:?}"),
    };
    let status = cluster.status(new_leader).await.expect("status");
    let header = status.header.expect("header");
    assert_eq!(serving.member_id, header.member_id);
    assert_eq!(serving.term, status.raft_term);
}

async fn timed_put(session: &Session, key: &str) -> (Option<Path>, Duration) {
    let started = tokio::time::Instant::now();
    let outcome = session.strong(put(key, "v")).await.expect("put");
    (outcome.path, started.elapsed())
}

/// With 25 ms one-way delay on every peer link and on the client's links to the replicas it
/// is not bound to (RTT 50 ms): a non-conflicting strong write completes on the fast path in
/// about one RTT, a conflicting one on the slow path in about two, and weak operations at the
/// bound replica in well under one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_wide_area_latency_shows_one_rtt_fast_path_and_two_rtt_slow_path() {
    let _serial = SERIAL.lock().await;
    const ONE_WAY: Duration = Duration::from_millis(25);
    const RTT: Duration = Duration::from_millis(50);
    // Raft's timers must exceed the 50 ms peer RTT (the harness's 50 ms heartbeat would not).
    let cluster = CairnCluster::start_with(
        3,
        &[
            "--experimental-peer-delay",
            "25ms",
            "--heartbeat-interval",
            "150",
            "--election-timeout",
            "1500",
        ],
    )
    .await;
    let leader = cluster.leader(LEADER_WAIT).await;
    let bound = (leader + 1) % 3;
    let endpoints = native_endpoints(&cluster);
    let connect = || {
        Session::connect(SessionConfig {
            bound,
            delay: ONE_WAY,
            ..SessionConfig::new(endpoints.clone())
        })
    };
    let (first, second) = (
        connect().await.expect("session"),
        connect().await.expect("session"),
    );

    let mut fast = Vec::new();
    for i in 0..10 {
        let started = tokio::time::Instant::now();
        let outcome = first
            .strong(put(&format!("far{i}"), "v"))
            .await
            .expect("put");
        if outcome.path == Some(Path::Fast) {
            fast.push(started.elapsed());
        }
    }
    assert!(
        fast.len() >= 8,
        "only {} of 10 non-conflicting puts were fast",
        fast.len()
    );
    fast.sort();
    let median = fast[fast.len() / 2];
    assert!(
        median >= RTT && median < RTT * 3 / 2,
        "fast-path median {median:?} is not about one RTT ({RTT:?})"
    );

    // Two sessions write one key at once: the later is ordered behind an unapplied
    // conflicting entry, so it waits for the commit.
    let mut slow = Vec::new();
    for i in 0..5 {
        let key = format!("hot{i}");
        let (a, b) = tokio::join!(timed_put(&first, &key), timed_put(&second, &key));
        slow.extend(
            [a, b]
                .into_iter()
                .filter(|(path, _)| *path == Some(Path::Slow)),
        );
    }
    assert!(
        slow.len() >= 4,
        "conflicting puts rarely took the slow path: {slow:?}"
    );
    for (_, latency) in &slow {
        assert!(
            *latency >= RTT * 2 - Duration::from_millis(5),
            "a slow-path put took {latency:?}, under two RTTs"
        );
    }

    let weak = connect().await.expect("session");
    let mut weak_latencies = Vec::new();
    for i in 0..10 {
        let started = tokio::time::Instant::now();
        weak.weak(put(&format!("near{i}"), "v"))
            .await
            .expect("weak put");
        weak.weak(get(&format!("near{i}"))).await.expect("weak get");
        weak_latencies.push(started.elapsed() / 2);
    }
    weak_latencies.sort();
    let median = weak_latencies[weak_latencies.len() / 2];
    assert!(
        median < RTT / 5,
        "weak operations at the bound replica take {median:?}, not well under one RTT"
    );
}

/// A sole member has no witness to keep a write it acknowledged before its fsync: native
/// writes take the slow path (durable, as an etcd member's), reads stay fast, and a kill -9
/// loses nothing acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_member_acknowledges_writes_only_once_durable() {
    let _serial = SERIAL.lock().await;
    let native = format!("127.0.0.1:{}", common::free_port());
    let mut member = common::Cairn::start(&["--listen-native-addr", &native]).await;
    let connect = || Session::connect(SessionConfig::new(vec![native.clone()]));
    let session = connect().await.expect("session");
    for i in 0..5 {
        let outcome = session
            .strong(put(&format!("d{i}"), "v"))
            .await
            .expect("put");
        assert_eq!(
            outcome.path,
            Some(Path::Slow),
            "a sole voter's write was fast"
        );
    }
    let read = session.strong(get("d4")).await.expect("get");
    assert_eq!(
        (values(&read.result), read.path),
        (vec!["v".to_string()], Some(Path::Fast))
    );
    drop(session);
    member.kill9();
    member.restart().await;
    let session = connect().await.expect("session after restart");
    for i in 0..5 {
        let read = session.strong(get(&format!("d{i}"))).await.expect("get");
        assert_eq!(
            values(&read.result),
            ["v"],
            "acknowledged d{i} lost by kill -9"
        );
    }
}
