//! The side-by-side peer of `cairn bench log`: NATS JetStream with acked publishes, driven by a
//! minimal NATS client written here on tokio, so no client library's batching or buffering sits
//! between the two figures being compared.
//!
//! This module owns the subset of the NATS text protocol a run needs, JetStream's stream
//! requests, the pipelined publisher, and [`NatsServer`], a throwaway `nats-server -js` child
//! process for runs and tests. It must not report a figure whose acks it has not checked: a run
//! fails unless every publish was acked exactly once and the stream seqs are exactly 1..=N.
//!
//! Wire format (every line ends in `\r\n`; the server's verbs are case-insensitive):
//! - client → server: `CONNECT {"verbose":false,"pedantic":false,"headers":false}`, `PING`,
//!   `PONG`, `SUB <subject> <sid>`, `PUB <subject> <reply> <len>` + `<payload>\r\n`.
//! - server → client: `INFO {json}`, `MSG <subject> <sid> [reply] <len>` + `<payload>\r\n`,
//!   `PING`, `PONG`, `+OK`, `-ERR '<text>'`.
//!
//! JetStream is plain request/reply on top: `$JS.API.STREAM.CREATE.<name>` (and `.INFO.`,
//! `.DELETE.`) answer a JSON document that carries `"error":{"code","description"}` on failure;
//! a publish to a subject the stream covers is answered with a PubAck `{"stream":..,"seq":N}` on
//! its reply subject. Replies are matched by subject: publish `n` of a connection carries reply
//! `<inbox>.<n>`, request `k` carries `<inbox>.r<k>`, and one wildcard `SUB <inbox>.*` receives
//! both.
//!
//! Hot path (`NatsConnection::publish_acked`): one write per window refill and one read per
//! batch of acks; no per-publish flush, syscall, lock or task.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest control line accepted from the server. INFO carries a JSON document that grows with a
/// cluster's URLs, so this is well above nats-server's 4 KiB `max_control_line` for clients.
const CONTROL_LINE_BYTES_MAX: usize = 64 << 10;
/// Largest MSG payload accepted: nats-server's own ceiling for `max_payload`.
const PAYLOAD_BYTES_MAX: usize = 64 << 20;
/// How long any expected reply (INFO, PONG, API response, the next ack) may take before the run
/// fails instead of hanging.
const REPLY_WAIT_MS_MAX: u64 = 10_000;
/// How long a spawned nats-server may take to accept connections.
const SERVER_START_MS_MAX: u64 = 10_000;
/// Most publishes in flight per connection; bounds the in-flight table and the write buffer.
const WINDOW_MAX: usize = 1 << 16;
/// Bytes asked of each socket read.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Ack latency histogram range in microseconds: 1 µs .. 60 s.
const ACK_LATENCY_US_MAX: u64 = 60_000_000;
const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false}\r\n";

/// JetStream storage of the benchmark stream.
#[derive(ValueEnum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// Acked once written to the store's files. nats-server does not fsync before acking (its
    /// file store syncs on a timer), so compare it with the log's ack level, not its fsync level.
    File,
    Memory,
}

impl Storage {
    fn as_str(self) -> &'static str {
        match self {
            Storage::File => "file",
            Storage::Memory => "memory",
        }
    }
}

/// One JetStream run: `total_bytes` of `message_size` publishes over `connections` connections.
#[derive(Debug, Clone)]
pub struct NatsArgs {
    /// `host:port` of the NATS server.
    pub url: String,
    pub message_size: usize,
    /// Rounded up to whole messages.
    pub total_bytes: u64,
    /// Most unacked publishes in flight per connection.
    pub window: usize,
    pub storage: Storage,
    pub connections: usize,
}

