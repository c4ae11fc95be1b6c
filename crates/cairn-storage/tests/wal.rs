//! Integration tests of the WAL through its public API and its files.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use bytes::Bytes;
use cairn_storage::error::{Corruption, WalError};
use cairn_storage::wal::{Entry, Wal, WalOptions};
use rand::{Rng, SeedableRng};

const RECORD_HEADER_BYTES: u64 = 24;
const SEGMENT_HEADER_BYTES: u64 = 24;

/// Entry `index` with `term` and a payload whose length and bytes vary with both.
fn entry(index: u64, term: u64) -> Entry {
    let len = (index * 7 + term) % 41;
    let data: Vec<u8> = (0..len)
        .map(|i| (index as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect();
    Entry {
        index,
        term,
        data: Bytes::from(data),
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|index| entry(index, term)).collect()
}

fn options(segment_bytes_max: u64) -> WalOptions {
    WalOptions {
        segment_bytes_max,
        ..WalOptions::default()
    }
}

/// Opens `dir` and returns the handle with everything replayed after `after_index`.
fn open(dir: &Path, segment_bytes_max: u64, after_index: u64) -> (Wal, Vec<Entry>) {
    let mut replayed = Vec::new();
    let wal = Wal::open(dir, options(segment_bytes_max), after_index, |e| {
        replayed.push(e)
    })
    .expect("wal opens");
    (wal, replayed)
}

/// Segment files as (first index, path), sorted.
fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .map(|p| {
            (
                u64::from_str_radix(p.file_stem().unwrap().to_str().unwrap(), 16).unwrap(),
                p,
            )
        })
        .collect();
    out.sort();
    out
}

/// Appends `entries` in batches of `batch` and waits for each.
async fn append_in_batches(wal: &Wal, entries: Vec<Entry>, batch: usize) {
    for chunk in entries.chunks(batch) {
        let last = chunk.last().unwrap().index;
        let durable = wal.append_flushed(chunk.to_vec()).await.expect("append");
        assert!(
            durable >= last,
            "durable index {durable} below the batch's last {last}"
        );
    }
}

/// Where the records of the segment starting at `first` end, given every segment's first index.
fn written_len(log: &[Entry], first: u64, firsts: impl Iterator<Item = u64>) -> u64 {
    let next = firsts.filter(|f| *f > first).min().unwrap_or(u64::MAX);
    let records: u64 = log
        .iter()
        .filter(|e| e.index >= first && e.index < next)
        .map(|e| RECORD_HEADER_BYTES + e.data.len() as u64)
        .sum();
    SEGMENT_HEADER_BYTES + records
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[tokio::test]
async fn round_trip_across_segments_and_replay_after_index() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, replayed) = open(dir.path(), 512, 0);
    assert!(replayed.is_empty());
    assert_eq!(wal.last_index(), 0);
    let written = entries(1..=500, 3);
    // Batches of uneven size, so that batches straddle the segment limit differently.
    let mut rest = &written[..];
    let mut size = 1;
    while !rest.is_empty() {
        let take = size.min(rest.len());
        wal.append_flushed(rest[..take].to_vec()).await.unwrap();
        rest = &rest[take..];
        size = size % 7 + 1;
    }
    assert_eq!(wal.last_index(), 500);
    let stats = wal.stats();
    assert_eq!(stats.entries_written, 500);
    wal.close().await.unwrap();
    wal.close().await.unwrap();

    let files = segments(dir.path());
    assert!(
        files.len() > 10,
        "expected many segments, got {}",
        files.len()
    );
    assert_eq!(files[0].0, 1);
    let mut record_bytes = 0;
    for (first, path) in &files {
        let bytes = fs::read(path).unwrap();
        let written = written_len(&written, *first, files.iter().map(|(f, _)| *f));
        assert!(
            bytes.len() as u64 > written,
            "segment {first} not preallocated"
        );
        assert!(bytes[written as usize..].iter().all(|b| *b == 0));
        record_bytes += written - SEGMENT_HEADER_BYTES;
    }
    assert_eq!(stats.bytes_written, record_bytes);

    let (wal, replayed) = open(dir.path(), 512, 0);
    assert_eq!(replayed, written);
    assert_eq!(wal.last_index(), 500);
    drop(wal);
    for after_index in [137, 499, 500, 900] {
        let (wal, replayed) = open(dir.path(), 512, after_index);
        let expected: Vec<Entry> = written
            .iter()
            .filter(|e| e.index > after_index)
            .cloned()
            .collect();
        assert_eq!(replayed, expected, "after_index {after_index}");
        assert_eq!(wal.last_index(), 500);
    }

    // Appending after a reopen continues the sequence in the same files.
    let (wal, _) = open(dir.path(), 512, 0);
    append_in_batches(&wal, entries(501..=520, 4), 5).await;
    drop(wal);
    let (_, replayed) = open(dir.path(), 512, 495);
    let indexes: Vec<u64> = replayed.iter().map(|e| e.index).collect();
    assert_eq!(indexes, (496..=520).collect::<Vec<_>>());
    assert_eq!(replayed.last().unwrap(), &entry(520, 4));
}

