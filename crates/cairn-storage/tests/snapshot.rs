//! Integration tests of snapshot files through `SnapshotStore` and the files themselves.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use cairn_storage::error::{SnapshotCorruption, SnapshotError};
use cairn_storage::snapshot::SnapshotStore;

fn payload(index: u64) -> Vec<u8> {
    (0..(100 + index as usize * 13))
        .map(|i| (i as u64 * 7 + index) as u8)
        .collect()
}

/// Streams `data` as the snapshot at `index`, in uneven pieces.
fn save(store: &SnapshotStore, index: u64, data: &[u8]) -> Result<(), SnapshotError> {
    let mut writer = store.writer()?;
    for piece in data.chunks(7) {
        writer.write_all(piece).unwrap();
    }
    writer.finish(index).map(drop)
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn path_of(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:016x}.snap"))
}

#[test]
fn save_load_keeps_the_newest_two() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    assert_eq!(store.load_latest().unwrap(), None);
    for index in [10, 20, 30] {
        save(&store, index, &payload(index)).unwrap();
        assert_eq!(store.load_latest().unwrap(), Some((index, payload(index))));
    }
    assert_eq!(
        snapshot_files(dir.path()),
        ["0000000000000014.snap", "000000000000001e.snap"]
    );

    // Saving the same index again replaces it; an empty payload is a valid snapshot.
    save(&store, 30, b"").unwrap();
    assert_eq!(store.load_latest().unwrap(), Some((30, Vec::new())));

    // A reopened store sees the same files.
    drop(store);
    let store = SnapshotStore::open(dir.path()).unwrap();
    assert_eq!(store.load_latest().unwrap(), Some((30, Vec::new())));
}

#[test]
fn a_corrupt_newest_snapshot_falls_back_to_the_older_one() {
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 5] = [
        ("flipped payload byte", |b| *b.last_mut().unwrap() ^= 0x01),
        ("flipped header byte", |b| b[13] ^= 0x80),
        ("cut short", |b| b.truncate(b.len() - 1)),
        ("cut inside the header", |b| b.truncate(20)),
        ("trailing garbage", |b| b.push(0)),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        save(&store, 5, &payload(5)).unwrap();
        save(&store, 9, &payload(9)).unwrap();
        let newest = path_of(dir.path(), 9);
        let mut bytes = fs::read(&newest).unwrap();
        damage(&mut bytes);
        fs::write(&newest, &bytes).unwrap();
        assert_eq!(
            store.load_latest().unwrap(),
            Some((5, payload(5))),
            "{what}"
        );
    }
}

#[test]
fn only_corrupt_snapshots_is_an_error_not_an_empty_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    save(&store, 5, &payload(5)).unwrap();
    save(&store, 9, &payload(9)).unwrap();
    for index in [5, 9] {
        let path = path_of(dir.path(), index);
        let mut bytes = fs::read(&path).unwrap();
        bytes[40] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
    }
    match store.load_latest() {
        Err(SnapshotError::AllCorrupt {
            count: 2,
            newest: SnapshotCorruption::Crc { .. },
            ..
        }) => {}
        other => panic!("expected AllCorrupt, got {other:?}"),
    }
}

#[test]
fn a_snapshot_renamed_to_another_index_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    save(&store, 5, &payload(5)).unwrap();
    fs::copy(path_of(dir.path(), 5), path_of(dir.path(), 7)).unwrap();
    assert_eq!(store.load_latest().unwrap(), Some((5, payload(5))));
}

#[test]
fn interrupted_saves_leave_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    save(&store, 5, &payload(5)).unwrap();
    // A crash between writing the temporary file and renaming it.
    fs::write(
        dir.path().join("0000000000000009.snap.tmp"),
        b"half a snapshot",
    )
    .unwrap();
    assert_eq!(store.load_latest().unwrap(), Some((5, payload(5))));
    drop(store);
    let store = SnapshotStore::open(dir.path()).unwrap();
    assert_eq!(snapshot_files(dir.path()), ["0000000000000005.snap"]);
    assert_eq!(store.load_latest().unwrap(), Some((5, payload(5))));
}

#[test]
fn an_abandoned_writer_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    save(&store, 5, &payload(5)).unwrap();
    let mut writer = store.writer().unwrap();
    writer.write_all(&payload(9)).unwrap();
    drop(writer);
    assert_eq!(snapshot_files(dir.path()), ["0000000000000005.snap"]);
    assert_eq!(store.load_latest().unwrap(), Some((5, payload(5))));
}

/// What a leader sends: its snapshot file, byte for byte (the file `finish` hands back and
/// the one `open_file` opens hold the same bytes).
fn leader_file(index: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let mut writer = store.writer().unwrap();
    writer.write_all(&payload(index)).unwrap();
    let mut finished = Vec::new();
    std::io::Read::read_to_end(&mut writer.finish(index).unwrap(), &mut finished).unwrap();
    let mut bytes = Vec::new();
    let mut file = store.open_file(index).unwrap().expect("just saved");
    std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
    assert_eq!(finished, bytes);
    assert_eq!(store.open_file(index + 1).unwrap().map(|_| ()), None);
    bytes
}

#[test]
fn a_received_snapshot_file_is_checked_then_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    save(&store, 5, &payload(5)).unwrap();
    let (mut file, tmp) = store.receive().unwrap();
    file.write_all(&leader_file(9)).unwrap();
    let received = fs::read(&tmp).unwrap();
    let payload_9 = SnapshotStore::check_received(received, 9).unwrap();
    assert_eq!(payload_9, payload(9));
    fs::remove_file(&tmp).unwrap();
    save(&store, 9, &payload_9).unwrap();
    drop(store);
    let store = SnapshotStore::open(dir.path()).unwrap();
    assert_eq!(
        snapshot_files(dir.path()),
        ["0000000000000005.snap", "0000000000000009.snap"]
    );
    assert_eq!(store.load_latest().unwrap(), Some((9, payload(9))));
}

#[test]
fn a_damaged_or_mislabelled_received_file_is_refused() {
    let sent = leader_file(9);
    let mut damaged = sent.clone();
    damaged[40] ^= 0x01;
    let cases = [
        (damaged, 9, "CRC mismatch"),
        (sent[..sent.len() - 1].to_vec(), 9, "payload bytes"),
        (sent, 8, "header says index 9"),
    ];
    for (bytes, announced, expected) in cases {
        match SnapshotStore::check_received(bytes, announced) {
            Err(error @ SnapshotError::Received { .. }) => {
                let message = error.to_string();
                assert!(message.contains(expected), "{message}");
            }
            other => panic!("expected a refusal ({expected}), got {other:?}"),
        }
    }
}
