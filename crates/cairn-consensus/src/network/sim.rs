//! The simulated network: every member of a cluster in one process, links with seeded faults.
//!
//! Each message on a link is delayed by a random time up to `delay_ms_max`, dropped (before
//! or after the receiver processed it: the sender cannot tell which) or, for raft's own
//! idempotent messages, delivered twice, all drawn from one seeded RNG. Links can be cut
//! (partitions) and members taken down (crash) and brought back. Under `tokio::time::pause`
//! the delays are virtual, so a long faulty run takes little real time.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::network::{PeerRequest, Transport, TransportError, TransportFuture};
use crate::peer::PeerHandler;
use crate::types::{Member, MemberId};

/// Fault rates of the simulated links.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Messages lost, per thousand.
    pub drop_per_mille: u32,
    /// Messages delivered twice, per thousand.
    pub duplicate_per_mille: u32,
    /// Upper bound of the random one-way delay.
    pub delay_ms_max: u64,
}

/// The network shared by all members of one simulated cluster; cheap to clone.
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<State>>,
}

struct State {
    handlers: HashMap<MemberId, PeerHandler>,
    rng: StdRng,
    faults: Faults,
    /// Cut links, both directions stored.
    cut: BTreeSet<(MemberId, MemberId)>,
}

/// One member's view of the network: its outgoing links.
struct Endpoint {
    from: MemberId,
    network: SimNetwork,
}

/// What the dice decided for one message.
struct Fate {
    delay: Duration,
    lost_before: bool,
    lost_after: bool,
    duplicate: bool,
}

impl SimNetwork {
    pub fn new(seed: u64, faults: Faults) -> SimNetwork {
        SimNetwork {
            state: Arc::new(Mutex::new(State {
                handlers: HashMap::new(),
                rng: StdRng::seed_from_u64(seed),
                faults,
                cut: BTreeSet::new(),
            })),
        }
    }

    /// The transport member `from` sends through.
    pub fn endpoint(&self, from: MemberId) -> Arc<dyn Transport> {
        Arc::new(Endpoint {
            from,
            network: self.clone(),
        })
    }

    /// Member `id` is up and answers with `handler`.
    pub fn attach(&self, id: MemberId, handler: PeerHandler) {
        self.lock().handlers.insert(id, handler);
    }

    /// Member `id` is down: messages to it are lost.
    pub fn detach(&self, id: MemberId) {
        self.lock().handlers.remove(&id);
    }

    /// Cuts every link between `side` and the other members.
    pub fn partition(&self, side: &[MemberId], others: &[MemberId]) {
        let mut state = self.lock();
        for a in side {
            for b in others {
                state.cut.insert((*a, *b));
                state.cut.insert((*b, *a));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// A random number from the network's seeded RNG, for callers that need one in order.
    pub fn random(&self, below: u64) -> u64 {
        self.lock().rng.gen_range(0..below.max(1))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fate(&self) -> Fate {
        let mut state = self.lock();
        let faults = state.faults;
        let rng = &mut state.rng;
        let delay_ms = if faults.delay_ms_max == 0 {
            0
        } else {
            rng.gen_range(0..=faults.delay_ms_max)
        };
        Fate {
            delay: Duration::from_millis(delay_ms),
            lost_before: rng.gen_range(0..1000) < faults.drop_per_mille,
            lost_after: rng.gen_range(0..1000) < faults.drop_per_mille,
            duplicate: rng.gen_range(0..1000) < faults.duplicate_per_mille,
        }
    }

    /// The receiver of a message on link `from` → `to`, if the link is up.
    fn receiver(&self, from: MemberId, to: MemberId) -> Option<PeerHandler> {
        let state = self.lock();
        if state.cut.contains(&(from, to)) {
            return None;
        }
        state.handlers.get(&to).cloned()
    }
}

impl Transport for Endpoint {
    fn call(&self, target: MemberId, _member: &Member, request: PeerRequest) -> TransportFuture {
        let (network, from) = (self.network.clone(), self.from);
        Box::pin(async move {
            let fate = network.fate();
            tokio::time::sleep(fate.delay).await;
            let lost = || {
                TransportError::Unreachable(format!("link {from:x} -> {target:x} lost the message"))
            };
            if fate.lost_before {
                return Err(lost());
            }
            let handler = network.receiver(from, target).ok_or_else(lost)?;
            // Raft's own messages are idempotent; a forwarded client write or membership
            // change is not (TCP never duplicates one, and nor does this network).
            let idempotent = !matches!(
                request,
                PeerRequest::Forward(_) | PeerRequest::ChangeMembership(_)
            );
            if fate.duplicate && idempotent {
                let _ = handler.handle(request.clone()).await;
            }
            let response = handler.handle(request).await;
            // The answer travels back over the same link, which may have been cut meanwhile.
            tokio::time::sleep(fate.delay).await;
            let cut_back = network.lock().cut.contains(&(target, from));
            if fate.lost_after || cut_back {
                return Err(lost());
            }
            response.map_err(TransportError::Refused)
        })
    }
}
