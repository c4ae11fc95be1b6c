//! cairn-bench
