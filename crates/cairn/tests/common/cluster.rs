//! A cluster of real `cairn serve` processes with a link-cutting proxy between peers.
//!
//! Member `i` listens for peers on its own loopback address `127.0.0.<11+i>` and advertises
//! a proxy port on `127.0.0.1`. Peer connections leave from the member's peer address (see
//! `TcpTransport`), so the proxy in front of member `j` knows which member is calling and can
//! drop any link `i → j`, existing connections included.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{HashKvRequest, StatusRequest, StatusResponse};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{channel, free_port, free_port_on, signal, wait_ready};

pub struct ClusterMember {
    pub name: String,
    pub client_port: u16,
    /// The native CURP-HO listener's port.
    pub native_port: u16,
    peer_listen: SocketAddr,
    pub proxy_port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
    state: &'static str,
}

impl ClusterMember {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `host:port` of the native CURP-HO listener.
    pub fn native_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.native_port)
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// Links the proxy drops: (from member index, to member index).
#[derive(Clone, Default)]
pub struct Links {
    cut: Arc<Mutex<BTreeSet<(usize, usize)>>>,
    changed: Arc<Mutex<Option<watch::Sender<u64>>>>,
}

impl Links {
    fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cut.lock().expect("links").contains(&(from, to))
    }

    fn notify(&self) {
        if let Some(sender) = self.changed.lock().expect("links").as_ref() {
            sender.send_modify(|generation| *generation += 1);
        }
    }
}

pub struct CairnCluster {
    pub members: Vec<ClusterMember>,
    pub links: Links,
    initial_cluster: String,
    _dir: tempfile::TempDir,
    changes: watch::Receiver<u64>,
    /// Flags every member gets (`start_with`).
    extra_args: Vec<String>,
}

fn member_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 11 + index as u8)
}

impl CairnCluster {
    /// Starts `size` members as a new cluster and waits until they all answer.
    pub async fn start(size: usize) -> CairnCluster {
        CairnCluster::start_with(size, &[]).await
    }

