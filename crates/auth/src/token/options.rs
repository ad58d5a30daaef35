//! The `--auth-token` flag, parsed as etcd parses it.
//!
//! `TYPE[,NAME=VALUE]...`: the type is `simple` (the default), `jwt`, or empty (no
//! tokens at all). Options are split on `,` and each on `=`, which must give exactly
//! two parts; a repeated name is an error. `simple` ignores every option. `jwt` reads
//! `sign-method` (required), `pub-key` and `priv-key` (PEM file paths), `ttl` (a Go
//! duration such as `5m` or `1h30m`, default 5 minutes); other names are warned about
//! and ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;

/// etcd's JWT lifetime when `ttl` is not given (`auth.DefaultTTL`).
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(5 * 60);

const OPT_SIGN_METHOD: &str = "sign-method";
const OPT_PUBLIC_KEY: &str = "pub-key";
const OPT_PRIVATE_KEY: &str = "priv-key";
const OPT_TTL: &str = "ttl";
const KNOWN_OPTIONS: [&str; 4] = [OPT_SIGN_METHOD, OPT_PUBLIC_KEY, OPT_PRIVATE_KEY, OPT_TTL];

/// Why the token provider cannot be built from its flag. These stop the member at
/// start; they never reach a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenConfigError {
    /// etcd's `ErrInvalidAuthOpts`: a malformed or repeated option, an unknown token
    /// type, or a JWT option that cannot be read (bad `ttl`, unknown `sign-method`,
    /// unreadable key file).
    #[error("auth: invalid auth options ({0})")]
    InvalidOptions(String),
    /// A signing method etcd knows that cairn's JWT library does not implement (`ES512`,
    /// `none`).
    #[error("auth: unsupported signing method {0}")]
    UnsupportedMethod(String),
    /// etcd's `ErrMissingKey`: neither key given (HMAC: no `priv-key`).
    #[error("auth: missing key data")]
    MissingKey,
    /// etcd's `ErrKeyMismatch`: `pub-key` is not the public half of `priv-key`.
    #[error("auth: public and private keys don't match")]
    KeyMismatch,
    /// A key file that does not hold a key of the signing method's kind.
    #[error("auth: invalid key: {0}")]
    InvalidKey(String),
}

/// What `--auth-token` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOptions {
    /// `--auth-token ""`: Authenticate fails, no token is ever valid.
    Nop,
    /// `simple`: random tokens valid on the members that applied the Authenticate.
    Simple,
    /// `jwt,...`: signed tokens valid on every member.
    Jwt(JwtOptions),
}

/// The options of a `jwt` token provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtOptions {
    /// The signing algorithm (`sign-method`).
    pub algorithm: Algorithm,
    /// `pub-key`: PEM file of the public key (verify only, unless `priv-key` too).
    pub public_key: Option<PathBuf>,
    /// `priv-key`: PEM file of the private key (or the HMAC secret).
    pub private_key: Option<PathBuf>,
    /// `ttl`: how long a token is valid after it is issued.
    pub ttl: Duration,
}

impl TokenOptions {
    /// Parses the `--auth-token` value (etcd's `decomposeOpts` + `jwtOptions.Parse`).
    pub fn parse(flag: &str) -> Result<Self, TokenConfigError> {
        let mut parts = flag.split(',');
        let token_type = parts.next().unwrap_or_default();
        let mut options = BTreeMap::new();
        for option in parts {
            let pair: Vec<&str> = option.split('=').collect();
            let [name, value] = pair.as_slice() else {
                return Err(TokenConfigError::InvalidOptions(format!(
                    "invalid token option {option:?}"
                )));
            };
            if options.insert(*name, *value).is_some() {
                return Err(TokenConfigError::InvalidOptions(format!(
                    "duplicate parameter {name:?}"
                )));
            }
        }
        match token_type {
            "simple" => Ok(TokenOptions::Simple),
            "" => Ok(TokenOptions::Nop),
            "jwt" => Ok(TokenOptions::Jwt(JwtOptions::from_map(&options)?)),
            other => Err(TokenConfigError::InvalidOptions(format!(
                "unknown token type {other:?}"
            ))),
        }
    }
}

impl JwtOptions {
    fn from_map(options: &BTreeMap<&str, &str>) -> Result<Self, TokenConfigError> {
        let unknown: Vec<&str> = options
            .keys()
            .copied()
            .filter(|k| !KNOWN_OPTIONS.contains(k))
            .collect();
        if !unknown.is_empty() {
            tracing::warn!(keys = ?unknown, "unknown JWT options");
        }
        let ttl = match options.get(OPT_TTL).copied().unwrap_or_default() {
            "" => DEFAULT_JWT_TTL,
            ttl => parse_go_duration(ttl)
                .map_err(|e| TokenConfigError::InvalidOptions(format!("ttl {ttl:?}: {e}")))?,
        };
        let path = |name| {
            options
                .get(name)
                .filter(|v| !v.is_empty())
                .map(|v| PathBuf::from(*v))
        };
        let method = options.get(OPT_SIGN_METHOD).copied().unwrap_or_default();
        Ok(JwtOptions {
            algorithm: signing_algorithm(method)?,
            public_key: path(OPT_PUBLIC_KEY),
            private_key: path(OPT_PRIVATE_KEY),
            ttl,
        })
    }
}

