//! The Wing–Gong linearizability search with Lowe's memoization, over one key.
//!
//! Depth-first: from the current node (linearized set, register state) try each operation real
//! time allows next ([`Events`]); one the model accepts is linearized and the walk restarts; when
//! none is left, backtrack. A node seen before is not explored again ([`Memo`]). Success is every
//! acknowledged operation linearized; operations with unknown outcome may be linearized at any
//! point after their invoke, or never.
//!
//! Unknown operations pending forever could be applied anywhere, so four rules keep them from
//! multiplying the nodes; each keeps at least one linearization of every linearizable history:
//!
//! - *Lazy application.* A chain of unknown operations is applied only right before an
//!   acknowledged operation the model refuses without the chain. If it accepted it, that
//!   operation could go first and the chain after it, or not at all, with the same effect;
//!   except a revoke, whose effect depends on the state (whether the key is attached), so a
//!   chain may always precede it.
//! - *Overwrites start chains.* An unknown put or delete ignores the state before it, so it is
//!   never applied after another unknown operation in a chain: that one would be wasted.
//! - *Acknowledged first.* A node tries acknowledged candidates before unknown ones, so nodes are
//!   first reached with few unknown operations applied, and the memo then prunes a node that has
//!   a superset of an explored node's unknown operations (see [`Memo`]).
//! - *Symmetry.* Of interchangeable unknown operations only one is tried ([`Symmetry`]).

use crate::error::{NotLinearizable, Refusal, Violation};
use crate::events::{Event, Events};
use crate::history::History;
use crate::key_history::KeyHistory;
use crate::limits::{PREFIX_TAIL_OPERATIONS_MAX, REFUSALS_MAX};
use crate::memo::{Linearized, Memo};
use crate::model::{self, State};
use crate::symmetry::Symmetry;

/// Proves `key`'s operations linearizable, returning the states explored.
pub(crate) fn check_key(
    key: &KeyHistory,
    history: &History,
    states_max: u64,
) -> Result<u64, Violation> {
    let mut search = Search::new(key);
    match search.run(states_max) {
        Ok(()) => Ok(search.memo.states()),
        Err(Failure::StatesMax) => Err(Violation::SearchLimit {
            key: key.key.clone(),
            states_max,
        }),
        Err(Failure::NotLinearizable) => Err(Violation::NotLinearizable(Box::new(
            search.deepest.explain(key, history),
        ))),
    }
}

/// A search node beyond the linearized set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Node {
    state: State,
    /// When the last linearized operations have unknown outcome: the state before that chain.
    chain_from: Option<State>,
}

/// One linearized operation and the node before it, to backtrack to.
#[derive(Clone, Copy, Debug)]
struct Frame {
    op: usize,
    before: Node,
}

/// Which candidates a walk tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Acked,
    Unknown,
}

enum Failure {
    NotLinearizable,
    StatesMax,
}

struct Search<'a> {
    key: &'a KeyHistory,
    events: Events,
    linearized: Linearized,
    memo: Memo<Node>,
    symmetry: Symmetry,
    stack: Vec<Frame>,
    deepest: Deepest,
}

impl<'a> Search<'a> {
    fn new(key: &'a KeyHistory) -> Self {
        let linearized = Linearized::new(key.acked, key.ops.len() - key.acked);
        Search {
            key,
            events: Events::new(&key.ops),
            deepest: Deepest::new(&linearized),
            linearized,
            memo: Memo::new(),
            symmetry: Symmetry::new(key),
            stack: Vec::new(),
        }
    }

    fn run(&mut self, states_max: u64) -> Result<(), Failure> {
        let mut node = Node {
            state: State::default(),
            chain_from: None,
        };
        let mut cursor = self.events.first();
        let mut phase = Phase::Acked;
        while self.linearized.acked_count() < self.key.acked {
            match self.events.event(cursor) {
                Event::Call(op) => {
                    if let Some(next) = self.try_linearize(op, node, phase) {
                        if self.memo.states() > states_max {
                            return Err(Failure::StatesMax);
                        }
                        self.stack.push(Frame { op, before: node });
                        self.events.lift(op);
                        self.deepest
                            .observe(&self.linearized, next.state, &self.stack);
                        node = next;
                        cursor = self.events.first();
                        phase = Phase::Acked;
                    } else {
                        cursor = self.events.next(cursor);
                    }
                }
                // Every candidate of this phase has been tried.
                Event::Return(_) | Event::End => match phase {
                    Phase::Acked => {
                        phase = Phase::Unknown;
                        cursor = self.events.first();
                    }
                    Phase::Unknown => {
                        let frame = self.stack.pop().ok_or(Failure::NotLinearizable)?;
                        self.events.unlift(frame.op);
                        self.linearized.remove(frame.op);
                        node = frame.before;
                        phase = self.phase_of(frame.op);
                        cursor = self.events.next(self.events.call_node(frame.op));
                    }
                },
            }
        }
        Ok(())
    }

