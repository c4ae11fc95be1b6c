//! Machine ceilings printed next to every `cairn bench log` result: loopback TCP bandwidth and
//! single-core memcpy bandwidth, measured in the same run so that a publish throughput is always
//! read against what this machine can move at all.
//!
//! Each function is one self-contained measurement: it owns its sockets, threads and buffers and
//! releases them before returning. Figures are GB/s with GB = 1e9 bytes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

/// Size of each loopback write and of the receiver's buffer: large enough that per-syscall cost
/// vanishes next to copying, as with a broker's batched sends.
const LOOPBACK_CHUNK_BYTES: usize = 1 << 20;
/// The memcpy source: well past every cache level, so the figure is memory bandwidth.
const MEMCPY_BUFFER_BYTES: usize = 64 << 20;
const BYTES_PER_GB: f64 = 1e9;

/// Loopback TCP bandwidth over one 127.0.0.1 connection: see [`loopback_tcp_gbps_connections`].
pub async fn loopback_tcp_gbps(bytes: u64) -> io::Result<f64> {
    loopback_tcp_gbps_connections(bytes, 1).await
}

/// Loopback TCP bandwidth: `bytes` split over `connections` 127.0.0.1 connections, each with one
/// sender writing 1 MiB chunks (TCP_NODELAY) and one receiver reading into a reused buffer.
/// Timed from the first write of any sender to the last byte reaching its receiver.
///
/// Senders and receivers are blocking sockets on their own threads rather than tokio tasks: the
/// ceiling is the kernel's, and must not depend on the caller's runtime flavour (a
/// current-thread runtime would put sender and receiver on one core).
pub async fn loopback_tcp_gbps_connections(bytes: u64, connections: usize) -> io::Result<f64> {
    if bytes == 0 || connections == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "loopback ceiling needs bytes > 0 and connections > 0",
        ));
    }
    tokio::task::spawn_blocking(move || loopback_blocking(bytes, connections, Landing::Reused))
        .await
        .map_err(io::Error::other)?
}

/// Like [`loopback_tcp_gbps_connections`], but each receiver lands the bytes in successive
/// 1 MiB windows of a large pre-faulted buffer, as a broker receiving into its payload log does,
/// instead of one cache-resident buffer. Shows what part of the gap to the plain ceiling is the
/// memory traffic of keeping the data at all.
pub async fn loopback_into_memory_gbps(bytes: u64, connections: usize) -> io::Result<f64> {
    if bytes == 0 || connections == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "needs bytes > 0 and connections > 0",
        ));
    }
    let log_bytes =
        (bytes / connections as u64).clamp(LOOPBACK_CHUNK_BYTES as u64, 1 << 30) as usize;
    tokio::task::spawn_blocking(move || {
        loopback_blocking(bytes, connections, Landing::Log(log_bytes))
    })
    .await
    .map_err(io::Error::other)?
}

/// Where a receiver puts what it reads.
#[derive(Clone, Copy)]
enum Landing {
    /// One 1 MiB buffer, read into again and again.
    Reused,
    /// Successive 1 MiB windows of a buffer of this size, wrapping around.
    Log(usize),
}

fn loopback_blocking(bytes: u64, connections: usize, landing: Landing) -> io::Result<f64> {
    let pairs = connect_pairs(connections)?;
    // Every thread waits at the start line so no connection starts while others are still
    // being spawned; the clock itself starts at the first write.
    let start_line = Arc::new(Barrier::new(2 * connections));
    let mut senders = Vec::with_capacity(connections);
    let mut receivers = Vec::with_capacity(connections);
    for ((sender, receiver), share) in pairs.into_iter().zip(split_even(bytes, connections)) {
        let line = start_line.clone();
        senders.push(thread::spawn(move || {
            line.wait();
            send_share(sender, share)
        }));
        let line = start_line.clone();
        receivers.push(thread::spawn(move || {
            // Filled before the start line: page faults stay out of the measurement.
            let buffer = landing_buffer(landing);
            line.wait();
            receive_share(receiver, share, buffer)
        }));
    }
    let mut first_write: Option<Instant> = None;
    for sender in senders {
        let started = join_measurement(sender)?;
        first_write = Some(first_write.map_or(started, |first| first.min(started)));
    }
    let mut last_byte: Option<Instant> = None;
    for receiver in receivers {
        let finished = join_measurement(receiver)?;
        last_byte = Some(last_byte.map_or(finished, |last| last.max(finished)));
    }
    match (first_write, last_byte) {
        (Some(first), Some(last)) => Ok(gbps(bytes, last.saturating_duration_since(first))),
        _ => unreachable!("connections > 0 was checked, so there is at least one pair"),
    }
}

/// `connections` (sender, receiver) pairs over one listener bound to 127.0.0.1:0.
fn connect_pairs(connections: usize) -> io::Result<Vec<(TcpStream, TcpStream)>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let mut pairs = Vec::with_capacity(connections);
    for _ in 0..connections {
        // connect() completes against the listen backlog, so accepting afterwards cannot block.
        let sender = TcpStream::connect(address)?;
        let (receiver, _) = listener.accept()?;
        sender.set_nodelay(true)?;
        receiver.set_nodelay(true)?;
        pairs.push((sender, receiver));
    }
    Ok(pairs)
}

/// `total` split into `parts` shares differing by at most one byte.
fn split_even(total: u64, parts: usize) -> Vec<u64> {
    let parts_u64 = parts as u64;
    (0..parts_u64)
        .map(|part| total / parts_u64 + u64::from(part < total % parts_u64))
        .collect()
}

