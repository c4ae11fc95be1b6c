//! A broker's allocator for its payload log: logical offsets grow forever and map onto the
//! shared-memory log circularly; a batch never straddles a segment boundary; space is reused
//! only after every batch before it was released (ordered or refused, and durable at ACK 2).
//!
//! A `std::sync::Mutex` guards it: reservations and releases are a few instructions, far
//! shorter than any await, and a batch is up to 2 MiB, so one lock per batch is noise.

use std::collections::VecDeque;

use crate::limits::SEGMENT_BYTES;

#[derive(Debug)]
pub struct PayloadLog {
    capacity: u64,
    tail: u64,
    /// Reservations not yet released, in offset order: `(start, end, released)`.
    live: VecDeque<(u64, u64, bool)>,
}

impl PayloadLog {
    /// Resumes at `tail` (a restarted broker continues after what it wrote before).
    pub fn new(capacity: u64, tail: u64) -> PayloadLog {
        assert!(capacity % SEGMENT_BYTES == 0 && capacity >= 2 * SEGMENT_BYTES);
        PayloadLog {
            capacity,
            tail,
            live: VecDeque::new(),
        }
    }

    /// Reserves `len` bytes; `None` while the log is full of unreleased batches (backpressure).
    /// Returns the logical offset and the new reservation tail.
    pub fn reserve(&mut self, len: u32) -> Option<(u64, u64)> {
        let len = u64::from(len);
        assert!(
            len <= SEGMENT_BYTES,
            "batch of {len} bytes exceeds a segment"
        );
        let mut start = self.tail;
        if start / SEGMENT_BYTES != (start + len.max(1) - 1) / SEGMENT_BYTES {
            start = start.div_ceil(SEGMENT_BYTES) * SEGMENT_BYTES;
        }
        let end = start + len;
        let floor = self.live.front().map_or(self.tail, |&(s, _, _)| s);
        if end > floor + self.capacity {
            return None;
        }
        self.live.push_back((start, end, false));
        self.tail = end;
        self.validate();
        Some((start, end))
    }

    /// Releases the reservation starting at `start` (idempotent for unknown offsets, which
    /// belong to an earlier broker incarnation).
    pub fn release(&mut self, start: u64) {
        if let Ok(i) = self.live.binary_search_by_key(&start, |&(s, _, _)| s) {
            self.live[i].2 = true;
        }
        while self.live.front().is_some_and(|&(_, _, released)| released) {
            self.live.pop_front();
        }
        self.validate();
    }

    pub fn tail(&self) -> u64 {
        self.tail
    }

    fn validate(&self) {
        debug_assert!(self
            .live
            .iter()
            .zip(self.live.iter().skip(1))
            .all(|(a, b)| a.1 <= b.0));
        debug_assert!(self.live.back().is_none_or(|&(_, end, _)| end <= self.tail));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = SEGMENT_BYTES;

    #[test]
    fn batches_never_straddle_segments() {
        let mut log = PayloadLog::new(4 * SEG, 0);
        let (a, _) = log.reserve((SEG - 10) as u32).unwrap();
        let (b, _) = log.reserve(100).unwrap();
        assert_eq!((a, b), (0, SEG));
        let (c, _) = log.reserve(0).unwrap();
        assert_eq!(c, SEG + 100);
    }

    #[test]
    fn space_is_reused_only_after_release_in_order() {
        let mut log = PayloadLog::new(2 * SEG, 0);
        let (a, _) = log.reserve(SEG as u32).unwrap();
        let (b, _) = log.reserve(SEG as u32).unwrap();
        assert!(log.reserve(1).is_none(), "full");
        log.release(b);
        assert!(
            log.reserve(1).is_none(),
            "the oldest batch still pins the log"
        );
        log.release(a);
        let (c, _) = log.reserve(1).unwrap();
        assert_eq!(c, 2 * SEG, "logical offsets keep growing");
    }
}