#[tokio::test]
async fn an_empty_log_accepts_any_first_index() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 1024, 0);
    assert_eq!(
        wal.append_flushed(entries(1000..=1002, 5)).await.unwrap(),
        1002
    );
    assert_eq!(wal.last_index(), 1002);
    wal.close().await.unwrap();
    assert_eq!(segments(dir.path())[0].0, 1000);
    let (wal, replayed) = open(dir.path(), 1024, 0);
    assert_eq!(replayed, entries(1000..=1002, 5));
    assert_eq!(wal.last_index(), 1002);
}

#[tokio::test]
async fn dropping_the_last_handle_still_writes_what_was_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 1 << 20, 0);
    let (tx, rx) = mpsc::channel();
    for index in 1..=50 {
        let tx = tx.clone();
        wal.append(
            vec![entry(index, 1)],
            Box::new(move |r| tx.send(r.is_ok()).unwrap()),
        );
    }
    drop(wal);
    drop(tx);
    assert_eq!(rx.iter().filter(|ok| *ok).count(), 50);
    let (wal, replayed) = open(dir.path(), 1 << 20, 0);
    assert_eq!(replayed, entries(1..=50, 1));
    // A closed handle refuses, without panicking and without blocking.
    wal.close().await.unwrap();
    let error = wal.append_flushed(vec![entry(51, 1)]).await.unwrap_err();
    assert!(matches!(error, WalError::Closed), "{error}");
    assert!(matches!(wal.purge_to(10).await, Err(WalError::Closed)));
}

/// Builds a log of entries 1..=40 over several 512-byte segments; returns the entries.
async fn build_torn_tail_fixture(dir: &Path) -> Vec<Entry> {
    let (wal, _) = open(dir, 512, 0);
    let written = entries(1..=40, 2);
    append_in_batches(&wal, written.clone(), 3).await;
    wal.close().await.unwrap();
    assert!(segments(dir).len() >= 3);
    written
}

/// Copies `fixture` to a new directory, lets `damage` change the bytes of its last segment,
/// opens it and checks that exactly `intact` entries come back, that nothing but zeros follows
/// them (the tail was cut where they end), and that appending continues at the next index.
async fn check_repair(fixture: &Path, intact: &[Entry], damage: impl FnOnce(&mut Vec<u8>)) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(fixture, dir.path());
    let (_, last) = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    damage(&mut bytes);
    fs::write(&last, &bytes).unwrap();

    let (wal, replayed) = open(dir.path(), 512, 0);
    assert_eq!(replayed.len(), intact.len());
    assert_eq!(replayed, intact);
    let next = intact.last().map_or(1, |e| e.index + 1);
    assert_eq!(wal.last_index(), next - 1);
    let last_segment_first = segments(dir.path()).last().unwrap().0;
    let kept_in_last = intact.iter().filter(|e| e.index >= last_segment_first);
    let kept_bytes: u64 = kept_in_last
        .map(|e| RECORD_HEADER_BYTES + e.data.len() as u64)
        .sum();
    let repaired = fs::read(&last).unwrap();
    let kept_end = (SEGMENT_HEADER_BYTES + kept_bytes) as usize;
    assert!(repaired.len() >= kept_end);
    assert!(repaired[kept_end..].iter().all(|b| *b == 0));

    let replacement = entry(next, 9);
    assert_eq!(
        wal.append_flushed(vec![replacement.clone()]).await.unwrap(),
        next
    );
    wal.close().await.unwrap();
    let (_, replayed) = open(dir.path(), 512, 0);
    let mut expected = intact.to_vec();
    expected.push(replacement);
    assert_eq!(replayed, expected);
}

