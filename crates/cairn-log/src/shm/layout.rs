//! Byte offsets inside a topic's shared-memory file. Pure arithmetic, no memory access: the
//! numbers here are the format (see the module doc of `shm` for the picture).

use crate::topic::TopicConfig;

pub const MAGIC: u64 = u64::from_le_bytes(*b"CAIRNLOG");
pub const LAYOUT_VERSION: u64 = 1;

pub const PAGE: u64 = 4096;
pub const LINE: u64 = 128;
pub const HEADER_BYTES: u64 = PAGE;
pub const CONTROL_BYTES: u64 = PAGE;
pub const DESCRIPTOR_BYTES: u64 = 64;
pub const STATUS_BYTES: u64 = 16;
pub const GOI_ENTRY_BYTES: u64 = 64;

/// Header words (written once by the creator; `READY` last).
pub mod header {
    pub const MAGIC: u64 = 0;
    pub const VERSION: u64 = 1;
    pub const READY: u64 = 2;
    pub const BROKERS_MAX: u64 = 3;
    pub const RING_SLOTS: u64 = 4;
    pub const PAYLOAD_BYTES: u64 = 5;
    pub const GOI_SLOTS: u64 = 6;
    pub const ORDER: u64 = 7;
    pub const ACK: u64 = 8;
    pub const REPLICATION_FACTOR: u64 = 9;
}

/// Control block: byte offsets from the file start. Line 0 belongs to the sequencer.
pub mod control {
    use super::{CONTROL_BYTES, HEADER_BYTES, LINE};
    /// `epoch << 48 | GOI entries reserved`.
    pub const RESERVED: u64 = HEADER_BYTES;
    /// `epoch << 48 | GOI entries committed` (the committed prefix).
    pub const COMMITTED: u64 = HEADER_BYTES + 8;
    /// Number of void ranges ever recorded (the ring below keeps the last `VOID_RANGES_MAX`).
    pub const VOID_COUNT: u64 = HEADER_BYTES + LINE;
    /// Void ranges: pairs `(from, to)` of GOI indexes no entry will ever be committed at.
    pub const VOID_RANGES: u64 = HEADER_BYTES + 2 * LINE;
    /// ACK 2 replica `r` writes `durable GOI entries` at `DURABLE + r * LINE`.
    pub const DURABLE: u64 = HEADER_BYTES + CONTROL_BYTES / 2;
}

/// Broker frontier line words (one writer: the broker).
pub mod frontier {
    /// Descriptors published (ring slots `0..RING_HEAD` are ready or recycled).
    pub const RING_HEAD: u64 = 0;
    /// Logical end of reserved payload bytes.
    pub const PAYLOAD_TAIL: u64 = 1;
    /// Ring slots whose outcome the broker has processed (acks sent, payload released).
    pub const ACKED: u64 = 2;
}

/// Descriptor words (one writer: the broker; `READY` is stored last).
pub mod descriptor {
    /// `ring_seq + 1` once the descriptor is complete.
    pub const READY: u64 = 0;
    pub const PAYLOAD_OFFSET: u64 = 1;
    /// `byte_len | message_count << 32`.
    pub const SIZES: u64 = 2;
    pub const CLIENT_ID: u64 = 3;
    /// `session_epoch | connection_id << 32`.
    pub const SESSION: u64 = 4;
    pub const BATCH_SEQ: u64 = 5;
}

/// GOI entry words (one writer: the sequencer; `INDEX` is stored last).
pub mod goi {
    /// `batch_index + 1` once the entry is complete.
    pub const INDEX: u64 = 0;
    pub const FIRST_MESSAGE: u64 = 1;
    /// `broker | message_count << 32`.
    pub const BROKER_COUNT: u64 = 2;
    pub const PAYLOAD_OFFSET: u64 = 3;
    /// `byte_len | session_epoch << 32`.
    pub const LEN_EPOCH: u64 = 4;
    pub const CLIENT_ID: u64 = 5;
    pub const BATCH_SEQ: u64 = 6;
    pub const RING_SEQ: u64 = 7;
}

/// The sizes a file is built from; every offset derives from these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub brokers_max: u64,
    pub ring_slots: u64,
    pub payload_bytes: u64,
    pub goi_slots: u64,
}

impl Layout {
    pub fn of(topic: &TopicConfig) -> Layout {
        Layout {
            brokers_max: u64::from(topic.brokers_max),
            ring_slots: topic.ring_slots,
            payload_bytes: topic.payload_bytes_per_broker,
            goi_slots: topic.goi_slots,
        }
    }