/// What a run measured. Throughput is payload bytes over first publish → last ack.
#[derive(Debug, Clone, Serialize)]
pub struct NatsResult {
    pub messages: u64,
    pub bytes: u64,
    pub duration_s: f64,
    pub publish_gbps: f64,
    /// Publish → PubAck latency (p50, p99).
    pub ack_latency_ms: (f64, f64),
}

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The socket failed or the server closed it.
    #[error("NATS connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent something this client cannot parse, `-ERR`, or an ack it never asked for.
    #[error("NATS protocol: {0}")]
    Protocol(String),
    /// A JetStream API reply (or PubAck) carried `"error"`.
    #[error("JetStream API error {code} ({err_code}): {description}")]
    JetStream {
        code: u16,
        err_code: u16,
        description: String,
    },
    /// No expected reply within `REPLY_WAIT_MS_MAX`.
    #[error("NATS server sent no {waiting_for} within {waited_ms} ms")]
    Timeout {
        waiting_for: &'static str,
        waited_ms: u64,
    },
    /// The arguments describe no run (zero sizes, window too large, payload over the limit).
    #[error("invalid NATS run: {0}")]
    Args(String),
    /// `nats-server` could not be started or exited before accepting connections.
    #[error("cannot start nats-server: {0} (install Debian's nats-server package)")]
    ServerStart(String),
}

fn protocol(text: impl Into<String>) -> NatsError {
    NatsError::Protocol(text.into())
}

/// Runs the JetStream peer: creates a fresh stream, publishes over `connections` pipelined
/// connections, checks the acks, deletes the stream and reports.
pub async fn run_jetstream(args: &NatsArgs) -> Result<NatsResult, NatsError> {
    validate(args)?;
    let mut admin = NatsConnection::connect(&args.url).await?;
    if args.message_size > admin.max_payload {
        return Err(NatsError::Args(format!(
            "message size {} is over the server's max_payload {}",
            args.message_size, admin.max_payload
        )));
    }
    // A fresh name per run: seqs start at 1 and runs against a shared server never collide.
    let tag = format!("{:016x}", rand::random::<u64>());
    let stream = format!("CAIRN_BENCH_{tag}");
    let subject = format!("cairn.bench.{tag}");
    admin.create_stream(&stream, &subject, args.storage).await?;
    let published = publish_all(args, &subject).await;
    let stored = admin.stream_message_count(&stream).await;
    // Delete even after a failed run, so a shared server is left as it was found; the run's own
    // error, if any, is the one reported.
    let deleted = admin.delete_stream(&stream).await;
    let result = summarize(args, &published?)?;
    let stored = stored?;
    if stored != result.messages {
        return Err(protocol(format!(
            "stream holds {stored} messages after {} acked publishes",
            result.messages
        )));
    }
    deleted?;
    Ok(result)
}

fn validate(args: &NatsArgs) -> Result<(), NatsError> {
    if args.message_size == 0 || args.total_bytes == 0 || args.connections == 0 {
        return Err(NatsError::Args(
            "message size, total bytes and connections must be at least 1".into(),
        ));
    }
    if args.window == 0 || args.window > WINDOW_MAX {
        return Err(NatsError::Args(format!(
            "window {} is outside 1..={WINDOW_MAX}",
            args.window
        )));
    }
    Ok(())
}

/// Publishes the whole run, one task per connection; each connection's share differs by at most
/// one message.
async fn publish_all(args: &NatsArgs, subject: &str) -> Result<Vec<PublishRun>, NatsError> {
    let count = args.total_bytes.div_ceil(args.message_size as u64);
    let payload: Arc<[u8]> = vec![b'x'; args.message_size].into();
    let per_connection = count / args.connections as u64;
    // Connect every publisher first, so no connection's setup overlaps another's publishes.
    let mut publishers = Vec::with_capacity(args.connections);
    for position in 0..args.connections as u64 {
        let share = per_connection + u64::from(position < count % args.connections as u64);
        if share > 0 {
            publishers.push((NatsConnection::connect(&args.url).await?, share));
        }
    }
    let mut tasks = Vec::with_capacity(publishers.len());
    for (mut connection, share) in publishers {
        let (subject, payload, window) = (subject.to_string(), payload.clone(), args.window);
        tasks.push(tokio::spawn(async move {
            connection
                .publish_acked(&subject, &payload, share, window)
                .await
        }));
    }
    let mut runs = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(run) => runs.push(run?),
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => return Err(protocol(format!("publisher task ended: {join}"))),
        }
    }
    Ok(runs)
}

