//! `Events`: one key's call and return events in time order, as the doubly linked list the
//! search walks.
//!
//! The calls before the first return in the list are exactly the operations real time lets go
//! next: no operation still to be linearized returned before they were invoked. Linearizing an
//! operation *lifts* its call and return out of the list; backtracking puts them back in reverse
//! order, which a doubly linked list does in O(1) (Knuth's dancing links, as in Lowe's "Testing
//! for linearizability", 2017). An operation with unknown outcome has a call and no return: it
//! never blocks another.
//!
//! At equal times a call sorts before a return: "a returned before b was invoked" needs a strictly
//! earlier time, so such a pair counts as concurrent.

use crate::key_history::KeyOp;

/// What a list node holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Call(usize),
    Return(usize),
    /// Past the last event.
    End,
}

#[derive(Debug)]
pub(crate) struct Events {
    /// Node 0 is the head sentinel, the last node the tail sentinel, events in between.
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per operation: its call node and, if it returned, its return node.
    nodes: Vec<(usize, Option<usize>)>,
}

const HEAD: usize = 0;

impl Events {
    pub(crate) fn new(ops: &[KeyOp]) -> Self {
        let mut timed: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (index, op) in ops.iter().enumerate() {
            timed.push((op.invoke_ns, false, index));
            if let Some(return_ns) = op.return_ns {
                timed.push((return_ns, true, index));
            }
        }
        // `false` (call) sorts before `true` (return) at equal times.
        timed.sort_unstable();

        let mut events = Vec::with_capacity(timed.len() + 2);
        let mut nodes = vec![(HEAD, None); ops.len()];
        events.push(Event::End);
        for (_, is_return, index) in timed {
            let node = events.len();
            if is_return {
                nodes[index].1 = Some(node);
                events.push(Event::Return(index));
            } else {
                nodes[index].0 = node;
                events.push(Event::Call(index));
            }
        }
        events.push(Event::End);
        let count = events.len();
        Events {
            events,
            next: (1..=count).collect(),
            prev: (0..count).map(|node| node.saturating_sub(1)).collect(),
            nodes,
        }
    }

    /// The first node still in the list.
    pub(crate) fn first(&self) -> usize {
        self.next[HEAD]
    }

    pub(crate) fn next(&self, node: usize) -> usize {
        self.next[node]
    }

    pub(crate) fn event(&self, node: usize) -> Event {
        self.events[node]
    }

    /// The node of `op`'s call, where a walk resumes after putting `op` back.
    pub(crate) fn call_node(&self, op: usize) -> usize {
        self.nodes[op].0
    }

    /// Takes `op`'s call and return out of the list.
    pub(crate) fn lift(&mut self, op: usize) {
        let (call, ret) = self.nodes[op];
        self.unlink(call);
        if let Some(ret) = ret {
            self.unlink(ret);
        }
    }

    /// Puts back the operation lifted last.
    pub(crate) fn unlift(&mut self, op: usize) {
        let (call, ret) = self.nodes[op];
        if let Some(ret) = ret {
            self.relink(ret);
        }
        self.relink(call);
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        self.prev[next] = node;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RegisterOp;

    fn op(invoke_ns: u64, return_ns: Option<u64>) -> KeyOp {
        KeyOp {
            history_index: 0,
            op: RegisterOp::Delete { deleted: 0 },
            invoke_ns,
            return_ns,
            slot: None,
        }
    }

    fn walk(events: &Events) -> Vec<Event> {
        let mut seen = Vec::new();
        let mut node = events.first();
        while events.event(node) != Event::End {
            seen.push(events.event(node));
            node = events.next(node);
        }
        seen
    }

    #[test]
    fn time_order_with_calls_first_on_ties_and_lift_unlift() {
        // op 0: [0, 10]; op 1: [10, 20]; op 2: unknown from 5.
        let mut events = Events::new(&[op(0, Some(10)), op(10, Some(20)), op(5, None)]);
        let all = vec![
            Event::Call(0),
            Event::Call(2),
            Event::Call(1),
            Event::Return(0),
            Event::Return(1),
        ];
        assert_eq!(walk(&events), all);

        events.lift(0);
        events.lift(2);
        assert_eq!(walk(&events), vec![Event::Call(1), Event::Return(1)]);
        events.unlift(2);
        events.unlift(0);
        assert_eq!(walk(&events), all);
        assert_eq!(events.event(events.call_node(1)), Event::Call(1));
    }
}
