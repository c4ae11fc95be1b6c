//! Node configuration, named after etcd's flags so that an etcd command line carries over.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use cairn_mvcc::limits::{
    QUOTA_BACKEND_BYTES_DEFAULT, REQUEST_BYTES_MAX_DEFAULT, TXN_OPS_MAX_DEFAULT,
};

use crate::auth::password::{BCRYPT_COST_DEFAULT, BCRYPT_COST_MAX, BCRYPT_COST_MIN};
use crate::error::StartError;
use crate::tls::TlsFiles;

/// `--initial-cluster-state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// Everything `cairn serve` is told.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    /// `name=peer-url,…`; a single-node Cairn accepts only itself here.
    pub initial_cluster: String,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    pub quota_backend_bytes: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// Applied entries between two snapshots (etcd's `--snapshot-count`).
    pub snapshot_count: u64,
    /// Period of progress notifications for watchers that asked for them.
    pub watch_progress_notify_interval: Duration,
    /// Leader heartbeat period in ms (etcd's `--heartbeat-interval`).
    pub heartbeat_interval_ms: u64,
    /// Follower wait before campaigning, in ms (etcd's `--election-timeout`).
    pub election_timeout_ms: u64,
    /// Token kind and options (etcd's `--auth-token`): `simple` or `jwt,…`.
    pub auth_token: String,
    /// Seconds an unused simple token stays valid (etcd's `--auth-token-ttl`).
    pub auth_token_ttl_s: u64,
    /// Cost of password hashing (etcd's `--bcrypt-cost`).
    pub bcrypt_cost: u32,
    /// Certificates for `https://` client URLs (`--cert-file`, `--key-file`, …).
    pub client_tls: TlsFiles,
    /// Certificates for `https://` peer URLs (`--peer-cert-file`, …).
    pub peer_tls: TlsFiles,
    /// Emulated one-way delay added to every peer message and answer (benchmarks of
    /// wide-area clusters on one host); zero in production.
    pub peer_delay: Duration,
    /// More Prometheus text appended to `/metrics` by what the binary runs beside the server
    /// (the embedded log broker's counters).
    pub extra_metrics: Option<fn(&mut String)>,
    /// Address of the native CURP-HO listener (`host:port`); empty disables it.
    pub listen_native_addr: String,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            name: "default".into(),
            data_dir: PathBuf::from("default.cairn"),
            listen_client_urls: vec!["http://127.0.0.1:2379".into()],
            advertise_client_urls: vec!["http://127.0.0.1:2379".into()],
            listen_peer_urls: vec!["http://127.0.0.1:2380".into()],
            initial_advertise_peer_urls: vec!["http://127.0.0.1:2380".into()],
            initial_cluster: "default=http://127.0.0.1:2380".into(),
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "cairn-cluster".into(),
            quota_backend_bytes: QUOTA_BACKEND_BYTES_DEFAULT,
            max_request_bytes: REQUEST_BYTES_MAX_DEFAULT,
            max_txn_ops: TXN_OPS_MAX_DEFAULT,
            snapshot_count: 100_000,
            watch_progress_notify_interval: Duration::from_secs(600),
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            listen_native_addr: "127.0.0.1:2390".into(),
            auth_token: "simple".into(),
            auth_token_ttl_s: 300,
            bcrypt_cost: BCRYPT_COST_DEFAULT,
            client_tls: TlsFiles::default(),
            peer_tls: TlsFiles::default(),
            peer_delay: Duration::ZERO,
            extra_metrics: None,
        }
    }
}