/// Checks the acks of every connection and folds them into one result.
fn summarize(args: &NatsArgs, runs: &[PublishRun]) -> Result<NatsResult, NatsError> {
    let mut seqs = Vec::new();
    let mut latencies = ack_latency_histogram();
    for run in runs {
        check_acked_once(run)?;
        seqs.extend(run.acks.iter().map(|ack| ack.seq));
        latencies
            .add(&run.ack_latency_us)
            .expect("histograms share their bounds");
    }
    seqs.sort_unstable();
    if !seqs.iter().copied().eq(1..=seqs.len() as u64) {
        return Err(protocol(format!(
            "stream seqs of {} acks are not exactly 1..={0}",
            seqs.len()
        )));
    }
    let first_publish = runs.iter().map(|run| run.first_publish).min();
    let last_ack = runs.iter().map(|run| run.last_ack).max();
    let elapsed = match (first_publish, last_ack) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    let messages = seqs.len() as u64;
    let bytes = messages * args.message_size as u64;
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let millis_at = |quantile| latencies.value_at_quantile(quantile) as f64 / 1000.0;
    Ok(NatsResult {
        messages,
        bytes,
        duration_s: seconds,
        publish_gbps: bytes as f64 / seconds / 1e9,
        ack_latency_ms: (millis_at(0.5), millis_at(0.99)),
    })
}

/// Every publish of `run` acked exactly once.
fn check_acked_once(run: &PublishRun) -> Result<(), NatsError> {
    let mut acked = vec![false; run.acks.len()];
    for ack in &run.acks {
        match acked.get_mut(ack.publish as usize) {
            Some(seen) if !*seen => *seen = true,
            _ => {
                return Err(protocol(format!(
                    "publish {} acked twice or out of range",
                    ack.publish
                )))
            }
        }
    }
    Ok(())
}

fn ack_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, ACK_LATENCY_US_MAX, 3).expect("static bounds are valid")
}

/// One PubAck as received: publish `publish` of its connection was stored as stream seq `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub publish: u64,
    pub seq: u64,
}

/// What one connection's `publish_acked` saw.
#[derive(Debug)]
pub struct PublishRun {
    /// Every ack in arrival order, a duplicate included (a correct server sends none).
    pub acks: Vec<Ack>,
    /// Publish → first ack, in microseconds.
    pub ack_latency_us: Histogram<u64>,
    pub first_publish: Instant,
    pub last_ack: Instant,
}

/// The sans-IO part of the publisher: which publish may go out next and which are in flight.
struct Pipeline {
    count: u64,
    window: usize,
    next: u64,
    /// Publish number → when it was buffered. A map, not a ring: acks may arrive in any order.
    in_flight: HashMap<u64, Instant>,
    acked: u64,
    run: PublishRun,
}

impl Pipeline {
    fn new(count: u64, window: usize, now: Instant) -> Pipeline {
        assert!(window > 0, "a pipeline with window 0 never publishes");
        Pipeline {
            count,
            window,
            next: 0,
            in_flight: HashMap::with_capacity(window),
            acked: 0,
            run: PublishRun {
                acks: Vec::with_capacity(count as usize),
                ack_latency_us: ack_latency_histogram(),
                first_publish: now,
                last_ack: now,
            },
        }
    }

    /// The next publish to send, if the window and the count allow one.
    fn next_to_send(&mut self, now: Instant) -> Option<u64> {
        if self.in_flight.len() >= self.window || self.next >= self.count {
            return None;
        }
        let publish = self.next;
        self.next += 1;
        self.in_flight.insert(publish, now);
        Some(publish)
    }

