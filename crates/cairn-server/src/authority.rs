//! A compatibility shim for clients that put a URL in the HTTP/2 `:authority` header.
//!
//! etcdctl 3.4 (Debian's) given `--endpoints=http://127.0.0.1:2379` sends
//! `:authority: http://127.0.0.1:2379`. etcd's gRPC server accepts that; hyper's HTTP/2 layer
//! refuses the request as malformed (RST_STREAM PROTOCOL_ERROR). This wrapper sits between the
//! TCP stream and hyper and looks at the *first* header block of the connection:
//!
//! - its `:authority` has no scheme (every well-behaved client): the wrapper turns into a plain
//!   passthrough for the rest of the connection, at the cost of one branch per read;
//! - it has one: every header block of the connection is decoded (HPACK, the client's dynamic
//!   table tracked) and re-encoded with the scheme stripped, as literals that never index, so
//!   hyper's decoding table stays empty and in step.
//!
//! A connection that does not open with the HTTP/2 preface (HTTP/1.1: the JSON gateway,
//! `/health`, `/metrics`) is passed through untouched from its first byte on.
//!
//! Only client → server bytes are inspected. Frames other than HEADERS/CONTINUATION pass
//! through untouched.
//!
//! Frame layout (RFC 9113 §4.1): 3-byte length, type, flags, 4-byte stream id, payload.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use fluke_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface, passed through as is.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const PREFACE_LEN: usize = PREFACE.len();
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer must accept (hyper does not raise it for requests).
const FRAME_PAYLOAD_MAX: usize = 16_384;
/// Bytes read from the socket at a time while frames are being inspected.
const READ_CHUNK_BYTES: usize = 16_384;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Preface,
    /// Waiting for the first header block to decide.
    Inspect,
    /// The client sends URLs as authorities: re-encode every header block.
    Rewrite,
    /// Nothing to fix on this connection.
    Passthrough,
}

/// A header block being collected from HEADERS + CONTINUATION frames.
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    /// Stream dependency and weight, when the HEADERS frame carried PRIORITY.
    priority: Option<[u8; 5]>,
    fragment: BytesMut,
    /// The frames as received, re-emitted unchanged if the connection turns out to be fine.
    raw: BytesMut,
}

/// See the module doc.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    /// Bytes read from the socket, not yet processed.
    input: BytesMut,
    /// Bytes ready for hyper.
    output: BytesMut,
    decoder: Decoder<'static>,
    pending: Option<PendingBlock>,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> AuthorityFix<S> {
        AuthorityFix {
            inner,
            mode: Mode::Preface,
            input: BytesMut::new(),
            output: BytesMut::new(),
            decoder: Decoder::new(),
            pending: None,
        }
    }

    /// Moves every complete unit of `input` to `output`. Returns whether anything moved.
    fn process(&mut self) -> io::Result<bool> {
        let mut progressed = false;
        loop {
            match self.mode {
                Mode::Passthrough => {
                    if !self.input.is_empty() {
                        self.output.extend_from_slice(&self.input.split());
                        progressed = true;
                    }
                    return Ok(progressed);
                }
                Mode::Preface => {
                    let seen = self.input.len().min(PREFACE_LEN);
                    if self.input[..seen] != PREFACE[..seen] {
                        // Not HTTP/2 with prior knowledge: nothing of ours to fix.
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    if self.input.len() < PREFACE_LEN {
                        return Ok(progressed);
                    }
                    self.output
                        .extend_from_slice(&self.input.split_to(PREFACE_LEN));
                    self.mode = Mode::Inspect;
                }
                Mode::Inspect | Mode::Rewrite => {
                    if self.input.len() < FRAME_HEADER_LEN {
                        return Ok(progressed);
                    }
                    let length =
                        u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]);
                    let frame_len = FRAME_HEADER_LEN + length as usize;
                    if self.input.len() < frame_len {
                        return Ok(progressed);
                    }
                    let frame = self.input.split_to(frame_len);
                    self.frame(frame)?;
                }
            }
            progressed = true;
        }
    }

    fn frame(&mut self, frame: BytesMut) -> io::Result<()> {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let is_block =
            kind == FRAME_HEADERS || (kind == FRAME_CONTINUATION && self.pending.is_some());
        if !is_block {
            // Anything else (SETTINGS, DATA, WINDOW_UPDATE, …, or a stray CONTINUATION that
            // hyper will reject itself) passes through.
            self.output.extend_from_slice(&frame);
            return Ok(());
        }
        let mut payload = &frame[FRAME_HEADER_LEN..];
        let mut block = match self.pending.take() {
            Some(block) => block,
            None => {
                let (priority, fragment) = split_headers_payload(flags, payload)?;
                payload = fragment;
                PendingBlock {
                    stream_id,
                    end_stream: flags & FLAG_END_STREAM != 0,
                    priority,
                    fragment: BytesMut::new(),
                    raw: BytesMut::new(),
                }
            }
        };
        block.fragment.extend_from_slice(payload);
        block.raw.extend_from_slice(&frame);
        if flags & FLAG_END_HEADERS == 0 {
            self.pending = Some(block);
            return Ok(());
        }
        self.header_block(block)
    }

    fn header_block(&mut self, block: PendingBlock) -> io::Result<()> {
        let headers = self.decoder.decode(&block.fragment).map_err(|error| {
            io::Error::new(io::ErrorKind::InvalidData, format!("HPACK: {error:?}"))
        })?;
        if self.mode == Mode::Inspect {
            let has_scheme = headers.iter().any(|(name, value)| {
                name == b":authority" && strip_scheme(value).len() != value.len()
            });
            if !has_scheme {
                self.output.extend_from_slice(&block.raw);
                self.mode = Mode::Passthrough;
                return Ok(());
            }
            self.mode = Mode::Rewrite;
        }
        let mut encoded = BytesMut::new();
        for (name, value) in &headers {
            let value = if name == b":authority" {
                strip_scheme(value)
            } else {
                value
            };
            encode_literal(&mut encoded, name, value);
        }
        write_block(&mut self.output, &block, &encoded);
        Ok(())
    }
}