#[tokio::test]
async fn torn_final_record_is_cut_at_every_offset_and_on_every_flipped_byte() {
    let fixture = tempfile::tempdir().unwrap();
    let written = build_torn_tail_fixture(fixture.path()).await;
    let files = segments(fixture.path());
    let last_first = files.last().unwrap().0;
    let len = written_len(&written, last_first, files.iter().map(|(f, _)| *f)) as usize;
    let final_record = RECORD_HEADER_BYTES as usize + written.last().unwrap().data.len();
    let final_start = len - final_record;
    let intact = &written[..written.len() - 1];
    for cut in final_start..len {
        check_repair(fixture.path(), intact, |bytes| bytes.truncate(cut)).await;
    }
    for offset in final_start..len {
        check_repair(fixture.path(), intact, |bytes| bytes[offset] ^= 0x5a).await;
    }
    // Zeros where the record was (never written) are the clean end of the segment.
    check_repair(fixture.path(), intact, |bytes| bytes[final_start..].fill(0)).await;
    // Garbage after an intact log, right after it or past the preallocated zeros, is cut.
    for at in [len, len + 100] {
        check_repair(fixture.path(), &written, |bytes| {
            bytes.resize(bytes.len().max(at + 30), 0);
            bytes[at..at + 30].fill(7);
        })
        .await;
    }
}

#[tokio::test]
async fn torn_last_segment_at_random_offsets_keeps_the_records_before_the_cut() {
    let fixture = tempfile::tempdir().unwrap();
    let written = build_torn_tail_fixture(fixture.path()).await;
    let files = segments(fixture.path());
    let last_first = files.last().unwrap().0;
    let len = written_len(&written, last_first, files.iter().map(|(f, _)| *f));
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7ea1);
    for _ in 0..40 {
        let cut = rng.gen_range(SEGMENT_HEADER_BYTES..len);
        let flip = rng.gen_bool(0.5);
        // Records of the last segment that end at or before the cut (or before the flipped
        // byte) survive; everything from the damaged record on is dropped.
        let mut end = SEGMENT_HEADER_BYTES;
        let intact: Vec<Entry> = written
            .iter()
            .filter(|e| {
                if e.index < last_first {
                    return true;
                }
                end += RECORD_HEADER_BYTES + e.data.len() as u64;
                end <= cut
            })
            .cloned()
            .collect();
        let damage = |bytes: &mut Vec<u8>| {
            if flip {
                bytes[cut as usize] ^= 0x01;
            } else {
                bytes.truncate(cut as usize);
            }
        };
        check_repair(fixture.path(), &intact, damage).await;
    }
}

