//! etcd's member and cluster ID derivation, so tests can predict header IDs.

use sha1::{Digest, Sha1};

/// The member ID etcd assigns at bootstrap: the first 8 bytes (big-endian) of
/// SHA-1 over the member's sorted peer URLs concatenated, followed by the
/// `--initial-cluster-token`.
pub fn member_id(peer_urls: &[&str], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort_unstable();
    let mut hasher = Sha1::new();
    for url in urls {
        hasher.update(url.as_bytes());
    }
    hasher.update(token.as_bytes());
    first_u64(&hasher.finalize())
}

/// The cluster ID: the first 8 bytes (big-endian) of SHA-1 over the sorted
/// member IDs, each as 8 big-endian bytes.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut hasher = Sha1::new();
    for id in ids {
        hasher.update(id.to_be_bytes());
    }
    first_u64(&hasher.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_default_ids() {
        let member = member_id(&["http://localhost:2380"], "etcd-cluster");
        assert_eq!(format!("{member:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[member])), "cdf818194e3a8c32");
    }
}
