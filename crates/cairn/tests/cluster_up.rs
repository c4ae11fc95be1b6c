//! `cairn cluster up`, the README's one command for a local cluster: real member processes
//! that serve as one cluster, share the host's cores, and all stop on SIGTERM.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the cluster may take to elect a leader and answer through every member.
const UP_TIMEOUT: Duration = Duration::from_secs(30);

/// A first client port whose members' ports (client, peer, native; +10000 per member) are all
/// free.
fn free_base(members: u16) -> u16 {
    loop {
        let base = common::free_port();
        if base > 65_535 - 10_000 * members {
            continue;
        }
        let all_free = (0..members)
            .flat_map(|i| [0, 1, 11].map(|offset| base + i * 10_000 + offset))
            .all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return base;
        }
    }
}

/// The runtime workers member `name` reported in its log's "ready" line.
fn reported_workers(data_dir: &Path, name: &str) -> Option<usize> {
    let log = std::fs::read_to_string(data_dir.join(format!("{name}.log"))).ok()?;
    let ready = log
        .lines()
        .find(|line| line.contains("ready to serve client requests"))?;
    let value = ready.split("runtime_workers=").nth(1)?;
    value.split_whitespace().next()?.parse().ok()
}

/// A running `cairn cluster up`. If the test fails before stopping it, dropping it sends the
/// SIGTERM that stops its members too (a SIGKILL would leave them running).
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = common::terminate_child(&mut self.0, UP_TIMEOUT);
        }
    }
}

#[tokio::test]
async fn cluster_up_serves_one_cluster_and_stops_every_member_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base(3);
    let mut up = Up(Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["cluster", "up", "--members", "3", "--log-level", "info"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--client-port", &base.to_string()])
        .env_remove("CAIRN_WORKER_THREADS")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let endpoints: Vec<String> = (0..3)
        .map(|i| format!("http://127.0.0.1:{}", base + i * 10_000))
        .collect();

    // A write through the first member is read back, linearizably, through each of the
    // others.
    let deadline = Instant::now() + UP_TIMEOUT;
    let values = loop {
        assert!(
            up.0.try_wait().unwrap().is_none(),
            "cluster up exited early"
        );
        assert!(Instant::now() < deadline, "no answer through every member");
        let attempt = async {
            let mut first = etcd_client::Client::connect([&endpoints[0]], None).await?;
            first.put("up", "yes", None).await?;
            let mut values = Vec::new();
            for endpoint in &endpoints[1..] {
                let mut other = etcd_client::Client::connect([endpoint], None).await?;
                let got = other.get("up", None).await?;
                values.push(got.kvs().first().map(|kv| kv.value().to_vec()));
            }
            Ok::<_, etcd_client::Error>(values)
        };
        match attempt.await {
            Ok(values) => break values,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert_eq!(values, vec![Some(b"yes".to_vec()); 2]);

    // The members share the host: each runs cores / members runtime workers, at least one.
    // (Each logs it once it serves; a member answering is no proof its line is written yet.)
    let cores = std::thread::available_parallelism().unwrap().get();
    for name in ["m1", "m2", "m3"] {
        let workers = loop {
            match reported_workers(dir.path(), name) {
                Some(workers) => break workers,
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                None => panic!("{name} never logged that it serves"),
            }
        };
        assert_eq!(workers, (cores / 3).max(1), "{name}'s runtime workers");
    }

    // SIGTERM (what Ctrl-C's handler also gets) stops every member, then cluster up itself.
    let status = common::terminate_child(&mut up.0, UP_TIMEOUT).expect("cluster up did not stop");
    assert!(status.success(), "cluster up exited with {status}");
    for endpoint in &endpoints {
        let port = endpoint.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "{endpoint} still listening after cluster up stopped"
        );
    }
}
