use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;
use crate::clock::ManualClock;

const RSA_PRIV: &[u8] = include_bytes!("../../testdata/rsa-priv.pem");
const RSA_PRIV_PKCS1: &[u8] = include_bytes!("../../testdata/rsa-priv-pkcs1.pem");
const RSA_PUB: &[u8] = include_bytes!("../../testdata/rsa-pub.pem");
const RSA_OTHER_PRIV: &[u8] = include_bytes!("../../testdata/rsa-other-priv.pem");
const RSA_OTHER_PUB: &[u8] = include_bytes!("../../testdata/rsa-other-pub.pem");
const EC_PRIV_SEC1: &[u8] = include_bytes!("../../testdata/ec-priv-sec1.pem");
const EC_PRIV: &[u8] = include_bytes!("../../testdata/ec-priv.pem");
const EC_PUB: &[u8] = include_bytes!("../../testdata/ec-pub.pem");
const ED_PRIV: &[u8] = include_bytes!("../../testdata/ed-priv.pem");
const ED_PUB: &[u8] = include_bytes!("../../testdata/ed-pub.pem");

const TTL: Duration = Duration::from_secs(300);

fn jwt(
    alg: Algorithm,
    public: Option<&[u8]>,
    private: Option<&[u8]>,
    clock: &Arc<ManualClock>,
) -> JwtTokens {
    JwtTokens::new(alg, public, private, TTL, clock.clone()).unwrap()
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn info(username: &str, revision: u64) -> Option<AuthInfo> {
    Some(AuthInfo {
        username: username.into(),
        revision,
    })
}

#[test]
fn rs256_round_trip_with_etcds_claims() {
    let clock = ManualClock::new();
    let signer = jwt(Algorithm::RS256, Some(RSA_PUB), Some(RSA_PRIV), &clock);
    let token = signer.assign("alice", 12).unwrap();
    let exp = (clock.unix_now() + TTL).as_secs();
    assert_eq!(
        claims(&token),
        json!({"exp": exp, "revision": 12, "username": "alice"})
    );
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(signer.info(&token), info("alice", 12));

    // Another member with only the public key verifies it, and cannot issue.
    let verifier = jwt(Algorithm::RS256, Some(RSA_PUB), None, &clock);
    assert!(verifier.verify_only());
    assert_eq!(verifier.info(&token), info("alice", 12));
    assert_eq!(verifier.assign("alice", 12), Err(AuthError::VerifyOnly));

    // A private key alone verifies with its own public half; PKCS#1 works too.
    let private_only = jwt(Algorithm::RS256, None, Some(RSA_PRIV_PKCS1), &clock);
    assert_eq!(private_only.info(&token), info("alice", 12));
}

#[test]
fn es256_round_trip_with_sec1_and_pkcs8_keys() {
    let clock = ManualClock::new();
    let sec1 = jwt(Algorithm::ES256, None, Some(EC_PRIV_SEC1), &clock);
    let pkcs8 = jwt(Algorithm::ES256, Some(EC_PUB), Some(EC_PRIV), &clock);
    let verifier = jwt(Algorithm::ES256, Some(EC_PUB), None, &clock);
    let token = sec1.assign("bob", 3).unwrap();
    assert_eq!(claims(&token)["username"], "bob");
    assert_eq!(verifier.info(&token), info("bob", 3));
    assert_eq!(pkcs8.info(&token), info("bob", 3));
    let token = pkcs8.assign("bob", 4).unwrap();
    assert_eq!(sec1.info(&token), info("bob", 4));
}

#[test]
fn eddsa_and_hmac_round_trips() {
    let clock = ManualClock::new();
    let ed = jwt(Algorithm::EdDSA, Some(ED_PUB), Some(ED_PRIV), &clock);
    let token = ed.assign("carol", 5).unwrap();
    assert_eq!(
        jwt(Algorithm::EdDSA, Some(ED_PUB), None, &clock).info(&token),
        info("carol", 5)
    );

    let hs = jwt(Algorithm::HS256, None, Some(b"shared secret"), &clock);
    let token = hs.assign("dave", 6).unwrap();
    assert_eq!(hs.info(&token), info("dave", 6));
    assert_eq!(
        jwt(Algorithm::HS256, None, Some(b"other secret"), &clock).info(&token),
        None
    );
}

#[test]
fn bad_signatures_and_algorithms_are_refused() {
    let clock = ManualClock::new();
    let signer = jwt(Algorithm::RS256, Some(RSA_PUB), Some(RSA_PRIV), &clock);
    let other = jwt(
        Algorithm::RS256,
        Some(RSA_OTHER_PUB),
        Some(RSA_OTHER_PRIV),
        &clock,
    );
    let token = signer.assign("alice", 1).unwrap();
    assert_eq!(other.info(&token), None, "signed by another key");

    // The payload changed after signing.
    let parts: Vec<&str> = token.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(br#"{"exp":99999999999,"revision":1,"username":"root"}"#);
    assert_eq!(
        signer.info(&format!("{}.{forged}.{}", parts[0], parts[2])),
        None
    );

    // Same key material, another algorithm than configured.
    let ps = jwt(Algorithm::PS256, Some(RSA_PUB), Some(RSA_PRIV), &clock);
    assert_eq!(ps.info(&token), None);
    assert_eq!(signer.info(&ps.assign("alice", 1).unwrap()), None);

    assert_eq!(signer.info("not a jwt"), None);
    assert_eq!(signer.info(""), None);
}

#[test]
fn tokens_expire_at_exp_by_the_injected_clock() {
    let clock = ManualClock::new();
    let signer = jwt(Algorithm::ES256, Some(EC_PUB), Some(EC_PRIV), &clock);
    let token = signer.assign("alice", 1).unwrap();
    clock.advance(TTL - Duration::from_secs(2));
    assert_eq!(signer.info(&token), info("alice", 1));
    clock.advance(Duration::from_secs(2));
    assert_eq!(signer.info(&token), None, "expired at exp");
}

#[test]
fn claims_must_have_etcds_types() {
    let clock = ManualClock::new();
    let hs = jwt(Algorithm::HS256, None, Some(b"k"), &clock);
    let key = EncodingKey::from_secret(b"k").unwrap();
    let sign = |claims: Value| {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    };
    let future = clock.unix_now().as_secs() + 60;
    assert_eq!(
        hs.info(&sign(json!({"username": "u", "revision": 2}))),
        info("u", 2),
        "exp is optional"
    );
    assert_eq!(
        hs.info(&sign(
            json!({"username": "u", "revision": 2.9, "exp": future})
        )),
        info("u", 2)
    );
    assert_eq!(
        hs.info(&sign(json!({"username": "u", "exp": future}))),
        None
    );
    assert_eq!(
        hs.info(&sign(json!({"username": 5, "revision": 2, "exp": future}))),
        None
    );
    assert_eq!(
        hs.info(&sign(
            json!({"username": "u", "revision": "2", "exp": future})
        )),
        None
    );
    assert_eq!(
        hs.info(&sign(
            json!({"username": "u", "revision": 2, "exp": "later"})
        )),
        None
    );
    assert_eq!(
        hs.info(&sign(
            json!({"username": "u", "revision": 2, "nbf": future})
        )),
        None
    );
}

#[test]
fn key_configuration_errors() {
    let clock: Arc<dyn Clock> = ManualClock::new();
    let new = |alg, public: Option<&[u8]>, private: Option<&[u8]>| {
        JwtTokens::new(alg, public, private, TTL, clock.clone()).map(|_| ())
    };
    assert_eq!(
        new(Algorithm::RS256, None, None),
        Err(TokenConfigError::MissingKey)
    );
    assert_eq!(
        new(Algorithm::HS256, Some(b"pub"), None),
        Err(TokenConfigError::MissingKey)
    );
    assert_eq!(
        new(Algorithm::RS256, Some(RSA_OTHER_PUB), Some(RSA_PRIV)),
        Err(TokenConfigError::KeyMismatch)
    );
    assert!(matches!(
        new(Algorithm::RS256, None, Some(EC_PRIV)),
        Err(TokenConfigError::InvalidKey(_))
    ));
    assert!(matches!(
        new(Algorithm::ES256, Some(RSA_PUB), None),
        Err(TokenConfigError::InvalidKey(_))
    ));
    assert!(matches!(
        new(Algorithm::ES384, None, Some(EC_PRIV)),
        Err(TokenConfigError::InvalidKey(_))
    ));
    assert!(matches!(
        new(Algorithm::EdDSA, None, Some(b"garbage")),
        Err(TokenConfigError::InvalidKey(_))
    ));
}

#[test]
fn provider_from_the_flag_reads_key_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pub.pem"), RSA_PUB).unwrap();
    std::fs::write(dir.path().join("priv.pem"), RSA_PRIV).unwrap();
    let flag = format!(
        "jwt,pub-key={},priv-key={},sign-method=RS256,ttl=1m",
        dir.path().join("pub.pem").display(),
        dir.path().join("priv.pem").display()
    );
    let clock = ManualClock::new();
    let provider = TokenProvider::from_flag(&flag, Duration::ZERO, clock.clone()).unwrap();
    assert_eq!(provider.gen_prefix(), "");
    let token = provider.assign("alice", 9, 100, "").unwrap();
    assert_eq!(provider.wait_index(&token), None);
    assert_eq!(
        provider.info(&token, 42),
        info("alice", 9),
        "a JWT keeps its own revision"
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(provider.info(&token, 42), None);

    let missing = format!(
        "jwt,priv-key={},sign-method=RS256",
        dir.path().join("nope.pem").display()
    );
    assert!(matches!(
        TokenProvider::from_flag(&missing, Duration::ZERO, clock.clone()),
        Err(TokenConfigError::InvalidOptions(_))
    ));
}

#[test]
fn simple_and_nop_providers() {
    let clock = ManualClock::new();
    let simple = TokenProvider::from_flag("simple", Duration::from_secs(5), clock.clone()).unwrap();
    simple.enable();
    let prefix = simple.gen_prefix();
    assert_eq!(prefix.len(), 16);
    let token = simple.assign("alice", 3, 77, &prefix).unwrap();
    assert_eq!(token, format!("{prefix}.77"));
    assert_eq!(simple.wait_index(&token), Some(77));
    assert_eq!(
        simple.info(&token, 8),
        info("alice", 8),
        "a simple token reports the store's revision"
    );
    clock.advance(Duration::from_secs(6));
    assert_eq!(simple.sweep_expired(), 1);
    assert_eq!(simple.info(&token, 8), None);

    let nop = TokenProvider::from_flag("", Duration::ZERO, clock).unwrap();
    assert_eq!(nop.assign("alice", 1, 1, ""), Err(AuthError::AuthFailed));
    assert_eq!(nop.info("x.1", 1), None);
}
