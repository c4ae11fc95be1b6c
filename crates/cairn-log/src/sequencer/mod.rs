//! The per-topic sequencer (ORDER 2 and 5): `core` decides, `driver` scans the broker rings,
//! seals epochs and publishes the global order index in shared memory.

pub mod core;
pub mod driver;
