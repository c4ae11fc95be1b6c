//! `cairn cluster up`: a local cluster of real `cairn serve` processes for development.
//!
//! Member `i` (1-based) is named `m<i>`, keeps its data in `<data-dir>/m<i>` and its log in
//! `<data-dir>/m<i>.log`, and listens on client port `client_port + (i-1)*10000` and peer port
//! one above (etcd's Procfile layout: 2379/2380, 12379/12380, …); its native CURP-HO port is
//! the client port + 11 (2390, 12390, …). Ctrl-C or SIGTERM stops
//! every member with SIGTERM (each flushes and snapshots) and waits for them.
//!
//! The members share this host's cores, so each runs `cores / members` runtime workers (at
//! least one) through `CAIRN_WORKER_THREADS`, unless that variable is already set (they
//! inherit it) or `--worker-threads` is among the serve flags (a flag beats the variable).
//! Measured on 2 cores, 3 members and a load generator: the CURP-HO mix +24%, etcd API puts
//! unchanged (docs/perf/curp.md).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use crate::WORKER_THREADS_VAR;

/// Members a local cluster may have (ports must stay below 65536).
const MEMBERS_MAX: u32 = 5;

#[derive(Parser, Debug)]
pub struct ClusterUpArgs {
    /// Number of members (1 to 5; 3 or 5 for fault tolerance).
    #[arg(long, default_value_t = 3)]
    members: u32,
    /// Directory holding every member's data dir and log.
    #[arg(long, default_value = "cluster.cairn")]
    data_dir: PathBuf,
    /// Client port of the first member; member i adds (i-1)*10000, its peer port is one above.
    #[arg(long, default_value_t = 2379)]
    client_port: u16,
    /// Log filter passed to every member.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Extra flags for every `cairn serve` (e.g. `--snapshot-count=10000`).
    #[arg(last = true)]
    serve_args: Vec<String>,
}

/// Runtime workers for each of `members` processes on this host; `None` when the user chose
/// already (the members inherit the variable).
fn member_worker_threads(members: u32) -> Option<usize> {
    if std::env::var_os(WORKER_THREADS_VAR).is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    Some((cores / members as usize).max(1))
}

struct MemberProcess {
    name: String,
    client_url: String,
    child: Child,
}

pub async fn up(
    args: ClusterUpArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if args.members == 0 || args.members > MEMBERS_MAX {
        bail!("--members must be between 1 and {MEMBERS_MAX}");
    }
    let ports: Vec<(u16, u16)> = (0..args.members)
        .map(|i| {
            let client = u32::from(args.client_port) + i * 10_000;
            u16::try_from(client + 1).map(|peer| (peer - 1, peer))
        })
        .collect::<Result<_, _>>()
        .context("--client-port too high for this many members")?;
    let initial_cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{}=http://127.0.0.1:{peer}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let exe = std::env::current_exe().context("locating the cairn executable")?;
    let workers = member_worker_threads(args.members);
    let mut members = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let name = format!("m{}", i + 1);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log_path = args.data_dir.join(format!("{name}.log"));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(&exe);
        if let Some(workers) = workers {
            command.env(WORKER_THREADS_VAR, workers.to_string());
        }
        let child = command
            .arg("serve")
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(args.data_dir.join(&name))
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
            .args(["--initial-cluster", &initial_cluster])
            // The native port sits 11 above the client port: 2390, 12390, 22390, …
            .args([
                "--listen-native-addr",
                &format!("127.0.0.1:{}", client + 11),
            ])
            .args(["--log-level", &args.log_level])
            .args(&args.serve_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting member {name}"))?;
        members.push(MemberProcess {
            name,
            client_url,
            child,
        });
    }
    let started = wait_listening(&mut members).await;
    if let Err(error) = started {
        stop(&mut members);
        return Err(error);
    }
    let endpoints: Vec<&str> = members.iter().map(|m| m.client_url.as_str()).collect();
    println!(
        "cairn cluster of {} members is up (logs in {}):",
        members.len(),
        args.data_dir.display()
    );
    for member in &members {
        println!(
            "  {}  {}  pid {}",
            member.name,
            member.client_url,
            member.child.id()
        );
    }
    let native: Vec<String> = ports
        .iter()
        .map(|(client, _)| format!("127.0.0.1:{}", client + 11))
        .collect();
    println!(
        "try:\n  etcdctl --endpoints={} endpoint status -w table\n  cairn kv put k v --endpoints {}",
        endpoints.join(","),
        native.join(",")
    );
    println!("Ctrl-C stops every member.");
    tokio::select! {
        _ = shutdown => {}
        exited = watch_exits(&mut members) => {
            println!("member {exited} exited; stopping the others");
        }
    }
    stop(&mut members);
    Ok(())
}

/// Waits until every member accepts TCP connections on its client port.
async fn wait_listening(members: &mut [MemberProcess]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for member in members.iter_mut() {
        let addr = member.client_url.trim_start_matches("http://").to_string();
        loop {
            if let Some(status) = member.child.try_wait()? {
                bail!(
                    "member {} exited at start ({status}); see its log",
                    member.name
                );
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("member {} did not start listening within 30 s", member.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Resolves with the name of the first member that exits on its own.
async fn watch_exits(members: &mut [MemberProcess]) -> String {
    loop {
        for member in members.iter_mut() {
            if let Ok(Some(_)) = member.child.try_wait() {
                return member.name.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM to every member, then waits (SIGKILL after 20 s).
fn stop(members: &mut [MemberProcess]) {
    for member in members.iter() {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        unsafe {
            libc::kill(member.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for member in members.iter_mut() {
        loop {
            match member.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = member.child.kill();
                    let _ = member.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        println!("  {} stopped", member.name);
    }
}
