//! Bounds of the checker: how long the search may run and how much a violation prints.

/// States the search may explore on one key before giving up with `Violation::SearchLimit`.
/// A correct history needs about one state per operation; the bound matters for broken ones,
/// whose refutation must try every order. Each state costs about 100 bytes plus one bit per
/// operation on the key.
pub const SEARCH_STATES_MAX_DEFAULT: u64 = 2_000_000;

/// Operations of the longest linearizable prefix a `NotLinearizable` prints.
pub const PREFIX_TAIL_OPERATIONS_MAX: usize = 5;

/// Refused operations a `NotLinearizable` lists (real time rarely allows more than one per
/// client).
pub const REFUSALS_MAX: usize = 16;

const _: () = assert!(SEARCH_STATES_MAX_DEFAULT > 0);
const _: () = assert!(PREFIX_TAIL_OPERATIONS_MAX > 0 && REFUSALS_MAX > 0);