/// Splits a HEADERS payload into its priority fields and header block fragment, dropping
/// padding.
fn split_headers_payload(flags: u8, payload: &[u8]) -> io::Result<(Option<[u8; 5]>, &[u8])> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed HEADERS frame");
    let mut payload = payload;
    let mut padding = 0usize;
    if flags & FLAG_PADDED != 0 {
        let (&pad, rest) = payload.split_first().ok_or_else(malformed)?;
        padding = pad as usize;
        payload = rest;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        let fields: [u8; 5] = payload
            .get(..5)
            .ok_or_else(malformed)?
            .try_into()
            .map_err(|_| malformed())?;
        priority = Some(fields);
        payload = &payload[5..];
    }
    let end = payload.len().checked_sub(padding).ok_or_else(malformed)?;
    Ok((priority, &payload[..end]))
}

/// `http://host:port/` → `host:port`; anything without a scheme is returned unchanged.
fn strip_scheme(value: &[u8]) -> &[u8] {
    let Some(position) = value.windows(3).position(|window| window == b"://") else {
        return value;
    };
    let rest = &value[position + 3..];
    let end = rest
        .iter()
        .position(|byte| *byte == b'/')
        .unwrap_or(rest.len());
    &rest[..end]
}

/// HPACK "literal header field never indexed, new name" (RFC 7541 §6.2.3), no Huffman.
fn encode_literal(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_u8(0x10);
    encode_length(out, name.len());
    out.extend_from_slice(name);
    encode_length(out, value.len());
    out.extend_from_slice(value);
}

/// An HPACK string length with a 7-bit prefix and the Huffman bit clear (RFC 7541 §5.1).
fn encode_length(out: &mut BytesMut, mut length: usize) {
    if length < 127 {
        out.put_u8(length as u8);
        return;
    }
    out.put_u8(127);
    length -= 127;
    while length >= 128 {
        out.put_u8((length % 128) as u8 | 0x80);
        length /= 128;
    }
    out.put_u8(length as u8);
}

/// Emits a re-encoded header block as HEADERS (+ CONTINUATION) frames.
fn write_block(out: &mut BytesMut, block: &PendingBlock, encoded: &[u8]) {
    let priority_len = if block.priority.is_some() { 5 } else { 0 };
    let first_len = encoded.len().min(FRAME_PAYLOAD_MAX - priority_len);
    let (first, mut rest) = encoded.split_at(first_len);
    let mut flags = if block.end_stream { FLAG_END_STREAM } else { 0 };
    if block.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    write_frame_header(
        out,
        priority_len + first.len(),
        FRAME_HEADERS,
        flags,
        block.stream_id,
    );
    if let Some(priority) = block.priority {
        out.extend_from_slice(&priority);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, remaining) = rest.split_at(rest.len().min(FRAME_PAYLOAD_MAX));
        let flags = if remaining.is_empty() {
            FLAG_END_HEADERS
        } else {
            0
        };
        write_frame_header(out, chunk.len(), FRAME_CONTINUATION, flags, block.stream_id);
        out.extend_from_slice(chunk);
        rest = remaining;
    }
}