#[tokio::test]
async fn damage_outside_the_tail_of_the_last_segment_is_an_error() {
    let fixture = tempfile::tempdir().unwrap();
    let written = build_torn_tail_fixture(fixture.path()).await;
    let files = segments(fixture.path());
    let (first_segment_end, first_path) = (files[1].0 - 1, files[0].1.clone());
    let first_written = written_len(&written, 1, files.iter().map(|(f, _)| *f)) as usize;

    let expect_corrupt = |damage: &dyn Fn(&mut Vec<u8>), target: &Path, after_index: u64| {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(fixture.path(), dir.path());
        let path = dir.path().join(target.file_name().unwrap());
        let mut bytes = fs::read(&path).unwrap();
        damage(&mut bytes);
        fs::write(&path, &bytes).unwrap();
        match Wal::open(dir.path(), options(512), after_index, |_| {}) {
            Err(WalError::Corrupt { path: bad, .. }) => assert_eq!(bad, path),
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(_) => panic!("a damaged segment was accepted"),
        }
        // Open must not have "repaired" anything.
        assert_eq!(fs::read(&path).unwrap(), bytes);
    };
    // A flipped byte in a middle record, a cut, or a torn end of an earlier segment.
    expect_corrupt(&|b| b[60] ^= 0x01, &first_path, 0);
    expect_corrupt(&|b| b.truncate(first_written - 1), &first_path, 0);
    expect_corrupt(
        &|b| {
            b.resize(b.len().max(first_written + 8), 0);
            b[first_written..first_written + 8].fill(9);
        },
        &first_path,
        0,
    );
    // Zeros after an earlier segment's records are its unwritten end, but where records were
    // lost to them the next segment no longer follows on.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(fixture.path(), dir.path());
    let mut bytes = fs::read(&first_path).unwrap();
    bytes[SEGMENT_HEADER_BYTES as usize..].fill(0);
    fs::write(dir.path().join(first_path.file_name().unwrap()), &bytes).unwrap();
    let gap = Wal::open(dir.path(), options(512), 0, |_| {}).unwrap_err();
    assert!(
        matches!(
            gap,
            WalError::Corrupt {
                reason: Corruption::Gap { .. },
                ..
            }
        ),
        "{gap}"
    );
    // Segment headers are written atomically, so even the last one's is never "torn".
    let last_path = files.last().unwrap().1.clone();
    expect_corrupt(&|b| b[3] ^= 0x01, &last_path, 0);
    expect_corrupt(&|b| b.truncate(10), &last_path, 0);

    // A missing segment in the middle leaves a gap.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(fixture.path(), dir.path());
    fs::remove_file(dir.path().join(files[1].1.file_name().unwrap())).unwrap();
    let result = Wal::open(dir.path(), options(512), 0, |_| {});
    assert!(matches!(
        result,
        Err(WalError::Corrupt {
            reason: Corruption::Gap { .. },
            ..
        })
    ));

    // Records of a segment wholly at or below after_index are not read at open.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(fixture.path(), dir.path());
    let path = dir.path().join(first_path.file_name().unwrap());
    let mut bytes = fs::read(&path).unwrap();
    bytes[60] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let (_, replayed) = open(dir.path(), 512, first_segment_end);
    assert_eq!(replayed.first().unwrap().index, first_segment_end + 1);
}

#[test]
fn group_commit_shares_fsyncs_between_concurrent_appenders() {
    const APPENDERS: u64 = 64;
    const APPENDS_EACH: u64 = 100;
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 1 << 20, 0);
    // The mutex serializes index assignment + append (the WAL requires a contiguous order);
    // the fsync wait happens outside it, so up to 64 batches share a group.
    let next_index = Arc::new(Mutex::new(1u64));
    let completed = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..APPENDERS)
        .map(|_| {
            let (wal, next_index, completed) = (wal.clone(), next_index.clone(), completed.clone());
            std::thread::spawn(move || {
                for _ in 0..APPENDS_EACH {
                    let (tx, rx) = mpsc::channel();
                    let mut next = next_index.lock().unwrap();
                    let index = *next;
                    *next += 1;
                    let completed = completed.clone();
                    wal.append(
                        vec![entry(index, 1)],
                        Box::new(move |result| {
                            completed.lock().unwrap().push(index);
                            tx.send(result).unwrap();
                        }),
                    );
                    drop(next);
                    let durable = rx.recv().unwrap().expect("append flushed");
                    assert!(durable >= index, "durable {durable} < {index}");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let total = APPENDERS * APPENDS_EACH;
    assert_eq!(
        *completed.lock().unwrap(),
        (1..=total).collect::<Vec<_>>(),
        "callback order"
    );
    let stats = wal.stats();
    println!("{total} appends, {} fsyncs", stats.fsyncs);
    assert_eq!(stats.entries_written, total);
    assert!(
        stats.fsyncs * 4 <= total,
        "{} fsyncs for {total} appends: group commit is not grouping",
        stats.fsyncs
    );
    drop(wal);
    let (_, replayed) = open(dir.path(), 1 << 20, 0);
    assert_eq!(replayed, entries(1..=total, 1));
}

#[tokio::test]
async fn purge_to_removes_whole_old_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 256, 0);
    append_in_batches(&wal, entries(1..=300, 1), 4).await;
    let before = segments(dir.path());
    wal.purge_to(150).await.unwrap();
    let after = segments(dir.path());
    assert!(after.len() < before.len());
    // The first remaining segment holds 151: nothing needed was removed, nothing removable kept.
    assert!(
        after[0].0 <= 151 && after[1].0 > 151,
        "first segments {after:?}"
    );
    assert_eq!(after, before[before.len() - after.len()..]);
    assert_eq!(wal.last_index(), 300);
    // Purging again at the same point, or below it, changes nothing.
    wal.purge_to(150).await.unwrap();
    wal.purge_to(3).await.unwrap();
    assert_eq!(segments(dir.path()), after);
    append_in_batches(&wal, entries(301..=310, 1), 4).await;
    wal.close().await.unwrap();

    let (_, replayed) = open(dir.path(), 256, 150);
    assert_eq!(replayed, entries(151..=310, 1));
    let (_, replayed) = open(dir.path(), 256, 0);
    assert_eq!(replayed, entries(after[0].0..=310, 1));
}

#[tokio::test]
async fn purge_past_the_end_restarts_the_log_after_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 256, 0);
    append_in_batches(&wal, entries(1..=50, 1), 10).await;
    // As after installing a snapshot at 1000 on a node whose log ends at 50.
    wal.purge_to(1000).await.unwrap();
    assert_eq!(wal.last_index(), 1000);
    let files = segments(dir.path());
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, 1001);
    wal.close().await.unwrap();
    let (wal, replayed) = open(dir.path(), 256, 1000);
    assert!(replayed.is_empty());
    assert_eq!(wal.last_index(), 1000);
    wal.append_flushed(entries(1001..=1003, 2)).await.unwrap();
    drop(wal);
    let (_, replayed) = open(dir.path(), 256, 0);
    assert_eq!(replayed, entries(1001..=1003, 2));
}

