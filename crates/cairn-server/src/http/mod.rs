//! The HTTP/1.1 side of the client port (etcd serves it on the same URLs as gRPC): the JSON
//! gateway, `/health`, `/version` and `/metrics`.
//!
//! Layout: `gateway` — etcd's `/v3/...` JSON routes; this file — the router and the three
//! plain endpoints.

pub mod gateway;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::{AlarmType, RangeRequest};
use serde::{Deserialize, Serialize};

use crate::metrics::grpc::GrpcMetrics;
use crate::node::Node;
use crate::services::kv::KvService;
use crate::services::maintenance::{ETCD_CLUSTER_VERSION, ETCD_VERSION};

#[derive(Clone)]
struct Endpoints {
    node: Node,
    kv: Arc<KvService>,
    grpc: Arc<GrpcMetrics>,
}

/// Every HTTP route of the client port.
pub fn routes(node: &Node, grpc: Arc<GrpcMetrics>) -> Router {
    let endpoints = Endpoints {
        node: node.clone(),
        kv: Arc::new(KvService::new(node.clone())),
        grpc,
    };
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(endpoints)
        .merge(gateway::routes(node))
}

/// etcd's `/version` body.
#[derive(Serialize)]
struct Version {
    etcdserver: &'static str,
    etcdcluster: &'static str,
}

async fn version() -> Response {
    axum::Json(Version {
        etcdserver: ETCD_VERSION,
        etcdcluster: ETCD_CLUSTER_VERSION,
    })
    .into_response()
}

async fn metrics(State(endpoints): State<Endpoints>) -> Response {
    let text = crate::metrics::render(&endpoints.node, &endpoints.grpc);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// etcd's `/health` body: `health` is the string "true" or "false".
#[derive(Serialize)]
struct Health {
    health: &'static str,
    reason: String,
}

#[derive(Deserialize)]
struct HealthQuery {
    /// `?serializable=true`: answer from this member without a leader (no ReadIndex).
    #[serde(default)]
    serializable: bool,
    /// `?exclude=NOSPACE`: an alarm that does not make the member unhealthy.
    #[serde(default)]
    exclude: Option<String>,
}

/// etcd 3.5's `/health`: unhealthy with an active alarm (unless excluded), without a leader
/// (unless serializable), or when a one-key range (linearizable unless serializable) fails;
/// 503 when unhealthy.
async fn health(State(endpoints): State<Endpoints>, Query(query): Query<HealthQuery>) -> Response {
    let reason = unhealthy_reason(&endpoints, &query).await;
    let (status, health) = match reason.is_empty() {
        true => (StatusCode::OK, "true"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "false"),
    };
    (status, axum::Json(Health { health, reason })).into_response()
}

async fn unhealthy_reason(endpoints: &Endpoints, query: &HealthQuery) -> String {
    let alarms = endpoints.node.store().alarms();
    for (_member, alarm) in alarms {
        let name = AlarmType::try_from(alarm).map_or("UNKNOWN", |alarm| alarm.as_str_name());
        if query.exclude.as_deref() == Some(name) {
            continue;
        }
        return match AlarmType::try_from(alarm) {
            Ok(AlarmType::Nospace) => "ALARM NOSPACE",
            Ok(AlarmType::Corrupt) => "ALARM CORRUPT",
            _ => "ALARM UNKNOWN",
        }
        .to_string();
    }
    if !query.serializable && endpoints.node.status().leader.is_none() {
        return "RAFT NO LEADER".to_string();
    }
    let probe = RangeRequest {
        key: b"health".to_vec(),
        keys_only: true,
        limit: 1,
        serializable: query.serializable,
        ..Default::default()
    };
    match endpoints.kv.range(tonic::Request::new(probe)).await {
        Ok(_) => String::new(),
        Err(status) => format!("RANGE ERROR:{}", status.message()),
    }
}
