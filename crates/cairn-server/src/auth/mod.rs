//! Authentication at the API edge: who is calling, from the `token` a client sends.
//!
//! The auth *store* (users, roles, permissions, the checks) is replicated state in
//! `cairn_mvcc::auth`. This module turns a request's token into a caller name and issues
//! tokens after a password check. Two token kinds, chosen by etcd's `--auth-token` flag:
//!
//! - `simple` (default): a random string registered on every member through the log when the
//!   password check succeeds; an idle token expires after `--auth-token-ttl` seconds.
//! - `jwt,priv-key=PATH,sign-method=HS256[,ttl=5m]`: a signed token any member verifies with
//!   the shared key; it names the auth revision it was issued at.
//!
//! With auth disabled every caller is anonymous and nothing is checked. With it enabled, a
//! request without a token is anonymous too — the permission checks then refuse it with
//! "user name is empty", exactly where etcd does — and a bad token is refused outright.

pub mod jwt;
pub mod password;

use std::time::Duration;

use cairn_mvcc::auth::AuthError;
use cairn_proto::cairnpb::AuthInfo;
use rand::distributions::{Alphanumeric, DistString};
use tonic::metadata::MetadataMap;

use crate::config::parse_duration;
use crate::error::{ServerError, StartError};
use jwt::{Claims, JwtSigner, SignMethod};

/// Metadata keys a token may arrive in: gRPC clients use `token`; the JSON gateway forwards
/// the HTTP `Authorization` header.
const TOKEN_KEYS: [&str; 2] = ["token", "authorization"];
/// etcd's JWT lifetime when `ttl=` is not given.
const JWT_TTL_DEFAULT: Duration = Duration::from_secs(300);
/// Length of a simple token's random part (etcd's `defaultSimpleTokenLength`).
const SIMPLE_TOKEN_PREFIX_LEN: usize = 16;

/// How this member issues and checks tokens (`--auth-token`).
#[derive(Clone, Debug)]
pub enum TokenProvider {
    Simple,
    Jwt { signer: JwtSigner, ttl: Duration },
}

impl TokenProvider {
    /// Parses `--auth-token`: `simple`, or `jwt` with comma-separated `key=value` options
    /// `priv-key` (the HMAC key file), `sign-method` (HS256, HS384 or HS512) and `ttl`
    /// (`300s`, `5m`, `1h`).
    pub fn from_flag(spec: &str) -> Result<TokenProvider, StartError> {
        let mut parts = spec.split(',');
        let kind = parts.next().unwrap_or_default();
        let bad = |what: String| StartError::Config(format!("--auth-token {spec:?}: {what}"));
        match kind {
            "simple" if parts.next().is_none() => Ok(TokenProvider::Simple),
            "simple" => Err(bad("simple tokens take no options".into())),
            "jwt" => {
                let (mut key, mut method, mut ttl) = (None, None, JWT_TTL_DEFAULT);
                for option in parts {
                    let (name, value) = option
                        .split_once('=')
                        .ok_or_else(|| bad(format!("option {option:?} is not key=value")))?;
                    match name {
                        "priv-key" => {
                            let bytes = std::fs::read(value)
                                .map_err(|error| bad(format!("priv-key {value}: {error}")))?;
                            key = Some(bytes);
                        }
                        "sign-method" => {
                            method = Some(SignMethod::parse(value).ok_or_else(|| {
                                bad(format!(
                                    "sign-method {value} (Cairn signs with HS256, HS384 or HS512)"
                                ))
                            })?);
                        }
                        "ttl" => {
                            ttl = parse_duration(value)
                                .ok()
                                .filter(|ttl| !ttl.is_zero())
                                .ok_or_else(|| bad(format!("ttl {value}")))?;
                        }
                        // etcd's RSA/ECDSA public key: meaningless for HMAC.
                        "pub-key" => {}
                        other => return Err(bad(format!("unknown option {other}"))),
                    }
                }
                let key = key.filter(|key| !key.is_empty());
                let key = key.ok_or_else(|| bad("jwt needs a non-empty priv-key file".into()))?;
                let method = method.ok_or_else(|| bad("jwt needs sign-method".into()))?;
                Ok(TokenProvider::Jwt {
                    signer: JwtSigner::new(method, key),
                    ttl,
                })
            }
            other => Err(bad(format!("unknown token kind {other:?} (simple or jwt)"))),
        }
    }
}

/// The token a request carries, if any.
pub fn token_of(metadata: &MetadataMap) -> Option<&str> {
    TOKEN_KEYS
        .iter()
        .find_map(|key| metadata.get(*key))
        .and_then(|value| value.to_str().ok())
        .filter(|token| !token.is_empty())
}

/// A random simple-token prefix; the log index completes it (see `cairn_mvcc::auth`).
pub fn simple_token_prefix() -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), SIMPLE_TOKEN_PREFIX_LEN)
}

/// What a caller's token resolves to, given the auth store's state.
pub(crate) fn resolve(
    provider: &TokenProvider,
    auth: &cairn_mvcc::auth::AuthStore,
    token: Option<&str>,
    now_unix_ms: i64,
) -> Result<AuthInfo, ServerError> {
    let anonymous = AuthInfo {
        user: String::new(),
    };
    let (true, Some(token)) = (auth.is_enabled(), token) else {
        return Ok(anonymous);
    };
    let user = match provider {
        TokenProvider::Simple => auth.tokens().user(token, now_unix_ms),
        TokenProvider::Jwt { signer, .. } => {
            let claims = signer.verify(token, now_unix_ms / 1000);
            if let Some(claims) = &claims {
                if claims.revision < auth.revision() {
                    return Err(AuthError::AuthOldRevision.into());
                }
            }
            claims.map(|claims| claims.username)
        }
    };
    let user = user.ok_or(AuthError::InvalidAuthToken)?;
    Ok(AuthInfo { user })
}

/// A JWT for `user` at auth revision `revision`.
pub(crate) fn sign_jwt(
    signer: &JwtSigner,
    ttl: Duration,
    user: &str,
    revision: u64,
    now_unix_ms: i64,
) -> String {
    signer.sign(&Claims {
        username: user.to_string(),
        revision,
        exp: now_unix_ms / 1000 + ttl.as_secs() as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_token_flags_parse_like_etcds() {
        assert!(matches!(
            TokenProvider::from_flag("simple"),
            Ok(TokenProvider::Simple)
        ));
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("jwt.key");
        std::fs::write(&key, b"0123456789abcdef").unwrap();
        let spec = format!("jwt,priv-key={},sign-method=HS512,ttl=10m", key.display());
        match TokenProvider::from_flag(&spec) {
            Ok(TokenProvider::Jwt { ttl, .. }) => assert_eq!(ttl, Duration::from_secs(600)),
            other => panic!("{other:?}"),
        }
        for bad in [
            "",
            "kerberos",
            "simple,ttl=5m",
            "jwt,sign-method=HS256",
            &format!("jwt,priv-key={}", key.display()),
            &format!("jwt,priv-key={},sign-method=RS256", key.display()),
            &format!("jwt,priv-key={},sign-method=HS256,ttl=soon", key.display()),
            "jwt,priv-key=/nonexistent,sign-method=HS256",
        ] {
            assert!(TokenProvider::from_flag(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn simple_token_prefixes_are_random_letters_and_digits() {
        let (a, b) = (simple_token_prefix(), simple_token_prefix());
        assert_eq!(a.len(), SIMPLE_TOKEN_PREFIX_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
