//! cairn-server