    fn on_ack(&mut self, publish: u64, seq: u64, now: Instant) -> Result<(), NatsError> {
        if publish >= self.next {
            return Err(protocol(format!("ack for publish {publish}, never sent")));
        }
        if let Some(sent) = self.in_flight.remove(&publish) {
            self.acked += 1;
            let micros = (now - sent).as_micros() as u64;
            self.run
                .ack_latency_us
                .record(micros.clamp(1, ACK_LATENCY_US_MAX))
                .expect("clamped into the histogram's range");
            self.run.last_ack = now;
        }
        self.run.acks.push(Ack { publish, seq });
        Ok(())
    }

    fn done(&self) -> bool {
        self.acked == self.count
    }
}

/// One server frame, owned: acks are small, and owning them lets the caller answer a PING while
/// handling the frame.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    Info(String),
    Msg { subject: String, payload: Vec<u8> },
    Ping,
    Pong,
    Ok,
    Err(String),
}

/// Parses the frame at the front of `buffer`: `Ok(None)` while it is incomplete, else the frame
/// and how many bytes it took.
fn parse_frame(buffer: &[u8]) -> Result<Option<(Frame, usize)>, NatsError> {
    let Some(newline) = buffer.iter().position(|&byte| byte == b'\n') else {
        if buffer.len() > CONTROL_LINE_BYTES_MAX {
            return Err(protocol("control line too long"));
        }
        return Ok(None);
    };
    if newline == 0 || buffer[newline - 1] != b'\r' || newline > CONTROL_LINE_BYTES_MAX {
        return Err(protocol("control line without CRLF or too long"));
    }
    let line = std::str::from_utf8(&buffer[..newline - 1])
        .map_err(|_| protocol("control line is not UTF-8"))?;
    let after_line = newline + 1;
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let frame = match verb.to_ascii_uppercase().as_str() {
        "MSG" => return parse_msg(rest, &buffer[after_line..], after_line),
        "INFO" => Frame::Info(rest.to_string()),
        "PING" => Frame::Ping,
        "PONG" => Frame::Pong,
        "+OK" => Frame::Ok,
        "-ERR" => Frame::Err(rest.trim().trim_matches('\'').to_string()),
        _ => return Err(protocol(format!("unknown frame {line:?}"))),
    };
    Ok(Some((frame, after_line)))
}

/// `MSG <subject> <sid> [reply] <len>` whose payload starts at `body`.
fn parse_msg(
    args: &str,
    body: &[u8],
    line_bytes: usize,
) -> Result<Option<(Frame, usize)>, NatsError> {
    let fields: Vec<&str> = args.split_ascii_whitespace().collect();
    let (subject, len) = match fields.as_slice() {
        [subject, _sid, len] | [subject, _sid, _, len] => (*subject, *len),
        _ => return Err(protocol(format!("malformed MSG {args:?}"))),
    };
    let len: usize = len
        .parse()
        .map_err(|_| protocol(format!("bad MSG length {len:?}")))?;
    if len > PAYLOAD_BYTES_MAX {
        return Err(protocol(format!("MSG payload of {len} bytes")));
    }
    if body.len() < len + 2 {
        return Ok(None);
    }
    if &body[len..len + 2] != b"\r\n" {
        return Err(protocol("MSG payload not followed by CRLF"));
    }
    let frame = Frame::Msg {
        subject: subject.to_string(),
        payload: body[..len].to_vec(),
    };
    Ok(Some((frame, line_bytes + len + 2)))
}

