//! cairn-mvcc
