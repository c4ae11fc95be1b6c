//! The exactly-once session table of the replicated state: per client, the highest applied seq
//! and its result. A retried or re-proposed command that is already applied is answered from
//! here instead of being applied again.
//!
//! Every replica applies the same entries to the same table, so nothing here may depend on the
//! replica: `now_ms` is the time stamped into the log entry by the leader, never a local clock,
//! and may step back across a leader change (a session's activity time never does).
//!
//! Results: native write results are small (no value, no revision) and stored whole, within
//! [`SESSION_RESULT_BYTES_MAX`]. Reads are not recorded at all: a retried read is evaluated
//! afresh, which stays inside its invoke–return interval, and a read applied after a later
//! write of its session must not be refused as stale. So a session's seq here is that of its
//! latest applied *write*.
//!
//! Idle expiry forgets a session; a command of that client arriving later is treated as new.
//! The idle timeout must therefore exceed the longest a client keeps retrying one command.
//!
//! Persistence: the table travels in the state-machine snapshot as [`SessionTable::encode`]'s
//! bytes. Format, version 1, integers little-endian:
//!
//! ```text
//! u8  version = 1
//! u64 sessions
//! per session, client ids strictly increasing (one encoding per table, so replicas' snapshots
//! agree byte for byte):
//!     u64 client_id   u64 seq   u64 last_active_ms   u32 result_len   result_len bytes
//! ```
//!
//! Decoding refuses an unknown version, a truncated or over-long buffer, unordered client ids
//! and results over the bound.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::command::{ClientId, CommandId};
use super::error::SessionDecodeError;
use super::limits::SESSION_RESULT_BYTES_MAX;

const FORMAT_VERSION: u8 = 1;

/// What to do with a command, given the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCheck {
    /// Newer than anything applied for its client: apply it.
    New,
    /// Applied already: answer with the stored result.
    Duplicate(Bytes),
    /// Older than the client's latest applied command; its result is gone (the client moved
    /// on, so it has it or gave up). Do not apply.
    Stale,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    seq: u64,
    result: Bytes,
    last_active_ms: u64,
}

/// Sessions by client id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionTable {
    sessions: BTreeMap<ClientId, Session>,
}

