//! A whole cluster in one process over the simulated network (`network::sim`).

#![allow(dead_code)] // each test binary uses its own subset of the harness

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cairn_consensus::network::sim::{Faults, SimNetwork};
use cairn_consensus::{Member, MemberId, Replica, ReplicaConfig};
use cairn_mvcc::StoreConfig;

pub struct SimCluster {
    pub network: SimNetwork,
    pub replicas: BTreeMap<MemberId, Option<Replica>>,
    configs: BTreeMap<MemberId, ReplicaConfig>,
    _dir: tempfile::TempDir,
}

/// Where member data goes: tmpfs when there is one, so fsyncs cost nothing and the virtual
/// clock (which jumps while the runtime waits on real I/O) barely moves during them.
fn scratch_dir() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(&shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("temp dir")
}

pub fn member(id: MemberId) -> Member {
    Member {
        name: format!("m{id}"),
        peer_urls: vec![format!("http://sim-{id}:2380")],
        client_urls: vec![format!("http://sim-{id}:2379")],
    }
}

impl SimCluster {
    /// Starts `size` members (ids 1..=size) as a new cluster.
    pub async fn start(size: u64, seed: u64, faults: Faults) -> SimCluster {
        let dir = scratch_dir();
        let network = SimNetwork::new(seed, faults);
        let members: BTreeMap<MemberId, Member> = (1..=size).map(|id| (id, member(id))).collect();
        let mut cluster = SimCluster {
            network,
            replicas: BTreeMap::new(),
            configs: BTreeMap::new(),
            _dir: dir,
        };
        for id in 1..=size {
            let config = cluster.config(id, members.clone());
            cluster.configs.insert(id, config);
            cluster.restart(id).await;
        }
        cluster
    }

    fn config(&self, id: MemberId, initial_members: BTreeMap<MemberId, Member>) -> ReplicaConfig {
        ReplicaConfig {
            member_id: id,
            member_dir: self._dir.path().join(format!("m{id}")),
            store: StoreConfig {
                member_id: id,
                ..StoreConfig::default()
            },
            initial_members,
            heartbeat_ms: 50,
            election_timeout_ms: 300,
            snapshot_count: 200,
            request_timeout: Duration::from_secs(3),
            synchronous_io: true,
            // A few dozen entries: lagging followers and restarted members are served from
            // the WAL, as a production member is after 8 MiB.
            log_cache_bytes: 4096,
        }
    }

    /// Starts member `id` with an empty log and no initial members, as a member started with
    /// `--initial-cluster-state existing` waits to be added (as a learner) to the cluster.
    pub async fn start_joiner(&mut self, id: MemberId) {
        let config = self.config(id, BTreeMap::new());
        self.configs.insert(id, config);
        self.restart(id).await;
    }

    /// Stops member `id` for good: it left the cluster and never restarts.
    pub async fn remove(&mut self, id: MemberId) {
        self.crash(id).await;
        self.replicas.remove(&id);
        self.configs.remove(&id);
    }

    pub async fn restart(&mut self, id: MemberId) {
        let config = self.configs[&id].clone();
        let transport = self.network.endpoint(id);
        let (replica, handler) = Replica::open(config, transport)
            .await
            .unwrap_or_else(|error| panic!("member {id} failed to open: {error}"));
        self.network.attach(id, handler);
        self.replicas.insert(id, Some(replica));
    }

    /// Takes member `id` down as a crash would: no final snapshot.
    pub async fn crash(&mut self, id: MemberId) {
        self.network.detach(id);
        if let Some(replica) = self.replicas.get_mut(&id).and_then(Option::take) {
            replica.halt().await;
        }
    }

    pub fn up(&self) -> Vec<(MemberId, Replica)> {
        self.replicas
            .iter()
            .filter_map(|(id, replica)| replica.clone().map(|replica| (*id, replica)))
            .collect()
    }

    pub fn ids(&self) -> Vec<MemberId> {
        self.replicas.keys().copied().collect()
    }

    pub fn replica(&self, id: MemberId) -> Option<Replica> {
        self.replicas.get(&id).cloned().flatten()
    }

    /// Waits until every running member has applied the same index and has a leader.
    pub async fn wait_converged(&self, budget: Duration) -> Result<u64, String> {
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            let statuses: Vec<_> = self.up().iter().map(|(_, r)| r.status()).collect();
            let leader = statuses[0].leader;
            let applied = statuses[0].applied_index;
            let agreed = leader.is_some()
                && statuses
                    .iter()
                    .all(|s| s.leader == leader && s.applied_index == applied)
                && statuses.iter().all(|s| s.last_log_index == applied);
            if agreed {
                return Ok(applied);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("members did not converge: {statuses:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// State-machine safety: every running member holds the same history (`HashKV` equal at
    /// the same revision).
    pub fn members_agree(&self) -> Result<(), String> {
        let mut hashes = std::collections::BTreeSet::new();
        for (id, replica) in self.up() {
            let store = replica.store();
            let hash = store
                .hash_kv(0)
                .map_err(|error| format!("hash on {id}: {error}"))?;
            hashes.insert((store.current_revision(), hash.hash));
        }
        match hashes.len() {
            1 => Ok(()),
            _ => Err(format!("members diverged: (revision, hash) = {hashes:?}")),
        }
    }

    pub async fn stop(self) {
        for (_, replica) in self.up() {
            replica.halt().await;
        }
    }
}

/// Seeds from `CAIRN_SIM_SEED` (one seed, to replay) or `count` seeds from `first`
/// (`CAIRN_SIM_SEEDS` and `CAIRN_SIM_FIRST` override them).
pub fn seeds(first: u64, count: u64) -> Vec<u64> {
    let from_env = |name: &str| std::env::var(name).ok().and_then(|n| n.parse().ok());
    match std::env::var("CAIRN_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("CAIRN_SIM_SEED is a u64")],
        Err(_) => {
            let first = from_env("CAIRN_SIM_FIRST").unwrap_or(first);
            let count = from_env("CAIRN_SIM_SEEDS").unwrap_or(count);
            (first..first + count).collect()
        }
    }
}

/// Logs of a simulation run, filtered by `CAIRN_SIM_LOG` (off by default).
pub fn init_logging() {
    let filter = std::env::var("CAIRN_SIM_LOG").unwrap_or_else(|_| "off".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

pub fn no_faults() -> Faults {
    Faults::default()
}
