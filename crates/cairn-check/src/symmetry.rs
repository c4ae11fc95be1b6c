//! `Symmetry`: unknown operations the search need not tell apart.
//!
//! A put that timed out and whose value nobody reads is the common case in fault tests, and
//! there may be hundreds of them pending on a hot key. The model cannot tell their values apart
//! (see [`RegisterOp::symmetric`]), and an unknown operation never expires, so once two such
//! operations have both been invoked, applying one or the other leads to equivalent searches.
//! The search therefore applies, per class of interchangeable operations, only the earliest
//! invoked one not yet applied.

use std::collections::HashMap;

use crate::key_history::KeyHistory;
use crate::memo::Linearized;
use crate::model::RegisterOp;

#[derive(Debug)]
pub(crate) struct Symmetry {
    acked: usize,
    /// Per unknown operation (`op - acked`): its class.
    class_of: Vec<usize>,
    /// Per class: its operations in invoke order.
    members: Vec<Vec<usize>>,
}

impl Symmetry {
    pub(crate) fn new(key: &KeyHistory) -> Self {
        let mut observed = vec![false; key.values.len()];
        for op in &key.ops {
            if let Some(value) = op.op.observes() {
                observed[value as usize] = true;
            }
        }
        let mut classes: HashMap<RegisterOp, usize> = HashMap::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut class_of = Vec::with_capacity(key.ops.len() - key.acked);
        // `KeyHistory` keeps unknown operations in invoke order.
        for op in key.acked..key.ops.len() {
            let form = key.ops[op].op.symmetric(&observed);
            let class = *classes.entry(form).or_insert_with(|| {
                members.push(Vec::new());
                members.len() - 1
            });
            members[class].push(op);
            class_of.push(class);
        }
        Symmetry {
            acked: key.acked,
            class_of,
            members,
        }
    }

    /// Whether unknown operation `op` is the one of its class the search may apply now.
    pub(crate) fn represents(&self, op: usize, linearized: &Linearized) -> bool {
        let class = self.class_of[op - self.acked];
        self.members[class]
            .iter()
            .find(|&&member| !linearized.contains(member))
            == Some(&op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_history::KeyOp;

    fn unknown(op: RegisterOp, invoke_ns: u64) -> KeyOp {
        KeyOp {
            history_index: 0,
            op,
            invoke_ns,
            return_ns: None,
            slot: None,
        }
    }

    #[test]
    fn unread_puts_are_interchangeable_read_ones_are_not() {
        let key = KeyHistory {
            key: b"k".to_vec(),
            ops: vec![
                KeyOp {
                    return_ns: Some(10),
                    ..unknown(
                        RegisterOp::Get {
                            value: Some(0),
                            mod_revision: None,
                        },
                        0,
                    )
                },
                unknown(RegisterOp::MaybePut { value: 0, lease: 0 }, 1),
                unknown(RegisterOp::MaybePut { value: 1, lease: 0 }, 2),
                unknown(RegisterOp::MaybePut { value: 2, lease: 0 }, 3),
            ],
            acked: 1,
            values: vec![b"read".to_vec(), b"x".to_vec(), b"y".to_vec()],
        };
        let symmetry = Symmetry::new(&key);
        let mut linearized = Linearized::new(1, 3);
        assert!(
            symmetry.represents(1, &linearized),
            "the read value is its own class"
        );
        assert!(symmetry.represents(2, &linearized));
        assert!(
            !symmetry.represents(3, &linearized),
            "same class as op 2, invoked later"
        );
        linearized.insert(2);
        assert!(symmetry.represents(3, &linearized));
    }
}
