//! etcd's `simple` tokens: `<16 random letters>.<raft index>`, opaque, kept in memory.
//!
//! The member that receives Authenticate draws the random prefix and proposes it; every
//! member that applies the entry registers `<prefix>.<entry index>` for the user. A
//! request carrying the token is served once the member has applied that index
//! ([`SimpleTokens::wait_index`]). A token lives `--auth-token-ttl` (300 s by default)
//! from its last use on this member: each use pushes the deadline back. Deleting the
//! user or changing its password drops its tokens; disabling auth drops them all; a
//! restart forgets them (clients authenticate again, as with etcd).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng as _;

use crate::clock::Clock;
use crate::store::AuthInfo;

/// etcd's `--auth-token-ttl` default.
pub const DEFAULT_SIMPLE_TOKEN_TTL: Duration = Duration::from_secs(300);

const PREFIX_LENGTH: usize = 16;
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// The simple-token table of one member.
pub struct SimpleTokens {
    ttl: Duration,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Tokens are only kept while auth is on.
    enabled: bool,
    /// Token -> (user name, expiry).
    tokens: HashMap<String, (String, Instant)>,
}

impl std::fmt::Debug for SimpleTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("SimpleTokens")
            .field("ttl", &self.ttl)
            .field("enabled", &state.enabled)
            .field("tokens", &state.tokens.len())
            .finish()
    }
}

impl SimpleTokens {
    /// A table whose tokens live `ttl` after their last use (zero: the 300 s default).
    pub fn new(ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        SimpleTokens {
            ttl: if ttl.is_zero() {
                DEFAULT_SIMPLE_TOKEN_TTL
            } else {
                ttl
            },
            clock,
            state: Mutex::new(State::default()),
        }
    }

    /// A fresh random prefix, drawn by the member that proposes Authenticate.
    pub fn gen_prefix() -> String {
        let mut rng = rand::rng();
        (0..PREFIX_LENGTH)
            .map(|_| char::from(LETTERS[rng.random_range(0..LETTERS.len())]))
            .collect()
    }

    /// Registers `<prefix>.<index>` for `username` (at apply time) and returns it. While
    /// auth is off nothing is registered.
    pub fn assign(&self, username: &str, prefix: &str, index: u64) -> String {
        let token = format!("{prefix}.{index}");
        let mut state = self.state.lock();
        if state.enabled {
            let deadline = self.clock.now() + self.ttl;
            if state
                .tokens
                .insert(token.clone(), (username.to_owned(), deadline))
                .is_some()
            {
                tracing::warn!(user_name = username, "simple token assigned twice");
            }
        }
        token
    }

    /// The raft index a well-formed token was issued at: the member must have applied
    /// it before the token can be known here.
    pub fn wait_index(token: &str) -> Option<u64> {
        let (prefix, index) = token.split_once('.')?;
        if prefix.contains('.') || index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index.parse().ok()
    }

    /// The user of a live token, with the store's current `revision`; refreshes the
    /// token's deadline. `None` for an unknown, malformed or expired token.
    pub fn info(&self, token: &str, revision: u64) -> Option<AuthInfo> {
        Self::wait_index(token)?;
        let now = self.clock.now();
        let mut state = self.state.lock();
        let (username, deadline) = state.tokens.get_mut(token)?;
        if now > *deadline {
            state.tokens.remove(token);
            return None;
        }
        *deadline = now + self.ttl;
        Some(AuthInfo {
            username: username.clone(),
            revision,
        })
    }

    /// Drops every token of `username`.
    pub fn invalidate_user(&self, username: &str) {
        self.state
            .lock()
            .tokens
            .retain(|_, (user, _)| user != username);
    }

    /// Starts keeping tokens (auth turned on, or found on at start).
    pub fn enable(&self) {
        self.state.lock().enabled = true;
    }

    /// Drops every token and stops keeping them (auth turned off).
    pub fn disable(&self) {
        let mut state = self.state.lock();
        state.enabled = false;
        state.tokens.clear();
    }

