//! Key-range permissions: does the union of a user's granted intervals cover a request's?
//!
//! etcd's encoding, used both by permissions and by requests: `range_end` empty means the
//! single key `key`; `range_end == [0]` means every key from `key` on; otherwise the half-open
//! interval `[key, range_end)`. A single key `k` is the interval `[k, k + 0x00)`.

use cairn_proto::authpb::permission::Type as PermType;
use cairn_proto::authpb::Permission;

/// A half-open key interval; `end == None` is unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInterval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl KeyInterval {
    /// The interval a `(key, range_end)` pair names, in etcd's encoding (see the module doc).
    pub fn new(key: &[u8], range_end: &[u8]) -> KeyInterval {
        let end = match range_end {
            [] => {
                let mut next = key.to_vec();
                next.push(0);
                Some(next)
            }
            [0] => None,
            end => Some(end.to_vec()),
        };
        KeyInterval {
            start: key.to_vec(),
            end,
        }
    }

    fn is_empty(&self) -> bool {
        matches!(&self.end, Some(end) if *end <= self.start)
    }
}

/// Whether `(key, range_end)` is an interval a permission may name: a key, an open-ended
/// range, or a non-empty `[key, range_end)` (etcd's `isValidPermissionRange`).
pub fn is_valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    !KeyInterval::new(key, range_end).is_empty()
}

/// Whether a permission of type `granted` allows an operation that needs `wanted`.
pub fn allows(granted: PermType, wanted: PermType) -> bool {
    granted == PermType::Readwrite || granted == wanted
}

/// Whether the intervals of `granted` (those whose type allows `wanted`) together cover
/// `request`: the request may touch no key outside them.
pub fn covers<'a>(
    granted: impl Iterator<Item = &'a Permission>,
    wanted: PermType,
    request: &KeyInterval,
) -> bool {
    if request.is_empty() {
        return true;
    }
    let mut intervals: Vec<KeyInterval> = granted
        .filter(|perm| {
            PermType::try_from(perm.perm_type).is_ok_and(|granted| allows(granted, wanted))
        })
        .map(|perm| KeyInterval::new(&perm.key, &perm.range_end))
        .collect();
    intervals.sort_by(|a, b| a.start.cmp(&b.start));
    // Sweep from the request's start: each interval starting at or before the covered
    // prefix extends it; a gap before the request's end means a key no permission grants.
    let mut covered_to = request.start.clone();
    for interval in intervals {
        if interval.start > covered_to {
            break;
        }
        match interval.end {
            None => return true,
            Some(end) if end > covered_to => covered_to = end,
            Some(_) => {}
        }
        if request.end.as_ref().is_some_and(|end| covered_to >= *end) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(kind: PermType, key: &str, range_end: &[u8]) -> Permission {
        Permission {
            perm_type: kind as i32,
            key: key.as_bytes().to_vec(),
            range_end: range_end.to_vec(),
        }
    }

    fn covered(perms: &[Permission], wanted: PermType, key: &str, range_end: &[u8]) -> bool {
        covers(
            perms.iter(),
            wanted,
            &KeyInterval::new(key.as_bytes(), range_end),
        )
    }

    #[test]
    fn single_key_permission_grants_only_that_key() {
        let perms = [perm(PermType::Read, "a", b"")];
        assert!(covered(&perms, PermType::Read, "a", b""));
        assert!(!covered(&perms, PermType::Read, "ab", b""));
        assert!(
            !covered(&perms, PermType::Read, "a", b"b"),
            "range a..b has more keys"
        );
        assert!(
            !covered(&perms, PermType::Write, "a", b""),
            "read does not allow write"
        );
    }

    #[test]
    fn ranges_union_across_permissions_but_not_across_gaps() {
        let perms = [
            perm(PermType::Readwrite, "a", b"c"),
            perm(PermType::Read, "c", b"e"),
            perm(PermType::Read, "f", b"g"),
        ];
        assert!(covered(&perms, PermType::Read, "a", b"e"));
        assert!(covered(&perms, PermType::Read, "b", b"d"));
        assert!(!covered(&perms, PermType::Read, "a", b"g"), "gap at [e, f)");
        assert!(covered(&perms, PermType::Write, "a", b"c"));
        assert!(
            !covered(&perms, PermType::Write, "a", b"d"),
            "[c, e) is read only"
        );
    }

    #[test]
    fn open_ended_permission_covers_everything_after_its_key() {
        let perms = [perm(PermType::Write, "m", &[0])];
        assert!(covered(&perms, PermType::Write, "m", &[0]));
        assert!(covered(&perms, PermType::Write, "zzz", b""));
        assert!(!covered(&perms, PermType::Write, "l", &[0]));
        assert!(!covered(&perms, PermType::Write, "a", b""));
    }

    #[test]
    fn prefix_request_needs_the_prefix_granted() {
        // etcdctl --prefix foo: [foo, fop).
        let perms = [perm(PermType::Read, "foo", b"fop")];
        assert!(covered(&perms, PermType::Read, "foo", b"fop"));
        assert!(covered(&perms, PermType::Read, "foo/bar", b""));
        assert!(!covered(&perms, PermType::Read, "fo", b"fop"));
    }

    #[test]
    fn invalid_permission_ranges_are_refused() {
        assert!(is_valid_permission_range(b"a", b""));
        assert!(is_valid_permission_range(b"a", b"b"));
        assert!(is_valid_permission_range(b"a", &[0]));
        assert!(!is_valid_permission_range(b"b", b"a"));
        assert!(!is_valid_permission_range(b"a", b"a"));
    }
}