fn write_frame_header(out: &mut BytesMut, length: usize, kind: u8, flags: u8, stream_id: u32) {
    assert!(
        length <= FRAME_PAYLOAD_MAX,
        "authority: frame of {length} bytes"
    );
    out.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id);
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let take = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..take]);
                this.output.advance(take);
                return Poll::Ready(Ok(()));
            }
            if this.mode == Mode::Passthrough && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.process()? {
                continue;
            }
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut chunk_buf) {
                Poll::Ready(Ok(())) if chunk_buf.filled().is_empty() => {
                    // EOF: hand over whatever incomplete bytes remain and let hyper judge.
                    this.output.extend_from_slice(&this.input.split());
                    if this.output.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Ok(())) => this.input.extend_from_slice(chunk_buf.filled()),
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_frame_header(&mut out, payload.len(), kind, flags, stream_id);
        out.extend_from_slice(payload);
        out.to_vec()
    }

    fn request_block(encoder: &mut fluke_hpack::Encoder<'_>, authority: &[u8]) -> Vec<u8> {
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/etcdserverpb.KV/Range"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
        ];
        encoder.encode(headers)
    }

    /// Feeds `input` through the wrapper and decodes every header block hyper would see.
    async fn rewrite(input: Vec<u8>) -> (Vec<Vec<(Vec<u8>, Vec<u8>)>>, Vec<u8>) {
        let mut wrapped = AuthorityFix::new(&input[..]);
        let mut output = Vec::new();
        wrapped.read_to_end(&mut output).await.unwrap();
        let mut decoder = Decoder::new();
        let mut blocks = Vec::new();
        let mut rest = &output[PREFACE_LEN..];
        while !rest.is_empty() {
            let length = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + length];
            if kind == FRAME_HEADERS {
                let (_, fragment) = split_headers_payload(flags, payload).unwrap();
                blocks.push(decoder.decode(fragment).unwrap());
            }
            rest = &rest[FRAME_HEADER_LEN + length..];
        }
        (blocks, output)
    }

    fn authority(block: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        block
            .iter()
            .find(|(name, _)| name == b":authority")
            .unwrap()
            .1
            .clone()
    }

    #[tokio::test]
    async fn urls_in_authority_are_cut_to_host_and_port_on_every_request() {
        let mut encoder = fluke_hpack::Encoder::new();
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
                                             // Three requests: the later ones lean on the encoder's dynamic table.
        for stream in [1, 3, 5] {
            let block = request_block(&mut encoder, b"http://127.0.0.1:2379");
            input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, stream, &block));
            input.extend(frame(0x0, FLAG_END_STREAM, stream, b"\0\0\0\0\0"));
        }
        let (blocks, output) = rewrite(input).await;
        assert_eq!(blocks.len(), 3);
        for block in &blocks {
            assert_eq!(authority(block), b"127.0.0.1:2379");
            assert_eq!(block.len(), 5, "every other header survives");
        }
        assert_eq!(&output[..PREFACE_LEN], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    }

    #[tokio::test]
    async fn well_formed_connections_pass_through_byte_for_byte() {
        let mut encoder = fluke_hpack::Encoder::new();
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for stream in [1, 3] {
            let block = request_block(&mut encoder, b"127.0.0.1:2379");
            input.extend(frame(
                FRAME_HEADERS,
                FLAG_END_HEADERS | FLAG_END_STREAM,
                stream,
                &block,
            ));
        }
        let (blocks, output) = rewrite(input.clone()).await;
        assert_eq!(output, input);
        assert_eq!(authority(&blocks[1]), b"127.0.0.1:2379");
    }

    #[tokio::test]
    async fn continuation_padding_and_priority_are_handled() {
        let mut encoder = fluke_hpack::Encoder::new();
        let block = request_block(&mut encoder, b"https://example.com:2379/");
        let (first, second) = block.split_at(block.len() / 2);
        let mut payload = vec![3u8]; // pad length
        payload.extend_from_slice(&[0, 0, 0, 0, 16]); // priority: dependency 0, weight 16
        payload.extend_from_slice(first);
        payload.extend_from_slice(&[0, 0, 0]); // padding
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY,
            1,
            &payload,
        ));
        input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, second));
        let (blocks, _) = rewrite(input).await;
        assert_eq!(authority(&blocks[0]), b"example.com:2379");
    }

    #[tokio::test]
    async fn http1_connections_pass_through_byte_for_byte() {
        for input in [
            &b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\n\r\n",
        ] {
            let mut wrapped = AuthorityFix::new(input);
            let mut output = Vec::new();
            wrapped.read_to_end(&mut output).await.unwrap();
            assert_eq!(output, input);
            assert_eq!(wrapped.mode, Mode::Passthrough, "{input:?}");
        }
    }

    #[test]
    fn scheme_stripping_and_long_lengths() {
        assert_eq!(strip_scheme(b"http://h:1"), b"h:1");
        assert_eq!(strip_scheme(b"h:1"), b"h:1");
        assert_eq!(strip_scheme(b"unix://sock/x"), b"sock");
        let mut out = BytesMut::new();
        let long = vec![b'v'; 300];
        encode_literal(&mut out, b"x-long", &long);
        let decoded = Decoder::new().decode(&out).unwrap();
        assert_eq!(decoded, vec![(b"x-long".to_vec(), long)]);
    }
}