#[tokio::test]
async fn truncate_after_drops_the_suffix_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 256, 0);
    append_in_batches(&wal, entries(1..=300, 1), 4).await;

    // Inside a segment in the middle of the log: later segments disappear.
    wal.truncate_after(220).await.unwrap();
    assert_eq!(wal.last_index(), 220);
    assert!(segments(dir.path()).iter().all(|(first, _)| *first <= 221));
    append_in_batches(&wal, entries(221..=230, 2), 3).await;

    // Exactly at a segment boundary: the segment starting at index + 1 is kept, empty.
    let boundary = segments(dir.path())[5].0;
    wal.truncate_after(boundary - 1).await.unwrap();
    assert_eq!(segments(dir.path()).last().unwrap().0, boundary);
    append_in_batches(&wal, entries(boundary..=boundary + 2, 3), 1).await;

    // Beyond the end: nothing happens.
    wal.truncate_after(10_000).await.unwrap();
    assert_eq!(wal.last_index(), boundary + 2);
    wal.close().await.unwrap();

    let (wal, replayed) = open(dir.path(), 256, 0);
    let mut expected = entries(1..=boundary - 1, 1);
    expected.extend(entries(boundary..=boundary + 2, 3));
    assert_eq!(replayed, expected);

    // Below the start of a purged log: the log restarts at index + 1.
    wal.purge_to(100).await.unwrap();
    let first = segments(dir.path())[0].0;
    assert!(first > 50);
    wal.truncate_after(50).await.unwrap();
    assert_eq!(wal.last_index(), 50);
    wal.append_flushed(vec![entry(51, 4)]).await.unwrap();
    drop(wal);
    let (_, replayed) = open(dir.path(), 256, 0);
    assert_eq!(replayed, vec![entry(51, 4)]);
}

#[tokio::test]
async fn truncate_after_applies_after_the_appends_queued_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 256, 0);
    let (tx, rx) = mpsc::channel();
    for index in 1..=40 {
        let tx = tx.clone();
        wal.append(
            vec![entry(index, 1)],
            Box::new(move |r| tx.send((index, r)).unwrap()),
        );
    }
    wal.truncate_after(25).await.unwrap();
    drop(tx);
    let results: Vec<(u64, Result<u64, WalError>)> = rx.iter().collect();
    assert_eq!(
        results.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
    assert!(results
        .iter()
        .all(|(index, r)| matches!(r, Ok(d) if d >= index)));
    assert_eq!(wal.last_index(), 25);
    wal.append_flushed(entries(26..=27, 2)).await.unwrap();
    drop(wal);
    let (_, replayed) = open(dir.path(), 256, 0);
    let mut expected = entries(1..=25, 1);
    expected.extend(entries(26..=27, 2));
    assert_eq!(replayed, expected);
}

