//! The ordered log as a user runs it: `cairn serve` holding topics and brokers in its KV store,
//! `cairn log broker` processes sharing the host's memory, the `cairn log` CLI, and the
//! library publisher/subscriber. Faults are real: SIGKILL of a broker mid-stream (the sequencer
//! fails over), then SIGKILL of every process and loss of the shared memory (ACK 2 restores).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use cairn_log::client::publisher::{Publisher, PublisherConfig};
use cairn_log::client::subscriber::{StartAt, Subscriber};
use cairn_log::control::Control;
use common::{free_port, Cairn};

/// Runs `cairn log <args>` to completion (on a blocking thread), feeding `stdin`.
async fn cli(args: Vec<String>, stdin: &str) -> Output {
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("log")
            .args(&args)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning cairn log");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(stdin.as_bytes())
            .expect("stdin");
        child.wait_with_output().expect("cairn log finishes")
    })
    .await
    .expect("cli thread")
}

/// `cli` that must succeed.
async fn cli_ok(list: &[&str], endpoint: &str, stdin: &str) -> Output {
    let out = cli(args(list, endpoint), stdin).await;
    assert!(out.status.success(), "{list:?}: {}", text(&out.stderr));
    out
}

fn args(list: &[&str], endpoint: &str) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.push(format!("--endpoints={endpoint}"));
    v
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_topic_publish_subscribe_through_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let log_listen = format!("--log-listen=127.0.0.1:{}", free_port());
    let shm = format!("--log-shm-dir={}", dir.path().join("shm").display());
    let cairn = Cairn::start(&[&log_listen, &shm]).await;
    let e = cairn.endpoint();

    tracing::info!("create a topic, publish stdin lines, read them back with positions");
    cli_ok(
        &["topic", "create", "events", "--order=5", "--payload-mib=8"],
        &e,
        "",
    )
    .await;
    let out = cli_ok(&["publish", "events"], &e, "alpha\nbeta\ngamma\n").await;
    assert!(
        text(&out.stderr).contains("published 3 messages"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(
        args(&["subscribe", "events", "--count", "3", "--positions"], &e),
        "",
    )
    .await;
    assert_eq!(text(&out.stdout), "0\talpha\n1\tbeta\n2\tgamma\n");
    let out = cli(
        args(&["subscribe", "events", "--from", "2", "--count", "1"], &e),
        "",
    )
    .await;
    assert_eq!(text(&out.stdout), "gamma\n");

    tracing::info!("a subscriber group resumes where it stopped");
    let resume = |count| {
        [
            "subscribe",
            "events",
            "--group",
            "audit",
            "--from",
            "resume",
            "--count",
            count,
        ]
    };
    let out = cli(args(&resume("2"), &e), "").await;
    assert_eq!(text(&out.stdout), "alpha\nbeta\n");
    let rest = resume("1");
    let out = cli(args(&rest, &e), "").await;
    assert_eq!(
        text(&out.stdout),
        "gamma\n",
        "{}",
        text(&out.stderr).lines().last().unwrap_or("")
    );
    tracing::info!("the embedded broker's counters are on the member's /metrics");
    if let Some(curl) = common::http::curl_tool() {
        let metrics = common::http::get(&curl, &format!("{e}/metrics")).await;
        let value = |name: &str| -> u64 {
            let line = metrics
                .body
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name}"));
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("a number")
        };
        // One batch of three framed messages: 3 x 4 length bytes + "alpha" "beta" "gamma".
        assert_eq!(value("cairn_log_received_bytes_total"), 26);
        assert_eq!(value("cairn_log_batches_received_total"), 1);
        assert_eq!(value("cairn_log_batches_ordered_total"), 1);
        assert!(
            value("cairn_log_delivered_bytes_total") >= 26,
            "the subscriptions above read it"
        );
        assert!(
            metrics.body.contains("etcd_server_has_leader 1"),
            "the member's own metrics stay"
        );
    }
    let out = cli(args(&["topic", "list"], &e), "").await;
    assert!(
        text(&out.stdout).contains("events\torder=5\tack=1"),
        "{}",
        text(&out.stdout)
    );

    tracing::info!("bad input gets a clear error and a failing exit status");
    for (argv, expected) in [
        (
            vec!["topic", "create", "x", "--order", "4"],
            "order level 4 is not supported",
        ),
        (
            vec!["topic", "create", "y", "--order", "0", "--ack", "2"],
            "ack level 2 needs a sequenced topic",
        ),
        (vec!["topic", "create", "events"], "already exists"),
        (vec!["topic", "create", "../etc"], "must be 1..="),
        (vec!["publish", "missing"], "unknown topic"),
        (
            vec!["subscribe", "events", "--from", "soon"],
            "expected earliest, latest, resume or a position",
        ),
        (
            vec!["subscribe", "events", "--from", "resume"],
            "--from resume needs --group",
        ),
    ] {
        let out = cli(args(&argv, &e), "").await;
        assert!(!out.status.success(), "{argv:?} succeeded");
        assert!(
            text(&out.stderr).contains(expected),
            "{argv:?}: {}",
            text(&out.stderr)
        );
    }
}