    /// Frontier + consumed lines, descriptors and statuses, rounded to a page.
    fn broker_meta_bytes(&self) -> u64 {
        let raw = 2 * LINE + self.ring_slots * (DESCRIPTOR_BYTES + STATUS_BYTES);
        raw.div_ceil(PAGE) * PAGE
    }

    fn broker_block_bytes(&self) -> u64 {
        self.broker_meta_bytes() + self.payload_bytes
    }

    /// Every byte `broker` writes: its frontier line, ring and payload log (plus the lines the
    /// sequencer writes beside them, which share its pages).
    pub fn broker_block(&self, broker: u32) -> std::ops::Range<u64> {
        let base = self.broker_base(broker);
        base..base + self.broker_block_bytes()
    }

    fn broker_base(&self, broker: u32) -> u64 {
        assert!(
            u64::from(broker) < self.brokers_max,
            "broker {broker} out of layout"
        );
        HEADER_BYTES + CONTROL_BYTES + u64::from(broker) * self.broker_block_bytes()
    }

    pub fn frontier(&self, broker: u32, word: u64) -> u64 {
        self.broker_base(broker) + word * 8
    }

    /// The consumed cursor of a broker's ring (one writer: the sequencer).
    pub fn consumed(&self, broker: u32) -> u64 {
        self.broker_base(broker) + LINE
    }

    pub fn descriptor(&self, broker: u32, ring_seq: u64, word: u64) -> u64 {
        let slot = ring_seq & (self.ring_slots - 1);
        self.broker_base(broker) + 2 * LINE + slot * DESCRIPTOR_BYTES + word * 8
    }

    /// Status words of a ring slot: `[ring_seq + 1, outcome]` (one writer: the sequencer).
    pub fn status(&self, broker: u32, ring_seq: u64, word: u64) -> u64 {
        let slot = ring_seq & (self.ring_slots - 1);
        let statuses = self.broker_base(broker) + 2 * LINE + self.ring_slots * DESCRIPTOR_BYTES;
        statuses + slot * STATUS_BYTES + word * 8
    }

    /// Start of a broker's payload log; logical offset `o` lives at `o % payload_bytes`.
    pub fn payload(&self, broker: u32) -> u64 {
        self.broker_base(broker) + self.broker_meta_bytes()
    }

    pub fn goi(&self, index: u64, word: u64) -> u64 {
        let slot = index & (self.goi_slots - 1);
        self.goi_base() + slot * GOI_ENTRY_BYTES + word * 8
    }

    /// The global order index: written by the sequencer only.
    pub fn goi_block(&self) -> std::ops::Range<u64> {
        self.goi_base()..self.total_bytes()
    }

    fn goi_base(&self) -> u64 {
        HEADER_BYTES + CONTROL_BYTES + self.brokers_max * self.broker_block_bytes()
    }

    pub fn total_bytes(&self) -> u64 {
        self.goi_base() + self.goi_slots * GOI_ENTRY_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            brokers_max: 3,
            ring_slots: 16,
            payload_bytes: 8 << 20,
            goi_slots: 32,
        }
    }

    #[test]
    fn regions_do_not_overlap_and_are_page_aligned() {
        let l = layout();
        let mut regions = vec![(0, HEADER_BYTES + CONTROL_BYTES)];
        for b in 0..3 {
            let meta = l.frontier(b, 0);
            regions.push((meta, l.payload(b)));
            regions.push((l.payload(b), l.payload(b) + l.payload_bytes));
            assert_eq!(l.payload(b) % PAGE, 0);
            assert!(l.status(b, 15, 1) + 8 <= l.payload(b));
            assert!(l.descriptor(b, 15, 7) < l.status(b, 0, 0));
        }
        regions.push((l.goi(0, 0), l.total_bytes()));
        regions.sort();
        for pair in regions.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:?} overlap");
        }
    }

    #[test]
    fn rings_and_goi_wrap() {
        let l = layout();
        assert_eq!(l.descriptor(1, 3, 0), l.descriptor(1, 19, 0));
        assert_eq!(l.goi(5, 2), l.goi(37, 2));
        assert_ne!(l.goi(5, 2), l.goi(6, 2));
    }

    #[test]
    fn one_writer_per_line_in_the_control_block() {
        assert_eq!(control::VOID_COUNT / LINE, control::RESERVED / LINE + 1);
        assert!(
            control::VOID_RANGES + 2 * 8 * crate::limits::VOID_RANGES_MAX as u64
                <= control::DURABLE
        );
        let last_durable = control::DURABLE + (crate::limits::REPLICATION_FACTOR_MAX as u64) * LINE;
        assert!(last_durable <= HEADER_BYTES + CONTROL_BYTES);
    }
}
