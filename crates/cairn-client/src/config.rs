//! How a session runs.

use std::time::Duration;

/// A session's settings. `endpoints` are the replicas' native addresses (`host:port`).
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub endpoints: Vec<String>,
    /// Index into `endpoints` of the replica that answers weak operations.
    pub bound: usize,
    /// An unfinished command is resent to every replica this often.
    pub retry: Duration,
    /// An operation gives up after this long.
    pub timeout: Duration,
    /// Emulated one-way delay on the link to every replica but the bound one, both directions
    /// (benchmarks of wide-area setups on one host: the client sits next to its bound
    /// replica). Messages stay in order.
    pub delay: Duration,
}

impl SessionConfig {
    pub fn new(endpoints: Vec<String>) -> SessionConfig {
        SessionConfig {
            endpoints,
            bound: 0,
            retry: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            delay: Duration::ZERO,
        }
    }
}
