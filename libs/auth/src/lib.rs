//! Who a caller is and what it may do.
//!
//! Callers present a JWT (see docs/PROTOCOL.md, "Authentication"). [`Verifier`] checks its signature
//! with keys and an algorithm pinned by configuration (never `none`), its `exp`, `nbf`, `aud` and `iss`
//! with a small leeway, and turns its claims into a [`Principal`]: the user id and the documents the
//! user may read or write ([`Permissions`]). [`scoped_client_id`] binds a client's chosen id to its
//! user. [`mint`](mod@mint) makes development tokens (the `tandem-token` command).
//!
//! The claims Tandem reads:
//!
//! ```json
//! { "sub": "alice", "exp": 1767225600, "aud": "tandem", "iss": "tandem",
//!   "docs": { "read": ["handbook"], "write": ["team-a/*"] } }
//! ```
//!
//! Write permission implies read permission. A pattern is a document id (exact), a prefix followed by
//! `*` (`team-a/*` covers every id starting with `team-a/`), or `*` alone (every document).

#[cfg(feature = "cli")]
mod args;
mod claims;
mod client_scope;
mod mint;
mod permissions;
mod verifier;

#[cfg(feature = "cli")]
pub use args::JwtArgs;
pub use claims::{Claims, DocClaims};
pub use client_scope::scoped_client_id;
pub use mint::{mint, MintError, MintKey, MintRequest};
pub use permissions::{Access, Pattern, PatternError, Permissions};
pub use verifier::{AuthError, KeyAlgorithm, Principal, Verifier, VerifierConfig, VerifierSetupError};

/// The audience Tandem expects by default (`aud`).
pub const DEFAULT_AUDIENCE: &str = "tandem";
/// The issuer Tandem expects by default (`iss`).
pub const DEFAULT_ISSUER: &str = "tandem";
/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;
