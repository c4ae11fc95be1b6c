//! Client side of the log: the publisher and the subscriber.

pub mod publisher;
pub mod subscriber;
