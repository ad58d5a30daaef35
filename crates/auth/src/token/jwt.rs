//! etcd's `jwt` tokens: signed, carrying `username`, `revision` (the auth revision at
//! issue) and `exp`, valid on every member that has the verifying key.
//!
//! Keys are PEM files as etcd takes them: RSA in PKCS#1 or PKCS#8, EC in SEC1 (`EC
//! PRIVATE KEY`, what `openssl ecparam -genkey` writes) or PKCS#8, Ed25519 in PKCS#8,
//! public keys as SubjectPublicKeyInfo; HMAC methods use the `priv-key` file's bytes as
//! the secret. With only a public key the member verifies tokens but cannot issue them
//! ([`AuthError::VerifyOnly`]).

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use super::options::TokenConfigError;
use crate::clock::Clock;
use crate::error::AuthError;
use crate::store::AuthInfo;

/// Signs and verifies JWT tokens.
pub struct JwtTokens {
    algorithm: Algorithm,
    /// `None` when only the public key was given.
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens")
            .field("algorithm", &self.algorithm)
            .field("verify_only", &self.encoding.is_none())
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn invalid_key(e: impl std::fmt::Display) -> TokenConfigError {
    TokenConfigError::InvalidKey(e.to_string())
}

impl JwtTokens {
    /// A provider from the PEM contents of the keys (etcd's `jwtOptions.Key`): at least
    /// one key; if both, they must be a pair.
    pub fn new(
        algorithm: Algorithm,
        public_pem: Option<&[u8]>,
        private_pem: Option<&[u8]>,
        ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TokenConfigError> {
        let family = algorithm.family();
        let (encoding, decoding) = if family == AlgorithmFamily::Hmac {
            let secret = private_pem.ok_or(TokenConfigError::MissingKey)?;
            (
                Some(EncodingKey::from_secret(secret).map_err(invalid_key)?),
                DecodingKey::from_secret(secret).map_err(invalid_key)?,
            )
        } else {
            let encoding = private_pem
                .map(|pem| encoding_key(family, pem))
                .transpose()?;
            let public = public_pem
                .map(|pem| decoding_key(family, pem))
                .transpose()?;
            let decoding = match (public, &encoding) {
                (Some(public), _) => public,
                (None, Some(private)) => {
                    let jwk = Jwk::from_encoding_key(private, algorithm).map_err(invalid_key)?;
                    DecodingKey::from_jwk(&jwk).map_err(invalid_key)?
                }
                (None, None) => return Err(TokenConfigError::MissingKey),
            };
            (encoding, decoding)
        };
        if let Some(encoding) = &encoding {
            // Catches a pub-key of another pair, and a key of the wrong curve or size.
            let probe = b"cairn key check";
            let signature =
                jsonwebtoken::crypto::sign(probe, encoding, algorithm).map_err(invalid_key)?;
            let verified = jsonwebtoken::crypto::verify(&signature, probe, &decoding, algorithm)
                .unwrap_or(false);
            if !verified {
                return Err(if public_pem.is_some() {
                    TokenConfigError::KeyMismatch
                } else {
                    TokenConfigError::InvalidKey(
                        "the private key does not verify its own signature".into(),
                    )
                });
            }
        }
        Ok(JwtTokens {
            algorithm,
            encoding,
            decoding,
            ttl,
            clock,
        })
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether this member can only verify.
    pub fn verify_only(&self) -> bool {
        self.encoding.is_none()
    }

    /// A token for `username` at auth `revision`, expiring `ttl` from now.
    pub fn assign(&self, username: &str, revision: u64) -> Result<String, AuthError> {
        let key = self.encoding.as_ref().ok_or(AuthError::VerifyOnly)?;
        let exp = (self.clock.unix_now() + self.ttl).as_secs();
        let mut claims = Map::new();
        claims.insert("username".into(), Value::from(username));
        claims.insert("revision".into(), Value::from(revision));
        claims.insert("exp".into(), Value::from(exp));
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key)
            .map_err(|e| AuthError::Internal(format!("failed to sign a JWT token: {e}")))
    }

    /// The user and revision of a valid token: signed by this key with this algorithm,
    /// not expired (`exp`, if present, after now; `nbf`, if present, not after now, as
    /// golang-jwt checks them, without leeway), with a string `username` and a numeric
    /// `revision`.
    pub fn info(&self, token: &str) -> Option<AuthInfo> {
        let mut validation = Validation::new(self.algorithm);
        // Time claims are checked below against the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims =
            match jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &validation) {
                Ok(data) => data.claims,
                Err(e) => {
                    tracing::warn!(error = %e, "failed to parse a JWT token");
                    return None;
                }
            };
        let now = self.clock.unix_now().as_secs_f64();
        if let Some(exp) = claims.get("exp") {
            if now >= exp.as_f64()? {
                return None;
            }
        }
        if let Some(nbf) = claims.get("nbf") {
            if now < nbf.as_f64()? {
                return None;
            }
        }
        let username = claims.get("username")?.as_str()?.to_owned();
        let revision = claims.get("revision")?.as_f64()?;
        Some(AuthInfo {
            username,
            // Go decodes the claim as float64 and converts it, truncating.
            revision: revision as u64,
        })
    }
}

fn encoding_key(family: AlgorithmFamily, pem: &[u8]) -> Result<EncodingKey, TokenConfigError> {
    match family {
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => match sec1_pem_body(pem) {
            Some(sec1) => {
                let pkcs8 =
                    sec1_to_pkcs8(&sec1).ok_or_else(|| invalid_key("malformed EC PRIVATE KEY"))?;
                Ok(EncodingKey::from_ec_der(&pkcs8))
            }
            None => EncodingKey::from_ec_pem(pem),
        },
        AlgorithmFamily::Ed => EncodingKey::from_ed_pem(pem),
        AlgorithmFamily::Hmac => EncodingKey::from_secret(pem),
    }
    .map_err(invalid_key)
}

fn decoding_key(family: AlgorithmFamily, pem: &[u8]) -> Result<DecodingKey, TokenConfigError> {
    match family {
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
        AlgorithmFamily::Hmac => DecodingKey::from_secret(pem),
    }
    .map_err(invalid_key)
}

/// The DER body of a SEC1 `EC PRIVATE KEY` PEM block, if the file holds one.
fn sec1_pem_body(pem: &[u8]) -> Option<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN EC PRIVATE KEY-----";
    const END: &str = "-----END EC PRIVATE KEY-----";
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find(BEGIN)? + BEGIN.len();
    let end = start + text[start..].find(END)?;
    let body: String = text[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}

/// One DER element: (tag, contents, the rest after it).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn der_encode(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(contents);
    out
}

