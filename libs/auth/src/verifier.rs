//! Token verification: signature with a pinned algorithm, then `exp`, `nbf`, `aud`, `iss`.

use std::fmt;
use std::path::Path;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::claims::DocClaims;
use crate::permissions::{Access, Permissions};
use crate::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_LEEWAY_SECS, MIN_HS256_SECRET_BYTES};
use tandem_protocol::DocId;

/// Longest user id accepted from a token's `sub`.
pub const MAX_USER_ID_CHARS: usize = 256;

/// The signing algorithms a server may be pinned to. `none` is not one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// HMAC with SHA-256 and a shared secret: development, or one trusted issuer.
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256; the server holds only public keys.
    Rs256,
    /// Ed25519; the server holds only public keys.
    EdDsa,
}

impl KeyAlgorithm {
    /// The `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Hs256 => "HS256",
            KeyAlgorithm::Rs256 => "RS256",
            KeyAlgorithm::EdDsa => "EdDSA",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "HS256" => Some(KeyAlgorithm::Hs256),
            "RS256" => Some(KeyAlgorithm::Rs256),
            "EdDSA" => Some(KeyAlgorithm::EdDsa),
            _ => None,
        }
    }

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            KeyAlgorithm::Hs256 => Algorithm::HS256,
            KeyAlgorithm::Rs256 => Algorithm::RS256,
            KeyAlgorithm::EdDsa => Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a server verifies tokens.
