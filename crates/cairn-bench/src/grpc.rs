//! A minimal unary gRPC client straight over one HTTP/2 connection, for the load generator.
//!
//! The load generator shares this 2-core machine with the server it measures, so every
//! microsecond it spends per request is taken from the server. tonic's `Channel` puts a tower
//! buffer (a channel and a worker task) in front of hyper, and hyper spawns one more task per
//! request to pipe its body: on 100-client puts the generator cost about as much CPU as the
//! server. Here a call is one HTTP/2 stream driven from the caller's task: headers, one DATA
//! frame holding the length-prefixed message, then the response and its `grpc-status`
//! trailer. Plain `http://` only, no compression, unary calls only: what `cairn bench kv`
//! needs and nothing more.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Stream and connection receive windows: large enough that a big range response is never
/// held up by window updates.
const STREAM_WINDOW_BYTES: u32 = 4 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
/// gRPC's length prefix: one compression flag byte and a big-endian u32 length.
const FRAME_HEADER_BYTES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("HTTP/2: {0}")]
    Http2(#[from] h2::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] http::Error),
    #[error("a {0}-byte message does not fit gRPC's 4 GiB length prefix")]
    TooLarge(usize),
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    #[error("gRPC status {code}: {message}")]
    Status { code: String, message: String },
    #[error("response ended without a grpc-status")]
    NoStatus,
    #[error("malformed gRPC response frame")]
    Frame,
}

/// One HTTP/2 connection; clones share it and may call concurrently.
#[derive(Clone)]
pub struct UnaryConnection {
    sender: h2::client::SendRequest<Bytes>,
    /// Parsed once: every request's URI carries it.
    authority: Authority,
}

impl UnaryConnection {
    /// Connects to `authority` (`host:port`); a task drives the connection until every clone
    /// is dropped.
    pub async fn connect(authority: Authority) -> Result<UnaryConnection, std::io::Error> {
        let stream = TcpStream::connect(authority.as_str()).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .handshake(CopiedWrites(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            // The connection's end shows up in the calls as an `h2::Error`.
            let _ = connection.await;
        });
        Ok(UnaryConnection { sender, authority })
    }

    /// Sends `message` to `path` (e.g. `/etcdserverpb.KV/Put`) and returns the response
    /// message's bytes once the server's `grpc-status` says OK.
    pub async fn call(
        &self,
        path: &'static str,
        message: &impl Message,
    ) -> Result<Bytes, CallError> {
        let length = message.encoded_len();
        let mut body = BytesMut::with_capacity(FRAME_HEADER_BYTES + length);
        body.put_u8(0);
        body.put_u32(u32::try_from(length).map_err(|_| CallError::TooLarge(length))?);
        message
            .encode(&mut body)
            .expect("the buffer was sized by encoded_len");

        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::from_static(path))
            .build()?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
            .header(TE, HeaderValue::from_static("trailers"))
            .body(())?;

        let mut sender = self.sender.clone().ready().await?;
        let (response, mut send) = sender.send_request(request, false)?;
        send.send_data(body.freeze(), true)?;

        let response = response.await?;
        if response.status() != http::StatusCode::OK {
            return Err(CallError::HttpStatus(response.status().as_u16()));
        }
        // A "trailers-only" answer (an error before any message) carries its status in the
        // headers and ends the stream there.
        if response.headers().contains_key("grpc-status") {
            check_status(response.headers())?;
            return Err(CallError::Frame);
        }
        let mut received = response.into_body();
        let mut payload = BytesMut::new();
        while let Some(chunk) = received.data().await {
            let chunk = chunk?;
            received.flow_control().release_capacity(chunk.len())?;
            payload.extend_from_slice(&chunk);
        }
        let trailers = received.trailers().await?.ok_or(CallError::NoStatus)?;
        check_status(&trailers)?;
        unframe(payload.freeze())
    }
}

/// The TCP stream without vectored writes. Over a vectored stream h2 keeps a DATA frame's
/// payload of more than 256 bytes apart from its buffer and writes it before buffering
/// anything else: one `writev` per request for a 256-byte-value put, and one TCP segment for
/// the server to take in. Without, h2 copies payloads up to 1 KiB into its buffer, and the
/// requests that 100 clients send together leave in one write, as a buffered gRPC client
/// (Go's, etcd's `benchmark`) sends them.
struct CopiedWrites(TcpStream);

impl AsyncRead for CopiedWrites {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(context, buffer)
    }
}

impl AsyncWrite for CopiedWrites {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(context, bytes)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(context, slices)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(context)
    }
}

fn check_status(headers: &HeaderMap) -> Result<(), CallError> {
    let code = headers
        .get("grpc-status")
        .ok_or(CallError::NoStatus)?
        .to_str()
        .map_err(|_| CallError::Frame)?;
    if code == "0" {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    Err(CallError::Status {
        code: code.to_string(),
        message: percent_decoded(message),
    })
}

/// `grpc-message` is percent-encoded (gRPC's HTTP/2 mapping); undone for people to read.
fn percent_decoded(message: &str) -> String {
    let bytes = message.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = (bytes[at] == b'%')
            .then(|| bytes.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                at += 3;
            }
            None => {
                decoded.push(bytes[at]);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The one uncompressed, length-prefixed message of a unary response.
fn unframe(mut payload: Bytes) -> Result<Bytes, CallError> {
    if payload.len() < FRAME_HEADER_BYTES || payload[0] != 0 {
        return Err(CallError::Frame);
    }
    let length = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]) as usize;
    if payload.len() != FRAME_HEADER_BYTES + length {
        return Err(CallError::Frame);
    }
    Ok(payload.split_off(FRAME_HEADER_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unframe_accepts_exactly_one_uncompressed_message() {
        let framed = Bytes::from_static(&[0, 0, 0, 0, 2, 7, 9]);
        assert_eq!(unframe(framed).unwrap(), Bytes::from_static(&[7, 9]));
        for bad in [
            &[0u8, 0, 0, 0][..],        // shorter than the prefix
            &[1, 0, 0, 0, 1, 7][..],    // compressed
            &[0, 0, 0, 0, 2, 7][..],    // message cut short
            &[0, 0, 0, 0, 1, 7, 9][..], // bytes after the message
        ] {
            assert!(matches!(
                unframe(Bytes::copy_from_slice(bad)),
                Err(CallError::Frame)
            ));
        }
    }

    #[test]
    fn status_other_than_ok_is_an_error_with_its_message() {
        let mut headers = HeaderMap::new();
        assert!(matches!(check_status(&headers), Err(CallError::NoStatus)));
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(check_status(&headers).is_ok());
        headers.insert("grpc-status", "9".parse().unwrap());
        headers.insert("grpc-message", "etcdserver:%20no%20space%".parse().unwrap());
        match check_status(&headers) {
            Err(CallError::Status { code, message }) => {
                assert_eq!(code, "9");
                assert_eq!(message, "etcdserver: no space%");
            }
            other => panic!("expected a status error, got {other:?}"),
        }
    }
}
