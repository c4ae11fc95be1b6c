//! etcd's JSON gateway (grpc-gateway in etcd 3.5): `POST /v3/...` with a JSON request body,
//! JSON response, protobuf's JSON mapping with the `.proto` field names (int64 as strings,
//! bytes as base64, zero values omitted; see `cairn-proto`).
//!
//! Each route calls the gRPC service implementation in process, with the decoded request in a
//! `tonic::Request` and the `Authorization` header as the `token` metadata, so validation,
//! limits and auth live in the services only. Errors come back as grpc-gateway writes them:
//! `{"error": msg, "code": grpc code, "message": msg}` with the HTTP status mapped from the
//! code. Streams (`/v3/watch`, `/v3/lease/keepalive`) answer with newline-delimited
//! `{"result": …}` objects.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::{BufMut, Bytes, BytesMut};
use cairn_proto::etcdserverpb::auth_server::Auth;
use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::lease_server::Lease;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, WatchRequest, WatchResponse,
};
use futures::{Stream, StreamExt};
use http_body::Frame;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use tonic::codec::Codec;
use tonic::{Code, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::limits::GRPC_OVERHEAD_BYTES;
use crate::node::Node;
use crate::services::auth::AuthService;
use crate::services::cluster::ClusterService;
use crate::services::kv::KvService;
use crate::services::lease::LeaseService;
use crate::services::maintenance::MaintenanceService;
use crate::services::watch::WatchService;

/// A route calling a unary method of a tonic service implementation: `unary_route!(service,
/// method)` with `service: Arc<impl Trait>` and the service trait in scope.
macro_rules! unary_route {
    ($service:expr, $method:ident) => {{
        let service = $service.clone();
        post(move |headers: HeaderMap, body: Bytes| {
            let service = service.clone();
            async move { unary_call(&headers, &body, |request| service.$method(request)).await }
        })
    }};
}

/// A route calling a bidirectional-streaming method: the body holds the request messages
/// (concatenated JSON objects); `hold_open`: keep the inbound stream open until the client
/// goes away (Watch, as etcd keeps a watch after the client half-closes), else close it after
/// the body (LeaseKeepAlive answers and ends).
macro_rules! stream_route {
    ($service:expr, $method:ident, $request:ty, $response:ty, hold_open: $hold:expr) => {{
        let service = $service.clone();
        post(move |headers: HeaderMap, body: Bytes| {
            let service = service.clone();
            async move {
                let (inbound, closed) = match inbound::<$request, $response>(&body, $hold) {
                    Ok(inbound) => inbound,
                    Err(status) => return error_response(&status),
                };
                match service.$method(grpc_request(&headers, inbound)).await {
                    Ok(response) => stream_response(response.into_inner(), closed),
                    Err(status) => error_response(&status),
                }
            }
        })
    }};
}

/// The gateway routes of etcd 3.5 (paths from its `rpc.proto` `google.api.http` options).
pub fn routes(node: &Node) -> Router {
    let kv = Arc::new(KvService::new(node.clone()));
    let watch = Arc::new(WatchService::new(node.clone()));
    let lease = Arc::new(LeaseService::new(node.clone()));
    let cluster = Arc::new(ClusterService::new(node.clone()));
    let maintenance = Arc::new(MaintenanceService::new(node.clone()));
    let keepalive = stream_route!(lease, lease_keep_alive, LeaseKeepAliveRequest,
        LeaseKeepAliveResponse, hold_open: false);
    let time_to_live = unary_route!(lease, lease_time_to_live);
    let revoke = unary_route!(lease, lease_revoke);
    let leases = unary_route!(lease, lease_leases);
    Router::new()
        .route("/v3/kv/range", unary_route!(kv, range))
        .route("/v3/kv/put", unary_route!(kv, put))
        .route("/v3/kv/deleterange", unary_route!(kv, delete_range))
        .route("/v3/kv/txn", unary_route!(kv, txn))
        .route("/v3/kv/compaction", unary_route!(kv, compact))
        .route(
            "/v3/watch",
            stream_route!(watch, watch, WatchRequest, WatchResponse, hold_open: true),
        )
        .route("/v3/lease/grant", unary_route!(lease, lease_grant))
        .route("/v3/lease/revoke", revoke.clone())
        .route("/v3/kv/lease/revoke", revoke)
        .route("/v3/lease/keepalive", keepalive)
        .route("/v3/lease/timetolive", time_to_live.clone())
        .route("/v3/kv/lease/timetolive", time_to_live)
        .route("/v3/lease/leases", leases.clone())
        .route("/v3/kv/lease/leases", leases)
        .route("/v3/cluster/member/add", unary_route!(cluster, member_add))
        .route(
            "/v3/cluster/member/remove",
            unary_route!(cluster, member_remove),
        )
        .route(
            "/v3/cluster/member/update",
            unary_route!(cluster, member_update),
        )
        .route(
            "/v3/cluster/member/list",
            unary_route!(cluster, member_list),
        )
        .route(
            "/v3/cluster/member/promote",
            unary_route!(cluster, member_promote),
        )
        .route("/v3/maintenance/alarm", unary_route!(maintenance, alarm))
        .route("/v3/maintenance/status", unary_route!(maintenance, status))
        .route(
            "/v3/maintenance/defragment",
            unary_route!(maintenance, defragment),
        )
        .route("/v3/maintenance/hash", unary_route!(maintenance, hash_kv))
        .route(
            "/v3/maintenance/transfer-leadership",
            unary_route!(maintenance, move_leader),
        )
        .merge(auth_routes(node))
        // Room for the largest request the gRPC side takes, in base64 JSON, so that too large
        // a request gets etcd's "request is too large" rather than a transport refusal.
        .layer(DefaultBodyLimit::max(body_bytes_max(node)))
}

fn body_bytes_max(node: &Node) -> usize {
    let message_bytes_max = node.config().max_request_bytes + GRPC_OVERHEAD_BYTES;
    message_bytes_max / 3 * 4 + JSON_OVERHEAD_BYTES
}

/// JSON room beyond the base64 of the message: field names, quoting, whitespace.
const JSON_OVERHEAD_BYTES: usize = 64 * 1024;

/// The `/v3/auth/*` routes, paths as etcd 3.5's `rpc.proto` names them.
fn auth_routes(node: &Node) -> Router {
    let auth = Arc::new(AuthService::new(node.clone()));
    Router::new()
        .route("/v3/auth/enable", unary_route!(auth, auth_enable))
        .route("/v3/auth/disable", unary_route!(auth, auth_disable))
        .route("/v3/auth/status", unary_route!(auth, auth_status))
        .route("/v3/auth/authenticate", unary_route!(auth, authenticate))
        .route("/v3/auth/user/add", unary_route!(auth, user_add))
        .route("/v3/auth/user/get", unary_route!(auth, user_get))
        .route("/v3/auth/user/list", unary_route!(auth, user_list))
        .route("/v3/auth/user/delete", unary_route!(auth, user_delete))
        .route(
            "/v3/auth/user/changepw",
            unary_route!(auth, user_change_password),
        )
        .route("/v3/auth/user/grant", unary_route!(auth, user_grant_role))
        .route("/v3/auth/user/revoke", unary_route!(auth, user_revoke_role))
        .route("/v3/auth/role/add", unary_route!(auth, role_add))
        .route("/v3/auth/role/get", unary_route!(auth, role_get))
        .route("/v3/auth/role/list", unary_route!(auth, role_list))
        .route("/v3/auth/role/delete", unary_route!(auth, role_delete))
        .route(
            "/v3/auth/role/grant",
            unary_route!(auth, role_grant_permission),
        )
        .route(
            "/v3/auth/role/revoke",
            unary_route!(auth, role_revoke_permission),
        )
}

/// A unary call: decode, call, encode.
async fn unary_call<Req, Resp, F, Fut>(headers: &HeaderMap, body: &[u8], call: F) -> Response
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let request = match decode::<Req>(body) {
        Ok(request) => request,
        Err(status) => return error_response(&status),
    };
    match call(grpc_request(headers, request)).await {
        Ok(response) => json_response(StatusCode::OK, &response.into_inner()),
        Err(status) => error_response(&status),
    }
}

