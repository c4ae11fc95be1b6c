//! A topic's configuration: its order and ack levels and the sizes of its shared-memory file.
//! Stored as JSON under `/cairn/log/topics/<name>` in Cairn's KV store (see `control`).

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};
use crate::limits::{BROKERS_MAX, REPLICATION_FACTOR_MAX, SEGMENT_BYTES, TOPIC_NAME_BYTES_MAX};

/// LOG.md "Order levels". 3 and 4 do not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub enum OrderLevel {
    /// No order across brokers; per broker, arrival order. No sequencer.
    Unordered = 0,
    /// FIFO per (publisher, broker) connection, no global order. No sequencer.
    ConnectionFifo = 1,
    /// One total order, identical for every subscriber.
    Total = 2,
    /// Total order and per-session FIFO across brokers.
    TotalSessionFifo = 5,
}

impl OrderLevel {
    /// Whether batches go through the sequencer and get a global position.
    pub fn sequenced(self) -> bool {
        matches!(self, OrderLevel::Total | OrderLevel::TotalSessionFifo)
    }
}

impl TryFrom<u32> for OrderLevel {
    type Error = LogError;
    fn try_from(level: u32) -> Result<Self> {
        match level {
            0 => Ok(OrderLevel::Unordered),
            1 => Ok(OrderLevel::ConnectionFifo),
            2 => Ok(OrderLevel::Total),
            5 => Ok(OrderLevel::TotalSessionFifo),
            other => Err(LogError::BadOrderLevel(format!(
                "order level {other} is not supported (use 0, 1, 2 or 5)"
            ))),
        }
    }
}

impl From<OrderLevel> for u32 {
    fn from(level: OrderLevel) -> u32 {
        level as u32
    }
}

/// LOG.md "Ack levels".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub enum AckLevel {
    /// Fire and forget.
    None = 0,
    /// In shared memory and ordered (ORDER 2/5) or stored (ORDER 0/1).
    Ordered = 1,
    /// Written and fsynced by `replication_factor` segment files.
    Durable = 2,
}

impl TryFrom<u32> for AckLevel {
    type Error = LogError;
    fn try_from(level: u32) -> Result<Self> {
        match level {
            0 => Ok(AckLevel::None),
            1 => Ok(AckLevel::Ordered),
            2 => Ok(AckLevel::Durable),
            other => Err(LogError::BadOrderLevel(format!(
                "ack level {other} is not supported (use 0, 1 or 2)"
            ))),
        }
    }
}

impl From<AckLevel> for u32 {
    fn from(level: AckLevel) -> u32 {
        level as u32
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub name: String,
    pub order: OrderLevel,
    pub ack: AckLevel,
    pub replication_factor: u32,
    /// Broker ids this topic's shared memory has room for (0..brokers_max).
    pub brokers_max: u32,
    /// Payload log per broker, a multiple of `SEGMENT_BYTES`; older batches are overwritten
    /// once released (retention).
    pub payload_bytes_per_broker: u64,
    /// Descriptor ring slots per broker (a power of two).
    pub ring_slots: u64,
    /// Global order index entries kept (a power of two).
    pub goi_slots: u64,
    /// Sequencing window.
    pub epoch_us: u64,
    /// How long an ORDER 5 session's gap may stay open before the session is fenced.
    pub session_lease_ms: u64,
}

impl TopicConfig {
    /// A topic with the defaults of LOG.md (500 µs epochs) and 256 MiB of payload per broker.
    pub fn new(name: &str, order: OrderLevel, ack: AckLevel) -> TopicConfig {
        TopicConfig {
            name: name.to_string(),
            order,
            ack,
            replication_factor: 1,
            brokers_max: 4,
            payload_bytes_per_broker: 256 * 1024 * 1024,
            ring_slots: 4096,
            goi_slots: 1 << 20,
            epoch_us: 500,
            session_lease_ms: 1000,
        }
    }

    /// Checks every field; the error text is what `cairn log topic create` prints.
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        if self.ack == AckLevel::Durable && !self.order.sequenced() {
            return Err(LogError::BadOrderLevel(
                "ack level 2 needs a sequenced topic (order 2 or 5)".into(),
            ));
        }
        let bad = |what: String| Err(LogError::BadOrderLevel(what));
        if self.replication_factor == 0 || self.replication_factor > REPLICATION_FACTOR_MAX {
            return bad(format!(
                "replication factor must be 1..={REPLICATION_FACTOR_MAX}"
            ));
        }
        if self.brokers_max == 0 || self.brokers_max > BROKERS_MAX {
            return bad(format!("brokers must be 1..={BROKERS_MAX}"));
        }
        if self.payload_bytes_per_broker < 2 * SEGMENT_BYTES
            || self.payload_bytes_per_broker % SEGMENT_BYTES != 0
        {
            return bad(format!(
                "payload bytes per broker must be a multiple of {SEGMENT_BYTES} and at least two segments"
            ));
        }
        if !self.ring_slots.is_power_of_two() || !(16..=1 << 20).contains(&self.ring_slots) {
            return bad("ring slots must be a power of two in 16..=1048576".into());
        }
        if !self.goi_slots.is_power_of_two() || !(16..=1 << 26).contains(&self.goi_slots) {
            return bad("GOI slots must be a power of two in 16..=67108864".into());
        }
        if !(10..=1_000_000).contains(&self.epoch_us) {
            return bad("epoch must be 10 µs..=1 s".into());
        }
        Ok(())
    }
}

/// Topic names become file names and KV key components.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= TOPIC_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(LogError::Malformed(format!(
            "topic name {name:?} must be 1..={TOPIC_NAME_BYTES_MAX} characters of [A-Za-z0-9._-], not starting with '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_levels_three_and_four_are_refused() {
        for level in [3u32, 4, 6] {
            let err = OrderLevel::try_from(level).unwrap_err();
            assert!(err.to_string().contains(&format!("order level {level}")));
        }
        assert_eq!(
            OrderLevel::try_from(5).unwrap(),
            OrderLevel::TotalSessionFifo
        );
    }

    #[test]
    fn durable_acks_need_a_sequencer() {
        let topic = TopicConfig::new("t", OrderLevel::Unordered, AckLevel::Durable);
        assert!(topic.validate().is_err());
        let topic = TopicConfig::new("t", OrderLevel::Total, AckLevel::Durable);
        topic.validate().unwrap();
    }

    #[test]
    fn names_are_file_safe() {
        assert!(validate_name("orders.v1-eu_2").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_round_trip_keeps_levels_as_numbers() {
        let topic = TopicConfig::new("t", OrderLevel::TotalSessionFifo, AckLevel::Ordered);
        let json = serde_json::to_string(&topic).unwrap();
        assert!(json.contains("\"order\":5"), "{json}");
        let back: TopicConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, topic);
        let bad = json.replace("\"order\":5", "\"order\":4");
        assert!(serde_json::from_str::<TopicConfig>(&bad).is_err());
    }
}