/// Writes `share` bytes and closes the write side; returns when the first write started.
fn send_share(mut stream: TcpStream, share: u64) -> io::Result<Instant> {
    let chunk = vec![0xa5_u8; LOOPBACK_CHUNK_BYTES];
    let started = Instant::now();
    let mut remaining = share;
    while remaining > 0 {
        let len = remaining.min(LOOPBACK_CHUNK_BYTES as u64) as usize;
        stream.write_all(&chunk[..len])?;
        remaining -= len as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    Ok(started)
}

/// Reads until EOF; returns when the last of the `share` bytes arrived.
fn landing_buffer(landing: Landing) -> Vec<u8> {
    let size = match landing {
        Landing::Reused => LOOPBACK_CHUNK_BYTES,
        Landing::Log(bytes) => bytes,
    };
    // Filled, not zeroed: zero pages would be faulted in on first write.
    vec![1_u8; size]
}

fn receive_share(mut stream: TcpStream, share: u64, mut buffer: Vec<u8>) -> io::Result<Instant> {
    let size = buffer.len();
    let mut at = 0usize;
    let mut received = 0_u64;
    let mut finished = None;
    loop {
        let window = at..(at + LOOPBACK_CHUNK_BYTES).min(size);
        let len = stream.read(&mut buffer[window])?;
        at = if at + len >= size { 0 } else { at + len };
        if len == 0 {
            break;
        }
        received += len as u64;
        if received >= share && finished.is_none() {
            finished = Some(Instant::now());
        }
    }
    match finished {
        Some(finished) if received == share => Ok(finished),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("loopback receiver got {received} bytes, expected {share}"),
        )),
    }
}

fn join_measurement(handle: thread::JoinHandle<io::Result<Instant>>) -> io::Result<Instant> {
    match handle.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Single-core memcpy bandwidth: a 64 MiB source copied with `copy_from_slice` into a 64 MiB
/// destination, again and again, until `bytes` have been copied (a request below 64 MiB copies
/// that prefix once; 0 copies nothing and reports 0).
pub fn memcpy_gbps(bytes: u64) -> f64 {
    // Non-zero fills write every page now (a zeroed Vec maps pages lazily), so page faults stay
    // out of the timed loop.
    let source = vec![0x5a_u8; MEMCPY_BUFFER_BYTES];
    let mut destination = vec![0xa5_u8; MEMCPY_BUFFER_BYTES];
    let started = Instant::now();
    let mut copied = 0_u64;
    while copied < bytes {
        let len = (bytes - copied).min(MEMCPY_BUFFER_BYTES as u64) as usize;
        // black_box on both sides: the source is "unknown" and the destination "read", so the
        // optimiser can neither hoist nor drop repeated copies.
        destination[..len].copy_from_slice(std::hint::black_box(&source[..len]));
        std::hint::black_box(&mut destination);
        copied += len as u64;
    }
    gbps(bytes, started.elapsed())
}

fn gbps(bytes: u64, elapsed: std::time::Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64().max(1e-9) / BYTES_PER_GB
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Far above any loopback or DRAM bandwidth: a figure past it means the timing is broken.
    const SANE_GBPS_MAX: f64 = 10_000.0;

    fn assert_sane(gbps: f64, what: &str) {
        assert!(
            gbps.is_finite() && gbps > 0.0 && gbps < SANE_GBPS_MAX,
            "{what}: {gbps} GB/s is not a plausible bandwidth"
        );
    }

    #[test]
    fn split_even_shares_sum_to_total_and_differ_by_at_most_one() {
        for (total, parts) in [(10, 3), (3, 4), (1 << 30, 1), (7, 7)] {
            let shares = split_even(total, parts);
            assert_eq!(shares.len(), parts);
            assert_eq!(shares.iter().sum::<u64>(), total);
            let (min, max) = (shares.iter().min(), shares.iter().max());
            assert!(
                max.zip(min).is_some_and(|(max, min)| max - min <= 1),
                "{shares:?}"
            );
        }
    }

    #[test]
    fn memcpy_bandwidth_is_plausible_for_small_and_larger_copies() {
        assert_sane(memcpy_gbps(16 << 20), "16 MiB memcpy");
        // Several passes over the 64 MiB buffers, including a partial last one.
        assert_sane(memcpy_gbps((3 << 26) + 12_345), "~192 MiB memcpy");
        assert_eq!(memcpy_gbps(0), 0.0);
    }

    #[tokio::test]
    async fn loopback_bandwidth_is_plausible_over_one_connection() {
        let small = loopback_tcp_gbps(8 << 20)
            .await
            .expect("8 MiB over loopback");
        assert_sane(small, "8 MiB loopback");
        // Not a multiple of the chunk size: the last write is partial.
        let larger = loopback_tcp_gbps((64 << 20) + 777)
            .await
            .expect("64 MiB over loopback");
        assert_sane(larger, "64 MiB loopback");
    }

    #[tokio::test]
    async fn loopback_bandwidth_is_plausible_over_several_connections() {
        // Uneven shares (three of 8 MiB + 1 byte, one of 8 MiB): the +1 ends on a partial chunk.
        let gbps = loopback_tcp_gbps_connections((32 << 20) + 3, 4)
            .await
            .expect("32 MiB over 4 connections");
        assert_sane(gbps, "4-connection loopback");
    }

    #[tokio::test]
    async fn loopback_rejects_empty_runs() {
        for (bytes, connections) in [(0, 1), (1, 0)] {
            let error = loopback_tcp_gbps_connections(bytes, connections)
                .await
                .expect_err("nothing to measure");
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        }
    }
}
