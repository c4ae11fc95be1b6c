//! The native CURP-HO listener (`--listen-native-addr`): framed TCP (see
//! `cairn_proto::framing`), one connection per client–replica pair.
//!
//! Per connection, two tasks:
//! - the **reader** decodes frames in arrival order and hands each to the replica at once
//!   (`connection::handle`): a proposal is ordered or witnessed before the next frame is
//!   read, which keeps a client's commands in order (the replicas also check each command's
//!   `causal_dep`, for what a broken connection lost). Answers that must
//!   wait — a slow-path `SyncReply`, a weak read waiting for a revision, a flush — go to the
//!   writer as futures;
//! - the **writer** owns the socket's write half: it polls those futures and writes every
//!   reply that is ready in one `write` (batching), in FIFO order of readiness.
//!
//! Both stop when the client closes or the node shuts down. The queue between them is
//! bounded: a client that does not read its replies stops being read.

mod connection;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::node::Node;

/// Resolves once the node begins to stop.
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

/// Accepts native clients on `listener` until the node stops.
pub async fn serve(listener: TcpListener, node: Node) {
    let mut stopping = node.stopping();
    if let Ok(address) = listener.local_addr() {
        info!(%address, "ready to serve native CURP-HO clients");
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection::run(stream, node.clone()));
                }
                Err(error) => {
                    warn!(%error, "native listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            () = stopped(&mut stopping) => return,
        }
    }
}
