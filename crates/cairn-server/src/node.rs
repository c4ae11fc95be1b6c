//! The node: this member's replica of the cluster, its identity and its peer listener.
//!
//! ```text
//!  gRPC handler ── propose() ──► Replica (cairn-consensus): leader here, or forwarded to it
//!                                  │ raft log on the WAL (group commit), replicated, committed
//!  reply ◄──── this member's state machine applies the entry and hands back the result
//! ```
//!
//! A request is acknowledged only once its entry is committed (fsynced on a quorum) and applied
//! here, so every reply carries the revision the entry keeps on every member. Linearizable
//! reads call [`Node::read_index`] first; serializable ones read the local store directly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLockReadGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_consensus::network::delay::DelayedTransport;
use cairn_consensus::network::tcp::{serve, TcpDialer, TcpTransport};
use cairn_consensus::network::Transport;
use cairn_consensus::peer::PeerHandler;
use cairn_consensus::{Member, MemberInfo, Replica, ReplicaConfig, ReplicaStatus};
use cairn_mvcc::{ApplyResponse, KvStore, StoreConfig};
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::{AuthInfo, InternalAuthenticateRequest};
use cairn_proto::etcdserverpb::ResponseHeader;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataMap;
use tracing::{error, info, warn};

use crate::auth::{self, TokenProvider};
use crate::config::{socket_addr, ClusterState, ServerConfig};
use crate::error::{ServerError, StartError};
use crate::identity::{member_id_for, Identity};
use crate::limits::REQUEST_TIMEOUT;
use crate::tls::{self, PeerDialer};

/// A running node; cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    identity: Identity,
    config: ServerConfig,
    tokens: TokenProvider,
    replica: Replica,
    stopping: watch::Sender<bool>,
    /// The peer listener; taken and awaited by `stop`.
    peer_server: Mutex<Option<JoinHandle<()>>>,
}

