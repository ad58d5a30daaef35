//! Password hashing, kept off the apply path.
//!
//! bcrypt is slow on purpose (about 50-100 ms at etcd's default cost of 10) and salts
//! every hash at random, so it must run **once, on the member that receives the
//! request, before proposing**: [`hash_user_add`] and [`hash_change_password`] turn the
//! clear-text password into etcd's `hashedPassword` (base64 of the bcrypt string) and
//! clear the password, so the raft log never holds it and every member applies the same
//! hash. Applying only decodes and stores. Login ([`verify_password`]) also runs on the
//! receiving member, before its Authenticate entry is proposed.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bcrypt::Version;
use cairn_proto::etcdserverpb::{AuthUserAddRequest, AuthUserChangePasswordRequest};

use crate::error::AuthError;

/// etcd's `--bcrypt-cost` default (Go's `bcrypt.DefaultCost`).
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// The smallest cost bcrypt accepts (Go's `bcrypt.MinCost`).
pub const MIN_BCRYPT_COST: u32 = 4;
/// The largest cost bcrypt accepts (Go's `bcrypt.MaxCost`).
pub const MAX_BCRYPT_COST: u32 = 31;

/// bcrypt reads at most 72 bytes; Go refuses longer passwords rather than truncate.
const MAX_PASSWORD_BYTES: usize = 72;

/// `cost` if bcrypt accepts it, else the default with a warning (etcd's
/// `NewAuthStore`).
pub fn effective_bcrypt_cost(cost: u32) -> u32 {
    if (MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
        cost
    } else {
        tracing::warn!(
            given_cost = cost,
            min_cost = MIN_BCRYPT_COST,
            max_cost = MAX_BCRYPT_COST,
            default_cost = DEFAULT_BCRYPT_COST,
            "use default bcrypt cost instead of the invalid given cost"
        );
        DEFAULT_BCRYPT_COST
    }
}

/// The bcrypt hash of `password` (`$2a$<cost>$...`, the form Go's bcrypt writes).
pub fn hash_password(password: &str, cost: u32) -> Result<String, AuthError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::PasswordTooLong);
    }
    bcrypt::hash_with_result(password, cost)
        .map(|parts| parts.format_for_version(Version::TwoA))
        .map_err(|e| AuthError::Internal(e.to_string()))
}

/// Whether `password` matches the stored bcrypt `hash` (false for a malformed hash).
pub fn verify_password(password: &str, hash: &[u8]) -> bool {
    std::str::from_utf8(hash)
        .ok()
        .is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false))
}

/// Prepares a UserAdd for proposing: unless the user has no password, hashes the
/// password into `hashed_password` and clears it (etcd's `EtcdServer.UserAdd`). An
/// empty password is hashed too, as etcd does.
pub fn hash_user_add(
    mut request: AuthUserAddRequest,
    cost: u32,
) -> Result<AuthUserAddRequest, AuthError> {
    if !request.options.is_some_and(|o| o.no_password) {
        let hash = hash_password(&request.password, cost)?;
        request.hashed_password = STANDARD.encode(hash);
        request.password.clear();
    }
    Ok(request)
}

/// Prepares a UserChangePassword for proposing: a non-empty password becomes
/// `hashed_password` (etcd's `EtcdServer.UserChangePassword`).
pub fn hash_change_password(
    mut request: AuthUserChangePasswordRequest,
    cost: u32,
) -> Result<AuthUserChangePasswordRequest, AuthError> {
    if !request.password.is_empty() {
        let hash = hash_password(&request.password, cost)?;
        request.hashed_password = STANDARD.encode(hash);
        request.password.clear();
    }
    Ok(request)
}

