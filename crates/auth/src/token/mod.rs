//! Tokens: what Authenticate returns and every later request carries in its `token`
//! metadata.
//!
//! [`TokenProvider`] is built from `--auth-token` ([`TokenOptions`]) and
//! `--auth-token-ttl`. It is member-local state, not replicated: simple tokens live in
//! this member's memory, JWT keys in its files.

mod jwt;
mod options;
mod simple;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use jwt::JwtTokens;
pub use options::{parse_go_duration, JwtOptions, TokenConfigError, TokenOptions, DEFAULT_JWT_TTL};
pub use simple::{SimpleTokens, DEFAULT_SIMPLE_TOKEN_TTL};

use crate::clock::Clock;
use crate::error::AuthError;
use crate::store::AuthInfo;

/// The `--auth-token` default.
pub const DEFAULT_AUTH_TOKEN: &str = "simple";

/// Issues and recognises tokens.
#[derive(Debug)]
pub enum TokenProvider {
    /// No tokens (`--auth-token ""`): Authenticate answers
    /// [`AuthFailed`](AuthError::AuthFailed).
    Nop,
    /// etcd's default `simple` tokens.
    Simple(SimpleTokens),
    /// Signed JWT tokens.
    Jwt(JwtTokens),
}

impl TokenProvider {
    /// The provider `--auth-token flag` and `--auth-token-ttl simple_ttl` ask for,
    /// reading the JWT key files.
    pub fn from_flag(
        flag: &str,
        simple_ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TokenConfigError> {
        Self::from_options(TokenOptions::parse(flag)?, simple_ttl, clock, |path| {
            std::fs::read(path)
        })
    }

    /// The provider for parsed `options`, reading key files with `read_file`.
    pub fn from_options(
        options: TokenOptions,
        simple_ttl: Duration,
        clock: Arc<dyn Clock>,
        read_file: impl Fn(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<Self, TokenConfigError> {
        match options {
            TokenOptions::Nop => Ok(TokenProvider::Nop),
            TokenOptions::Simple => {
                tracing::warn!("simple token is not cryptographically signed");
                Ok(TokenProvider::Simple(SimpleTokens::new(simple_ttl, clock)))
            }
            TokenOptions::Jwt(jwt) => {
                let read = |path: &Option<std::path::PathBuf>| {
                    path.as_deref()
                        .map(|p| {
                            read_file(p).map_err(|e| {
                                TokenConfigError::InvalidOptions(format!("{}: {e}", p.display()))
                            })
                        })
                        .transpose()
                };
                let public = read(&jwt.public_key)?;
                let private = read(&jwt.private_key)?;
                let tokens = JwtTokens::new(
                    jwt.algorithm,
                    public.as_deref(),
                    private.as_deref(),
                    jwt.ttl,
                    clock,
                )?;
                Ok(TokenProvider::Jwt(tokens))
            }
        }
    }

    /// What the proposer of an Authenticate puts in the entry: a fresh random prefix for
    /// simple tokens, empty otherwise.
    pub fn gen_prefix(&self) -> String {
        match self {
            TokenProvider::Simple(_) => SimpleTokens::gen_prefix(),
            TokenProvider::Nop | TokenProvider::Jwt(_) => String::new(),
        }
    }

    /// Issues a token to `username` while applying the Authenticate entry at raft
    /// `index` with the proposer's `prefix`, at auth `revision`.
    pub fn assign(
        &self,
        username: &str,
        revision: u64,
        index: u64,
        prefix: &str,
    ) -> Result<String, AuthError> {
        match self {
            TokenProvider::Nop => Err(AuthError::AuthFailed),
            TokenProvider::Simple(simple) => Ok(simple.assign(username, prefix, index)),
            TokenProvider::Jwt(jwt) => jwt.assign(username, revision),
        }
    }

    /// For a simple token, the raft index this member must have applied before
    /// [`info`](Self::info) can know it; `None` for other tokens (no wait).
    pub fn wait_index(&self, token: &str) -> Option<u64> {
        match self {
            TokenProvider::Simple(_) => SimpleTokens::wait_index(token),
            TokenProvider::Nop | TokenProvider::Jwt(_) => None,
        }
    }

    /// Who a token stands for: simple tokens report the store's current
    /// `store_revision`, JWTs the revision they were issued at. `None`: invalid.
    pub fn info(&self, token: &str, store_revision: u64) -> Option<AuthInfo> {
        match self {
            TokenProvider::Nop => None,
            TokenProvider::Simple(simple) => simple.info(token, store_revision),
            TokenProvider::Jwt(jwt) => jwt.info(token),
        }
    }

    /// Drops the user's simple tokens (user deleted, password changed). JWTs are not
    /// tracked: the revision change makes them old.
    pub fn invalidate_user(&self, username: &str) {
        if let TokenProvider::Simple(simple) = self {
            simple.invalidate_user(username);
        }
    }

    /// Auth turned on.
    pub fn enable(&self) {
        if let TokenProvider::Simple(simple) = self {
            simple.enable();
        }
    }

    /// Auth turned off: every simple token is dropped.
    pub fn disable(&self) {
        if let TokenProvider::Simple(simple) = self {
            simple.disable();
        }
    }

    /// Forgets expired simple tokens; call about once a second.
    pub fn sweep_expired(&self) -> usize {
        match self {
            TokenProvider::Simple(simple) => simple.sweep_expired(),
            TokenProvider::Nop | TokenProvider::Jwt(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests;