impl Node {
    /// Opens the data dir, starts the replica and the peer listener.
    pub async fn open(config: ServerConfig) -> Result<Node, StartError> {
        config.validate()?;
        let tokens = TokenProvider::from_flag(&config.auth_token)?;
        let member_dir = config.data_dir.join("member");
        std::fs::create_dir_all(&member_dir).map_err(|source| StartError::DataDir {
            path: member_dir.display().to_string(),
            source,
        })?;
        let identity = Identity::load_or_create(&member_dir, &config)?;
        let started = std::time::Instant::now();
        let replica_config = ReplicaConfig {
            member_id: identity.member_id,
            member_dir,
            store: StoreConfig {
                quota_backend_bytes: config.quota_backend_bytes,
                member_id: identity.member_id,
                simple_token_ttl_ms: config.auth_token_ttl_s.saturating_mul(1000) as i64,
            },
            initial_members: initial_members(&config)?,
            heartbeat_ms: config.heartbeat_interval_ms,
            election_timeout_ms: config.election_timeout_ms,
            snapshot_count: config.snapshot_count,
            request_timeout: REQUEST_TIMEOUT,
            synchronous_io: false,
            log_cache_bytes: cairn_consensus::limits::LOG_CACHE_BYTES_MAX,
        };
        let peers = bind_listeners(&config.listen_peer_urls).await?;
        let source = peers
            .first()
            .and_then(|listener| listener.local_addr().ok())
            .map(|addr| addr.ip())
            .filter(|ip| !ip.is_unspecified());
        let peer_tls = match config.peer_tls.is_set() {
            true => Some((
                config.peer_tls.peer_acceptor()?,
                config.peer_tls.peer_connector()?,
            )),
            false => None,
        };
        let (peer_acceptor, peer_connector) = peer_tls.unzip();
        let dialer = PeerDialer::new(TcpDialer::new(source), peer_connector);
        let tcp = TcpTransport::new(Arc::new(dialer));
        let transport: Arc<dyn Transport> = match config.peer_delay.is_zero() {
            true => Arc::new(tcp),
            false => Arc::new(DelayedTransport::new(Arc::new(tcp), config.peer_delay)),
        };
        let (replica, handler) = Replica::open(replica_config, transport)
            .await
            .map_err(|error| StartError::Replica(error.to_string()))?;
        {
            let store = replica.store();
            info!(
                member_id = format!("{:x}", identity.member_id),
                applied_index = store.applied_index(),
                revision = store.current_revision(),
                keys = store.key_count(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "recovered state"
            );
        }
        let mut publish = tokio::spawn({
            let replica = replica.clone();
            let attributes = Member {
                name: config.name.clone(),
                peer_urls: config.initial_advertise_peer_urls.clone(),
                client_urls: config.advertise_client_urls.clone(),
            };
            async move { replica.publish(attributes).await }
        });
        let (stopping, _) = watch::channel(false);
        let peer_server = {
            let listeners = peers
                .into_iter()
                .map(|listener| (listener, peer_acceptor.clone()))
                .collect();
            tokio::spawn(serve_peers(listeners, handler, stopping.subscribe()))
        };
        // Like etcd, publish this member's name and client URLs before serving clients, so
        // MemberList shows them; a cluster still waiting for a quorum goes on retrying it in
        // the background rather than keep clients out.
        let publish_wait = Duration::from_millis(3 * config.election_timeout_ms);
        let _ = tokio::time::timeout(publish_wait, &mut publish).await;
        Ok(Node {
            inner: Arc::new(NodeInner {
                identity,
                config,
                tokens,
                replica,
                stopping,
                peer_server: Mutex::new(Some(peer_server)),
            }),
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub fn replica(&self) -> &Replica {
        &self.inner.replica
    }

    /// Read access to the state. Hold it only for in-memory work.
    pub fn store(&self) -> RwLockReadGuard<'_, KvStore> {
        self.inner.replica.store()
    }

    /// The newest applied revision, updated after every applied batch.
    pub fn revisions(&self) -> watch::Receiver<i64> {
        self.inner.replica.revisions()
    }

    /// Becomes true when the node starts shutting down; streams select on it.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.stopping.subscribe()
    }

    pub fn status(&self) -> ReplicaStatus {
        self.inner.replica.status()
    }

    pub fn members(&self) -> Vec<MemberInfo> {
        self.inner.replica.members()
    }

    /// A response header for `revision` with this member's ids and the current term.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.inner.identity.cluster_id,
            member_id: self.inner.identity.member_id,
            revision,
            raft_term: self.inner.replica.metrics().borrow().current_term,
        }
    }

    /// Replaces a state-machine header (revision only) by a full one.
    pub fn fill_header(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.as_ref().map_or(0, |header| header.revision);
        *header = Some(self.header(revision));
    }

    /// Proposes a client's `request`: returns once it is committed and applied here, with the
    /// result. The state machine checks `caller`'s permissions when it applies the entry.
    pub async fn propose(
        &self,
        caller: &AuthInfo,
        request: Request,
    ) -> Result<ApplyResponse, ServerError> {
        self.submit(Some(caller.clone()), request).await
    }

    /// Proposes a request of the node itself (lease expiry), which auth never refuses.
    pub async fn propose_internal(&self, request: Request) -> Result<ApplyResponse, ServerError> {
        self.submit(None, request).await
    }

    async fn submit(
        &self,
        caller: Option<AuthInfo>,
        request: Request,
    ) -> Result<ApplyResponse, ServerError> {
        let max_bytes = self.inner.config.max_request_bytes;
        let replica = &self.inner.replica;
        Ok(replica
            .propose(request, caller, now_unix_ms(), max_bytes)
            .await?)
    }

    /// Who sent a request, from the token in its metadata (see `crate::auth`).
    pub fn caller(&self, metadata: &MetadataMap) -> Result<AuthInfo, ServerError> {
        let store = self.store();
        auth::resolve(
            &self.inner.tokens,
            store.auth(),
            auth::token_of(metadata),
            now_unix_ms(),
        )
    }

    /// The caller of a request that needs the root role while auth is enabled (maintenance,
    /// membership changes), or its refusal.
    pub fn admin(&self, metadata: &MetadataMap) -> Result<AuthInfo, ServerError> {
        let caller = self.caller(metadata)?;
        self.store().auth().check_admin(&caller.user)?;
        Ok(caller)
    }

