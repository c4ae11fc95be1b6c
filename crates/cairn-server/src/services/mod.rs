//! The etcd gRPC services, one module each.

pub mod cluster;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;