/// `read(first, last)`, with what the log is expected to hold as the oracle: every durable
/// entry in range, in order, or `NotListed` naming the first one the WAL does not have.
fn check_reads(wal: &Wal, log: &[Entry], first_listed: u64, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let last_listed = log.last().map_or(0, |e| e.index);
    for _ in 0..200 {
        let first = rng.gen_range(first_listed.saturating_sub(3).max(1)..=last_listed + 3);
        let last = first + rng.gen_range(0..60);
        let result = wal.read(first, last);
        if first >= first_listed && last <= last_listed {
            let expected: Vec<Entry> = log
                .iter()
                .filter(|e| (first..=last).contains(&e.index))
                .cloned()
                .collect();
            assert_eq!(result.expect("listed entries read"), expected);
        } else {
            let missing = if first < first_listed {
                first
            } else {
                first.max(last_listed + 1)
            };
            assert!(
                matches!(result, Err(WalError::NotListed { index }) if index == missing),
                "read({first}, {last}) of {first_listed}..={last_listed}: {result:?}"
            );
        }
    }
}

#[tokio::test]
async fn reads_return_durable_entries_across_segments_purges_truncations_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 512, 0);
    let mut log = entries(1..=300, 2);
    append_in_batches(&wal, log.clone(), 7).await;
    assert!(segments(dir.path()).len() > 5);
    check_reads(&wal, &log, 1, 1);

    // A purge drops whole segments: reads below the new first segment are refused.
    wal.purge_to(150).await.unwrap();
    let first_kept = segments(dir.path())[0].0;
    assert!(first_kept > 1 && first_kept <= 151);
    check_reads(&wal, &log, first_kept, 2);

    // A truncation forgets the suffix; entries appended after it are read with their new term.
    wal.truncate_after(260).await.unwrap();
    log.truncate(260);
    check_reads(&wal, &log, first_kept, 3);
    let rewritten = entries(261..=320, 5);
    append_in_batches(&wal, rewritten.clone(), 4).await;
    log.extend(rewritten);
    check_reads(&wal, &log, first_kept, 4);
    wal.close().await.unwrap();

    // After a reopen, segments read at open are listed; those skipped (all at or below
    // `after_index`) are not.
    let (wal, _) = open(dir.path(), 512, 0);
    check_reads(&wal, &log, first_kept, 5);
    drop(wal);
    let after = 290;
    let (wal, _) = open(dir.path(), 512, after);
    let first_read_at_open = segments(dir.path())
        .iter()
        .map(|(first, _)| *first)
        .filter(|first| *first <= after + 1)
        .max()
        .unwrap();
    check_reads(&wal, &log, first_read_at_open, 6);

    // A truncation into a skipped segment lists what is appended after it.
    let skipped = segments(dir.path())[0].0;
    assert!(skipped < first_read_at_open);
    wal.truncate_after(skipped + 1).await.unwrap();
    log.truncate((skipped + 1 - log[0].index + 1) as usize);
    let after_cut = entries(skipped + 2..=skipped + 40, 6);
    append_in_batches(&wal, after_cut.clone(), 3).await;
    check_reads(&wal, &after_cut, skipped + 2, 7);
}

#[tokio::test]
async fn a_read_of_damaged_bytes_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 512, 0);
    append_in_batches(&wal, entries(1..=100, 1), 10).await;
    let (first, path) = segments(dir.path())[1].clone();
    let mut bytes = fs::read(&path).unwrap();
    let damaged = SEGMENT_HEADER_BYTES as usize + RECORD_HEADER_BYTES as usize - 1;
    bytes[damaged] ^= 0x40;
    fs::write(&path, bytes).unwrap();
    let error = wal.read(first, first).unwrap_err();
    assert!(
        matches!(&error, WalError::Corrupt { path: at, offset, reason: Corruption::Crc { .. } }
            if *at == path && *offset == SEGMENT_HEADER_BYTES),
        "{error}"
    );
    assert_eq!(
        wal.read(first + 1, first + 1).unwrap(),
        vec![entry(first + 1, 1)]
    );
}
