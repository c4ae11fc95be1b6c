//! The etcd gRPC services, one module each.
//!
//! Every RPC first resolves its caller from the request's token (`Node::caller`); writes carry
//! the caller into the log, where the state machine checks its permissions; reads check them
//! here, after the read index, against the auth state they read at.

/// The apply result of a proposal whose kind is known from the request.
macro_rules! expect_response {
    ($result:expr, $variant:ident) => {
        match $result {
            cairn_mvcc::ApplyResponse::$variant(response) => response,
            other => unreachable!("{} answered with {other:?}", stringify!($variant)),
        }
    };
}

/// Proposes `$request` of `$caller` through `$node` and answers the RPC with its `$variant`
/// response, the header completed with this member's ids: the whole body of most writing RPCs.
macro_rules! propose_reply {
    ($node:expr, $caller:expr, $request:expr, $variant:ident) => {{
        let result = $node.propose(&$caller, $request).await?;
        let mut response = expect_response!(result, $variant);
        $node.fill_header(&mut response.header);
        Ok(Response::new(response))
    }};
}

pub mod auth;
pub mod cluster;
mod concurrency;
pub mod election;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod watch;