    /// A token for `user`, whose password was just checked: a simple token goes through the
    /// log so that every member knows it; a JWT is signed here.
    pub async fn issue_token(&self, user: &str) -> Result<String, ServerError> {
        match &self.inner.tokens {
            TokenProvider::Simple => {
                let request = Request::Authenticate(InternalAuthenticateRequest {
                    name: user.to_string(),
                    simple_token_prefix: auth::simple_token_prefix(),
                });
                match self.propose_internal(request).await? {
                    ApplyResponse::Authenticate(response) => Ok(response.token),
                    other => unreachable!("Authenticate answered with {other:?}"),
                }
            }
            TokenProvider::Jwt { signer, ttl } => {
                let revision = self.store().auth().revision();
                Ok(auth::sign_jwt(signer, *ttl, user, revision, now_unix_ms()))
            }
        }
    }

    /// Waits until a read of the local store is linearizable (etcd's ReadIndex).
    pub async fn read_index(&self) -> Result<(), ServerError> {
        Ok(self.inner.replica.read_index().await?)
    }

    /// Tells streams and the peer listener to end (first step of shutdown); client
    /// proposals are still served.
    pub fn begin_stop(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// Graceful stop: final snapshot, raft stopped, WAL flushed and closed.
    pub async fn stop(&self) {
        self.begin_stop();
        let peer_server = self
            .inner
            .peer_server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(peer_server) = peer_server else {
            return;
        };
        self.inner.replica.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), peer_server).await;
        info!("node stopped");
    }
}

/// The members of a new cluster from `--initial-cluster`; empty when joining an existing one.
fn initial_members(config: &ServerConfig) -> Result<BTreeMap<u64, Member>, StartError> {
    if config.initial_cluster_state == ClusterState::Existing {
        return Ok(BTreeMap::new());
    }
    let mut members: BTreeMap<u64, Member> = BTreeMap::new();
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, url) in crate::config::parse_initial_cluster(&config.initial_cluster)? {
        by_name.entry(name).or_default().push(url);
    }
    for (name, peer_urls) in by_name {
        let id = member_id_for(&peer_urls, &config.initial_cluster_token);
        // Every member must write the same initial membership: client URLs are published by
        // each member itself once the cluster runs (see `Replica::publish`).
        let member = Member {
            name,
            peer_urls,
            client_urls: Vec::new(),
        };
        if members.insert(id, member).is_some() {
            return Err(StartError::Config(format!(
                "--initial-cluster: two members share the id {id:x}"
            )));
        }
    }
    Ok(members)
}

/// Binds one listener per URL (client or peer URLs).
pub(crate) async fn bind_listeners(urls: &[String]) -> Result<Vec<TcpListener>, StartError> {
    let mut listeners = Vec::new();
    for url in urls {
        let listener = TcpListener::bind(socket_addr(url)?)
            .await
            .map_err(|source| StartError::Listen {
                url: url.clone(),
                source,
            })?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Accepts peer connections and serves each with the framed peer protocol, until shutdown
/// begins (which also ends the connections).
async fn serve_peers(
    listeners: Vec<(TcpListener, Option<TlsAcceptor>)>,
    handler: PeerHandler,
    mut stopping: watch::Receiver<bool>,
) {
    let mut incoming = tls::accept(listeners);
    loop {
        let accepted = tokio::select! {
            accepted = incoming.next() => accepted,
            () = until_stopping(&mut stopping) => return,
        };
        match accepted {
            Some(Ok(stream)) => {
                let mut stopping = stopping.clone();
                tokio::spawn(serve(stream, handler.clone(), async move {
                    until_stopping(&mut stopping).await
                }));
            }
            // Out of descriptors and the like: the listener goes on.
            Some(Err(error)) => warn!(%error, "peer accept failed"),
            None => {
                error!("peer listeners closed");
                return;
            }
        }
    }
}

/// Resolves once shutdown begins. The guard `wait_for` yields is dropped in here, so the
/// futures of callers that select on this stay `Send`.
pub async fn until_stopping(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await.map(|_| ());
}

/// Wall-clock milliseconds since the epoch: the time stamped into entries.
pub fn now_unix_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since_epoch.as_millis() as i64
}
