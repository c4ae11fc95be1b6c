//! cairn-proto
