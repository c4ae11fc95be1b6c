//! Throughput of group commit, run by hand:
//! `cargo test -p cairn-storage --release --test wal_bench -- --ignored --nocapture`
//!
//! Every appender waits for its own fsync before appending again (as a client request does),
//! so one appender gets one fsync per append and many appenders share fsyncs.

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_storage::wal::{Entry, Wal, WalOptions};

const ENTRY_BYTES: usize = 256;
const RUN_FOR: Duration = Duration::from_secs(3);

fn run(appenders: usize) {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), WalOptions::default(), 0, |_| {}).unwrap();
    let next_index = Arc::new(Mutex::new(1u64));
    let data = Bytes::from(vec![0xab; ENTRY_BYTES]);
    let started = Instant::now();
    let threads: Vec<_> = (0..appenders)
        .map(|_| {
            let (wal, next_index, data) = (wal.clone(), next_index.clone(), data.clone());
            std::thread::spawn(move || {
                let mut done = 0u64;
                while started.elapsed() < RUN_FOR {
                    let (tx, rx) = mpsc::channel();
                    let mut next = next_index.lock().unwrap();
                    let entry = Entry {
                        index: *next,
                        term: 1,
                        data: data.clone(),
                    };
                    *next += 1;
                    wal.append(vec![entry], Box::new(move |r| tx.send(r).unwrap()));
                    drop(next);
                    rx.recv().unwrap().expect("append flushed");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let appends: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let seconds = started.elapsed().as_secs_f64();
    let stats = wal.stats();
    println!(
        "{appenders:>3} appenders, {ENTRY_BYTES}-byte entries: {:>8.0} appends/s, {:>6.0} fsyncs/s, \
         {:.1} appends/fsync, last fsync {} us",
        appends as f64 / seconds,
        stats.fsyncs as f64 / seconds,
        appends as f64 / stats.fsyncs as f64,
        stats.last_fsync_us,
    );
}

#[test]
#[ignore = "benchmark: run by hand with --release --ignored --nocapture"]
fn append_throughput_1_vs_64_appenders() {
    run(1);
    run(64);
}
