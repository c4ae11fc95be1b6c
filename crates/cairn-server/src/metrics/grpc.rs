//! `grpc_server_started_total` / `grpc_server_handled_total` (go-grpc-prometheus' names, as
//! etcd exposes them) and the gRPC byte counters, recorded by a tower layer around the whole
//! client router.
//!
//! Hot path: per request one binary search over the static method table, a relaxed atomic add
//! when the call starts and one when it ends, one per body frame for bytes. Counters are
//! pre-registered (method × code), so there is no map and no lock. HTTP/1 requests (the JSON
//! gateway, `/metrics`) pass through untracked.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;

/// Every gRPC method Cairn's client port knows, sorted by (service, method) for the binary
/// search: service, method, go-grpc-prometheus `grpc_type`.
pub const METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "AuthStatus", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Downgrade", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("v3electionpb.Election", "Campaign", "unary"),
    ("v3electionpb.Election", "Leader", "unary"),
    ("v3electionpb.Election", "Observe", "server_stream"),
    ("v3electionpb.Election", "Proclaim", "unary"),
    ("v3electionpb.Election", "Resign", "unary"),
    ("v3lockpb.Lock", "Lock", "unary"),
    ("v3lockpb.Lock", "Unlock", "unary"),
];

/// gRPC status codes 0..=16, in order (the `grpc_code` label).
pub const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The counters; one per server.
#[derive(Debug)]
pub struct GrpcMetrics {
    started: Box<[AtomicU64]>,
    /// `METHODS.len() × CODES.len()`, row-major by method.
    handled: Box<[AtomicU64]>,
    received_bytes: AtomicU64,
    sent_bytes: AtomicU64,
}

impl Default for GrpcMetrics {
    fn default() -> GrpcMetrics {
        let counters = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        GrpcMetrics {
            started: counters(METHODS.len()),
            handled: counters(METHODS.len() * CODES.len()),
            received_bytes: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
        }
    }
}

impl GrpcMetrics {
    /// Calls started, per method index.
    pub fn started(&self, method: usize) -> u64 {
        self.started[method].load(Ordering::Relaxed)
    }

    /// Calls finished with `code`, per method index.
    pub fn handled(&self, method: usize, code: usize) -> u64 {
        self.handled[method * CODES.len() + code].load(Ordering::Relaxed)
    }

    /// gRPC request bytes received (message frames, 5-byte prefixes included).
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes.load(Ordering::Relaxed)
    }

    /// gRPC response bytes sent (message frames, 5-byte prefixes included).
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes.load(Ordering::Relaxed)
    }

    fn record_handled(&self, method: usize, code: i32) {
        let code = usize::try_from(code)
            .ok()
            .filter(|code| *code < CODES.len())
            .unwrap_or(Code::Unknown as usize);
        self.handled[method * CODES.len() + code].fetch_add(1, Ordering::Relaxed);
    }
}

/// The index of `path` (`/package.Service/Method`) in [`METHODS`].
pub fn method_index(path: &str) -> Option<usize> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    METHODS
        .binary_search_by(|(s, m, _)| (*s, *m).cmp(&(service, method)))
        .ok()
}

/// The layer given to tonic's server.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<GrpcMetrics>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<GrpcMetrics>) -> GrpcMetricsLayer {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> GrpcMetricsService<S> {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcMetricsService<S>
where
    S: Service<http::Request<CountedBody<ReqBody>>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let is_grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
        let method = is_grpc
            .then(|| method_index(request.uri().path()))
            .flatten();
        let tracked = method.map(|method| {
            self.metrics.started[method].fetch_add(1, Ordering::Relaxed);
            (self.metrics.clone(), method)
        });
        let request = request.map(|body| CountedBody {
            inner: body,
            track: tracked.clone().map(|(metrics, method)| Track {
                metrics,
                method,
                direction: Direction::Received,
            }),
        });
        ResponseFuture {
            inner: self.inner.call(request),
            tracked,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        tracked: Option<(Arc<GrpcMetrics>, usize)>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<CountedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.inner.poll(cx) {
            Poll::Ready(Ok(response)) => response,
            Poll::Ready(Err(error)) => {
                if let Some((metrics, method)) = this.tracked.take() {
                    metrics.record_handled(method, Code::Internal as i32);
                }
                return Poll::Ready(Err(error));
            }
            Poll::Pending => return Poll::Pending,
        };
        let mut track = this.tracked.take().map(|(metrics, method)| Track {
            metrics,
            method,
            direction: Direction::Sent { handled: false },
        });
        // A trailers-only response (an error before any message) carries its status here.
        if let (Some(track), Some(code)) = (track.as_mut(), grpc_status(response.headers())) {
            track.handled(code);
        }
        Poll::Ready(Ok(response.map(|body| CountedBody { inner: body, track })))
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

enum Direction {
    Received,
    /// `handled`: the call's code has been recorded.
    Sent {
        handled: bool,
    },
}

struct Track {
    metrics: Arc<GrpcMetrics>,
    method: usize,
    direction: Direction,
}

impl Track {
    fn handled(&mut self, code: i32) {
        if let Direction::Sent { handled } = &mut self.direction {
            if !*handled {
                *handled = true;
                self.metrics.record_handled(self.method, code);
            }
        }
    }
}

impl Drop for Track {
    /// A response body dropped before its trailers: the client went away.
    fn drop(&mut self) {
        self.handled(Code::Cancelled as i32);
    }
}

pin_project_lite::pin_project! {
    /// A request or response body that counts its bytes and, for responses, records the
    /// call's status from the trailers.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        track: Option<Track>,
    }
}

impl<B: Body<Data = Bytes>> Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Some(track), Poll::Ready(Some(Ok(frame)))) = (this.track.as_mut(), &polled) {
            if let Some(data) = frame.data_ref() {
                let bytes = data.len() as u64;
                let counter = match track.direction {
                    Direction::Received => &track.metrics.received_bytes,
                    Direction::Sent { .. } => &track.metrics.sent_bytes,
                };
                counter.fetch_add(bytes, Ordering::Relaxed);
            } else if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                track.handled(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_table_is_sorted_and_found() {
        assert!(METHODS
            .windows(2)
            .all(|pair| (pair[0].0, pair[0].1) < (pair[1].0, pair[1].1)));
        let put = method_index("/etcdserverpb.KV/Put").unwrap();
        assert_eq!(METHODS[put].1, "Put");
        assert_eq!(method_index("/etcdserverpb.KV/Nope"), None);
        assert_eq!(method_index("/v3/kv/put"), None);
        assert_eq!(CODES[Code::Unauthenticated as usize], "Unauthenticated");
    }
}
