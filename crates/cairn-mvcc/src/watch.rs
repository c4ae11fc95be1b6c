//! Watch: reading the event history of a key range, revision by revision.
//!
//! Cairn's watchers *pull*: each keeps the next revision it has not seen and asks the store for
//! the events from there. A watcher that is current reads one or two revisions per wake-up; a
//! slow one (its client stopped reading) simply reads more later, from history — it is caught
//! up, never dropped — until compaction overtakes it, and then it is cancelled with the
//! compaction revision, as etcd does. Events of one revision always travel together.

use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::{Event, KeyValue};
use cairn_storage::schema::Bucket;

use crate::index::KeyRange;
use crate::limits::WATCH_BATCH_REVISIONS_MAX;
use crate::revision::Revision;
use crate::store::{decode_kv, KvStore};

/// What a watcher wants to see.
#[derive(Clone, Debug)]
pub struct WatchFilter {
    pub range: KeyRange,
    /// Drop PUT events (etcd's NOPUT filter).
    pub no_put: bool,
    /// Drop DELETE events (etcd's NODELETE filter).
    pub no_delete: bool,
    /// Attach the previous record of the key to each event.
    pub prev_kv: bool,
}

/// The answer to [`KvStore::watch_events`].
#[derive(Clone, Debug, PartialEq)]
pub enum WatchRead {
    /// Events of revisions `from..next_revision`, in order; `next_revision - 1` is the revision
    /// the watcher is now complete up to.
    Events {
        events: Vec<Event>,
        next_revision: i64,
    },
    /// `from` is below the compacted revision: the watcher must be cancelled.
    Compacted { compact_revision: i64 },
}

impl KvStore {
    /// Events matching `filter` from revision `from` on, whole revisions only, stopping after
    /// `events_max` events or [`WATCH_BATCH_REVISIONS_MAX`] revisions.
    pub fn watch_events(&self, filter: &WatchFilter, from: i64, events_max: usize) -> WatchRead {
        if from < self.compact_revision {
            return WatchRead::Compacted {
                compact_revision: self.compact_revision,
            };
        }
        let mut events = Vec::new();
        let mut next_revision = self.current_revision + 1;
        if from > self.current_revision {
            return WatchRead::Events {
                events,
                next_revision: from,
            };
        }
        let mut revisions = 0usize;
        let mut last_main = 0i64;
        let start = Revision::main_start_bytes(from);
        self.engine
            .scan(Bucket::Key, &start, None, &mut |key, value| {
                let (revision, tombstone) = Revision::from_bytes(key).expect("revision key");
                if revision.main != last_main {
                    if revisions >= WATCH_BATCH_REVISIONS_MAX || events.len() >= events_max {
                        next_revision = revision.main;
                        return false;
                    }
                    revisions += 1;
                    last_main = revision.main;
                }
                let kv = decode_kv(value);
                if !filter.range.contains(&kv.key) {
                    return true;
                }
                if let Some(event) = self.event(filter, kv, tombstone) {
                    events.push(event);
                }
                true
            });
        WatchRead::Events {
            events,
            next_revision,
        }
    }

    fn event(&self, filter: &WatchFilter, kv: KeyValue, tombstone: bool) -> Option<Event> {
        let event_type = if tombstone {
            EventType::Delete
        } else {
            EventType::Put
        };
        if (tombstone && filter.no_delete) || (!tombstone && filter.no_put) {
            return None;
        }
        let is_create = !tombstone && kv.version == 1;
        let before = kv.mod_revision - 1;
        let prev_kv = match filter.prev_kv && !is_create && before >= self.compact_revision {
            true => self.get_at(&kv.key, before),
            false => None,
        };
        Some(Event {
            r#type: event_type as i32,
            kv: Some(kv),
            prev_kv,
        })
    }
}
