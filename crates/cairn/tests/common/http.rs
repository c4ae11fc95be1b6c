//! `curl` against a member's client port (HTTP/1.1: the JSON gateway, `/health`, `/metrics`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::require_tool;

/// The `curl` binary, or `None` when it may be skipped (outside CI).
pub fn curl_tool() -> Option<PathBuf> {
    require_tool("curl")
}

/// An HTTP answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }
}

/// `curl` with `args`, returning the status and body (HTTP/1.1, no retries). Async: a test's
/// runtime may be running the cluster's peer proxies meanwhile.
pub async fn curl(curl: &Path, args: &[&str]) -> Answer {
    let output = tokio::process::Command::new(curl)
        .args([
            "-sS",
            "--http1.1",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("curl prints UTF-8");
    let (body, status) = text.rsplit_once('\n').expect("status line");
    Answer {
        status: status.parse().expect("numeric status"),
        body: body.to_string(),
    }
}

/// `POST url` with a JSON body.
pub async fn post(tool: &Path, url: &str, body: &serde_json::Value) -> Answer {
    curl(tool, &["-X", "POST", url, "-d", &body.to_string()]).await
}

/// `GET url`.
pub async fn get(tool: &Path, url: &str) -> Answer {
    curl(tool, &[url]).await
}

/// A `curl -N` streaming a POST response to its stdout (read it line by line).
pub fn post_streaming(tool: &Path, url: &str, body: &serde_json::Value) -> Child {
    Command::new(tool)
        .args([
            "-sS",
            "-N",
            "--http1.1",
            "-X",
            "POST",
            url,
            "-d",
            &body.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning curl")
}

/// Standard base64 (what the gateway carries bytes as).
pub fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, byte)| n | (*byte as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64.
pub fn unb64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {text}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|c| *c != b'=').map(value).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (*d as u32) << (18 - 6 * i));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
