//! `curppb` wire messages ↔ the CURP-HO cores' types. Decoding is where client input is
//! checked: a command without an id or an op, or with an empty key, never reaches a pool.

use bytes::Bytes;
use cairn_proto::curppb::{self, op};

use crate::curp::{Command, CommandError, CommandId, Consistency, Op, PoolEntry};

/// Why a wire command was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidCommand {
    #[error("command has no id")]
    MissingId,
    #[error("command has no op (unknown op)")]
    MissingOp,
    #[error("command has an unknown consistency {0}")]
    Consistency(i32),
    #[error("causal dependency seq {dep} is not before the command's seq {seq}")]
    CausalDep { dep: u64, seq: u64 },
    #[error(transparent)]
    Op(#[from] CommandError),
}

pub fn id_from_pb(id: Option<&curppb::CommandId>) -> Result<CommandId, InvalidCommand> {
    let id = id.ok_or(InvalidCommand::MissingId)?;
    Ok(CommandId {
        client_id: id.client_id,
        seq: id.seq,
    })
}

pub fn id_to_pb(id: CommandId) -> curppb::CommandId {
    curppb::CommandId {
        client_id: id.client_id,
        seq: id.seq,
    }
}

pub fn op_from_pb(op: Option<&curppb::Op>) -> Result<Op, InvalidCommand> {
    let op = match op.and_then(|op| op.op.as_ref()) {
        None => return Err(InvalidCommand::MissingOp),
        Some(op::Op::Get(get)) => Op::Get {
            key: Bytes::copy_from_slice(&get.key),
        },
        Some(op::Op::Put(put)) => Op::Put {
            key: Bytes::copy_from_slice(&put.key),
            value: Bytes::copy_from_slice(&put.value),
        },
        Some(op::Op::Delete(delete)) => Op::Delete {
            key: Bytes::copy_from_slice(&delete.key),
        },
        Some(op::Op::Scan(scan)) => Op::Scan {
            start: Bytes::copy_from_slice(&scan.start),
            end: Bytes::copy_from_slice(&scan.end),
            limit: scan.limit,
        },
    };
    op.validate()?;
    Ok(op)
}

pub fn op_to_pb(op: &Op) -> curppb::Op {
    let op = match op {
        Op::Get { key } => op::Op::Get(curppb::Get { key: key.to_vec() }),
        Op::Put { key, value } => op::Op::Put(curppb::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        }),
        Op::Delete { key } => op::Op::Delete(curppb::Delete { key: key.to_vec() }),
        Op::Scan { start, end, limit } => op::Op::Scan(curppb::Scan {
            start: start.to_vec(),
            end: end.to_vec(),
            limit: *limit,
        }),
    };
    curppb::Op { op: Some(op) }
}

pub fn command_from_pb(command: &curppb::Command) -> Result<Command, InvalidCommand> {
    let consistency = match curppb::Consistency::try_from(command.consistency) {
        Ok(curppb::Consistency::Strong) => Consistency::Strong,
        Ok(curppb::Consistency::Weak) => Consistency::Weak,
        Err(_) => return Err(InvalidCommand::Consistency(command.consistency)),
    };
    let id = id_from_pb(command.id.as_ref())?;
    if command.causal_dep >= id.seq && command.causal_dep != 0 {
        return Err(InvalidCommand::CausalDep {
            dep: command.causal_dep,
            seq: id.seq,
        });
    }
    Ok(Command {
        id,
        op: op_from_pb(command.op.as_ref())?,
        consistency,
        causal_dep: command.causal_dep,
    })
}

pub fn command_to_pb(command: &Command) -> curppb::Command {
    let consistency = match command.consistency {
        Consistency::Strong => curppb::Consistency::Strong,
        Consistency::Weak => curppb::Consistency::Weak,
    };
    curppb::Command {
        id: Some(id_to_pb(command.id)),
        op: Some(op_to_pb(&command.op)),
        consistency: consistency as i32,
        causal_dep: command.causal_dep,
    }
}

pub fn pool_entry_to_pb(entry: &PoolEntry) -> curppb::PoolEntry {
    curppb::PoolEntry {
        command: Some(command_to_pb(&entry.command)),
        term: entry.term,
        accepted: entry.accepted,
    }
}

pub fn pool_entry_from_pb(entry: &curppb::PoolEntry) -> Result<PoolEntry, InvalidCommand> {
    let command = entry.command.as_ref().ok_or(InvalidCommand::MissingOp)?;
    Ok(PoolEntry {
        command: command_from_pb(command)?,
        term: entry.term,
        accepted: entry.accepted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_bad_ones_are_refused() {
        let command = Command {
            id: CommandId {
                client_id: 7,
                seq: 3,
            },
            op: Op::Scan {
                start: Bytes::from_static(b"a"),
                end: Bytes::from_static(b"b"),
                limit: 4,
            },
            consistency: Consistency::Weak,
            causal_dep: 2,
        };
        assert_eq!(command_from_pb(&command_to_pb(&command)), Ok(command));

        let mut no_id = command_to_pb(&Command {
            id: CommandId {
                client_id: 1,
                seq: 1,
            },
            op: Op::Get {
                key: Bytes::from_static(b"k"),
            },
            consistency: Consistency::Strong,
            causal_dep: 0,
        });
        let mut no_op = no_id.clone();
        let mut dep_not_before = no_id.clone();
        dep_not_before.causal_dep = 1;
        let mut empty_key = no_id.clone();
        let mut bad_consistency = no_id.clone();
        no_id.id = None;
        no_op.op = Some(curppb::Op { op: None });
        empty_key.op = Some(op_to_pb(&Op::Put {
            key: Bytes::new(),
            value: Bytes::new(),
        }));
        bad_consistency.consistency = 9;
        assert_eq!(command_from_pb(&no_id), Err(InvalidCommand::MissingId));
        assert_eq!(command_from_pb(&no_op), Err(InvalidCommand::MissingOp));
        assert_eq!(
            command_from_pb(&empty_key),
            Err(InvalidCommand::Op(CommandError::EmptyKey))
        );
        assert_eq!(
            command_from_pb(&bad_consistency),
            Err(InvalidCommand::Consistency(9))
        );
        assert_eq!(
            command_from_pb(&dep_not_before),
            Err(InvalidCommand::CausalDep { dep: 1, seq: 1 })
        );
    }
}
