//! Minting tokens, for development and tests (production tokens come from the identity provider).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};

use crate::claims::{Claims, DocClaims};
use crate::permissions::Permissions;
use crate::{KeyAlgorithm, DEFAULT_AUDIENCE, DEFAULT_ISSUER, MIN_HS256_SECRET_BYTES};

/// The key a token is signed with.
#[derive(Clone)]
pub enum MintKey {
    Hs256(Vec<u8>),
    /// A PEM private key.
    Rs256(Vec<u8>),
    /// A PEM (PKCS#8) Ed25519 private key.
    EdDsa(Vec<u8>),
}

impl std::fmt::Debug for MintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MintKey::{}(<redacted>)", self.algorithm())
    }
}

impl MintKey {
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            MintKey::Hs256(_) => KeyAlgorithm::Hs256,
            MintKey::Rs256(_) => KeyAlgorithm::Rs256,
            MintKey::EdDsa(_) => KeyAlgorithm::EdDsa,
        }
    }
}

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct MintRequest {
    pub user: String,
    pub read: Vec<String>,
    pub write: Vec<String>,
    /// Seconds from now until `exp`. Negative values mint an expired token (for tests).
    pub ttl_secs: i64,
    /// Seconds from now until `nbf`, if any.
    pub not_before_secs: Option<i64>,
    pub audience: String,
    pub issuer: String,
}

impl MintRequest {
    /// A token for `user` with these read and write patterns, valid for an hour, for the default
    /// audience and issuer.
    pub fn new(user: &str, read: &[&str], write: &[&str]) -> Self {
        let owned = |patterns: &[&str]| patterns.iter().map(|p| (*p).to_owned()).collect();
        Self {
            user: user.to_owned(),
            read: owned(read),
            write: owned(write),
            ttl_secs: 3600,
            not_before_secs: None,
            audience: DEFAULT_AUDIENCE.to_owned(),
            issuer: DEFAULT_ISSUER.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mint a token: {0}")]
pub struct MintError(pub String);

/// Signs a token for `request` with `key`.
pub fn mint(key: &MintKey, request: &MintRequest) -> Result<String, MintError> {
    Permissions::parse(&request.read, &request.write).map_err(|e| MintError(e.to_string()))?;
    let encoding = match key {
        MintKey::Hs256(secret) if secret.len() < MIN_HS256_SECRET_BYTES => {
            return Err(MintError(format!("an HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes")))
        }
        MintKey::Hs256(secret) => EncodingKey::from_secret(secret),
        MintKey::Rs256(pem) => {
            EncodingKey::from_rsa_pem(pem).map_err(|e| MintError(format!("RSA private key: {e}")))?
        }
        MintKey::EdDsa(pem) => {
            EncodingKey::from_ed_pem(pem).map_err(|e| MintError(format!("Ed25519 private key: {e}")))?
        }
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let at = |offset: i64| (now + offset).max(0) as u64;
    let claims = Claims {
        sub: request.user.clone(),
        exp: at(request.ttl_secs),
        nbf: request.not_before_secs.map(at),
        iat: Some(at(0)),
        aud: request.audience.clone(),
        iss: request.issuer.clone(),
        docs: DocClaims { read: request.read.clone(), write: request.write.clone() },
    };
    jsonwebtoken::encode(&Header::new(key.algorithm().jwt()), &claims, &encoding)
        .map_err(|e| MintError(e.to_string()))
}