/// Wraps a SEC1 `ECPrivateKey` (RFC 5915) into a PKCS#8 `PrivateKeyInfo` (RFC 5208),
/// taking the curve from the key's own parameters.
fn sec1_to_pkcs8(sec1: &[u8]) -> Option<Vec<u8>> {
    const SEQUENCE: u8 = 0x30;
    const OCTET_STRING: u8 = 0x04;
    const OID: u8 = 0x06;
    const PARAMETERS: u8 = 0xa0;
    // id-ecPublicKey, 1.2.840.10045.2.1.
    const EC_PUBLIC_KEY: [u8; 9] = [OID, 7, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

    let (tag, mut fields, _) = der_element(sec1)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut curve = None;
    while !fields.is_empty() {
        let (tag, contents, rest) = der_element(fields)?;
        if tag == PARAMETERS {
            let (oid_tag, oid, _) = der_element(contents)?;
            if oid_tag != OID {
                return None;
            }
            curve = Some(der_encode(OID, oid));
        }
        fields = rest;
    }
    let algorithm = der_encode(SEQUENCE, &[EC_PUBLIC_KEY.as_slice(), &curve?].concat());
    let version = [0x02, 0x01, 0x00];
    let body = [
        version.as_slice(),
        &algorithm,
        &der_encode(OCTET_STRING, sec1),
    ]
    .concat();
    Some(der_encode(SEQUENCE, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let encoded = der_encode(0x04, &vec![7; len]);
            let (tag, contents, rest) = der_element(&encoded).unwrap();
            assert_eq!((tag, contents.len(), rest.len()), (0x04, len, 0));
        }
        assert_eq!(der_element(&[0x30, 0x05, 1]), None);
        assert_eq!(der_element(&[0x30, 0x80]), None);
    }

    #[test]
    fn sec1_without_curve_is_refused() {
        // SEQUENCE { INTEGER 1, OCTET STRING 1 byte }: no [0] parameters.
        let sec1 = [0x30, 0x06, 0x02, 0x01, 0x01, 0x04, 0x01, 0x09];
        assert_eq!(sec1_to_pkcs8(&sec1), None);
        assert_eq!(sec1_to_pkcs8(&[0x02, 0x01, 0x01]), None);
    }
}