/// A `cairn log broker` process.
struct BrokerProcess {
    child: Option<Child>,
    address: String,
    args: Vec<String>,
}

impl BrokerProcess {
    fn start(id: u32, shm: &Path, data: &Path, endpoint: &str) -> BrokerProcess {
        let address = format!("127.0.0.1:{}", free_port());
        let args = vec![
            "log".into(),
            "broker".into(),
            format!("--id={id}"),
            format!("--shm={}", shm.display()),
            format!("--data-dir={}", data.display()),
            format!("--listen={address}"),
            format!("--endpoints={endpoint}"),
            "--lease-ttl=2".into(),
        ];
        let mut broker = BrokerProcess {
            child: None,
            address,
            args,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(&self.args)
            .env("CAIRN_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning cairn log broker");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until the control plane lists exactly `ids` as live brokers.
async fn wait_brokers(control: &Control, ids: &[u32]) -> Vec<(u32, String)> {
    for _ in 0..200 {
        let live = control.brokers().await.unwrap();
        if live.iter().map(|(id, _)| *id).collect::<Vec<_>>() == ids {
            return live;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("brokers {ids:?} never became the live set");
}

async fn wait_sequencer(control: &Control, topic: &str) -> u32 {
    for _ in 0..200 {
        if let Some(holder) = control.sequencer_holder(topic).await.unwrap() {
            return holder;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no broker took the sequencer role of {topic}");
}

async fn wait_listening(address: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{address} never listened");
}

async fn read_all(topic: &str, brokers: &[(u32, String)], count: usize) -> Vec<String> {
    let mut sub = Subscriber::connect(topic, brokers, 2, true, StartAt::Earliest)
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < count {
        let batch = tokio::time::timeout(Duration::from_secs(30), sub.next_batch())
            .await
            .unwrap_or_else(|_| panic!("subscriber stalled at {} of {count}", seen.len()))
            .unwrap();
        assert_eq!(
            batch.first_message,
            seen.len() as u64,
            "a gap or duplicate in positions"
        );
        seen.extend(
            batch
                .messages()
                .map(|m| String::from_utf8(m.to_vec()).unwrap()),
        );
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_processes_survive_sigkill_and_ack2_survives_losing_everything() {
    const MESSAGES: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let (shm, data) = (dir.path().join("shm"), dir.path().join("log-data"));
    let kv_dir: PathBuf = dir.path().join("kv");
    let mut cairn = Cairn::start_in(&kv_dir, &[]).await;
    let e = cairn.endpoint();
    let create = [
        "topic",
        "create",
        "ledger",
        "--order=5",
        "--ack=2",
        "--replication-factor=2",
    ];
    let sizes = ["--brokers=2", "--payload-mib=16", "--session-lease-ms=500"];
    cli_ok(&[&create[..], &sizes[..]].concat(), &e, "").await;
    let mut brokers = [
        BrokerProcess::start(0, &shm, &data, &e),
        BrokerProcess::start(1, &shm, &data, &e),
    ];
    let control = Control::connect(std::slice::from_ref(&e)).await.unwrap();
    wait_brokers(&control, &[0, 1]).await;
    let holder = wait_sequencer(&control, "ledger").await;
    let survivor = 1 - holder;

    tracing::info!(
        "one session publishes over both brokers; the sequencer's broker is SIGKILLed mid-stream"
    );
    let addresses = brokers.iter().map(|b| b.address.clone()).collect();
    let mut config = PublisherConfig::new("ledger", addresses);
    config.batch_bytes = 2048;
    let mut publisher = Publisher::connect(config).await.unwrap();
    for n in 0..MESSAGES {
        if n == MESSAGES / 3 {
            brokers[holder as usize].kill9();
        }
        tokio::time::timeout(
            Duration::from_secs(30),
            publisher.publish(format!("m-{n}").as_bytes()),
        )
        .await
        .expect("publish made progress")
        .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(30), publisher.flush())
        .await
        .expect("every batch acknowledged")
        .unwrap();
    assert!(
        publisher.resent_batches > 0,
        "the kill happened with batches in flight"
    );
    assert_eq!(
        control.sequencer_holder("ledger").await.unwrap(),
        Some(survivor),
        "the standby took over"
    );
    let expected: Vec<String> = (0..MESSAGES).map(|n| format!("m-{n}")).collect();

    tracing::info!("every acknowledged message once, in session order, via the surviving broker");
    let live = wait_brokers(&control, &[survivor]).await;
    assert_eq!(read_all("ledger", &live, MESSAGES).await, expected);

    tracing::info!(
        "SIGKILL every process and lose the shared memory; restart from the ACK 2 files"
    );
    brokers[survivor as usize].kill9();
    cairn.kill9();
    std::fs::remove_dir_all(&shm).unwrap();
    cairn.restart().await;
    brokers[survivor as usize].spawn();
    let live = wait_brokers(&control, &[survivor]).await;
    wait_listening(&live[0].1).await;
    assert_eq!(
        read_all("ledger", &live, MESSAGES).await,
        expected,
        "ACK 2 data came back whole"
    );
}
