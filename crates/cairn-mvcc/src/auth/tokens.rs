//! Simple tokens: opaque strings a member hands out after a password check.
//!
//! Every member learns each token when it applies the replicated `Authenticate` entry, so a
//! client may use its token on any member. Tokens are volatile (a restart forgets them and
//! clients authenticate again, as with etcd) and idle ones expire: each use extends a token's
//! life by the TTL from the caller's clock.

use std::collections::HashMap;
use std::sync::Mutex;

struct SimpleToken {
    user: String,
    expiry_unix_ms: i64,
}

/// The tokens of one member. Interior mutability because lookups, which extend a token's
/// life, happen on the read path under a shared borrow of the store.
pub struct SimpleTokens {
    ttl_ms: i64,
    tokens: Mutex<HashMap<String, SimpleToken>>,
}

impl SimpleTokens {
    pub fn new(ttl_ms: i64) -> SimpleTokens {
        assert!(ttl_ms > 0, "simple token TTL must be positive");
        SimpleTokens {
            ttl_ms,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, SimpleToken>> {
        // A panic while holding the lock cannot leave the map half-updated: every critical
        // section is a single map operation.
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers `token` for `user` and drops tokens idle past their TTL.
    pub fn assign(&self, token: String, user: &str, now_unix_ms: i64) {
        let mut tokens = self.tokens();
        tokens.retain(|_, token| token.expiry_unix_ms > now_unix_ms);
        tokens.insert(
            token,
            SimpleToken {
                user: user.to_string(),
                expiry_unix_ms: now_unix_ms.saturating_add(self.ttl_ms),
            },
        );
    }

    /// The user `token` belongs to, if it is known and not expired; extends its life.
    pub fn user(&self, token: &str, now_unix_ms: i64) -> Option<String> {
        let mut tokens = self.tokens();
        let found = tokens.get_mut(token)?;
        if found.expiry_unix_ms <= now_unix_ms {
            tokens.remove(token);
            return None;
        }
        found.expiry_unix_ms = now_unix_ms.saturating_add(self.ttl_ms);
        Some(found.user.clone())
    }

    /// Forgets every token of `user` (deleted, or its password changed).
    pub fn invalidate_user(&self, user: &str) {
        self.tokens().retain(|_, token| token.user != user);
    }

    /// Forgets every token (auth disabled).
    pub fn clear(&self) {
        self.tokens().clear();
    }

    pub fn len(&self) -> usize {
        self.tokens().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_when_idle_and_live_on_while_used() {
        let tokens = SimpleTokens::new(1_000);
        tokens.assign("t.1".into(), "alice", 0);
        assert_eq!(tokens.user("t.1", 900).as_deref(), Some("alice"));
        // Used at 900: good until 1900.
        assert_eq!(tokens.user("t.1", 1_800).as_deref(), Some("alice"));
        assert_eq!(tokens.user("t.1", 2_800), None);
        assert_eq!(
            tokens.user("t.1", 0),
            None,
            "an expired token is gone for good"
        );
        assert_eq!(tokens.user("unknown", 0), None);
    }

    #[test]
    fn invalidation_drops_only_that_users_tokens() {
        let tokens = SimpleTokens::new(1_000);
        tokens.assign("a.1".into(), "alice", 0);
        tokens.assign("b.2".into(), "bob", 0);
        tokens.invalidate_user("alice");
        assert_eq!(tokens.user("a.1", 1), None);
        assert_eq!(tokens.user("b.2", 1).as_deref(), Some("bob"));
        tokens.clear();
        assert!(tokens.is_empty());
    }

    #[test]
    fn assigning_sweeps_expired_tokens() {
        let tokens = SimpleTokens::new(1_000);
        tokens.assign("a.1".into(), "alice", 0);
        tokens.assign("b.2".into(), "bob", 5_000);
        assert_eq!(tokens.len(), 1);
    }
}