/// The algorithm of a `sign-method` name, as golang-jwt names them.
fn signing_algorithm(method: &str) -> Result<Algorithm, TokenConfigError> {
    Ok(match method {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        "ES512" | "none" => return Err(TokenConfigError::UnsupportedMethod(method.to_owned())),
        _ => {
            return Err(TokenConfigError::InvalidOptions(format!(
                "auth: invalid auth signature method {method:?}"
            )))
        }
    })
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers with optional fraction and
/// a unit (`ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`), e.g. `300ms`, `1.5h`, `2h45m`;
/// `0` alone needs no unit. Negative durations are refused (a token that is expired
/// when issued is of no use).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err("invalid duration".into());
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err("invalid duration".into());
        }
        let unit_len = after_number
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(after_number.len(), |(i, _)| i);
        let (unit, after_unit) = after_number.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => return Err("missing unit in duration".into()),
            _ => return Err(format!("unknown unit {unit:?} in duration")),
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part
                .parse()
                .map_err(|_| "invalid duration".to_string())?
        };
        let mut nanos = whole.checked_mul(unit_nanos).ok_or("invalid duration")?;
        let mut scale = unit_nanos;
        for digit in frac_part.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or("invalid duration")?;
        rest = after_unit;
    }
    if total_nanos > i64::MAX as u128 {
        return Err("invalid duration".into());
    }
    if negative && total_nanos != 0 {
        return Err("negative duration".into());
    }
    Ok(Duration::from_nanos(total_nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_types() {
        assert_eq!(TokenOptions::parse("simple"), Ok(TokenOptions::Simple));
        assert_eq!(
            TokenOptions::parse("simple,whatever=1"),
            Ok(TokenOptions::Simple)
        );
        assert_eq!(TokenOptions::parse(""), Ok(TokenOptions::Nop));
        assert!(matches!(
            TokenOptions::parse("oauth"),
            Err(TokenConfigError::InvalidOptions(_))
        ));
    }

    #[test]
    fn jwt_flag_as_etcd_parses_it() {
        let opts = TokenOptions::parse(
            "jwt,pub-key=/k/pub.pem,priv-key=/k/priv.pem,sign-method=RS256,ttl=10m",
        )
        .unwrap();
        assert_eq!(
            opts,
            TokenOptions::Jwt(JwtOptions {
                algorithm: Algorithm::RS256,
                public_key: Some("/k/pub.pem".into()),
                private_key: Some("/k/priv.pem".into()),
                ttl: Duration::from_secs(600),
            })
        );
        let TokenOptions::Jwt(defaults) =
            TokenOptions::parse("jwt,sign-method=ES256,priv-key=k,extra=1").unwrap()
        else {
            panic!("not jwt");
        };
        assert_eq!(defaults.ttl, DEFAULT_JWT_TTL);
        assert_eq!(defaults.public_key, None);
        let TokenOptions::Jwt(zero) = TokenOptions::parse("jwt,sign-method=EdDSA,ttl=0").unwrap()
        else {
            panic!("not jwt");
        };
        assert_eq!(zero.ttl, Duration::ZERO);
    }

    #[test]
    fn bad_jwt_flags() {
        let invalid = |flag: &str| {
            matches!(
                TokenOptions::parse(flag),
                Err(TokenConfigError::InvalidOptions(_))
            )
        };
        assert!(invalid("jwt,sign-method"));
        assert!(invalid("jwt,sign-method=RS256,ttl=5m=1"));
        assert!(invalid("jwt,sign-method=RS256,sign-method=RS256"));
        assert!(invalid("jwt,sign-method=RS256,ttl=5"));
        assert!(invalid("jwt,sign-method=RS999"));
        assert!(invalid("jwt,priv-key=k"));
        assert!(invalid("jwt,sign-method=rs256"));
        assert_eq!(
            TokenOptions::parse("jwt,sign-method=ES512"),
            Err(TokenConfigError::UnsupportedMethod("ES512".into()))
        );
    }

    #[test]
    fn go_durations() {
        let ok = |s: &str, d: Duration| assert_eq!(parse_go_duration(s), Ok(d), "{s}");
        ok("0", Duration::ZERO);
        ok("300s", Duration::from_secs(300));
        ok("5m", Duration::from_secs(300));
        ok("1h30m", Duration::from_secs(5400));
        ok("1.5h", Duration::from_secs(5400));
        ok(".5s", Duration::from_millis(500));
        ok("1.s", Duration::from_secs(1));
        ok("100ms", Duration::from_millis(100));
        ok("10us", Duration::from_micros(10));
        ok("10µs", Duration::from_micros(10));
        ok("7ns", Duration::from_nanos(7));
        ok("+2m", Duration::from_secs(120));
        ok("-0", Duration::ZERO);
        for bad in ["", "5", "m", ".s", "5x", "1h 2m", "-5m", "99999999999h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }
}
