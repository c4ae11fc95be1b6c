//! The calling side against a scripted peer on a real loopback socket.

use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_proto::framing;
use cairn_proto::raftpb::{self, peer_frame::Body, PeerFrame};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::limits::PEER_MESSAGE_BYTES_MAX;
use crate::network::PeerResponse;

fn forward(tag: u8) -> PeerRequest {
    PeerRequest::Forward(raftpb::ForwardRequest {
        request: vec![tag].into(),
    })
}

fn member(port: u16) -> Member {
    Member {
        peer_urls: vec![format!("http://127.0.0.1:{port}")],
        ..Member::default()
    }
}

/// A scripted peer's listener and its port.
async fn listen() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// The answer to call `call`: a forward committed at `index`.
fn forward_reply(call: u64, index: u64) -> PeerFrame {
    PeerFrame {
        call,
        body: Some(Body::ForwardReply(raftpb::ForwardResponse { index })),
    }
}

async fn read_frame(stream: &mut TcpStream) -> Option<PeerFrame> {
    let mut header = [0; framing::HEADER_BYTES];
    stream.read_exact(&mut header).await.ok()?;
    let mut body = vec![0; framing::body_len(header)];
    stream.read_exact(&mut body).await.ok()?;
    Some(PeerFrame::decode(body.as_slice()).expect("the transport writes valid frames"))
}

async fn write_frame(stream: &mut TcpStream, frame: &PeerFrame) {
    let mut buffer = Vec::new();
    framing::encode(frame, &mut buffer);
    stream.write_all(&buffer).await.expect("test peer write");
}

fn tag_of(frame: &PeerFrame) -> u8 {
    match &frame.body {
        Some(Body::Forward(request)) => request.request[0],
        other => panic!("expected a forward, got {other:?}"),
    }
}

/// Counts dials, so a test can tell a reused connection from a new one.
struct CountingDialer {
    tcp: TcpDialer,
    dials: AtomicUsize,
}

impl Dialer for CountingDialer {
    fn dial(&self, url: &str) -> BoxFuture<'static, io::Result<Box<dyn PeerIo>>> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        self.tcp.dial(url)
    }
}

fn transport() -> (TcpTransport, Arc<CountingDialer>) {
    let dialer = Arc::new(CountingDialer {
        tcp: TcpDialer::new(None),
        dials: AtomicUsize::new(0),
    });
    (TcpTransport::new(dialer.clone()), dialer)
}

#[tokio::test]
async fn answers_in_any_order_reach_their_callers_and_requests_arrive_in_call_order() {
    let (listener, port) = listen().await;
    let peer = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut frames = Vec::new();
        for _ in 0..100 {
            frames.push(read_frame(&mut stream).await.expect("a request"));
        }
        let arrival: Vec<u8> = frames.iter().map(tag_of).collect();
        // Answer the last first: each answer names its call, not its position.
        for frame in frames.iter().rev() {
            let answer = forward_reply(frame.call, u64::from(tag_of(frame)));
            write_frame(&mut stream, &answer).await;
        }
        arrival
    });
    let (transport, dialer) = transport();
    let calls: Vec<_> = (0..100u8)
        .map(|tag| transport.call(1, &member(port), forward(tag)))
        .collect();
    let answers = futures::future::join_all(calls).await;
    for (tag, answer) in answers.into_iter().enumerate() {
        match answer {
            Ok(PeerResponse::Forward(response)) => assert_eq!(response.index, tag as u64),
            other => panic!("call {tag}: {other:?}"),
        }
    }
    assert_eq!(peer.await.unwrap(), (0..100).collect::<Vec<u8>>(), "FIFO");
    assert_eq!(dialer.dials.load(Ordering::SeqCst), 1, "one connection");
}

#[tokio::test]
async fn a_refusal_reaches_the_caller_as_refused() {
    let (listener, port) = listen().await;
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let request = read_frame(&mut stream).await.expect("a request");
        let refusal = raftpb::PeerError {
            leader_id: 7,
            message: "not the leader".to_string(),
            removed: false,
        };
        let answer = PeerFrame {
            call: request.call,
            body: Some(Body::Refused(refusal)),
        };
        write_frame(&mut stream, &answer).await;
        // Keep the connection open until the test ends.
        let _ = read_frame(&mut stream).await;
    });
    let (transport, _) = transport();
    match transport.call(1, &member(port), forward(0)).await {
        Err(TransportError::Refused(refusal)) => {
            assert_eq!(refusal.leader_id, 7);
            assert_eq!(refusal.message, "not the leader");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_broken_connection_fails_its_calls_and_the_next_call_dials_again() {
    let (listener, port) = listen().await;
    let (transport, dialer) = transport();
    let first = transport.call(1, &member(port), forward(1));
    let (mut stream, _) = listener.accept().await.unwrap();
    let request = read_frame(&mut stream).await.expect("a request");
    assert_eq!(tag_of(&request), 1);
    drop(stream);
    match first.await {
        Err(TransportError::Unreachable(_)) => {}
        other => panic!("a call on a closed connection: {other:?}"),
    }
    // The broken connection is gone; this call dials a new one and is answered there.
    let second = tokio::spawn(transport.call(1, &member(port), forward(2)));
    let (mut stream, _) = listener.accept().await.unwrap();
    let request = read_frame(&mut stream).await.expect("a request");
    assert_eq!(tag_of(&request), 2);
    let answer = forward_reply(request.call, 2);
    write_frame(&mut stream, &answer).await;
    match second.await.unwrap() {
        Ok(PeerResponse::Forward(response)) => assert_eq!(response.index, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(dialer.dials.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_oversized_or_unknown_answer_breaks_the_connection_not_the_caller() {
    let (listener, port) = listen().await;
    let (transport, _) = transport();
    let call = transport.call(1, &member(port), forward(1));
    let (mut stream, _) = listener.accept().await.unwrap();
    read_frame(&mut stream).await.expect("a request");
    let too_long = u32::try_from(PEER_MESSAGE_BYTES_MAX + 1).unwrap();
    stream.write_all(&too_long.to_le_bytes()).await.unwrap();
    match call.await {
        Err(TransportError::Unreachable(reason)) => {
            assert!(reason.contains("limit"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let call = tokio::spawn(transport.call(1, &member(port), forward(2)));
    let (mut stream, _) = listener.accept().await.unwrap();
    let request = read_frame(&mut stream).await.expect("a request");
    let stray = forward_reply(request.call + 1000, 0);
    write_frame(&mut stream, &stray).await;
    match call.await.unwrap() {
        Err(TransportError::Unreachable(reason)) => {
            assert!(reason.contains("not in flight"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_peer_fails_the_call() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (transport, _) = transport();
    match transport.call(1, &member(port), forward(0)).await {
        Err(TransportError::Unreachable(reason)) => {
            assert!(reason.contains(&port.to_string()), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let no_url = Member::default();
    assert!(matches!(
        transport.call(1, &no_url, forward(0)).await,
        Err(TransportError::Unreachable(_))
    ));
}

#[test]
fn peer_urls_give_host_and_port() {
    assert_eq!(
        host_port("http://127.0.0.1:2380").unwrap(),
        ("127.0.0.1", 2380)
    );
    assert_eq!(
        host_port("https://node-1:12380/").unwrap(),
        ("node-1", 12380)
    );
    assert_eq!(host_port("http://[::1]:2380").unwrap(), ("::1", 2380));
    assert_eq!(host_port("localhost:7").unwrap(), ("localhost", 7));
    for bad in ["http://127.0.0.1", "http://:2380", "http://host:port", ""] {
        assert!(host_port(bad).is_err(), "{bad}");
    }
}
