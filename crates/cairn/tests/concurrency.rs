//! etcd's Lock and Election services and the lock/election recipes of etcd's clients, against
//! real `cairn serve` processes.
//!
//! Two kinds of clients take part: `etcdctl lock` / `etcdctl elect` (etcdctl 3.4 runs etcd's
//! `clientv3/concurrency` recipes itself, over KV, Watch and Lease), and the `etcd-client`
//! crate, whose `lock`/`campaign`/… call Cairn's server-side Lock and Election services. Both
//! queue under the same keys, so they also take turns with each other.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_proto::v3electionpb::election_client::ElectionClient;
use cairn_proto::v3electionpb::{
    CampaignRequest, LeaderKey as PbLeaderKey, LeaderRequest, ProclaimRequest, ResignRequest,
};
use cairn_proto::v3lockpb::lock_client::LockClient;
use cairn_proto::v3lockpb::{LockRequest, UnlockRequest};
use common::cluster::CairnCluster;
use common::{channel, etcdctl_command, require_tool, wait_until, Cairn, Etcd};
use etcd_client::{GetOptions, LockOptions, ProclaimOptions, ResignOptions};
use tokio::sync::mpsc;

/// Longest wait for anything that should happen promptly (a released lock being taken).
const PROMPT: Duration = Duration::from_secs(10);