#[derive(Clone)]
pub struct VerifierConfig {
    /// The one algorithm accepted; a token whose header names another is refused before any
    /// signature check (no algorithm confusion).
    pub algorithm: KeyAlgorithm,
    /// HS256: the secret(s). RS256 and EdDSA: PEM public keys. More than one allows key rotation.
    pub keys: Vec<Vec<u8>>,
    pub audience: String,
    pub issuer: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl fmt::Debug for VerifierConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierConfig")
            .field("algorithm", &self.algorithm)
            .field("keys", &format_args!("<{} keys>", self.keys.len()))
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

impl VerifierConfig {
    /// `keys` for `algorithm`, with the default audience, issuer and leeway.
    pub fn new(algorithm: KeyAlgorithm, keys: Vec<Vec<u8>>) -> Self {
        Self {
            algorithm,
            keys,
            audience: DEFAULT_AUDIENCE.to_owned(),
            issuer: DEFAULT_ISSUER.to_owned(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }

    /// A configuration with the default audience, issuer and leeway, reading each key from a file
    /// (a secret for HS256, with surrounding whitespace removed; a PEM public key otherwise).
    pub fn from_key_files(
        algorithm: KeyAlgorithm,
        files: &[impl AsRef<Path>],
    ) -> Result<Self, VerifierSetupError> {
        let keys = files
            .iter()
            .map(|path| {
                let path = path.as_ref();
                let bytes = std::fs::read(path)
                    .map_err(|e| VerifierSetupError(format!("read key file {}: {e}", path.display())))?;
                Ok(match algorithm {
                    KeyAlgorithm::Hs256 => bytes.trim_ascii().to_vec(),
                    _ => bytes,
                })
            })
            .collect::<Result<Vec<_>, VerifierSetupError>>()?;
        Ok(Self::new(algorithm, keys))
    }
}

/// A configuration that cannot work (no key, a short secret, a key that does not parse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token verification: {0}")]
pub struct VerifierSetupError(pub String);

/// Checks tokens. Cheap to share behind an `Arc`.
pub struct Verifier {
    algorithm: KeyAlgorithm,
    keys: Vec<DecodingKey>,
    validation: Validation,
    audience: String,
    issuer: String,
    leeway_secs: u64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .field("keys", &self.keys.len())
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

impl Verifier {
    pub fn new(config: VerifierConfig) -> Result<Self, VerifierSetupError> {
        if config.keys.is_empty() {
            return Err(VerifierSetupError(format!("{} needs at least one key", config.algorithm)));
        }
        let keys = config
            .keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                decoding_key(config.algorithm, key)
                    .map_err(|e| VerifierSetupError(format!("key {}: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut validation = Validation::new(config.algorithm.jwt());
        validation.leeway = config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_audience(&[&config.audience]);
        validation.set_issuer(&[&config.issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        Ok(Self {
            algorithm: config.algorithm,
            keys,
            validation,
            audience: config.audience,
            issuer: config.issuer,
            leeway_secs: config.leeway_secs,
        })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// Verifies `token` and returns who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.check_header(token)?;
        // Several keys allow rotation: a signature that fails with one key may verify with the next.
        let mut claims = None;
        for key in &self.keys {
            match jsonwebtoken::decode::<TokenClaims>(token, key, &self.validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(self.error(e)),
            }
        }
        let claims = claims.ok_or(AuthError::BadSignature)?;
        let user = claims.sub.ok_or_else(|| AuthError::MissingClaim("sub".to_owned()))?;
        let expires_at = claims.exp.ok_or_else(|| AuthError::MissingClaim("exp".to_owned()))?;
        if user.is_empty() || user.chars().count() > MAX_USER_ID_CHARS || user.chars().any(char::is_control) {
            return Err(AuthError::InvalidClaim(format!(
                "`sub` must be 1 to {MAX_USER_ID_CHARS} characters without control characters"
            )));
        }
        let permissions = Permissions::parse(&claims.docs.read, &claims.docs.write)
            .map_err(|e| AuthError::InvalidClaim(format!("`docs`: {e}")))?;
        Ok(Principal { user, permissions, expires_at: Some(expires_at) })
    }

    /// Refuses a token whose header names another algorithm (`none` included) before any key is
    /// tried, with a message that says which algorithm this server takes.
    fn check_header(&self, token: &str) -> Result<(), AuthError> {
        #[derive(Deserialize)]
        struct Header {
            alg: Option<String>,
        }
        let segment = token.split('.').next().unwrap_or_default();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment.trim_end_matches('='))
            .map_err(|_| AuthError::Malformed("the header is not base64url".to_owned()))?;
        let header: Header = serde_json::from_slice(&bytes)
            .map_err(|e| AuthError::Malformed(format!("the header is not a JSON object: {e}")))?;
        match header.alg {
            None => Err(AuthError::Malformed("the header has no `alg`".to_owned())),
            Some(alg) if alg == self.algorithm.as_str() => Ok(()),
            Some(alg) => Err(AuthError::AlgorithmNotAllowed { got: alg, allowed: self.algorithm }),
        }
    }

    fn error(&self, error: jsonwebtoken::errors::Error) -> AuthError {
        match error.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAudience => AuthError::WrongAudience { expected: self.audience.clone() },
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer { expected: self.issuer.clone() },
            ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
            ErrorKind::InvalidClaimFormat(claim) => {
                AuthError::InvalidClaim(format!("`{claim}` has the wrong type"))
            }
            ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed {
                got: "another algorithm".to_owned(),
                allowed: self.algorithm,
            },
            ErrorKind::Json(e) => AuthError::Malformed(format!("the claims are not valid: {e}")),
            other => AuthError::Malformed(format!("{other:?}")),
        }
    }
}

fn decoding_key(algorithm: KeyAlgorithm, key: &[u8]) -> Result<DecodingKey, String> {
    match algorithm {
        KeyAlgorithm::Hs256 if key.len() < MIN_HS256_SECRET_BYTES => Err(format!(
            "an HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes, this one has {}",
            key.len()
        )),
        KeyAlgorithm::Hs256 => Ok(DecodingKey::from_secret(key)),
        KeyAlgorithm::Rs256 => {
            DecodingKey::from_rsa_pem(key).map_err(|e| format!("not an RSA public key in PEM: {e}"))
        }
        KeyAlgorithm::EdDsa => {
            DecodingKey::from_ed_pem(key).map_err(|e| format!("not an Ed25519 public key in PEM: {e}"))
        }
    }
}

/// The claims verification reads; the registered claims are checked by `jsonwebtoken` itself.
#[derive(Deserialize)]
struct TokenClaims {
    // Optional here so that a missing claim is reported by name rather than as bad JSON.
    sub: Option<String>,
    exp: Option<u64>,
    #[serde(default)]
    docs: DocClaims,
}

/// Who a connection or call speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub permissions: Permissions,
    /// When the token expires (Unix seconds); `None` when no token is involved.
    pub expires_at: Option<u64>,
}

impl Principal {
    /// The caller of a server that runs without authentication: may do everything.
    pub fn anonymous() -> Self {
        Self { user: "anonymous".to_owned(), permissions: Permissions::all(), expires_at: None }
    }

    /// A trusted service (authenticated by the service token): may do everything.
    pub fn service(name: &str) -> Self {
        Self { user: name.to_owned(), permissions: Permissions::all(), expires_at: None }
    }

    pub fn allows(&self, access: Access, doc: &DocId) -> bool {
        self.permissions.allows(access, doc)
    }
}

/// Why a token was refused. The message names the problem; it never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token: send `Authorization: Bearer <token>`, the subprotocols `tandem.v1` and `tandem.bearer.<token>`, or the session cookie")]
    Missing,
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("the token is signed with {got:?}; this server accepts only {allowed} (never `none`)")]
    AlgorithmNotAllowed { got: String, allowed: KeyAlgorithm },
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (`nbf` is in the future)")]
    NotYetValid,
    #[error("the token is for another audience; this server is `{expected}`")]
    WrongAudience { expected: String },
    #[error("the token is from another issuer; this server trusts `{expected}`")]
    WrongIssuer { expected: String },
    #[error("the token has no `{0}` claim")]
    MissingClaim(String),
    #[error("the token's claims are not valid: {0}")]
    InvalidClaim(String),
}
