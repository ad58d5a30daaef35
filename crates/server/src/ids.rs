//! Member and cluster ids, computed as etcd computes them so that a cluster's ids are the
//! same whichever implementation bootstraps it.

use sha1::{Digest, Sha1};

fn first_u64(hash: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(b)
}

/// A member's id: SHA-1 of its sorted peer URLs joined, then the cluster token.
pub fn member_id(peer_urls: &[String], cluster_token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut h = Sha1::new();
    for u in urls {
        h.update(u.as_bytes());
    }
    h.update(cluster_token.as_bytes());
    first_u64(&h.finalize())
}

/// A cluster's id: SHA-1 of its sorted member ids, 8 big-endian bytes each.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    first_u64(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_single_member_ids_match_etcd() {
        // etcd's well-known ids for `--name default` with all defaults.
        let m = member_id(&["http://localhost:2380".to_string()], "etcd-cluster");
        assert_eq!(format!("{m:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[m])), "cdf818194e3a8c32");
    }
}
