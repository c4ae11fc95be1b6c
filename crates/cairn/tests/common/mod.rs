//! The end-to-end harness: real `cairn serve` and Debian `etcd` processes on loopback ports,
//! driven by the real `etcd-client` crate, raw gRPC and the `etcdctl` binary.
//!
//! Tools the suites need (`etcd`, `etcdctl`) are looked up on PATH. When one is missing the
//! test fails under `CI=true`, and is skipped with a loud message elsewhere.

#![allow(dead_code)] // each test binary uses its own subset of the harness

pub mod cluster;
pub mod http;
pub mod workload;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::StatusRequest;
use tonic::transport::Channel;

/// How long a process may take to answer its first Status.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A loopback port that was free a moment ago, taken below the kernel's ephemeral range
/// (32768+): a port from `bind(:0)` can be handed out again as the source port of some other
/// test's outgoing connection before our server binds it ("Address already in use" in CI).
/// Ports are walked from a per-process start so tests of one binary never pick the same one.
pub fn free_port() -> u16 {
    free_port_on(std::net::Ipv4Addr::LOCALHOST)
}

/// `free_port` on a given loopback address (cluster members listen on 127.0.0.x).
pub fn free_port_on(ip: std::net::Ipv4Addr) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % SPAN) as u16;
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
        assert!(n < 10 * SPAN, "no free port in {FIRST}..{}", FIRST + SPAN);
    }
}

/// Path of a required external tool, or `None` (after a message) when it may be skipped.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").map_or(true, |ci| ci != "true"),
            "{name} is required under CI=true (Debian packages: etcd-server, etcd-client, curl)"
        );
        eprintln!("SKIPPED: {name} not on PATH (Debian packages: etcd-server, etcd-client, curl)");
    }
    found
}

/// A `cairn serve` process.
pub struct Cairn {
    child: Option<Child>,
    pub port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    extra_args: Vec<String>,
    _owned_dir: Option<tempfile::TempDir>,
}

impl Cairn {
    /// Starts a member on a fresh data dir.
    pub async fn start(extra_args: &[&str]) -> Cairn {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let mut cairn = Cairn::start_in(&data_dir, extra_args).await;
        cairn._owned_dir = Some(dir);
        cairn
    }

    /// Starts a member on `data_dir` (kept after the test).
    pub async fn start_in(data_dir: &Path, extra_args: &[&str]) -> Cairn {
        let mut cairn = Cairn {
            child: None,
            port: free_port(),
            peer_port: free_port(),
            data_dir: data_dir.to_path_buf(),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            _owned_dir: None,
        };
        cairn.spawn();
        cairn.wait_ready().await;
        cairn
    }

    fn spawn(&mut self) {
        let url = format!("http://127.0.0.1:{}", self.port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("default={peer_url}"),
            ])
            .args(["--log-level", "warn"])
            .args(log_broker_off(&self.extra_args))
            .args(native_listener_off(&self.extra_args))
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning cairn serve");
        self.child = Some(child);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub async fn wait_ready(&mut self) {
        wait_ready(&self.endpoint(), self.child.as_mut().expect("started")).await;
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        terminate_child(&mut child, Duration::from_secs(15)).is_some_and(|s| s.success())
    }

    /// Starts again on the same port and data dir.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running member");
        self.spawn();
        self.wait_ready().await;
    }

    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None)
            .await
            .expect("etcd-client connects")
    }

    pub async fn kv(&self) -> KvClient<Channel> {
        KvClient::new(channel(&self.endpoint()).await)
    }
}

impl Drop for Cairn {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `--log-listen=` (no embedded log broker) unless the test configures one: parallel tests
/// would race for its default port.
pub fn log_broker_off(extra_args: &[String]) -> Option<&'static str> {
    (!extra_args.iter().any(|a| a.starts_with("--log-listen"))).then_some("--log-listen=")
}

/// `--listen-native-addr=` (no native CURP-HO listener) unless the test configures one, for
/// the same reason.
pub fn native_listener_off(extra_args: &[String]) -> Option<&'static str> {
    (!extra_args
        .iter()
        .any(|a| a.starts_with("--listen-native-addr")))
    .then_some("--listen-native-addr=")
}

/// A Debian `etcd` process: the differential oracle and the benchmark peer.
pub struct Etcd {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts a single-member etcd, or returns `None` if etcd is not installed (outside CI).
    pub async fn start() -> Option<Etcd> {
        let binary = require_tool("etcd")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let peer_port = free_port();
        let client_url = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut child = Command::new(binary)
            .args(["--name", "oracle", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("oracle={peer_url}")])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning etcd");
        wait_ready(&client_url, &mut child).await;
        Some(Etcd {
            child,
            port,
            _dir: dir,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn kv(&self) -> KvClient<Channel> {
        KvClient::new(channel(&self.endpoint()).await)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_string())
        .expect("valid endpoint")
        .connect()
        .await
        .expect("gRPC connects")
}

async fn wait_ready(endpoint: &str, child: &mut Child) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{endpoint}: process exited before it was ready: {status}");
        }
        if let Ok(channel) = Channel::from_shared(endpoint.to_string())
            .expect("url")
            .connect()
            .await
        {
            if MaintenanceClient::new(channel)
                .status(StatusRequest {})
                .await
                .is_ok()
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{endpoint}: not ready after {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// SIGTERM to `child`, then its exit status once it exits within `timeout`; `None` if it did
/// not (it is then killed).
pub fn terminate_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    signal(child, "TERM");
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status();
    assert!(
        status.is_ok_and(|status| status.success()),
        "kill -{name} failed"
    );
}

/// An `etcdctl` command (API v3) against `endpoint`, arguments still to add.
pub fn etcdctl_command(etcdctl: &Path, endpoint: &str) -> Command {
    let mut command = Command::new(etcdctl);
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"));
    command
}

/// Runs `etcdctl` (API v3) against `endpoint` with `args`, feeding `stdin`.
pub fn etcdctl(etcdctl: &Path, endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = etcdctl_command(etcdctl, endpoint)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning etcdctl");
    let mut input = child.stdin.take().expect("piped stdin");
    if let Some(text) = stdin {
        input
            .write_all(text.as_bytes())
            .expect("writing etcdctl stdin");
    }
    drop(input);
    child.wait_with_output().expect("etcdctl runs")
}

/// `etcdctl` stdout as text, asserting it succeeded.
pub fn etcdctl_ok(tool: &Path, endpoint: &str, args: &[&str], stdin: Option<&str>) -> String {
    let output = etcdctl(tool, endpoint, args, stdin);
    assert!(
        output.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("etcdctl prints UTF-8")
}

/// Polls `condition` every 20 ms until it holds, failing after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw KV client to a cluster member.
pub async fn cluster_kv(endpoint: &str) -> KvClient<Channel> {
    KvClient::new(channel(endpoint).await)
}
