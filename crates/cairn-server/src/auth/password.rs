//! Password hashing with bcrypt, as etcd does (`--bcrypt-cost`, default 10).
//!
//! Hashing and checking cost tens of milliseconds by design, so both run on the blocking pool,
//! never on a runtime worker.

use crate::error::ServerError;

/// etcd's default `--bcrypt-cost`.
pub const BCRYPT_COST_DEFAULT: u32 = 10;
/// bcrypt's own bounds for the cost.
pub const BCRYPT_COST_MIN: u32 = 4;
pub const BCRYPT_COST_MAX: u32 = 31;

/// The bcrypt hash of `password`, as stored in the auth store.
pub async fn hash(password: String, cost: u32) -> Result<String, ServerError> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(|_| ServerError::Stopped)?
        .map_err(|error| ServerError::Internal(format!("hashing a password: {error}")))
}

/// Whether `password` matches `stored` (a hash this module made). A stored value that is not
/// a bcrypt hash matches nothing.
pub async fn matches(password: String, stored: Vec<u8>) -> bool {
    tokio::task::spawn_blocking(move || {
        let Ok(stored) = String::from_utf8(stored) else {
            return false;
        };
        bcrypt::verify(password, &stored).unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_matches_its_password_only() {
        let stored = hash("s3cret".into(), BCRYPT_COST_MIN).await.unwrap();
        assert!(!stored.contains("s3cret"));
        assert!(matches("s3cret".into(), stored.clone().into_bytes()).await);
        assert!(!matches("S3cret".into(), stored.into_bytes()).await);
        assert!(!matches("s3cret".into(), b"not a hash".to_vec()).await);
    }
}