/// Appends `PUB <subject> <reply> <len>\r\n<payload>\r\n`.
fn encode_pub(out: &mut Vec<u8>, subject: &str, reply: std::fmt::Arguments, payload: &[u8]) {
    write!(out, "PUB {subject} {reply} {}\r\n", payload.len()).expect("writing to a Vec");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// What this client reads from INFO.
#[derive(Deserialize)]
struct ServerInfo {
    #[serde(default)]
    jetstream: bool,
    #[serde(default = "default_max_payload")]
    max_payload: usize,
}

fn default_max_payload() -> usize {
    1 << 20
}

/// A JetStream API reply or PubAck; only the fields this client reads.
#[derive(Deserialize)]
struct ApiReply {
    error: Option<ApiError>,
    seq: Option<u64>,
    state: Option<StreamState>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    err_code: u16,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct StreamState {
    messages: u64,
}

fn parse_api_reply(payload: &[u8]) -> Result<ApiReply, NatsError> {
    let reply: ApiReply = serde_json::from_slice(payload).map_err(|error| {
        protocol(format!(
            "bad JetStream reply {:?}: {error}",
            String::from_utf8_lossy(payload)
        ))
    })?;
    match reply.error {
        Some(ApiError {
            code,
            err_code,
            description,
        }) => Err(NatsError::JetStream {
            code,
            err_code,
            description,
        }),
        None => Ok(reply),
    }
}

/// One client connection with its own reply inbox.
pub struct NatsConnection {
    stream: TcpStream,
    /// Bytes read and not yet parsed: `read_buffer[read_start..]`.
    read_buffer: Vec<u8>,
    read_start: usize,
    /// Commands not yet written; a whole window refill goes out in one write.
    write_buffer: Vec<u8>,
    inbox: String,
    requests: u64,
    max_payload: usize,
}

impl NatsConnection {
    /// Connects to `url` (`host:port`), checks INFO announces JetStream, subscribes the inbox and
    /// waits for the PONG that confirms both CONNECT and SUB were accepted.
    pub async fn connect(url: &str) -> Result<NatsConnection, NatsError> {
        let stream = within("connection", TcpStream::connect(url)).await??;
        stream.set_nodelay(true)?;
        let mut connection = NatsConnection {
            stream,
            read_buffer: Vec::with_capacity(READ_CHUNK_BYTES),
            read_start: 0,
            write_buffer: Vec::new(),
            inbox: format!("_INBOX.{:016x}", rand::random::<u64>()),
            requests: 0,
            max_payload: default_max_payload(),
        };
        let info = match connection.read_frame("INFO").await? {
            Frame::Info(json) => json,
            other => return Err(protocol(format!("expected INFO, got {other:?}"))),
        };
        let info: ServerInfo =
            serde_json::from_str(&info).map_err(|error| protocol(format!("bad INFO: {error}")))?;
        if !info.jetstream {
            return Err(protocol(format!(
                "{url} has no JetStream (start nats-server -js)"
            )));
        }
        connection.max_payload = info.max_payload;
        connection.write_buffer.extend_from_slice(CONNECT);
        let subscribe = format!("SUB {}.* 1\r\nPING\r\n", connection.inbox);
        connection
            .write_buffer
            .extend_from_slice(subscribe.as_bytes());
        connection.flush().await?;
        connection.wait_pong().await?;
        Ok(connection)
    }

    /// Creates stream `name` over `subject`: limits retention, unbounded, one replica.
    pub async fn create_stream(
        &mut self,
        name: &str,
        subject: &str,
        storage: Storage,
    ) -> Result<(), NatsError> {
        let config = serde_json::json!({
            "name": name,
            "subjects": [subject],
            "storage": storage.as_str(),
            "retention": "limits",
            "max_bytes": -1,
            "discard": "old",
            "num_replicas": 1,
        });
        self.api_request(
            &format!("$JS.API.STREAM.CREATE.{name}"),
            &config.to_string(),
        )
        .await
        .map(drop)
    }

    /// Messages stream `name` holds, as the server reports them.
    pub async fn stream_message_count(&mut self, name: &str) -> Result<u64, NatsError> {
        let reply = self
            .api_request(&format!("$JS.API.STREAM.INFO.{name}"), "")
            .await?;
        match reply.state {
            Some(state) => Ok(state.messages),
            None => Err(protocol("stream info without state")),
        }
    }

    pub async fn delete_stream(&mut self, name: &str) -> Result<(), NatsError> {
        self.api_request(&format!("$JS.API.STREAM.DELETE.{name}"), "")
            .await
            .map(drop)
    }

    /// Publishes `count` copies of `payload` to `subject` with at most `window` unacked, and
    /// returns once every publish has been acked.
    pub async fn publish_acked(
        &mut self,
        subject: &str,
        payload: &[u8],
        count: u64,
        window: usize,
    ) -> Result<PublishRun, NatsError> {
        if window == 0 || window > WINDOW_MAX {
            return Err(NatsError::Args(format!(
                "window {window} is outside 1..={WINDOW_MAX}"
            )));
        }
        let mut pipeline = Pipeline::new(count, window, Instant::now());
        while !pipeline.done() {
            let now = Instant::now();
            while let Some(publish) = pipeline.next_to_send(now) {
                let reply = format_args!("{}.{publish}", self.inbox);
                encode_pub(&mut self.write_buffer, subject, reply, payload);
            }
            self.flush().await?;
            // Block for one frame, then take every frame that arrived with it before refilling:
            // one read serves a batch of acks.
            let frame = self.read_frame("PubAck").await?;
            self.on_publish_frame(frame, &mut pipeline)?;
            while let Some(frame) = self.buffered_frame()? {
                self.on_publish_frame(frame, &mut pipeline)?;
            }
        }
        Ok(pipeline.run)
    }

    fn on_publish_frame(&mut self, frame: Frame, pipeline: &mut Pipeline) -> Result<(), NatsError> {
        match frame {
            Frame::Msg { subject, payload } => {
                let publish = subject
                    .strip_prefix(self.inbox.as_str())
                    .and_then(|rest| rest.strip_prefix('.'))
                    .and_then(|number| number.parse::<u64>().ok())
                    .ok_or_else(|| protocol(format!("unexpected MSG on {subject:?}")))?;
                let seq = parse_api_reply(&payload)?
                    .seq
                    .ok_or_else(|| protocol("PubAck without seq"))?;
                pipeline.on_ack(publish, seq, Instant::now())
            }
            other => self.on_control_frame(other),
        }
    }

    /// PING, PONG, +OK, INFO and -ERR, wherever they arrive. A PONG answer is only buffered: the
    /// next flush sends it.
    fn on_control_frame(&mut self, frame: Frame) -> Result<(), NatsError> {
        match frame {
            Frame::Ping => self.write_buffer.extend_from_slice(b"PONG\r\n"),
            Frame::Err(text) => return Err(protocol(format!("server error: {text}"))),
            Frame::Msg { subject, .. } => {
                return Err(protocol(format!("unexpected MSG on {subject:?}")))
            }
            Frame::Pong | Frame::Ok | Frame::Info(_) => {}
        }
        Ok(())
    }

    async fn wait_pong(&mut self) -> Result<(), NatsError> {
        loop {
            match self.read_frame("PONG").await? {
                Frame::Pong => return Ok(()),
                other => self.on_control_frame(other)?,
            }
            self.flush().await?;
        }
    }

    /// Sends a JetStream API request and returns its reply, failed if it carries "error".
    async fn api_request(&mut self, subject: &str, body: &str) -> Result<ApiReply, NatsError> {
        self.requests += 1;
        let reply = format!("{}.r{}", self.inbox, self.requests);
        encode_pub(
            &mut self.write_buffer,
            subject,
            format_args!("{reply}"),
            body.as_bytes(),
        );
        self.flush().await?;
        loop {
            match self.read_frame("JetStream API reply").await? {
                Frame::Msg {
                    subject: to,
                    payload,
                } if to == reply => return parse_api_reply(&payload),
                other => self.on_control_frame(other)?,
            }
            self.flush().await?;
        }
    }

    async fn flush(&mut self) -> Result<(), NatsError> {
        if !self.write_buffer.is_empty() {
            self.stream.write_all(&self.write_buffer).await?;
            self.write_buffer.clear();
        }
        Ok(())
    }

    /// The next frame, reading from the socket until one is complete.
    async fn read_frame(&mut self, waiting_for: &'static str) -> Result<Frame, NatsError> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(frame);
            }
            self.fill(waiting_for).await?;
        }
    }

    /// The next frame already read, without touching the socket.
    fn buffered_frame(&mut self) -> Result<Option<Frame>, NatsError> {
        match parse_frame(&self.read_buffer[self.read_start..])? {
            Some((frame, used)) => {
                self.read_start += used;
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    async fn fill(&mut self, waiting_for: &'static str) -> Result<(), NatsError> {
        // Drop parsed bytes first; what stays is at most one partial frame.
        self.read_buffer.drain(..self.read_start);
        self.read_start = 0;
        self.read_buffer.reserve(READ_CHUNK_BYTES);
        let read = within(waiting_for, self.stream.read_buf(&mut self.read_buffer)).await??;
        if read == 0 {
            return Err(NatsError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("server closed the connection while waiting for {waiting_for}"),
            )));
        }
        Ok(())
    }
}

/// `future` bounded by `REPLY_WAIT_MS_MAX`.
async fn within<T>(
    waiting_for: &'static str,
    future: impl std::future::Future<Output = T>,
) -> Result<T, NatsError> {
    tokio::time::timeout(Duration::from_millis(REPLY_WAIT_MS_MAX), future)
        .await
        .map_err(|_| NatsError::Timeout {
            waiting_for,
            waited_ms: REPLY_WAIT_MS_MAX,
        })
}

/// Whether `nats-server` can be run from PATH.
pub fn nats_server_available() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A `nats-server -js` child on 127.0.0.1 with its store in a temporary directory; killed, and
/// the directory removed, on drop.
pub struct NatsServer {
    child: Child,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts the server on a port it picks itself and waits until it accepts connections
    /// (nats-server starts JetStream before it listens, so accepting means ready). The server
    /// binds the port and reports it in its ports file: a port picked here and bound there
    /// could be taken in between, and a probe could then reach another test's server.
    pub async fn start() -> Result<NatsServer, NatsError> {
        let store = tempfile::tempdir()?;
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(store.path())
            .arg("--ports_file_dir")
            .arg(store.path())
            .arg("-l")
            .arg(log_path(store.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| NatsError::ServerStart(error.to_string()))?;
        let mut server = NatsServer {
            child,
            port: 0,
            store,
        };
        server.wait_accepting().await?;
        Ok(server)
    }

    /// `host:port` for [`NatsArgs::url`] and [`NatsConnection::connect`].
    pub fn url(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client port from the ports file (`nats-server_<pid>.ports`:
    /// `{"nats":["nats://127.0.0.1:PORT"]}`), once the server has written it.
    fn reported_port(&self) -> Option<u16> {
        #[derive(serde::Deserialize)]
        struct Ports {
            nats: Vec<String>,
        }
        let file = self
            .store
            .path()
            .join(format!("nats-server_{}.ports", self.child.id()));
        let ports: Ports = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
        let url = ports.nats.first()?;
        url.rsplit_once(':')?.1.parse().ok()
    }

    async fn wait_accepting(&mut self) -> Result<(), NatsError> {
        let deadline = Instant::now() + Duration::from_millis(SERVER_START_MS_MAX);
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(log_path(self.store.path())).unwrap_or_default();
                return Err(NatsError::ServerStart(format!(
                    "exited with {status}: {log}"
                )));
            }
            if self.port == 0 {
                self.port = self.reported_port().unwrap_or(0);
            }
            if self.port != 0 && TcpStream::connect(self.url()).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(NatsError::ServerStart(format!(
                    "not accepting on {} after {SERVER_START_MS_MAX} ms",
                    self.url()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Errors only mean the child has already exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_path(store: &Path) -> std::path::PathBuf {
    store.join("nats-server.log")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> Option<(Frame, usize)> {
        parse_frame(bytes).expect("well-formed input")
    }

    #[test]
    fn parses_msg_with_and_without_reply_and_waits_for_the_whole_payload() {
        let with_reply = b"MSG _INBOX.a.7 1 reply.x 5\r\nhello\r\nPING\r\n";
        let (parsed, used) = frame(with_reply).expect("complete");
        assert_eq!(
            parsed,
            Frame::Msg {
                subject: "_INBOX.a.7".into(),
                payload: b"hello".to_vec()
            }
        );
        assert_eq!(&with_reply[used..], b"PING\r\n");
        let without_reply = b"msg s 1 0\r\n\r\n";
        assert_eq!(frame(without_reply).map(|(_, used)| used), Some(13));
        for cut in 0..with_reply.len() - 6 {
            assert!(frame(&with_reply[..cut]).is_none(), "prefix of {cut} bytes");
        }
    }

    #[test]
    fn parses_control_frames() {
        assert_eq!(frame(b"PING\r\n"), Some((Frame::Ping, 6)));
        assert_eq!(frame(b"+OK\r\n"), Some((Frame::Ok, 5)));
        let (error, _) = frame(b"-ERR 'Authorization Violation'\r\n").expect("complete");
        assert_eq!(error, Frame::Err("Authorization Violation".into()));
        let (info, _) = frame(b"INFO {\"jetstream\":true}\r\n").expect("complete");
        assert_eq!(info, Frame::Info("{\"jetstream\":true}".into()));
    }

    #[test]
    fn rejects_malformed_input_instead_of_panicking() {
        for bad in [
            &b"MSG s 1\r\n"[..],
            b"MSG s 1 notanumber\r\n",
            b"MSG s 1 2\r\nabXY",
            b"WHAT\r\n",
            b"PING\n",
            b"\xff\xfe\r\n",
        ] {
            assert!(
                parse_frame(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let endless = vec![b'a'; CONTROL_LINE_BYTES_MAX + 1];
        assert!(parse_frame(&endless).is_err());
        let huge = format!("MSG s 1 {}\r\n", PAYLOAD_BYTES_MAX + 1);
        assert!(parse_frame(huge.as_bytes()).is_err());
    }

    #[test]
    fn api_reply_error_becomes_a_jetstream_error() {
        let reply = concat!(
            r#"{"type":"x","error":{"code":400,"err_code":10058,"#,
            r#""description":"stream name already in use"}}"#
        );
        match parse_api_reply(reply.as_bytes()) {
            Err(NatsError::JetStream {
                code: 400,
                err_code: 10058,
                description,
            }) => assert_eq!(description, "stream name already in use"),
            other => panic!("expected a JetStream error, got {:?}", other.map(|_| ())),
        }
        let ack = parse_api_reply(br#"{"stream":"S","seq":42}"#).expect("a PubAck");
        assert_eq!(ack.seq, Some(42));
    }

    #[test]
    fn pipeline_keeps_at_most_window_in_flight_and_records_duplicates() {
        let now = Instant::now();
        let mut pipeline = Pipeline::new(5, 2, now);
        assert_eq!(pipeline.next_to_send(now), Some(0));
        assert_eq!(pipeline.next_to_send(now), Some(1));
        assert_eq!(pipeline.next_to_send(now), None, "window of 2 is full");
        pipeline.on_ack(1, 1, now).expect("in flight");
        assert_eq!(pipeline.next_to_send(now), Some(2));
        pipeline
            .on_ack(1, 1, now)
            .expect("a duplicate is recorded, not fatal");
        assert!(
            pipeline.on_ack(3, 9, now).is_err(),
            "publish 3 was never sent"
        );
        assert_eq!(pipeline.acked, 1);
        assert_eq!(pipeline.run.acks.len(), 2);
        assert!(check_acked_once(&pipeline.run).is_err());
    }

    #[test]
    fn pipeline_is_done_after_every_publish_is_acked() {
        let now = Instant::now();
        let mut pipeline = Pipeline::new(3, 8, now);
        let sent: Vec<u64> = std::iter::from_fn(|| pipeline.next_to_send(now)).collect();
        assert_eq!(sent, [0, 1, 2]);
        for (publish, seq) in [(2, 3), (0, 1), (1, 2)] {
            assert!(!pipeline.done());
            pipeline.on_ack(publish, seq, now).expect("in flight");
        }
        assert!(pipeline.done());
        check_acked_once(&pipeline.run).expect("each acked once");
    }
}
