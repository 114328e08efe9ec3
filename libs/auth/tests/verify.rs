//! Token verification against hostile and broken tokens.

use base64::Engine;
use tandem_auth::{mint, Access, AuthError, KeyAlgorithm, MintKey, MintRequest, Verifier, VerifierConfig};
use tandem_protocol::DocId;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("tests/keys")
        .join(name),
    )
    .unwrap()
}

fn config(algorithm: KeyAlgorithm, keys: Vec<Vec<u8>>) -> VerifierConfig {
    VerifierConfig { leeway_secs: 5, ..VerifierConfig::new(algorithm, keys) }
}

fn hs256() -> Verifier {
    Verifier::new(config(KeyAlgorithm::Hs256, vec![SECRET.to_vec()])).unwrap()
}

fn request(user: &str) -> MintRequest {
    MintRequest { ttl_secs: 600, ..MintRequest::new(user, &["handbook"], &["team-a/*"]) }
}

fn doc(id: &str) -> DocId {
    DocId::parse(id).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn a_valid_token_gives_user_and_permissions() {
    let token = mint(&MintKey::Hs256(SECRET.to_vec()), &request("alice")).unwrap();
    let principal = hs256().verify(&token).unwrap();
    assert_eq!(principal.user, "alice");
    assert!(principal.allows(Access::Write, &doc("team-a/notes")));
    assert!(principal.allows(Access::Read, &doc("handbook")));
    assert!(!principal.allows(Access::Write, &doc("handbook")));
    assert!(!principal.allows(Access::Read, &doc("team-b/notes")));
    assert!(principal.expires_at.unwrap() > 0);
}

#[test]
fn a_forged_signature_is_refused() {
    let other = b"another-secret-another-secret-another-secret".to_vec();
    let token = mint(&MintKey::Hs256(other), &request("mallory")).unwrap();
    assert_eq!(hs256().verify(&token), Err(AuthError::BadSignature));
    // A valid token whose claims were edited keeps its old signature.
    let valid = mint(&MintKey::Hs256(SECRET.to_vec()), &request("alice")).unwrap();
    let parts: Vec<&str> = valid.split('.').collect();
    let claims = format!(
        r#"{{"sub":"alice","exp":{},"aud":"tandem","iss":"tandem","docs":{{"write":["*"]}}}}"#,
        u32::MAX
    );
    let edited = format!("{}.{}.{}", parts[0], b64(claims.as_bytes()), parts[2]);
    assert_eq!(hs256().verify(&edited), Err(AuthError::BadSignature));
}

#[test]
fn alg_none_is_never_accepted() {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let claims =
        b64(format!(r#"{{"sub":"mallory","exp":{},"aud":"tandem","iss":"tandem"}}"#, u32::MAX).as_bytes());
    for token in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
        let error = hs256().verify(&token).unwrap_err();
        assert!(matches!(&error, AuthError::AlgorithmNotAllowed { got, .. } if got == "none"), "{error:?}");
        assert!(error.to_string().contains("never `none`"), "{error}");
    }
}

#[test]
fn algorithm_confusion_is_refused() {
    // An RS256 server must not accept an HS256 token "signed" with its public key as the secret.
    let public = key_file("rs256-test-public.pem");
    let verifier = Verifier::new(config(KeyAlgorithm::Rs256, vec![public.clone()])).unwrap();
    let token = mint(&MintKey::Hs256(public), &request("mallory")).unwrap();
    assert!(matches!(verifier.verify(&token), Err(AuthError::AlgorithmNotAllowed { .. })));
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused() {
    let key = MintKey::Hs256(SECRET.to_vec());
    let expired = mint(&key, &MintRequest { ttl_secs: -60, ..request("alice") }).unwrap();
    assert_eq!(hs256().verify(&expired), Err(AuthError::Expired));
    // Within the leeway (5 s here) an expired token still passes: clocks differ.
    let just_expired = mint(&key, &MintRequest { ttl_secs: -2, ..request("alice") }).unwrap();
    assert!(hs256().verify(&just_expired).is_ok());
    let early = mint(&key, &MintRequest { not_before_secs: Some(120), ..request("alice") }).unwrap();
    assert_eq!(hs256().verify(&early), Err(AuthError::NotYetValid));
}

#[test]
fn wrong_audience_and_issuer_are_refused() {
    let key = MintKey::Hs256(SECRET.to_vec());
    let token = mint(&key, &MintRequest { audience: "billing".to_owned(), ..request("alice") }).unwrap();
    assert!(matches!(hs256().verify(&token), Err(AuthError::WrongAudience { .. })));
    let token = mint(&key, &MintRequest { issuer: "elsewhere".to_owned(), ..request("alice") }).unwrap();
    assert!(matches!(hs256().verify(&token), Err(AuthError::WrongIssuer { .. })));
}

#[test]
fn missing_claims_and_garbage_are_refused() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let key = EncodingKey::from_secret(SECRET);
    let no_exp =
        encode(&Header::default(), &serde_json::json!({"sub": "a", "aud": "tandem", "iss": "tandem"}), &key)
            .unwrap();
    assert_eq!(hs256().verify(&no_exp), Err(AuthError::MissingClaim("exp".to_owned())));
    let no_sub = encode(
        &Header::default(),
        &serde_json::json!({"exp": u32::MAX, "aud": "tandem", "iss": "tandem"}),
        &key,
    )
    .unwrap();
    assert!(hs256().verify(&no_sub).is_err());
    let bad_pattern = encode(
        &Header::default(),
        &serde_json::json!({"sub": "a", "exp": u32::MAX, "aud": "tandem", "iss": "tandem", "docs": {"read": ["a*b"]}}),
        &key,
    )
    .unwrap();
    assert!(matches!(hs256().verify(&bad_pattern), Err(AuthError::InvalidClaim(_))));
    for garbage in ["", "x", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30.", "\u{0}\u{0}"] {
        assert!(hs256().verify(garbage).is_err(), "{garbage:?}");
    }
}

#[test]
fn rs256_and_eddsa_with_public_keys() {
    let cases = [
        (KeyAlgorithm::Rs256, MintKey::Rs256(key_file("rs256-test-private.pem")), "rs256-test-public.pem"),
        (
            KeyAlgorithm::EdDsa,
            MintKey::EdDsa(key_file("ed25519-test-private.pem")),
            "ed25519-test-public.pem",
        ),
    ];
    for (algorithm, private, public) in cases {
        let verifier = Verifier::new(config(algorithm, vec![key_file(public)])).unwrap();
        let token = mint(&private, &request("bob")).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().user, "bob", "{algorithm}");
        // A token of the dev secret is refused by a production verifier.
        let hs = mint(&MintKey::Hs256(SECRET.to_vec()), &request("bob")).unwrap();
        assert!(verifier.verify(&hs).is_err());
    }
}

#[test]
fn key_rotation_accepts_any_configured_key() {
    let old = b"old-secret-old-secret-old-secret-old-secret".to_vec();
    let verifier = Verifier::new(config(KeyAlgorithm::Hs256, vec![SECRET.to_vec(), old.clone()])).unwrap();
    let token = mint(&MintKey::Hs256(old), &request("alice")).unwrap();
    assert_eq!(verifier.verify(&token).unwrap().user, "alice");
}

#[test]
fn bad_configuration_is_refused_at_start() {
    let short = Verifier::new(config(KeyAlgorithm::Hs256, vec![b"short".to_vec()])).unwrap_err();
    assert!(short.to_string().contains("at least 32 bytes"), "{short}");
    assert!(Verifier::new(config(KeyAlgorithm::Hs256, vec![])).is_err());
    assert!(Verifier::new(config(KeyAlgorithm::Rs256, vec![b"not a pem".to_vec()])).is_err());
}

#[test]
fn debug_output_never_shows_keys() {
    let verifier = hs256();
    let text = format!("{verifier:?} {:?}", config(KeyAlgorithm::Hs256, vec![SECRET.to_vec()]));
    assert!(!text.contains("test-secret"), "{text}");
    assert!(!format!("{:?}", MintKey::Hs256(SECRET.to_vec())).contains("test-secret"));
}