impl ServerConfig {
    /// Checks what can be checked before touching the disk or the network.
    pub fn validate(&self) -> Result<(), StartError> {
        let members = parse_initial_cluster(&self.initial_cluster)?;
        let own: Vec<_> = members
            .iter()
            .filter(|(name, _)| *name == self.name)
            .collect();
        if own.is_empty() {
            return Err(StartError::Config(format!(
                "--initial-cluster has no entry for --name {:?}",
                self.name
            )));
        }
        if self.heartbeat_interval_ms == 0
            || self.election_timeout_ms < 5 * self.heartbeat_interval_ms
        {
            return Err(StartError::Config(
                "--election-timeout must be at least 5 times --heartbeat-interval (etcd's rule)"
                    .into(),
            ));
        }
        if self.listen_client_urls.is_empty() {
            return Err(StartError::Config("--listen-client-urls is empty".into()));
        }
        for url in self.listen_client_urls.iter().chain(&self.listen_peer_urls) {
            socket_addr(url)?;
        }
        if self.max_txn_ops == 0 || self.max_request_bytes == 0 || self.snapshot_count == 0 {
            return Err(StartError::Config(
                "--max-txn-ops, --max-request-bytes and --snapshot-count must be positive".into(),
            ));
        }
        if !(BCRYPT_COST_MIN..=BCRYPT_COST_MAX).contains(&self.bcrypt_cost) {
            return Err(StartError::Config(format!(
                "--bcrypt-cost must be between {BCRYPT_COST_MIN} and {BCRYPT_COST_MAX}"
            )));
        }
        let https = |urls: &[String]| urls.iter().any(|url| is_https(url));
        self.client_tls
            .validate(https(&self.listen_client_urls), "")?;
        self.peer_tls
            .validate(https(&self.listen_peer_urls), "peer-")?;
        if self.auth_token_ttl_s == 0 {
            return Err(StartError::Config(
                "--auth-token-ttl must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// `500ms`, `10s`, `10m` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(number.saturating_mul(3600))),
        _ => Err(format!(
            "unknown unit {unit:?} in {text:?} (use ms, s, m or h)"
        )),
    }
}

/// `name=url,name=url` into pairs.
pub fn parse_initial_cluster(value: &str) -> Result<Vec<(String, String)>, StartError> {
    value
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (name, url) = part.split_once('=').ok_or_else(|| {
                StartError::Config(format!("--initial-cluster entry {part:?} is not name=url"))
            })?;
            Ok((name.trim().to_string(), url.trim().to_string()))
        })
        .collect()
}

/// Whether `url` asks for TLS.
pub fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// The socket address of an `http://host:port` or `https://host:port` URL.
pub fn socket_addr(url: &str) -> Result<SocketAddr, StartError> {
    let bad = |why: &str| StartError::Config(format!("URL {url:?}: {why}"));
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", rest)) => rest,
        Some((scheme, _)) => return Err(bad(&format!("unknown scheme {scheme:?}"))),
        None => return Err(bad("expected http://host:port")),
    };
    let host_port = rest.trim_end_matches('/');
    let mut addrs = host_port
        .to_socket_addrs()
        .map_err(|error| bad(&error.to_string()))?;
    addrs.next().ok_or_else(|| bad("resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_cluster_lists_parse_like_etcd() {
        assert_eq!(
            socket_addr("http://127.0.0.1:2379").unwrap(),
            "127.0.0.1:2379".parse().unwrap()
        );
        assert_eq!(
            socket_addr("https://127.0.0.1:2379").unwrap(),
            "127.0.0.1:2379".parse().unwrap()
        );
        assert!(socket_addr("unix:///tmp/sock").is_err());
        assert!(socket_addr("127.0.0.1:2379").is_err());
        assert!(socket_addr("http://127.0.0.1").is_err());
        let members = parse_initial_cluster("a=http://x:1, b=http://y:2").unwrap();
        assert_eq!(
            members,
            vec![
                ("a".into(), "http://x:1".into()),
                ("b".into(), "http://y:2".into())
            ]
        );
        assert!(parse_initial_cluster("nameonly").is_err());
    }

    #[test]
    fn default_config_is_valid_and_others_are_refused() {
        ServerConfig::default().validate().unwrap();
        let two = ServerConfig {
            initial_cluster: "default=http://127.0.0.1:2380,b=http://127.0.0.1:2390".into(),
            ..ServerConfig::default()
        };
        two.validate().unwrap();
        let hasty = ServerConfig {
            election_timeout_ms: 300,
            ..ServerConfig::default()
        };
        assert!(hasty.validate().is_err());
        let stranger = ServerConfig {
            name: "other".into(),
            ..ServerConfig::default()
        };
        assert!(stranger.validate().is_err());
    }
}