/// A request body as a message; an empty body is the default message (grpc-gateway accepts
/// EOF).
fn decode<Req: DeserializeOwned + Default>(body: &[u8]) -> Result<Req, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Req::default());
    }
    serde_json::from_slice(body).map_err(|error| Status::invalid_argument(error.to_string()))
}

/// Wraps `message` as a gRPC request, the `Authorization` header as the `token` metadata
/// (etcd's gateway forwards it; etcd's auth reads `token` or `authorization`).
fn grpc_request<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
    {
        request.metadata_mut().insert("token", token);
    }
    request
}

fn json_response<T: Serialize>(status: StatusCode, message: &T) -> Response {
    match serde_json::to_vec(message) {
        Ok(body) => (status, [(header::CONTENT_TYPE, JSON)], body).into_response(),
        Err(error) => error_response(&Status::internal(error.to_string())),
    }
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

#[derive(Serialize)]
struct StreamResult<'a, T> {
    result: &'a T,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: i32,
    message: &'a str,
}

/// grpc-gateway's error body and status for a failed unary call.
pub(crate) fn error_response(status: &Status) -> Response {
    let body = ErrorBody {
        error: status.message(),
        code: status.code() as i32,
        message: status.message(),
    };
    json_response(http_status(status.code()), &body)
}

