//! The token-verification flags every service shares (`--jwt-*`).

use std::path::PathBuf;

use crate::{
    KeyAlgorithm, Verifier, VerifierConfig, VerifierSetupError, DEFAULT_AUDIENCE, DEFAULT_ISSUER,
    DEFAULT_LEEWAY_SECS,
};

/// How a service verifies tokens. Every flag can also be set with the environment variable shown.
#[derive(Debug, Clone, clap::Args)]
pub struct JwtArgs {
    /// Token signature algorithm accepted (only this one): HS256, RS256 or EdDSA.
    #[arg(long, env = "TANDEM_JWT_ALGORITHM", default_value = "HS256", value_parser = parse_algorithm)]
    pub jwt_algorithm: KeyAlgorithm,
    /// Token key file: the shared secret for HS256 (at least 32 bytes), a PEM public key for RS256 and
    /// EdDSA. Repeat (or separate with commas) to accept several keys during a rotation.
    #[arg(long = "jwt-key-file", env = "TANDEM_JWT_KEY_FILES", value_delimiter = ',')]
    pub jwt_key_files: Vec<PathBuf>,
    /// The `aud` a token must carry.
    #[arg(long, env = "TANDEM_JWT_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub jwt_audience: String,
    /// The `iss` a token must carry.
    #[arg(long, env = "TANDEM_JWT_ISSUER", default_value = DEFAULT_ISSUER)]
    pub jwt_issuer: String,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    #[arg(long, env = "TANDEM_JWT_LEEWAY", default_value_t = DEFAULT_LEEWAY_SECS)]
    pub jwt_leeway: u64,
}

fn parse_algorithm(name: &str) -> Result<KeyAlgorithm, String> {
    KeyAlgorithm::parse(name)
        .ok_or_else(|| format!("{name:?} is not accepted; use HS256, RS256 or EdDSA (never none)"))
}

impl JwtArgs {
    /// The verifier these flags describe; `None` without any key file.
    pub fn verifier(&self) -> Result<Option<Verifier>, VerifierSetupError> {
        if self.jwt_key_files.is_empty() {
            return Ok(None);
        }
        let mut config = VerifierConfig::from_key_files(self.jwt_algorithm, &self.jwt_key_files)?;
        config.audience = self.jwt_audience.clone();
        config.issuer = self.jwt_issuer.clone();
        config.leeway_secs = self.jwt_leeway;
        Verifier::new(config).map(Some)
    }

    /// One line for the start banner.
    pub fn describe(&self) -> String {
        format!(
            "{} tokens for audience {:?} from issuer {:?} ({} key file(s))",
            self.jwt_algorithm,
            self.jwt_audience,
            self.jwt_issuer,
            self.jwt_key_files.len()
        )
    }
}