    /// Forgets expired tokens (they are refused anyway); call it now and then, as
    /// etcd's once-a-second sweep. Returns how many were dropped.
    pub fn sweep_expired(&self) -> usize {
        let now = self.clock.now();
        let mut state = self.state.lock();
        let before = state.tokens.len();
        state.tokens.retain(|_, (_, deadline)| now <= *deadline);
        before - state.tokens.len()
    }

    /// Number of live tokens kept.
    pub fn len(&self) -> usize {
        self.state.lock().tokens.len()
    }

    /// No token kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn tokens(ttl: Duration) -> (SimpleTokens, Arc<ManualClock>) {
        let clock = ManualClock::new();
        let tokens = SimpleTokens::new(ttl, clock.clone());
        tokens.enable();
        (tokens, clock)
    }

    #[test]
    fn prefixes_are_16_random_letters() {
        let a = SimpleTokens::gen_prefix();
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_alphabetic()));
        assert_ne!(a, SimpleTokens::gen_prefix());
    }

    #[test]
    fn token_is_prefix_dot_index() {
        let (tokens, _) = tokens(Duration::from_secs(10));
        let token = tokens.assign("alice", "abcdefghijklmnop", 42);
        assert_eq!(token, "abcdefghijklmnop.42");
        assert_eq!(SimpleTokens::wait_index(&token), Some(42));
        assert_eq!(
            tokens.info(&token, 7),
            Some(AuthInfo {
                username: "alice".into(),
                revision: 7
            })
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "", "abc", "abc.", "a.b.1", "abc.+1", "abc.-1", "abc.1x", ".1x",
        ] {
            assert_eq!(SimpleTokens::wait_index(bad), None, "{bad:?}");
        }
        let (tokens, _) = tokens(Duration::from_secs(10));
        assert_eq!(tokens.info("never.1", 1), None);
    }

    #[test]
    fn expiry_counts_from_the_last_use() {
        let (tokens, clock) = tokens(Duration::from_secs(10));
        let token = tokens.assign("alice", "p", 1);
        clock.advance(Duration::from_secs(10));
        assert!(tokens.info(&token, 1).is_some(), "valid up to its deadline");
        clock.advance(Duration::from_secs(9));
        assert!(
            tokens.info(&token, 1).is_some(),
            "the use at 10 s pushed the deadline to 20 s"
        );
        clock.advance(Duration::from_secs(11));
        assert_eq!(tokens.info(&token, 1), None, "unused for 11 s > ttl");
        assert_eq!(tokens.len(), 0);
    }

    #[test]
    fn sweep_drops_only_expired_tokens() {
        let (tokens, clock) = tokens(Duration::from_secs(10));
        let old = tokens.assign("a", "p", 1);
        clock.advance(Duration::from_secs(6));
        let young = tokens.assign("b", "p", 2);
        clock.advance(Duration::from_secs(5));
        assert_eq!(tokens.sweep_expired(), 1);
        assert_eq!(tokens.info(&old, 1), None);
        assert!(tokens.info(&young, 1).is_some());
    }

    #[test]
    fn zero_ttl_means_the_default() {
        let (tokens, clock) = tokens(Duration::ZERO);
        let token = tokens.assign("a", "p", 1);
        clock.advance(DEFAULT_SIMPLE_TOKEN_TTL);
        assert!(tokens.info(&token, 1).is_some());
        clock.advance(DEFAULT_SIMPLE_TOKEN_TTL + Duration::from_secs(1));
        assert!(tokens.info(&token, 1).is_none());
    }

    #[test]
    fn users_and_disable_drop_tokens() {
        let (tokens, _) = tokens(Duration::from_secs(10));
        let a = tokens.assign("a", "p", 1);
        let b = tokens.assign("b", "p", 2);
        tokens.invalidate_user("a");
        assert_eq!(tokens.info(&a, 1), None);
        assert!(tokens.info(&b, 1).is_some());
        tokens.disable();
        assert_eq!(tokens.info(&b, 1), None);
        let c = tokens.assign("b", "p", 3);
        assert_eq!(
            tokens.info(&c, 1),
            None,
            "nothing is kept while auth is off"
        );
    }
}
