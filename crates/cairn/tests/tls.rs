//! TLS on client and peer URLs with certificates made by the test (rcgen): every service works
//! through etcdctl and a TLS gRPC client when the client presents a certificate from the
//! trusted CA; clients without one, with one from another CA, or not trusting the server are
//! refused; a cluster replicates over TLS peer links that demand client certificates.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::RangeRequest;
use cairn_proto::v3lockpb::lock_client::LockClient;
use cairn_proto::v3lockpb::{LockRequest, UnlockRequest};
use common::{free_port, require_tool};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A CA and the files of certificates it signed, in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        let pki = Pki {
            dir: tempfile::tempdir().expect("temp dir"),
            ca,
            ca_key,
        };
        std::fs::write(pki.ca_file(), pki.ca.pem()).expect("CA file");
        pki
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a certificate for `name` valid for 127.0.0.1 and localhost, usable by servers
    /// and clients; returns (certificate file, key file).
    fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("signed certificate");
        let cert_file = self.dir.path().join(format!("{name}.pem"));
        let key_file = self.dir.path().join(format!("{name}-key.pem"));
        std::fs::write(&cert_file, cert.pem()).expect("cert file");
        std::fs::write(&key_file, key.serialize_pem()).expect("key file");
        (cert_file, key_file)
    }
}

/// A `cairn serve` started by hand (the shared harness speaks plain HTTP only).
struct Member {
    child: Child,
    _data: tempfile::TempDir,
}