    /// Like `start`, with more `cairn serve` flags for every member.
    pub async fn start_with(size: usize, extra_args: &[&str]) -> CairnCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let (sender, changes) = watch::channel(0);
        let links = Links::default();
        *links.changed.lock().expect("links") = Some(sender);
        let mut cluster = CairnCluster {
            members: Vec::new(),
            links,
            initial_cluster: String::new(),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            _dir: dir,
            changes,
        };
        for index in 0..size {
            cluster.add_member_slot(index);
        }
        cluster.initial_cluster = cluster.cluster_list(size);
        for index in 0..size {
            cluster.spawn(index, "new");
        }
        for index in 0..size {
            cluster.wait_ready(index).await;
        }
        cluster
    }

    fn cluster_list(&self, count: usize) -> String {
        self.members[..count]
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Reserves ports and a proxy for member `index`.
    fn add_member_slot(&mut self, index: usize) {
        let listen_ip = member_ip(index);
        let peer_listen = SocketAddr::new(IpAddr::V4(listen_ip), free_port_on(listen_ip));
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let proxy_port = proxy.local_addr().expect("proxy addr").port();
        proxy.set_nonblocking(true).expect("nonblocking");
        let proxy = TcpListener::from_std(proxy).expect("tokio listener");
        tokio::spawn(run_proxy(
            proxy,
            index,
            peer_listen,
            self.links.clone(),
            self.changes.clone(),
        ));
        self.members.push(ClusterMember {
            name: format!("m{}", index + 1),
            client_port: free_port(),
            native_port: free_port(),
            peer_listen,
            proxy_port,
            data_dir: self._dir.path().join(format!("m{}", index + 1)),
            child: None,
            state: "new",
        });
    }

    fn spawn(&mut self, index: usize, state: &'static str) {
        let initial_cluster = self.initial_cluster.clone();
        let extra_args = self.extra_args.clone();
        let member = &mut self.members[index];
        member.state = state;
        let client = member.endpoint();
        let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("serve")
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://{}", member.peer_listen),
            ])
            .args(["--initial-advertise-peer-urls", &member.peer_url()])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(
                (!extra_args.iter().any(|arg| arg == "--heartbeat-interval"))
                    .then_some(["--heartbeat-interval", "50", "--election-timeout", "500"])
                    .into_iter()
                    .flatten(),
            )
            .args(
                (!extra_args.iter().any(|arg| arg == "--snapshot-count"))
                    .then_some(["--snapshot-count", "2000"])
                    .into_iter()
                    .flatten(),
            )
            .args(["--log-level", "warn", "--log-listen="])
            .args(["--listen-native-addr", &member.native_endpoint()])
            .args(&extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning cairn serve");
        member.child = Some(child);
    }

    async fn wait_ready(&mut self, index: usize) {
        let endpoint = self.members[index].endpoint();
        let child = self.members[index].child.as_mut().expect("running");
        wait_ready(&endpoint, child).await;
    }

    /// Adds a member through `MemberAdd` on `via` (as a learner if asked) and starts it
    /// joining the existing cluster. Returns its index and member id.
    pub async fn add_member(&mut self, via: usize, learner: bool) -> (usize, u64) {
        let index = self.members.len();
        self.add_member_slot(index);
        let peer_url = self.members[index].peer_url();
        let mut client = self.members[via].client_or_panic().await;
        let options = if learner {
            etcd_client::MemberAddOptions::new().with_is_learner()
        } else {
            etcd_client::MemberAddOptions::new()
        };
        let added = client
            .member_add([peer_url], Some(options))
            .await
            .expect("MemberAdd");
        let id = added.member().expect("added member").id();
        self.initial_cluster = format!(
            "{},{}={}",
            self.initial_cluster,
            self.members[index].name,
            self.members[index].peer_url()
        );
        self.spawn(index, "existing");
        self.wait_ready(index).await;
        (index, id)
    }

    /// Waits until member `index` exits by itself; its exit status, or `None` after `timeout`.
    pub async fn wait_exit(&mut self, index: usize, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        let member = &mut self.members[index];
        while tokio::time::Instant::now() < deadline {
            let child = member.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                member.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    pub fn kill9(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pause(&self, index: usize) {
        signal(self.members[index].child.as_ref().expect("running"), "STOP");
    }

    pub fn resume(&self, index: usize) {
        signal(self.members[index].child.as_ref().expect("running"), "CONT");
    }

    pub async fn restart(&mut self, index: usize) {
        assert!(
            !self.members[index].is_running(),
            "restart of a running member"
        );
        let state = self.members[index].state;
        self.spawn(index, state);
        self.wait_ready(index).await;
    }

    /// Drops every link to and from member `index`.
    pub fn cut_off(&self, index: usize) {
        {
            let mut cut = self.links.cut.lock().expect("links");
            for other in 0..self.members.len() {
                if other != index {
                    cut.insert((index, other));
                    cut.insert((other, index));
                }
            }
        }
        self.links.notify();
    }

    pub fn heal(&self) {
        self.links.cut.lock().expect("links").clear();
        self.links.notify();
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.members[*i].is_running())
            .collect()
    }

    pub async fn status(&self, index: usize) -> Option<StatusResponse> {
        let endpoint = self.members[index].endpoint();
        let endpoint = tonic::transport::Channel::from_shared(endpoint).ok()?;
        let channel = tokio::time::timeout(Duration::from_millis(500), endpoint.connect())
            .await
            .ok()?
            .ok()?;
        let mut client = MaintenanceClient::new(channel);
        let status =
            tokio::time::timeout(Duration::from_millis(500), client.status(StatusRequest {}))
                .await
                .ok()?
                .ok()?;
        Some(status.into_inner())
    }

    /// The member id of running member `index`, as its Status reports it.
    pub async fn member_id(&self, index: usize) -> u64 {
        self.status(index)
            .await
            .and_then(|status| status.header)
            .expect("status header")
            .member_id
    }

    /// An `etcd-client` connected to member `index` alone.
    pub async fn etcd_client(&self, index: usize) -> etcd_client::Client {
        self.members[index].client_or_panic().await
    }

    /// Index of the member every running member agrees leads, waiting up to `timeout`.
    pub async fn leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = BTreeSet::new();
            let mut ids = Vec::new();
            for index in self.running() {
                if let Some(status) = self.status(index).await {
                    leaders.insert(status.leader);
                    ids.push((index, status.header.map_or(0, |h| h.member_id)));
                }
            }
            if leaders.len() == 1 && ids.len() == self.running().len() {
                let leader = *leaders.iter().next().expect("one");
                if let Some((index, _)) = ids.iter().find(|(_, id)| *id == leader) {
                    return *index;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader after {timeout:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running member applied the same index, then checks that `HashKV`
    /// agrees at that revision; returns the revision.
    pub async fn converged_hash(&self, timeout: Duration) -> i64 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut applied = BTreeSet::new();
            let mut revisions = BTreeSet::new();
            for index in self.running() {
                match self.status(index).await {
                    Some(status) => {
                        applied.insert(status.raft_applied_index);
                        revisions.insert(status.header.map_or(0, |h| h.revision));
                    }
                    None => {
                        applied.insert(u64::MAX);
                    }
                }
            }
            if applied.len() == 1 && revisions.len() == 1 {
                let revision = *revisions.iter().next().expect("one");
                let mut hashes = BTreeSet::new();
                for index in self.running() {
                    let mut client =
                        MaintenanceClient::new(channel(&self.members[index].endpoint()).await);
                    let hash = client
                        .hash_kv(HashKvRequest { revision })
                        .await
                        .expect("HashKV")
                        .into_inner();
                    hashes.insert(hash.hash);
                }
                assert_eq!(
                    hashes.len(),
                    1,
                    "members disagree on HashKV at revision {revision}"
                );
                return revision;
            }
            assert!(
                Instant::now() < deadline,
                "members did not converge: applied {applied:?}, revisions {revisions:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl ClusterMember {
    async fn client_or_panic(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None)
            .await
            .expect("etcd-client connects")
    }
}

impl Drop for CairnCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            if let Some(child) = &self.members[index].child {
                // A paused member must be resumed to die of SIGKILL promptly everywhere.
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(child.id().to_string())
                    .status();
            }
            self.kill9(index);
        }
    }
}

/// Index of the member whose peer address is `ip`.
fn member_of(ip: IpAddr) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && v4.octets()[3] >= 11 => {
            Some(usize::from(v4.octets()[3] - 11))
        }
        _ => None,
    }
}

async fn run_proxy(
    listener: TcpListener,
    to: usize,
    target: SocketAddr,
    links: Links,
    changes: watch::Receiver<u64>,
) {
    loop {
        let Ok((inbound, from)) = listener.accept().await else {
            return;
        };
        let Some(from) = member_of(from.ip()) else {
            continue;
        };
        if links.is_cut(from, to) {
            continue;
        }
        let (links, mut changes) = (links.clone(), changes.clone());
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = outbound.set_nodelay(true);
            let _ = inbound.set_nodelay(true);
            let (mut inbound, mut outbound) = (inbound, outbound);
            let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
            tokio::pin!(copy);
            loop {
                tokio::select! {
                    _ = &mut copy => return,
                    changed = changes.changed() => {
                        if changed.is_err() || links.is_cut(from, to) || links.is_cut(to, from) {
                            return;
                        }
                    }
                }
            }
        });
    }
}
