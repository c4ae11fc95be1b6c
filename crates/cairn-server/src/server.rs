//! `run`: a node behind its client listeners, until a shutdown signal.
//!
//! Shutdown order: the signal fires → streams (Watch, LeaseKeepAlive, Observe) and waiting
//! Lock/Campaign calls are told to end → the gRPC server stops accepting and drains in-flight
//! calls (bounded by a grace period) → the node flushes its WAL, applies what was queued, and
//! writes a final snapshot.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::auth_server::AuthServer;
use cairn_proto::etcdserverpb::cluster_server::ClusterServer;
use cairn_proto::etcdserverpb::kv_server::KvServer;
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use cairn_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use cairn_proto::etcdserverpb::watch_server::WatchServer;
use cairn_proto::v3electionpb::election_server::ElectionServer;
use cairn_proto::v3lockpb::lock_server::LockServer;
use futures::StreamExt;
use tokio::sync::oneshot;
use tonic::service::Routes;
use tracing::{info, warn};

use crate::authority::AuthorityFix;
use crate::config::{is_https, ServerConfig};
use crate::error::StartError;
use crate::limits::GRPC_OVERHEAD_BYTES;
use crate::metrics::grpc::{GrpcMetrics, GrpcMetricsLayer};
use crate::node::{bind_listeners, Node};
use crate::services::auth::AuthService;
use crate::services::cluster::ClusterService;
use crate::services::election::ElectionService;
use crate::services::kv::KvService;
use crate::services::lease::LeaseService;
use crate::services::lock::LockService;
use crate::services::maintenance::MaintenanceService;
use crate::services::watch::WatchService;
use crate::tls;

/// Longest wait for in-flight calls once shutdown begins. Unary calls finish in milliseconds
/// and our streams end themselves on shutdown; what can remain are idle client connections,
/// which hyper's graceful shutdown may wait on indefinitely (hyperium/hyper#4170).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Serves `config` until `shutdown` resolves; returns after a clean stop.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    // Certificates are read before anything opens, so a bad file fails the start at once
    // (`Node::open` validates the rest of the configuration).
    let acceptor = match config.client_tls.is_set() {
        true => Some(config.client_tls.client_acceptor()?),
        false => None,
    };
    let node = Node::open(config.clone()).await?;
    let listeners = bind_listeners(&config.listen_client_urls).await?;
    let expiry = tokio::spawn(crate::lease_expiry::run(node.clone()));
    if !config.listen_native_addr.is_empty() {
        match tokio::net::TcpListener::bind(&config.listen_native_addr).await {
            Ok(listener) => {
                tokio::spawn(crate::native::serve(listener, node.clone()));
            }
            // The default port may be taken by another member on this host: the etcd API
            // still serves.
            Err(error) => warn!(
                address = %config.listen_native_addr,
                %error,
                "native CURP-HO listener not started"
            ),
        }
    }
    let listeners = listeners
        .into_iter()
        .zip(&config.listen_client_urls)
        .map(|(listener, url)| (listener, acceptor.clone().filter(|_| is_https(url))))
        .collect();
    let incoming = tls::accept(listeners).map(|io| io.map(AuthorityFix::new));
    let message_bytes_max = config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let (begun_tx, begun_rx) = oneshot::channel::<()>();
    let signal_node = node.clone();
    // etcd's `stopWithDelay`: ten heartbeats, for the removal's commit to reach the others and
    // for the answer to a MemberRemove forwarded here (a leader removing itself) to go out.
    let removed_stop_delay = Duration::from_millis(10 * config.heartbeat_interval_ms);
    let signal = async move {
        // Like etcd, a member removed from the cluster stops itself: it must not serve stale
        // reads or campaign against the members that remain.
        let removed = signal_node.replica().clone();
        tokio::select! {
            () = shutdown => {}
            () = removed.removed() => {
                warn!("this member was removed from the cluster; stopping");
                tokio::time::sleep(removed_stop_delay).await;
            }
        }
        info!("shutting down: closing streams, draining calls");
        signal_node.begin_stop();
        let _ = begun_tx.send(());
    };
    let grpc_metrics = Arc::new(GrpcMetrics::default());
    let mut grpc = Routes::builder();
    grpc.add_service(
        KvServer::new(KvService::new(node.clone())).max_decoding_message_size(message_bytes_max),
    );
    grpc.add_service(
        WatchServer::new(WatchService::new(node.clone()))
            .max_decoding_message_size(message_bytes_max),
    );
    grpc.add_service(
        LeaseServer::new(LeaseService::new(node.clone()))
            .max_decoding_message_size(message_bytes_max),
    );
    grpc.add_service(ClusterServer::new(ClusterService::new(node.clone())));
    grpc.add_service(AuthServer::new(AuthService::new(node.clone())));
    grpc.add_service(
        MaintenanceServer::new(MaintenanceService::new(node.clone()))
            .max_decoding_message_size(message_bytes_max)
            .max_encoding_message_size(usize::MAX),
    );
    grpc.add_service(
        ElectionServer::new(ElectionService::new(node.clone()))
            .max_decoding_message_size(message_bytes_max),
    );
    grpc.add_service(
        LockServer::new(LockService::new(node.clone()))
            .max_decoding_message_size(message_bytes_max),
    );
    // One port for both, like etcd: HTTP/2 requests are gRPC (routed by path), HTTP/1.1 ones
    // reach the JSON gateway, /health, /version and /metrics.
    let router = grpc
        .routes()
        .into_axum_router()
        .merge(crate::http::routes(&node, grpc_metrics.clone()));
    let serve = tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(GrpcMetricsLayer::new(grpc_metrics))
        .serve_with_incoming_shutdown(Routes::from(router).prepare(), incoming, signal);
    info!(
        name = %config.name,
        member_id = format!("{:x}", node.identity().member_id),
        urls = ?config.listen_client_urls,
        version = env!("CARGO_PKG_VERSION"),
        runtime_workers = tokio::runtime::Handle::current().metrics().num_workers(),
        "ready to serve client requests"
    );
    for url in &config.advertise_client_urls {
        info!(
            "metrics at {}/metrics, health at {url}/health, JSON gateway at {url}/v3/",
            url.trim_end_matches('/')
        );
    }
    let grace = async {
        let _ = begun_rx.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = serve => served?,
        _ = grace => warn!("in-flight calls did not finish within {SHUTDOWN_GRACE:?}; stopping anyway"),
    }
    node.stop().await;
    let _ = expiry.await;
    Ok(())
}