/// The stored password of an applied UserAdd/UserChangePassword: the decoded
/// `hashed_password`. Never hashes (see [`AuthError::PasswordNotHashed`]).
pub(crate) fn stored_password(password: &str, hashed_password: &str) -> Result<Vec<u8>, AuthError> {
    if !password.is_empty() && hashed_password.is_empty() {
        return Err(AuthError::PasswordNotHashed);
    }
    // etcd answers a hash that is not base64 with ErrNoPasswordUser.
    STANDARD
        .decode(hashed_password)
        .map_err(|_| AuthError::NoPasswordUser)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::authpb::UserAddOptions;

    #[test]
    fn costs_outside_bcrypts_bounds_fall_back_to_the_default() {
        assert_eq!(effective_bcrypt_cost(4), 4);
        assert_eq!(effective_bcrypt_cost(31), 31);
        assert_eq!(effective_bcrypt_cost(3), DEFAULT_BCRYPT_COST);
        assert_eq!(effective_bcrypt_cost(32), DEFAULT_BCRYPT_COST);
    }

    #[test]
    fn hashes_are_go_shaped_and_verify() {
        let hash = hash_password("s3cret", MIN_BCRYPT_COST).unwrap();
        assert!(hash.starts_with("$2a$04$"), "{hash}");
        assert_eq!(hash.len(), 60);
        assert!(verify_password("s3cret", hash.as_bytes()));
        assert!(!verify_password("s3cret!", hash.as_bytes()));
        assert!(!verify_password("s3cret", b"not a hash"));
        assert!(!verify_password("", b""));
        // The `$2b$` form other implementations write verifies as well.
        let two_b = hash_password("etcd", 4)
            .unwrap()
            .replacen("$2a$", "$2b$", 1);
        assert!(verify_password("etcd", two_b.as_bytes()));
    }

    #[test]
    fn passwords_over_72_bytes_are_refused() {
        assert!(hash_password(&"x".repeat(72), MIN_BCRYPT_COST).is_ok());
        assert_eq!(
            hash_password(&"x".repeat(73), MIN_BCRYPT_COST),
            Err(AuthError::PasswordTooLong)
        );
    }

    #[test]
    fn user_add_is_hashed_before_proposing() {
        let request = AuthUserAddRequest {
            name: "alice".into(),
            password: "pw".into(),
            ..Default::default()
        };
        let prepared = hash_user_add(request, MIN_BCRYPT_COST).unwrap();
        assert_eq!(prepared.password, "");
        let hash = STANDARD.decode(&prepared.hashed_password).unwrap();
        assert!(verify_password("pw", &hash));
        assert_eq!(
            stored_password(&prepared.password, &prepared.hashed_password).unwrap(),
            hash
        );

        let no_password = AuthUserAddRequest {
            name: "cert-only".into(),
            password: "ignored".into(),
            options: Some(UserAddOptions { no_password: true }),
            ..Default::default()
        };
        let prepared = hash_user_add(no_password.clone(), MIN_BCRYPT_COST).unwrap();
        assert_eq!(prepared, no_password);
    }

    #[test]
    fn change_password_hashes_only_a_given_password() {
        let empty = AuthUserChangePasswordRequest {
            name: "alice".into(),
            ..Default::default()
        };
        assert_eq!(
            hash_change_password(empty.clone(), MIN_BCRYPT_COST).unwrap(),
            empty
        );
        let given = AuthUserChangePasswordRequest {
            name: "alice".into(),
            password: "new".into(),
            ..Default::default()
        };
        let prepared = hash_change_password(given, MIN_BCRYPT_COST).unwrap();
        assert_eq!(prepared.password, "");
        assert!(verify_password(
            "new",
            &STANDARD.decode(&prepared.hashed_password).unwrap()
        ));
    }

    #[test]
    fn the_apply_path_never_hashes() {
        assert_eq!(
            stored_password("clear", ""),
            Err(AuthError::PasswordNotHashed)
        );
        assert_eq!(stored_password("", "***"), Err(AuthError::NoPasswordUser));
        assert_eq!(stored_password("", "").unwrap(), Vec::<u8>::new());
    }
}
