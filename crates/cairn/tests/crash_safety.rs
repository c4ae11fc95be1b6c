//! Crash safety: SIGKILL at random moments under concurrent write load. After every restart
//! every acknowledged write is present with the revision it was acknowledged with, and every
//! write whose outcome is unknown (in flight at the kill) is either wholly there or wholly
//! absent — never half-applied.
//!
//! Knobs: `CAIRN_CRASH_CYCLES` (default 50), `CAIRN_CRASH_SEED` (printed on failure).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest, RequestOp, TxnRequest};
use common::Cairn;
use rand::{Rng, SeedableRng};

const WRITERS: usize = 6;
/// Long enough that a write to a live member never times out; a killed member fails fast.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Every write puts two keys `…/a` and `…/b` with the same value in one txn.
fn pair_txn(prefix: &str, value: &str) -> TxnRequest {
    let put = |suffix: &str| RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: format!("{prefix}/{suffix}").into_bytes(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })),
    };
    TxnRequest {
        success: vec![put("a"), put("b")],
        ..Default::default()
    }
}

#[derive(Default)]
struct History {
    /// prefix → (revision, value) of acknowledged writes.
    acknowledged: BTreeMap<String, (i64, String)>,
    /// prefixes whose write was sent but not acknowledged.
    unknown: Vec<String>,
}

async fn writer(endpoint: String, cycle: usize, writer: usize, history: Arc<Mutex<History>>) {
    let Ok(channel) = tonic::transport::Channel::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
    else {
        return;
    };
    let mut kv = cairn_proto::etcdserverpb::kv_client::KvClient::new(channel);
    for n in 0.. {
        let prefix = format!("c{cycle:03}/w{writer}/{n:05}");
        let value = format!("value-{cycle}-{writer}-{n}");
        let sent = tokio::time::timeout(REQUEST_TIMEOUT, kv.txn(pair_txn(&prefix, &value))).await;
        let mut history = history.lock().unwrap();
        match sent {
            Ok(Ok(response)) => {
                let revision = response.into_inner().header.expect("header").revision;
                history.acknowledged.insert(prefix, (revision, value));
            }
            _ => {
                history.unknown.push(prefix);
                return;
            }
        }
    }
}

/// Every key under `c`, read in pages: how much the load wrote before the kill depends on the
/// machine's speed, and one response may not exceed the client's 4 MiB message limit.
async fn read_all(cairn: &Cairn) -> BTreeMap<Vec<u8>, (i64, Vec<u8>)> {
    const PAGE: i64 = 1000;
    let mut kv = cairn.kv().await;
    let mut stored = BTreeMap::new();
    let mut start = b"c".to_vec();
    loop {
        let page = RangeRequest {
            key: start.clone(),
            range_end: b"d".to_vec(),
            limit: PAGE,
            ..Default::default()
        };
        let response = kv
            .range(page)
            .await
            .expect("range after restart")
            .into_inner();
        let Some(last) = response.kvs.last() else {
            return stored;
        };
        start = [last.key.as_slice(), b"\0"].concat();
        let more = response.more;
        stored.extend(
            response
                .kvs
                .into_iter()
                .map(|kv| (kv.key, (kv.mod_revision, kv.value))),
        );
        if !more {
            return stored;
        }
    }
}

fn check(history: &History, stored: &BTreeMap<Vec<u8>, (i64, Vec<u8>)>, cycle: usize, seed: u64) {
    for (prefix, (revision, value)) in &history.acknowledged {
        for suffix in ["a", "b"] {
            let key = format!("{prefix}/{suffix}").into_bytes();
            let found = stored.get(&key);
            let expected = (*revision, value.as_bytes().to_vec());
            assert_eq!(
                found,
                Some(&expected),
                "seed={seed} cycle={cycle}: acknowledged write {prefix}/{suffix} lost or changed"
            );
        }
    }
    for prefix in &history.unknown {
        let a = stored.get(format!("{prefix}/a").as_bytes());
        let b = stored.get(format!("{prefix}/b").as_bytes());
        assert_eq!(
            a.is_some(),
            b.is_some(),
            "seed={seed} cycle={cycle}: {prefix} half-applied"
        );
        if let (Some(a), Some(b)) = (a, b) {
            assert_eq!(
                a, b,
                "seed={seed} cycle={cycle}: {prefix} applied at two revisions"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_write_load_loses_no_acknowledged_write() {
    let cycles: usize = std::env::var("CAIRN_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("CAIRN_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0xCA1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    // Snapshots every few hundred entries, so crashes also land around snapshot + WAL purge.
    let mut cairn = Cairn::start_in(&dir.path().join("data"), &["--snapshot-count", "300"]).await;
    let history = Arc::new(Mutex::new(History::default()));
    let mut last_revision = 1;

    for cycle in 0..cycles {
        // Load, then a kill at a random moment while writes are in flight.
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(writer(cairn.endpoint(), cycle, w, history.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..250))).await;
        cairn.kill9();
        for task in writers {
            task.await.expect("writer task");
        }

        // Restart and check the whole history so far.
        cairn.restart().await;
        let stored = read_all(&cairn).await;
        let history = history.lock().unwrap();
        check(&history, &stored, cycle, seed);
        let newest = history
            .acknowledged
            .values()
            .map(|(revision, _)| *revision)
            .max()
            .unwrap_or(1);
        assert!(
            newest >= last_revision,
            "seed={seed}: acknowledged revisions went backwards"
        );
        last_revision = newest;
    }
    let history = history.lock().unwrap();
    assert!(
        history.acknowledged.len() > cycles * 10,
        "too little load to prove anything: {}",
        history.acknowledged.len()
    );
    eprintln!(
        "crash safety: {cycles} kills, {} acknowledged writes, {} in flight at a kill, seed={seed}",
        history.acknowledged.len(),
        history.unknown.len()
    );
}