fn grpc_error(error: etcd_client::Error) -> tonic::Status {
    match error {
        etcd_client::Error::GRpcStatus(status) => status,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// Keys under `prefix`, oldest (smallest create revision) first.
async fn queue(client: &mut etcd_client::Client, prefix: &str) -> Vec<etcd_client::KeyValue> {
    let options = GetOptions::new().with_prefix().with_sort(
        etcd_client::SortTarget::Create,
        etcd_client::SortOrder::Ascend,
    );
    let response = client.get(prefix, Some(options)).await.expect("range");
    response.kvs().to_vec()
}

/// Waits until `count` keys are queued under `prefix`.
async fn wait_queued(client: &etcd_client::Client, prefix: &str, count: usize) {
    let what = format!("{count} keys queued under {prefix}");
    wait_until(&what, PROMPT, || {
        let mut client = client.clone();
        async move { queue(&mut client, prefix).await.len() == count }
    })
    .await;
}

/// A `Lock` call of its own, so the test can watch it wait.
fn spawn_lock(
    client: etcd_client::LockClient,
    name: &'static str,
    lease: i64,
) -> tokio::task::JoinHandle<Result<etcd_client::LockResponse, etcd_client::Error>> {
    let mut client = client;
    tokio::spawn(async move {
        client
            .lock(name, Some(LockOptions::new().with_lease(lease)))
            .await
    })
}

/// An `etcdctl` process whose stdout lines arrive on a channel.
struct Etcdctl {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Etcdctl {
    fn spawn(tool: &Path, endpoint: &str, args: &[&str]) -> Etcdctl {
        let mut child = etcdctl_command(tool, endpoint)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning etcdctl");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Etcdctl { child, lines }
    }

    /// Waits for the next stdout line equal to `expected`, skipping others.
    async fn expect_line(&mut self, expected: &str) {
        let deadline = tokio::time::Instant::now() + PROMPT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv()).await;
            match line {
                Ok(Some(line)) if line == expected => return,
                Ok(Some(_)) => {}
                Ok(None) => panic!("etcdctl exited before printing {expected:?}"),
                Err(_) => panic!("etcdctl did not print {expected:?} within {PROMPT:?}"),
            }
        }
    }

    /// Everything printed so far, without waiting.
    fn printed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            lines.push(line);
        }
        lines
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcdctl {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `workers` shell processes at once, each adding one to the number in `counter` with a
/// read, a pause and a write; through `etcdctl lock` when `lock` names the lock.
fn increment_concurrently(
    tool: &Path,
    endpoint: &str,
    counter: &Path,
    workers: usize,
    lock: Option<&str>,
) {
    let script = format!(
        "n=$(cat {file}); sleep 0.3; echo $((n + 1)) > {file}",
        file = counter.display()
    );
    let children: Vec<Child> = (0..workers)
        .map(|_| {
            let mut command = match lock {
                Some(name) => {
                    let mut command = etcdctl_command(tool, endpoint);
                    command.args(["lock", name, "--", "sh", "-c", &script]);
                    command
                }
                None => {
                    let mut command = Command::new("sh");
                    command.args(["-c", &script]);
                    command
                }
            };
            command
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawning a worker")
        })
        .collect();
    for mut child in children {
        let status = child.wait().expect("worker runs");
        assert!(status.success(), "a worker failed: {status}");
    }
}

fn read_counter(counter: &Path) -> u64 {
    let text = std::fs::read_to_string(counter).expect("counter file");
    text.trim().parse().expect("counter holds a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_gives_competing_processes_mutual_exclusion() {
    let Some(tool) = require_tool("etcdctl") else {
        return;
    };
    let cairn = Cairn::start(&[]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let counter: PathBuf = dir.path().join("counter");
    const WORKERS: usize = 4;

    {
        tracing::info!("control: without the lock the read-modify-writes overlap and lose updates");
        std::fs::write(&counter, "0\n").expect("counter file");
        increment_concurrently(&tool, &cairn.host_port(), &counter, WORKERS, None);
        let unlocked = read_counter(&counter);
        assert!(
            unlocked < WORKERS as u64,
            "{WORKERS} unlocked workers all counted ({unlocked}): the control shows no race"
        );
    }
    {
        tracing::info!("with `etcdctl lock` the workers take turns and every increment counts");
        std::fs::write(&counter, "0\n").expect("counter file");
        increment_concurrently(&tool, &cairn.host_port(), &counter, WORKERS, Some("mylock"));
        assert_eq!(read_counter(&counter), WORKERS as u64);
        let mut client = cairn.client().await;
        assert!(
            queue(&mut client, "mylock/").await.is_empty(),
            "every holder released"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_service_blocks_until_release_expiry_or_cancel() {
    let cairn = Cairn::start(&[]).await;
    let mut client = cairn.client().await;
    let lease_a = client.lease_grant(30, None).await.unwrap().id();
    let lease_b = client.lease_grant(30, None).await.unwrap().id();

    let held = {
        tracing::info!("A takes the free lock at once; its key is name/<lease in hex>");
        let locked = client
            .lock("biglock", Some(LockOptions::new().with_lease(lease_a)))
            .await
            .unwrap();
        assert_eq!(locked.key(), format!("biglock/{lease_a:x}").as_bytes());
        locked.key().to_vec()
    };
    {
        tracing::info!("B queues behind A and stays blocked until A unlocks");
        let mut b = spawn_lock(client.lock_client(), "biglock", lease_b);
        wait_queued(&client, "biglock/", 2).await;
        let early = tokio::time::timeout(Duration::from_millis(500), &mut b).await;
        assert!(early.is_err(), "B got the lock while A held it: {early:?}");
        client.unlock(held.clone()).await.unwrap();
        let locked = tokio::time::timeout(PROMPT, b)
            .await
            .expect("B locks after A's unlock");
        let locked = locked.expect("task").expect("B's lock");
        assert_eq!(locked.key(), format!("biglock/{lease_b:x}").as_bytes());
        let owners = queue(&mut client, "biglock/").await;
        assert_eq!(owners.len(), 1, "A's key is gone, B's holds the lock");
        client.unlock(locked.key().to_vec()).await.unwrap();
    }
    {
        tracing::info!(
            "a waiter that gives up (RPC cancelled) leaves the queue; its lease lives on"
        );
        client
            .lock("biglock", Some(LockOptions::new().with_lease(lease_a)))
            .await
            .unwrap();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(300),
            client.lock("biglock", Some(LockOptions::new().with_lease(lease_b))),
        )
        .await;
        assert!(gave_up.is_err(), "B should have been waiting");
        wait_queued(&client, "biglock/", 1).await;
        let ttl = client
            .lease_time_to_live(lease_b, None)
            .await
            .unwrap()
            .ttl();
        assert!(
            ttl > 0,
            "the waiter's lease was not revoked, only its key deleted"
        );
    }
    {
        tracing::info!("a holder whose lease expires hands the lock to the next waiter");
        let short = client.lease_grant(2, None).await.unwrap().id();
        client.lease_revoke(lease_a).await.unwrap();
        let first = client
            .lock("expiring", Some(LockOptions::new().with_lease(short)))
            .await
            .unwrap();
        assert_eq!(first.key(), format!("expiring/{short:x}").as_bytes());
        let started = Instant::now();
        let next = tokio::time::timeout(
            PROMPT,
            client.lock("expiring", Some(LockOptions::new().with_lease(lease_b))),
        )
        .await
        .expect("the lock passes on when the holder's lease expires")
        .unwrap();
        assert_eq!(next.key(), format!("expiring/{lease_b:x}").as_bytes());
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "not before the lease expired"
        );
    }
    {
        tracing::info!("a lease that does not exist is refused with etcd's error, nothing queued");
        let status = grpc_error(
            client
                .lock("ghost", Some(LockOptions::new().with_lease(0x1234_5678)))
                .await
                .unwrap_err(),
        );
        assert_eq!(status.message(), "etcdserver: requested lease not found");
        assert!(queue(&mut client, "ghost/").await.is_empty());
    }
    {
        tracing::info!("no lease named: the key lives on a fresh 60 s lease, as etcd's session");
        let locked = client.lock("anonymous", None).await.unwrap();
        let owner = queue(&mut client, "anonymous/").await.remove(0);
        assert_eq!(owner.key(), locked.key());
        assert_eq!(
            owner.key(),
            format!("anonymous/{:x}", owner.lease()).as_bytes()
        );
        let ttl = client
            .lease_time_to_live(owner.lease(), None)
            .await
            .unwrap();
        assert!((50..=60).contains(&ttl.granted_ttl()), "{ttl:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_holder_blocks_lock_service_until_its_lease_expires() {
    let Some(tool) = require_tool("etcdctl") else {
        return;
    };
    let cairn = Cairn::start(&[]).await;
    let mut client = cairn.client().await;
    let lease = client.lease_grant(30, None).await.unwrap().id();

    tracing::info!("etcdctl (client-side recipe) holds the lock and prints its key");
    let mut holder = Etcdctl::spawn(&tool, &cairn.host_port(), &["lock", "shared", "--ttl=2"]);
    wait_queued(&client, "shared/", 1).await;
    let holder_key = queue(&mut client, "shared/").await[0].key().to_vec();
    holder
        .expect_line(&String::from_utf8_lossy(&holder_key))
        .await;

    tracing::info!("the Lock service queues behind it; SIGKILL etcdctl, its 2 s lease expires");
    let mut waiter = spawn_lock(client.lock_client(), "shared", lease);
    wait_queued(&client, "shared/", 2).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiter)
            .await
            .is_err()
    );
    holder.kill9();
    let locked = tokio::time::timeout(PROMPT, waiter)
        .await
        .expect("the lock is taken once the dead holder's lease expires")
        .expect("task")
        .expect("lock");
    assert_eq!(locked.key(), format!("shared/{lease:x}").as_bytes());
    let owners = queue(&mut client, "shared/").await;
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].key(), locked.key());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_leads_queues_observes_and_hands_over() {
    let Some(tool) = require_tool("etcdctl") else {
        return;
    };
    let cairn = Cairn::start(&[]).await;
    let endpoint = cairn.host_port();
    let mut client = cairn.client().await;

    tracing::info!("candidate-a is elected; etcdctl prints its key and proposal");
    let mut a = Etcdctl::spawn(&tool, &endpoint, &["elect", "myelection", "candidate-a"]);
    a.expect_line("candidate-a").await;
    let a_key = queue(&mut client, "myelection/").await[0].clone();

    tracing::info!("an observer sees candidate-a; candidate-b queues and prints nothing");
    let mut observer = Etcdctl::spawn(&tool, &endpoint, &["elect", "-l", "myelection"]);
    observer.expect_line("candidate-a").await;
    let mut b = Etcdctl::spawn(&tool, &endpoint, &["elect", "myelection", "candidate-b"]);
    wait_queued(&client, "myelection/", 2).await;
    let leader = client.election_client().leader("myelection").await.unwrap();
    assert_eq!(leader.kv().map(|kv| kv.value()), Some(&b"candidate-a"[..]));
    assert!(
        b.printed().is_empty(),
        "candidate-b claimed leadership while a led"
    );

    tracing::info!("SIGKILL a; its session lease (etcdctl: 60 s) is revoked as its expiry would");
    a.kill9();
    client.lease_revoke(a_key.lease()).await.unwrap();
    b.expect_line("candidate-b").await;
    observer.expect_line("candidate-b").await;
    let leader = client.election_client().leader("myelection").await.unwrap();
    assert_eq!(leader.kv().map(|kv| kv.value()), Some(&b"candidate-b"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_service_round_trip_and_refusals() {
    let cairn = Cairn::start(&[]).await;
    let client = cairn.client().await;
    let mut election = client.election_client();
    let mut leases = client.lease_client();
    let lease_1 = leases.grant(30, None).await.unwrap().id();
    let lease_2 = leases.grant(30, None).await.unwrap().id();

    {
        tracing::info!("no candidate yet: Leader fails with etcd's error");
        let status = grpc_error(election.leader("e").await.unwrap_err());
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Unknown, "election: no leader")
        );
    }
    let mut observe = election.observe("e").await.unwrap();
    let leader_1 = {
        tracing::info!("candidate 1 is elected at once; Leader and Observe show its value");
        let mut campaign = election.campaign("e", "v1", lease_1).await.unwrap();
        let leader = campaign.take_leader().expect("leader key");
        assert_eq!(leader.name(), b"e");
        assert_eq!(leader.key(), format!("e/{lease_1:x}").as_bytes());
        assert_eq!(leader.lease(), lease_1);
        assert_eq!(leader.rev(), campaign.header().unwrap().revision());
        let now = election.leader("e").await.unwrap();
        assert_eq!(now.kv().unwrap().value(), b"v1");
        let seen = observe.message().await.unwrap().expect("observed");
        assert_eq!(seen.kv().unwrap().value(), b"v1");
        leader
    };
    {
        tracing::info!("the leader proclaims v2; observers and Leader see it");
        let options = ProclaimOptions::new().with_leader(leader_1.clone());
        election.proclaim("v2", Some(options)).await.unwrap();
        let seen = observe.message().await.unwrap().expect("observed");
        assert_eq!(seen.kv().unwrap().value(), b"v2");
        assert_eq!(
            election.leader("e").await.unwrap().kv().unwrap().value(),
            b"v2"
        );
    }
    let mut campaign_2 = {
        tracing::info!("candidate 2 campaigns and waits behind the leader");
        let mut election = election.clone();
        tokio::spawn(async move { election.campaign("e", "w1", lease_2).await })
    };
    wait_queued(&client, "e/", 2).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut campaign_2)
            .await
            .is_err()
    );
    {
        tracing::info!("a proclamation with a stale create revision is refused");
        let stale = leader_1.clone().with_rev(leader_1.rev() - 1);
        let status = grpc_error(
            election
                .proclaim("forged", Some(ProclaimOptions::new().with_leader(stale)))
                .await
                .unwrap_err(),
        );
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Unknown, "election: not leader")
        );
    }
    let leader_2 = {
        tracing::info!("the leader resigns; candidate 2 leads, observers see w1");
        election
            .resign(Some(ResignOptions::new().with_leader(leader_1.clone())))
            .await
            .unwrap();
        let mut elected = tokio::time::timeout(PROMPT, campaign_2)
            .await
            .expect("candidate 2 elected after the resignation")
            .expect("task")
            .expect("campaign");
        let seen = observe.message().await.unwrap().expect("observed");
        assert_eq!(seen.kv().unwrap().value(), b"w1");
        elected.take_leader().expect("leader key")
    };
    {
        tracing::info!("resigning the stale key again succeeds and leaves the new leader alone");
        election
            .resign(Some(ResignOptions::new().with_leader(leader_1.clone())))
            .await
            .unwrap();
        let options = ProclaimOptions::new().with_leader(leader_1.clone());
        let status = grpc_error(election.proclaim("back", Some(options)).await.unwrap_err());
        assert_eq!(status.message(), "election: not leader");
        let now = election.leader("e").await.unwrap();
        assert_eq!(now.kv().unwrap().key(), leader_2.key());
        assert_eq!(now.kv().unwrap().value(), b"w1");
    }
    {
        tracing::info!(
            "campaigning again on the same lease reuses the key and proclaims the value"
        );
        let mut again = election.campaign("e", "w2", lease_2).await.unwrap();
        let again = again.take_leader().expect("leader key");
        assert_eq!((again.key(), again.rev()), (leader_2.key(), leader_2.rev()));
        let seen = observe.message().await.unwrap().expect("observed");
        assert_eq!(seen.kv().unwrap().value(), b"w2");
    }
    {
        tracing::info!("a candidate that gives up (RPC cancelled) leaves the queue");
        let gave_up = tokio::time::timeout(
            Duration::from_millis(300),
            election.campaign("e", "quitter", lease_1),
        )
        .await;
        assert!(gave_up.is_err(), "the candidate should have been waiting");
        wait_queued(&client, "e/", 1).await;
        assert_eq!(
            election.leader("e").await.unwrap().kv().unwrap().value(),
            b"w2"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_observe_streams_and_waiting_calls() {
    let mut cairn = Cairn::start(&[]).await;
    let client = cairn.client().await;
    let mut election = client.election_client();
    let mut leases = client.lease_client();
    let lease_1 = leases.grant(60, None).await.unwrap().id();
    let lease_2 = leases.grant(60, None).await.unwrap().id();
    election.campaign("stop", "leader", lease_1).await.unwrap();
    let mut observe = election.observe("stop").await.unwrap();
    observe.message().await.unwrap().expect("the leader");
    let mut waiting = election.clone();
    let mut campaign = tokio::spawn(async move { waiting.campaign("stop", "next", lease_2).await });
    wait_queued(&client, "stop/", 2).await;

    tracing::info!("SIGTERM: the member exits cleanly, the stream ends, the waiter is answered");
    assert!(
        cairn.terminate(),
        "clean exit with an observer and a waiting campaign"
    );
    let ended = tokio::time::timeout(PROMPT, observe.message()).await;
    assert!(
        matches!(ended, Ok(Ok(None)) | Ok(Err(_))),
        "the observe stream ended: {ended:?}"
    );
    let answered = tokio::time::timeout(PROMPT, &mut campaign).await;
    let answered = answered
        .expect("the waiting campaign was answered")
        .expect("task");
    assert!(
        answered.is_err(),
        "a campaign cut short by shutdown fails: {answered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_hands_over_when_the_leaders_lease_expires() {
    let cairn = Cairn::start(&[]).await;
    let client = cairn.client().await;
    let mut election = client.election_client();
    let mut leases = client.lease_client();

    tracing::info!("a leader on a 2 s lease nobody keeps alive; a successor on a long one");
    let dying = leases.grant(2, None).await.unwrap().id();
    let lasting = leases.grant(60, None).await.unwrap().id();
    election.campaign("handover", "first", dying).await.unwrap();
    let mut observe = election.observe("handover").await.unwrap();
    let seen = observe.message().await.unwrap().expect("observed");
    assert_eq!(seen.kv().unwrap().value(), b"first");

    let mut successor = election.clone();
    let started = Instant::now();
    let elected = tokio::time::timeout(PROMPT, successor.campaign("handover", "second", lasting))
        .await
        .expect("the successor is elected once the leader's lease expires")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "elected before the expiry"
    );
    assert_eq!(elected.leader().unwrap().lease(), lasting);
    let seen = tokio::time::timeout(PROMPT, observe.message())
        .await
        .expect("the observer sees the handover")
        .unwrap()
        .expect("observed");
    assert_eq!(seen.kv().unwrap().value(), b"second");
    assert_eq!(seen.kv().unwrap().lease(), lasting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_campaign_work_through_every_member_of_a_cluster() {
    let cluster = CairnCluster::start(3).await;
    let clients: Vec<etcd_client::Client> = {
        let mut clients = Vec::new();
        for member in &cluster.members {
            let client = etcd_client::Client::connect([member.endpoint()], None)
                .await
                .unwrap();
            clients.push(client);
        }
        clients
    };
    let mut leases = Vec::new();
    for client in &clients {
        leases.push(client.lease_client().grant(30, None).await.unwrap().id());
    }

    tracing::info!("member 0 locks; member 2's waiter is released by an unlock sent to member 1");
    let mut lock_0 = clients[0].lock_client();
    let held = lock_0
        .lock(
            "cluster-lock",
            Some(LockOptions::new().with_lease(leases[0])),
        )
        .await
        .unwrap();
    let lease_2 = leases[2];
    let mut waiter = spawn_lock(clients[2].lock_client(), "cluster-lock", lease_2);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiter)
            .await
            .is_err()
    );
    clients[1]
        .lock_client()
        .unlock(held.key().to_vec())
        .await
        .unwrap();
    let taken = tokio::time::timeout(PROMPT, waiter)
        .await
        .expect("released")
        .unwrap()
        .unwrap();
    assert_eq!(taken.key(), format!("cluster-lock/{lease_2:x}").as_bytes());

    tracing::info!("a campaign on a follower leads; every member reports that leader");
    let mut election_1 = clients[1].election_client();
    let campaign = election_1
        .campaign("cluster-election", "from-1", leases[1])
        .await
        .unwrap();
    let key = campaign.leader().unwrap().key().to_vec();
    for client in &clients {
        let leader = client
            .election_client()
            .leader("cluster-election")
            .await
            .unwrap();
        assert_eq!(leader.kv().unwrap().key(), key.as_slice());
    }
}

fn outcome<T>(result: Result<tonic::Response<T>, tonic::Status>) -> (tonic::Code, String) {
    match result {
        Ok(_) => (tonic::Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_string()),
    }
}

/// Raw Lock/Election calls whose answers can be compared between etcd and Cairn.
async fn refusals(endpoint: &str) -> Vec<(tonic::Code, String)> {
    let mut lock = LockClient::new(channel(endpoint).await);
    let mut election = ElectionClient::new(channel(endpoint).await);
    let stale = PbLeaderKey {
        name: b"nobody".to_vec(),
        key: b"nobody/1234".to_vec(),
        rev: 99,
        lease: 0x1234,
    };
    let keyless = PbLeaderKey {
        key: Vec::new(),
        ..stale.clone()
    };
    let proclaim = |leader| ProclaimRequest {
        leader,
        value: b"v".to_vec(),
    };
    let no_lease = 0x7777;
    vec![
        outcome(
            lock.lock(LockRequest {
                name: b"l".to_vec(),
                lease: no_lease,
            })
            .await,
        ),
        outcome(lock.unlock(UnlockRequest { key: Vec::new() }).await),
        outcome(
            election
                .leader(LeaderRequest {
                    name: b"nobody".to_vec(),
                })
                .await,
        ),
        outcome(election.proclaim(proclaim(None)).await),
        outcome(election.proclaim(proclaim(Some(stale.clone()))).await),
        outcome(election.proclaim(proclaim(Some(keyless.clone()))).await),
        outcome(election.resign(ResignRequest { leader: None }).await),
        outcome(
            election
                .resign(ResignRequest {
                    leader: Some(stale),
                })
                .await,
        ),
        outcome(
            election
                .resign(ResignRequest {
                    leader: Some(keyless),
                })
                .await,
        ),
        outcome(
            election
                .campaign(CampaignRequest {
                    name: b"c".to_vec(),
                    lease: no_lease,
                    value: b"v".to_vec(),
                })
                .await,
        ),
    ]
}

/// What etcd 3.4.23 answers to [`refusals`]: its Lock and Election servers run etcd's client
/// recipes, whose errors reach grpc-go without a status, so every refusal is `Unknown`; a
/// stale `Resign` is not a refusal at all.
fn etcd_refusals() -> Vec<(tonic::Code, String)> {
    let unknown = |message: &str| (tonic::Code::Unknown, message.to_string());
    let no_key = "etcdserver: key is not provided";
    let no_leader_field = "\"leader\" field must be provided";
    vec![
        unknown("etcdserver: requested lease not found"),
        unknown(no_key),
        unknown("election: no leader"),
        unknown(no_leader_field),
        unknown("election: not leader"),
        unknown(no_key),
        unknown(no_leader_field),
        (tonic::Code::Ok, String::new()),
        unknown(no_key),
        unknown("etcdserver: requested lease not found"),
    ]
}

#[tokio::test]
async fn lock_and_election_refusals_match_etcd() {
    let cairn = Cairn::start(&[]).await;
    assert_eq!(refusals(&cairn.endpoint()).await, etcd_refusals());
    tracing::info!("and the same calls to a real etcd, when one is installed");
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    assert_eq!(refusals(&etcd.endpoint()).await, etcd_refusals());
}
