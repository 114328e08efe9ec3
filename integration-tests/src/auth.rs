//! Development keys and tokens for tests of authenticated servers.

use std::path::{Path, PathBuf};

use tandem_auth::{mint, MintKey, MintRequest, DEFAULT_AUDIENCE, DEFAULT_ISSUER};

/// An HS256 secret in a file of its own (for the server's `--jwt-key-file`), and tokens signed with it.
pub struct DevKeys {
    dir: tempfile::TempDir,
    secret: Vec<u8>,
}

impl DevKeys {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a folder for the key");
        let secret: Vec<u8> = {
            use rand::Rng;
            let mut rng = rand::thread_rng();
            (0..48).map(|_| rng.sample(rand::distributions::Alphanumeric)).collect()
        };
        std::fs::write(dir.path().join("jwt.secret"), &secret).expect("write the secret");
        Self { dir, secret }
    }

    /// The secret's file.
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("jwt.secret")
    }

    /// A token for `user` valid for an hour.
    pub fn token(&self, user: &str, read: &[&str], write: &[&str]) -> String {
        self.token_with(user, read, write, |_| {})
    }

    /// A token for `user`, after `edit` changed the request (expiry, audience…).
    pub fn token_with(
        &self,
        user: &str,
        read: &[&str],
        write: &[&str],
        edit: impl FnOnce(&mut MintRequest),
    ) -> String {
        let mut request = MintRequest::new(user, read, write);
        edit(&mut request);
        mint(&MintKey::Hs256(self.secret.clone()), &request).expect("mint a token")
    }

    /// A token signed with another secret: its signature cannot verify.
    pub fn forged_token(&self, user: &str, write: &[&str]) -> String {
        let request = MintRequest::new(user, &[], write);
        mint(&MintKey::Hs256(b"not-the-server-secret-not-the-server-secret".to_vec()), &request)
            .expect("mint")
    }

    /// A token with header `alg: none` and no signature, claiming write access to everything.
    pub fn unsigned_token(&self, user: &str) -> String {
        use base64::Engine;
        let encode = |json: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string().as_bytes())
        };
        let header = encode(serde_json::json!({"alg": "none", "typ": "JWT"}));
        let claims = encode(serde_json::json!({
            "sub": user, "exp": u32::MAX, "aud": DEFAULT_AUDIENCE, "iss": DEFAULT_ISSUER,
            "docs": {"write": ["*"]},
        }));
        format!("{header}.{claims}.")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for DevKeys {
    fn default() -> Self {
        Self::new()
    }
}