    /// The node after linearizing `op`, if `op` belongs to this phase, the rules and the model
    /// accept it and the node is new. A new node is recorded in the memo and `op` marked
    /// linearized.
    fn try_linearize(&mut self, op: usize, node: Node, phase: Phase) -> Option<Node> {
        if self.phase_of(op) != phase {
            return None;
        }
        let key_op = &self.key.ops[op];
        let step = |state: &State| model::step(state, &key_op.op, key_op.slot.as_ref());
        let next = match (phase, node.chain_from) {
            (Phase::Acked, Some(before_chain))
                if !key_op.op.effect_depends_on_state() && step(&before_chain).is_ok() =>
            {
                return None
            }
            (Phase::Acked, _) => Node {
                state: step(&node.state).ok()?,
                chain_from: None,
            },
            (Phase::Unknown, Some(_)) if key_op.op.overwrites() => return None,
            (Phase::Unknown, _) if !self.symmetry.represents(op, &self.linearized) => return None,
            (Phase::Unknown, chain_from) => Node {
                state: step(&node.state).ok()?,
                chain_from: Some(chain_from.unwrap_or(node.state)),
            },
        };
        self.linearized.insert(op);
        if self.memo.visit(&self.linearized, next) {
            Some(next)
        } else {
            self.linearized.remove(op);
            None
        }
    }

    fn phase_of(&self, op: usize) -> Phase {
        if op < self.key.acked {
            Phase::Acked
        } else {
            Phase::Unknown
        }
    }
}

/// The first node reached with the most acknowledged operations linearized: where a failed
/// search is explained from. The model refuses every acknowledged candidate there: a node it
/// accepted, new or dominated by an explored one, would have more acknowledged operations.
struct Deepest {
    linearized: Linearized,
    state: State,
    /// The last operations linearized, oldest first.
    tail: Vec<usize>,
}

impl Deepest {
    fn new(linearized: &Linearized) -> Self {
        Deepest {
            linearized: linearized.clone(),
            state: State::default(),
            tail: Vec::new(),
        }
    }

    fn observe(&mut self, linearized: &Linearized, state: State, stack: &[Frame]) {
        // Strictly deeper only, so the copy happens at most once per acknowledged operation.
        if linearized.acked_count() > self.linearized.acked_count() {
            self.linearized = linearized.clone();
            self.state = state;
            let from = stack.len().saturating_sub(PREFIX_TAIL_OPERATIONS_MAX);
            self.tail = stack[from..].iter().map(|frame| frame.op).collect();
        }
    }

    fn explain(&self, key: &KeyHistory, history: &History) -> NotLinearizable {
        let pending = |op: &usize| !self.linearized.contains(*op);
        let recorded = |op: usize| history.operations[key.ops[op].history_index].clone();
        // Real time allows next whatever was invoked before the first pending return.
        let first_return = (0..key.acked)
            .filter(pending)
            .filter_map(|op| key.ops[op].return_ns)
            .min()
            .unwrap_or(u64::MAX);
        let allowed = |op: &usize| key.ops[*op].invoke_ns <= first_return;
        let refused = (0..key.acked)
            .filter(pending)
            .filter(allowed)
            .take(REFUSALS_MAX)
            .map(|op| {
                let key_op = &key.ops[op];
                let mismatch = model::step(&self.state, &key_op.op, key_op.slot.as_ref())
                    .expect_err("the deepest node accepts no candidate: it would go deeper");
                Refusal {
                    operation: recorded(op),
                    reason: mismatch.describe(&key.values),
                }
            })
            .collect();
        NotLinearizable {
            key: key.key.clone(),
            operations: key.acked,
            linearized: self.linearized.acked_count(),
            prefix_tail: self.tail.iter().map(|&op| recorded(op)).collect(),
            register: self.state.value.map(|id| key.values[id as usize].clone()),
            refused,
            unknown_pending: (key.acked..key.ops.len())
                .filter(pending)
                .filter(allowed)
                .count(),
        }
    }
}
