//! The frames of a peer connection: `raftpb.PeerFrame`, a call id and one request or answer,
//! behind a u32 little-endian length (`cairn_proto::framing`). Converts between frames and
//! the transport's [`PeerRequest`]/[`PeerResponse`].

use std::io;

use cairn_proto::framing;
use cairn_proto::raftpb::{self, peer_frame::Body, PeerFrame};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::limits::PEER_MESSAGE_BYTES_MAX;
use crate::network::{PeerRequest, PeerResponse, TransportError};

/// Reads one frame. A length over the limit or an undecodable body is a broken peer (or not
/// a peer at all): the caller drops the connection.
pub(super) async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<PeerFrame> {
    let mut header = [0; framing::HEADER_BYTES];
    reader.read_exact(&mut header).await?;
    let len = framing::body_len(header);
    if len > PEER_MESSAGE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer frame of {len} bytes, limit {PEER_MESSAGE_BYTES_MAX}"),
        ));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;
    PeerFrame::decode(body.as_slice())
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// The frame would exceed [`PEER_MESSAGE_BYTES_MAX`]; nothing was written.
#[derive(Debug)]
pub(super) struct TooLarge(pub usize);

/// Appends `frame` to `buffer`, unless it is over the limit.
pub(super) fn encode(frame: &PeerFrame, buffer: &mut Vec<u8>) -> Result<(), TooLarge> {
    let len = frame.encoded_len();
    if len > PEER_MESSAGE_BYTES_MAX {
        return Err(TooLarge(len));
    }
    framing::encode(frame, buffer);
    Ok(())
}

pub(super) fn request_frame(call: u64, request: PeerRequest) -> PeerFrame {
    let body = match request {
        PeerRequest::AppendEntries(request) => Body::AppendEntries(request),
        PeerRequest::Vote(request) => Body::Vote(request),
        PeerRequest::InstallSnapshot(request) => Body::InstallSnapshot(request),
        PeerRequest::Forward(request) => Body::Forward(request),
        PeerRequest::ReadIndex(request) => Body::ReadIndex(request),
        PeerRequest::ChangeMembership(request) => Body::ChangeMembership(request),
        PeerRequest::TimeoutNow(request) => Body::TimeoutNow(request),
        PeerRequest::CurpPool(request) => Body::CurpPool(request),
    };
    PeerFrame {
        call,
        body: Some(body),
    }
}

/// The request a frame carries; `Err` names what came instead.
pub(super) fn request_of(body: Option<Body>) -> Result<PeerRequest, &'static str> {
    Ok(match body {
        Some(Body::AppendEntries(request)) => PeerRequest::AppendEntries(request),
        Some(Body::Vote(request)) => PeerRequest::Vote(request),
        Some(Body::InstallSnapshot(request)) => PeerRequest::InstallSnapshot(request),
        Some(Body::Forward(request)) => PeerRequest::Forward(request),
        Some(Body::ReadIndex(request)) => PeerRequest::ReadIndex(request),
        Some(Body::ChangeMembership(request)) => PeerRequest::ChangeMembership(request),
        Some(Body::TimeoutNow(request)) => PeerRequest::TimeoutNow(request),
        Some(Body::CurpPool(request)) => PeerRequest::CurpPool(request),
        Some(_) => return Err("an answer where a request was expected"),
        None => return Err("a frame without a body (unknown kind)"),
    })
}

pub(super) fn answer_frame(
    call: u64,
    answer: Result<PeerResponse, raftpb::PeerError>,
) -> PeerFrame {
    let body = match answer {
        Ok(PeerResponse::AppendEntries(response)) => Body::AppendEntriesReply(response),
        Ok(PeerResponse::Vote(response)) => Body::VoteReply(response),
        Ok(PeerResponse::InstallSnapshot(response)) => Body::InstallSnapshotReply(response),
        Ok(PeerResponse::Forward(response)) => Body::ForwardReply(response),
        Ok(PeerResponse::ReadIndex(response)) => Body::ReadIndexReply(response),
        Ok(PeerResponse::ChangeMembership(response)) => Body::ChangeMembershipReply(response),
        Ok(PeerResponse::TimeoutNow(response)) => Body::TimeoutNowReply(response),
        Ok(PeerResponse::CurpPool(response)) => Body::CurpPoolReply(response),
        Err(refusal) => Body::Refused(refusal),
    };
    PeerFrame {
        call,
        body: Some(body),
    }
}

/// The answer a frame carries, for the caller of the call it names.
pub(super) fn answer_of(body: Option<Body>) -> Result<PeerResponse, TransportError> {
    Ok(match body {
        Some(Body::AppendEntriesReply(response)) => PeerResponse::AppendEntries(response),
        Some(Body::VoteReply(response)) => PeerResponse::Vote(response),
        Some(Body::InstallSnapshotReply(response)) => PeerResponse::InstallSnapshot(response),
        Some(Body::ForwardReply(response)) => PeerResponse::Forward(response),
        Some(Body::ReadIndexReply(response)) => PeerResponse::ReadIndex(response),
        Some(Body::ChangeMembershipReply(response)) => PeerResponse::ChangeMembership(response),
        Some(Body::TimeoutNowReply(response)) => PeerResponse::TimeoutNow(response),
        Some(Body::CurpPoolReply(response)) => PeerResponse::CurpPool(response),
        Some(Body::Refused(refusal)) => return Err(TransportError::Refused(refusal)),
        Some(_) | None => {
            return Err(TransportError::Unreachable(
                "the peer answered with something other than an answer".to_string(),
            ))
        }
    })
}