impl SessionTable {
    pub fn new() -> SessionTable {
        SessionTable::default()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn check(&self, id: CommandId) -> SessionCheck {
        match self.sessions.get(&id.client_id) {
            None => SessionCheck::New,
            Some(session) if id.seq > session.seq => SessionCheck::New,
            Some(session) if id.seq == session.seq => {
                SessionCheck::Duplicate(session.result.clone())
            }
            Some(_) => SessionCheck::Stale,
        }
    }

    /// The highest seq of `client_id` applied (a weak read's `applied_seq`).
    pub fn applied_seq(&self, client_id: ClientId) -> Option<u64> {
        self.sessions.get(&client_id).map(|session| session.seq)
    }

    /// Whether `client_id`'s write `dep` (a command's causal dependency; 0: none) is settled
    /// here: applied, or passed over by a later write of the session. A command issued after
    /// a weak write names it (or a later one) as its dependency until its client saw it
    /// applied, and none is admitted before its dependency is settled, so the first write
    /// above `dep` to apply needs `dep` itself applied: "settled" means applied.
    pub fn reached(&self, client_id: ClientId, dep: u64) -> bool {
        dep == 0 || self.applied_seq(client_id).is_some_and(|seq| seq >= dep)
    }

    /// Records that `id` was applied with `result` at `now_ms`. Only a command [`check`] found
    /// `New` may be recorded.
    ///
    /// [`check`]: SessionTable::check
    pub fn record(&mut self, id: CommandId, result: Bytes, now_ms: u64) {
        assert!(
            result.len() <= SESSION_RESULT_BYTES_MAX,
            "result of {id:?} is {} bytes, over {SESSION_RESULT_BYTES_MAX}",
            result.len()
        );
        let mut last_active_ms = now_ms;
        if let Some(session) = self.sessions.get(&id.client_id) {
            assert!(
                id.seq > session.seq,
                "recording {id:?} after seq {} of the same client",
                session.seq
            );
            last_active_ms = last_active_ms.max(session.last_active_ms);
        }
        self.sessions.insert(
            id.client_id,
            Session {
                seq: id.seq,
                result,
                last_active_ms,
            },
        );
    }

    /// Forgets the sessions idle for `idle_ms` or more at `now_ms`; returns their client ids,
    /// ascending.
    pub fn expire(&mut self, now_ms: u64, idle_ms: u64) -> Vec<ClientId> {
        let idle: Vec<ClientId> = self
            .sessions
            .iter()
            .filter(|(_, session)| now_ms.saturating_sub(session.last_active_ms) >= idle_ms)
            .map(|(client_id, _)| *client_id)
            .collect();
        for client_id in &idle {
            self.sessions.remove(client_id);
        }
        idle
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(9 + self.sessions.len() * 28);
        bytes.push(FORMAT_VERSION);
        bytes.extend_from_slice(&(self.sessions.len() as u64).to_le_bytes());
        for (client_id, session) in &self.sessions {
            bytes.extend_from_slice(&client_id.to_le_bytes());
            bytes.extend_from_slice(&session.seq.to_le_bytes());
            bytes.extend_from_slice(&session.last_active_ms.to_le_bytes());
            let result_len = u32::try_from(session.result.len()).expect("bounded by the limit");
            bytes.extend_from_slice(&result_len.to_le_bytes());
            bytes.extend_from_slice(&session.result);
        }
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<SessionTable, SessionDecodeError> {
        let mut reader = Reader { bytes, offset: 0 };
        let version = reader.take::<1>()?[0];
        if version != FORMAT_VERSION {
            return Err(SessionDecodeError::Version(version));
        }
        let count = reader.u64()?;
        let mut sessions = BTreeMap::new();
        let mut previous: Option<ClientId> = None;
        for _ in 0..count {
            let client_id = reader.u64()?;
            if previous.is_some_and(|previous| client_id <= previous) {
                return Err(SessionDecodeError::Unordered(client_id));
            }
            previous = Some(client_id);
            let seq = reader.u64()?;
            let last_active_ms = reader.u64()?;
            let result = reader.result()?;
            sessions.insert(
                client_id,
                Session {
                    seq,
                    result,
                    last_active_ms,
                },
            );
        }
        if reader.offset != bytes.len() {
            return Err(SessionDecodeError::Trailing(bytes.len() - reader.offset));
        }
        Ok(SessionTable { sessions })
    }

    /// Stored results are within their bound.
    pub fn validate(&self) {
        for (client_id, session) in &self.sessions {
            assert!(
                session.result.len() <= SESSION_RESULT_BYTES_MAX,
                "client {client_id:x} stores a {}-byte result",
                session.result.len()
            );
        }
    }
}

/// A cursor over bytes to decode; every read checks the length first.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SessionDecodeError> {
        let slice = self.slice(N)?;
        let mut array = [0; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    fn slice(&mut self, len: usize) -> Result<&[u8], SessionDecodeError> {
        let end = self
            .offset
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(SessionDecodeError::Truncated(self.offset));
        };
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }

    fn u64(&mut self) -> Result<u64, SessionDecodeError> {
        Ok(u64::from_le_bytes(self.take::<8>()?))
    }

    fn result(&mut self) -> Result<Bytes, SessionDecodeError> {
        let len = u32::from_le_bytes(self.take::<4>()?) as usize;
        if len > SESSION_RESULT_BYTES_MAX {
            return Err(SessionDecodeError::ResultTooLarge {
                len,
                max: SESSION_RESULT_BYTES_MAX,
            });
        }
        Ok(Bytes::copy_from_slice(self.slice(len)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(client_id: ClientId, seq: u64) -> CommandId {
        CommandId { client_id, seq }
    }

    fn result(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn check_new_duplicate_stale() {
        let mut table = SessionTable::new();
        assert_eq!(table.check(id(1, 1)), SessionCheck::New);
        table.record(id(1, 1), result("one"), 10);
        table.record(id(1, 2), result("two"), 11);
        table.validate();
        assert_eq!(
            table.check(id(1, 2)),
            SessionCheck::Duplicate(result("two"))
        );
        assert_eq!(table.check(id(1, 1)), SessionCheck::Stale);
        assert_eq!(table.check(id(1, 3)), SessionCheck::New);
        assert_eq!(table.check(id(1, 9)), SessionCheck::New, "gaps are allowed");
        assert_eq!(
            table.check(id(2, 1)),
            SessionCheck::New,
            "clients are apart"
        );
        assert_eq!(table.applied_seq(1), Some(2));
        assert_eq!(table.applied_seq(2), None);
    }

    #[test]
    #[should_panic(expected = "after seq 2")]
    fn recording_a_duplicate_is_a_bug() {
        let mut table = SessionTable::new();
        table.record(id(1, 2), result("r"), 0);
        table.record(id(1, 2), result("r"), 0);
    }

    #[test]
    #[should_panic(expected = "over 65536")]
    fn recording_an_oversized_result_is_a_bug() {
        let mut table = SessionTable::new();
        table.record(
            id(1, 1),
            Bytes::from(vec![0; SESSION_RESULT_BYTES_MAX + 1]),
            0,
        );
    }

    #[test]
    fn expire_forgets_idle_sessions_only() {
        let mut table = SessionTable::new();
        table.record(id(1, 1), result("a"), 100);
        table.record(id(2, 1), result("b"), 150);
        table.record(id(3, 1), result("c"), 200);
        table.record(id(1, 2), result("a2"), 90); // a leader's clock behind: activity stays 100
        assert_eq!(
            table.expire(199, 100),
            Vec::<ClientId>::new(),
            "client 1 idle 99 ms"
        );
        // Client 1 idle 150 ms, client 2 exactly 100 ms (expires), client 3 50 ms.
        assert_eq!(table.expire(250, 100), [1, 2]);
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.check(id(1, 2)),
            SessionCheck::New,
            "expired: seen as new"
        );
        assert_eq!(
            table.expire(10, 1),
            Vec::<ClientId>::new(),
            "time behind: nothing idle"
        );
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut table = SessionTable::new();
        assert_eq!(SessionTable::decode(&table.encode()), Ok(table.clone()));
        table.record(id(u64::MAX, 7), result("x"), 5);
        table.record(id(3, 1), Bytes::new(), 6);
        let bytes = table.encode();
        assert_eq!(bytes.len(), 9 + 2 * 28 + 1);
        assert_eq!(bytes[0], 1);
        assert_eq!(SessionTable::decode(&bytes), Ok(table));
    }

    #[test]
    fn decode_refuses_bad_bytes() {
        let mut table = SessionTable::new();
        table.record(id(1, 1), result("abc"), 5);
        table.record(id(2, 1), result("d"), 5);
        let bytes = table.encode();
        assert_eq!(
            SessionTable::decode(&[]),
            Err(SessionDecodeError::Truncated(0))
        );
        assert_eq!(
            SessionTable::decode(&[2]),
            Err(SessionDecodeError::Version(2))
        );
        let cut = &bytes[..bytes.len() - 1];
        assert_eq!(
            SessionTable::decode(cut),
            Err(SessionDecodeError::Truncated(bytes.len() - 1))
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            SessionTable::decode(&long),
            Err(SessionDecodeError::Trailing(1))
        );
        // Second client id rewritten to the first: 9 header + 28 + 3 result bytes before it.
        let mut unordered = bytes.clone();
        unordered[40..48].copy_from_slice(&1u64.to_le_bytes());
        assert_eq!(
            SessionTable::decode(&unordered),
            Err(SessionDecodeError::Unordered(1))
        );
        let mut huge = bytes.clone();
        huge[33..37].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            SessionTable::decode(&huge),
            Err(SessionDecodeError::ResultTooLarge {
                len: u32::MAX as usize,
                max: SESSION_RESULT_BYTES_MAX
            })
        );
        let mut many = bytes;
        many[1..9].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            SessionTable::decode(&many),
            Err(SessionDecodeError::Truncated(_))
        ));
    }
}
