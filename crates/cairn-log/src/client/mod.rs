//! Client side of the log: the publisher and the subscriber.

pub mod batch;
pub mod publisher;
pub mod subscriber;
