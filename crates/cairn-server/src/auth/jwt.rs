//! JSON Web Tokens signed with HMAC (HS256/HS384/HS512), etcd's `--auth-token jwt,…` provider.
//!
//! The claims are etcd's: `username`, `revision` (the auth store revision the token was issued
//! at) and `exp` (unix seconds). A JWT is checked by its signature alone, so any member holding
//! the same key accepts it without replicated state; a token issued before an auth change is
//! refused with "revision of auth store is old", and clients authenticate again.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Sha256, Sha384, Sha512};

/// The HMAC flavour (`sign-method=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignMethod {
    Hs256,
    Hs384,
    Hs512,
}

impl SignMethod {
    pub fn parse(name: &str) -> Option<SignMethod> {
        match name {
            "HS256" => Some(SignMethod::Hs256),
            "HS384" => Some(SignMethod::Hs384),
            "HS512" => Some(SignMethod::Hs512),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SignMethod::Hs256 => "HS256",
            SignMethod::Hs384 => "HS384",
            SignMethod::Hs512 => "HS512",
        }
    }

    fn sign(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC takes keys of any length");
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            SignMethod::Hs256 => mac::<Hmac<Sha256>>(key, message),
            SignMethod::Hs384 => mac::<Hmac<Sha384>>(key, message),
            SignMethod::Hs512 => mac::<Hmac<Sha512>>(key, message),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub username: String,
    pub revision: u64,
    pub exp: i64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
}

/// Signs and verifies tokens with one key.
#[derive(Clone)]
pub struct JwtSigner {
    method: SignMethod,
    key: Vec<u8>,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("JwtSigner")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    pub fn new(method: SignMethod, key: Vec<u8>) -> JwtSigner {
        assert!(!key.is_empty(), "a JWT key must not be empty");
        JwtSigner { method, key }
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header {
            alg: self.method.name().into(),
            typ: "JWT".into(),
        };
        // Serializing plain structs of strings and integers cannot fail.
        let header = serde_json::to_vec(&header).expect("header serializes");
        let claims = serde_json::to_vec(claims).expect("claims serialize");
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = self.method.sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// The claims of `token` if its signature is ours, its algorithm ours, and it has not
    /// expired at `now_unix_s`.
    pub fn verify(&self, token: &str, now_unix_s: i64) -> Option<Claims> {
        let (signed, signature) = token.rsplit_once('.')?;
        let (header, claims) = signed.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let expected = self.method.sign(&self.key, signed.as_bytes());
        if !constant_time_eq(&signature, &expected) {
            return None;
        }
        let header: Header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.alg != self.method.name() {
            return None;
        }
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
        (claims.exp > now_unix_s).then_some(claims)
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a forged
/// signature was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            username: "alice".into(),
            revision: 7,
            exp,
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let signer = JwtSigner::new(SignMethod::Hs256, b"secret".to_vec());
        let token = signer.sign(&claims(100));
        assert_eq!(token.matches('.').count(), 2);
        assert_eq!(signer.verify(&token, 99), Some(claims(100)));
        assert_eq!(signer.verify(&token, 100), None);
    }

    #[test]
    fn another_key_or_method_or_a_changed_claim_is_refused() {
        let signer = JwtSigner::new(SignMethod::Hs256, b"secret".to_vec());
        let token = signer.sign(&claims(100));
        let other_key = JwtSigner::new(SignMethod::Hs256, b"other".to_vec());
        assert_eq!(other_key.verify(&token, 0), None);
        let other_method = JwtSigner::new(SignMethod::Hs512, b"secret".to_vec());
        assert_eq!(other_method.verify(&token, 0), None);
        let mut forged: Vec<&str> = token.split('.').collect();
        let root_claims = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                username: "root".into(),
                ..claims(100)
            })
            .unwrap(),
        );
        forged[1] = &root_claims;
        assert_eq!(signer.verify(&forged.join("."), 0), None);
        assert_eq!(signer.verify("not a token", 0), None);
        assert_eq!(signer.verify("a.b.c", 0), None);
    }
}