impl Member {
    fn spawn(args: &[String]) -> Member {
        let data = tempfile::tempdir().expect("data dir");
        let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data.path())
            .args([
                "--log-level",
                "warn",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning cairn serve");
        Member { child, _data: data }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// etcdctl with TLS flags; returns (success, stdout + stderr).
fn etcdctl_tls(tool: &Path, endpoint: &str, tls: &[String], args: &[&str]) -> (bool, String) {
    let output = Command::new(tool)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=2s")
        .args(tls)
        .args(args)
        .output()
        .expect("etcdctl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn flag(name: &str, path: &Path) -> String {
    format!("--{name}={}", path.display())
}

async fn tls_channel(endpoint: &str, ca: &Path, identity: (&Path, &Path)) -> Channel {
    let read = |path: &Path| std::fs::read(path).expect("PEM file");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)))
        .identity(Identity::from_pem(read(identity.0), read(identity.1)));
    Channel::from_shared(endpoint.to_string())
        .expect("url")
        .tls_config(tls)
        .expect("TLS config")
        .connect()
        .await
        .expect("TLS connection")
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_serves_every_service_to_trusted_clients_only() {
    let Some(tool) = require_tool("etcdctl") else {
        return;
    };
    let pki = Pki::new("cairn test CA");
    let (server_cert, server_key) = pki.issue("server");
    let (client_cert, client_key) = pki.issue("client");
    let stranger = Pki::new("another CA");
    let (stranger_cert, stranger_key) = stranger.issue("stranger");
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{}", free_port());
    let _member = Member::spawn(&[
        format!("--listen-client-urls={url}"),
        format!("--advertise-client-urls={url}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=default={peer}"),
        flag("cert-file", &server_cert),
        flag("key-file", &server_key),
        flag("trusted-ca-file", &pki.ca_file()),
        "--client-cert-auth".into(),
        "--bcrypt-cost=4".into(),
    ]);
    let trusted = vec![
        flag("cacert", &pki.ca_file()),
        flag("cert", &client_cert),
        flag("key", &client_key),
    ];
    let run = |args: &[&str]| etcdctl_tls(&tool, &url, &trusted, args);
    wait_for("the TLS endpoint", || run(&["endpoint", "health"]).0);

    // KV, Watch (history replay), Lease, Cluster, Maintenance, Auth through etcdctl.
    let (ok, out) = run(&["put", "greeting", "hello"]);
    assert!(ok && out.trim() == "OK", "{out}");
    let (ok, out) = run(&["get", "greeting", "--print-value-only"]);
    assert!(ok && out.trim() == "hello", "{out}");
    let watch = Command::new("timeout")
        .args(["3", tool.to_str().expect("UTF-8 path")])
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(&trusted)
        .args(["watch", "greeting", "--rev=1"])
        .output()
        .expect("etcdctl watch runs");
    let events = String::from_utf8_lossy(&watch.stdout);
    assert!(
        events.contains("PUT\ngreeting\nhello"),
        "watch over TLS: {events}"
    );
    let (ok, out) = run(&["lease", "grant", "60"]);
    assert!(ok && out.contains("granted with TTL(60s)"), "{out}");
    let (ok, out) = run(&["member", "list"]);
    assert!(ok && out.contains(&url), "{out}");
    let (ok, out) = run(&["endpoint", "status"]);
    assert!(ok && out.contains("3.5"), "{out}");
    let snapshot = pki.dir.path().join("snap.db");
    let (ok, out) = run(&["snapshot", "save", snapshot.to_str().expect("UTF-8 path")]);
    assert!(
        ok && snapshot.metadata().is_ok_and(|m| m.len() > 0),
        "{out}"
    );
    let (ok, out) = run(&["user", "add", "ops:secret"]);
    assert!(ok && out.contains("User ops created"), "{out}");

    // The Lock service through a TLS gRPC client.
    let channel = tls_channel(&url, &pki.ca_file(), (&client_cert, &client_key)).await;
    let mut lock = LockClient::new(channel.clone());
    let held = lock
        .lock(LockRequest {
            name: b"tls-lock".to_vec(),
            lease: 0,
        })
        .await
        .expect("lock over TLS")
        .into_inner();
    lock.unlock(UnlockRequest { key: held.key })
        .await
        .expect("unlock over TLS");
    let range = KvClient::new(channel)
        .range(RangeRequest {
            key: b"greeting".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range over TLS")
        .into_inner();
    assert_eq!(range.kvs[0].value, b"hello");

    // Refused: no client certificate, a certificate from another CA, a client that does not
    // trust the server's CA, and plain HTTP on the TLS port.
    let refusals: [(&str, Vec<String>); 3] = [
        (
            "no client certificate",
            vec![flag("cacert", &pki.ca_file())],
        ),
        (
            "a certificate from another CA",
            vec![
                flag("cacert", &pki.ca_file()),
                flag("cert", &stranger_cert),
                flag("key", &stranger_key),
            ],
        ),
        (
            "a client that does not trust the server",
            vec![
                flag("cacert", &stranger.ca_file()),
                flag("cert", &client_cert),
                flag("key", &client_key),
            ],
        ),
    ];
    for (what, flags) in refusals {
        let (ok, out) = etcdctl_tls(&tool, &url, &flags, &["get", "greeting"]);
        assert!(!ok && !out.contains("hello"), "{what} was served: {out}");
    }
    let plain = format!("http://127.0.0.1:{port}");
    let (ok, out) = etcdctl_tls(&tool, &plain, &[], &["get", "greeting"]);
    assert!(
        !ok && !out.contains("hello"),
        "plain HTTP was served: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_replicates_over_tls_peer_links() {
    let Some(tool) = require_tool("etcdctl") else {
        return;
    };
    let pki = Pki::new("cairn peer CA");
    let names = ["p0", "p1", "p2"];
    let clients: Vec<String> = names
        .iter()
        .map(|_| format!("http://127.0.0.1:{}", free_port()))
        .collect();
    let peers: Vec<String> = names
        .iter()
        .map(|_| format!("https://127.0.0.1:{}", free_port()))
        .collect();
    let initial = names
        .iter()
        .zip(&peers)
        .map(|(name, url)| format!("{name}={url}"))
        .collect::<Vec<_>>()
        .join(",");
    let members: Vec<Member> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (cert, key) = pki.issue(name);
            Member::spawn(&[
                format!("--name={name}"),
                format!("--listen-client-urls={}", clients[i]),
                format!("--advertise-client-urls={}", clients[i]),
                format!("--listen-peer-urls={}", peers[i]),
                format!("--initial-advertise-peer-urls={}", peers[i]),
                format!("--initial-cluster={initial}"),
                flag("peer-cert-file", &cert),
                flag("peer-key-file", &key),
                flag("peer-trusted-ca-file", &pki.ca_file()),
                "--peer-client-cert-auth".into(),
            ])
        })
        .collect();
    let run = |member: usize, args: &[&str]| etcdctl_tls(&tool, &clients[member], &[], args);
    wait_for("a write through member 0", || {
        run(0, &["put", "k", "over-tls"]).0
    });
    for member in 0..members.len() {
        wait_for("the write on every member", || {
            let (ok, out) = run(
                member,
                &["get", "k", "--print-value-only", "--consistency=s"],
            );
            ok && out.trim() == "over-tls"
        });
    }
    let (ok, out) = run(2, &["member", "list"]);
    assert!(ok && peers.iter().all(|peer| out.contains(peer)), "{out}");
}
