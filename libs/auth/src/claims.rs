//! The JWT claims Tandem reads and writes.

use serde::{Deserialize, Serialize};

/// A token's claims. `sub`, `exp`, `aud` and `iss` are required; `nbf` and `iat` are optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not valid before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, Unix seconds (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    pub aud: String,
    pub iss: String,
    /// The documents this token opens.
    #[serde(default)]
    pub docs: DocClaims,
}

/// Document permissions as patterns (see [`crate::Pattern`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocClaims {
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
}
