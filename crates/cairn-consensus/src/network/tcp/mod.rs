//! The real peer transport: framed TCP, one long-lived connection per peer pair.
//!
//! Each frame is a `raftpb.PeerFrame` (a call id and one request or answer) behind a u32
//! little-endian length. A member dials each peer it calls once, lazily, and keeps the
//! connection ([`connection`]): calls queue in a bounded queue (callers wait when it is full),
//! one writer task drains everything queued into one write, one reader hands each answer to
//! its caller by call id. The peer serves the connection with [`serve`]: every request runs
//! as its own task (a `Forward` waiting for a commit must not hold up the heartbeats behind
//! it), answers go back in whatever order they finish, again batched by one writer.
//!
//! Calls to one peer are written in the order they were made (openraft also keeps at most one
//! replication call in flight per peer). A broken connection fails its calls in flight with
//! [`TransportError::Unreachable`]; the next call dials again.
//!
//! TLS stays outside this crate: the server hands [`serve`] an already accepted (and, for
//! `https://` peers, already decrypted) stream, and dials through a [`Dialer`] of its own.

mod connection;
mod frame;
mod serve;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};

pub use serve::serve;

use crate::network::{PeerRequest, Transport, TransportError, TransportFuture};
use crate::types::{Member, MemberId};
use connection::Call;

/// Connect timeout for a peer connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A byte stream to or from a peer: plain TCP or TLS over it.
pub trait PeerIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> PeerIo for T {}

/// Opens connections to peers by their URL.
pub trait Dialer: Send + Sync + 'static {
    fn dial(&self, url: &str) -> BoxFuture<'static, io::Result<Box<dyn PeerIo>>>;
}

/// Dials plain TCP.
pub struct TcpDialer {
    /// Source address of peer connections. Set to the peer listener's own IP when it listens
    /// on a specific one, so a member's connections come from its peer address (what firewall
    /// rules, and the link-cutting proxy of the fault tests, key on).
    source: Option<IpAddr>,
}

impl TcpDialer {
    pub fn new(source: Option<IpAddr>) -> TcpDialer {
        TcpDialer { source }
    }

    /// A TCP connection to the host and port of a peer URL (`http://host:port`,
    /// `https://[v6]:port/`), from the source address, with Nagle off (small messages that
    /// someone waits for).
    pub fn connect(&self, url: &str) -> BoxFuture<'static, io::Result<TcpStream>> {
        let address = host_port(url).map(|(host, port)| (host.to_string(), port));
        let source = self.source;
        Box::pin(async move {
            let (host, port) = address?;
            let mut last_error = None;
            for target in tokio::net::lookup_host((host.as_str(), port)).await? {
                match connect_from(source, target).await {
                    Ok(stream) => {
                        stream.set_nodelay(true)?;
                        return Ok(stream);
                    }
                    Err(error) => last_error = Some(error),
                }
            }
            Err(last_error.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"))
            }))
        })
    }
}

async fn connect_from(source: Option<IpAddr>, target: SocketAddr) -> io::Result<TcpStream> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = source.filter(|source| source.is_ipv4() == target.is_ipv4()) {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    socket.connect(target).await
}

impl Dialer for TcpDialer {
    fn dial(&self, url: &str) -> BoxFuture<'static, io::Result<Box<dyn PeerIo>>> {
        let connect = self.connect(url);
        Box::pin(async move { Ok(Box::new(connect.await?) as Box<dyn PeerIo>) })
    }
}

/// The host (brackets of an IPv6 literal removed) and port of a peer URL.
pub fn host_port(url: &str) -> io::Result<(&str, u16)> {
    let invalid = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("peer URL {url:?}: {why}"),
        )
    };
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| invalid("no port"))?;
    let port = port.parse().map_err(|_| invalid("bad port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    Ok((host, port))
}

/// The framed TCP transport (see the module doc).
pub struct TcpTransport {
    dialer: Arc<dyn Dialer>,
    /// A std mutex: held to look up or replace a connection's queue, never across an await.
    connections: Mutex<HashMap<MemberId, (String, mpsc::Sender<Call>)>>,
}

impl TcpTransport {
    pub fn new(dialer: Arc<dyn Dialer>) -> TcpTransport {
        TcpTransport {
            dialer,
            connections: Mutex::default(),
        }
    }

    /// The queue of the connection to `target`; a new connection if there is none yet, the
    /// last one broke, or the member's peer URL changed.
    fn queue(
        &self,
        target: MemberId,
        member: &Member,
    ) -> Result<mpsc::Sender<Call>, TransportError> {
        let url = member.peer_urls.first().ok_or_else(|| {
            TransportError::Unreachable(format!("member {target:x} has no peer URL"))
        })?;
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((known, queue)) = connections.get(&target) {
            if known == url && !queue.is_closed() {
                return Ok(queue.clone());
            }
        }
        let queue = connection::open(self.dialer.clone(), url.clone());
        connections.insert(target, (url.clone(), queue.clone()));
        Ok(queue)
    }
}

impl Transport for TcpTransport {
    fn call(&self, target: MemberId, member: &Member, request: PeerRequest) -> TransportFuture {
        let (reply, answer) = oneshot::channel();
        let call = Call { request, reply };
        // Queued now, in call order; only when the queue is full does the caller wait.
        let blocked = match self.queue(target, member) {
            Err(error) => return Box::pin(async move { Err(error) }),
            Ok(queue) => match queue.try_send(call) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(call)) => Some((queue, call)),
                // The connection ended between the lookup and the send: its calls failed.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Box::pin(async move {
                        Err(TransportError::Unreachable(format!(
                            "connection to {target:x} closed"
                        )))
                    })
                }
            },
        };
        Box::pin(async move {
            let closed = || TransportError::Unreachable(format!("connection to {target:x} closed"));
            if let Some((queue, call)) = blocked {
                queue.send(call).await.map_err(|_| closed())?;
            }
            answer.await.map_err(|_| closed())?
        })
    }
}

#[cfg(test)]
mod tests;