/// grpc-gateway's `HTTPStatusFromCode`.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The request messages of a streaming call as a gRPC request stream. With `hold_open` the
/// stream stays open until the returned sender is dropped (with the response).
fn inbound<Req, Resp>(
    body: &[u8],
    hold_open: bool,
) -> Result<(Streaming<Req>, oneshot::Sender<()>), Status>
where
    Req: DeserializeOwned + prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    let mut framed = BytesMut::new();
    for message in serde_json::Deserializer::from_slice(body).into_iter::<Req>() {
        let message = message.map_err(|error| Status::invalid_argument(error.to_string()))?;
        framed.put_u8(0);
        framed.put_u32(message.encoded_len() as u32);
        message
            .encode(&mut framed)
            .expect("BytesMut grows as needed");
    }
    let (closed, until_closed) = oneshot::channel::<()>();
    let first =
        futures::stream::once(async move { Ok::<_, Infallible>(Frame::data(framed.freeze())) });
    let rest = futures::stream::once(async move {
        if hold_open {
            let _ = until_closed.await;
        }
        Ok(Frame::data(Bytes::new()))
    })
    .filter(|_| async { false });
    let body = http_body_util::StreamBody::new(first.chain(rest));
    let decoder = ProstCodec::<Resp, Req>::default().decoder();
    Ok((Streaming::new_request(decoder, body, None, None), closed))
}

/// A stream of results as newline-delimited `{"result": …}` objects; an error ends it with
/// grpc-gateway's stream error object. `closed` is dropped with the body.
fn stream_response<S, T>(responses: S, closed: oneshot::Sender<()>) -> Response
where
    S: Stream<Item = Result<T, Status>> + Send + 'static,
    T: Serialize,
{
    let lines = responses.map(move |item| {
        let _hold = &closed;
        let mut line = match item {
            Ok(message) => serde_json::to_vec(&StreamResult { result: &message }),
            Err(status) => serde_json::to_vec(&serde_json::json!({ "error": {
                "grpc_code": status.code() as i32,
                "http_code": http_status(status.code()).as_u16(),
                "message": status.message(),
                "http_status": http_status(status.code()).canonical_reason().unwrap_or(""),
            }})),
        }
        .unwrap_or_default();
        line.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    ([(header::CONTENT_TYPE, JSON)], Body::from_stream(lines)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::etcdserverpb::RangeRequest;

    #[test]
    fn the_authorization_header_becomes_the_token_metadata() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("abc.def"));
        let request = grpc_request(&headers, ());
        assert_eq!(request.metadata().get("token").unwrap(), "abc.def");
        assert!(grpc_request(&HeaderMap::new(), ())
            .metadata()
            .get("token")
            .is_none());
    }

    #[test]
    fn bodies_decode_with_either_field_name_and_empty_means_default() {
        let request: RangeRequest =
            decode(br#"{"key":"Zm9v","rangeEnd":"Zm9w","limit":"2"}"#).expect("decodes");
        assert_eq!(
            (request.key, request.range_end, request.limit),
            (b"foo".to_vec(), b"fop".to_vec(), 2)
        );
        assert_eq!(
            decode::<RangeRequest>(b" \n").unwrap(),
            RangeRequest::default()
        );
        let error = decode::<RangeRequest>(b"{").unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
    }

    #[test]
    fn grpc_codes_map_to_grpc_gateways_http_statuses() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
