//! The key space's history as one member holds it, for checks that members applied the
//! same writes exactly once: every revision, in order, with its key, value and version.

use std::time::Duration;

/// One revision of the history: a put (`value` set) or a delete (`value` None).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The store revision.
    pub revision: i64,
    /// The key.
    pub key: Vec<u8>,
    /// The value written, or None for a delete.
    pub value: Option<Vec<u8>>,
    /// The key's version after the change (0 for a delete).
    pub version: i64,
}

/// Every change member `endpoint` holds from `from` to `to` (inclusive), read by watching
/// from `from` on that member alone. Events of one revision are listed in event order.
pub async fn member_history(endpoint: &str, from: i64, to: i64) -> Result<Vec<Change>, String> {
    let mut stream = crate::watch_all_from(endpoint, from).await?;
    let mut out: Vec<Change> = Vec::new();
    while out.last().is_none_or(|c| c.revision < to) {
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .map_err(|_| {
                format!(
                    "{endpoint}: no event for 10 s; history up to {:?}",
                    out.last()
                )
            })?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{endpoint}: watch ended at {:?}", out.last()))?;
        if resp.canceled() {
            return Err(format!(
                "{endpoint}: watch canceled (compacted at {})",
                resp.compact_revision()
            ));
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            if kv.mod_revision() > to {
                return Ok(out);
            }
            let value = match ev.event_type() {
                etcd_client::EventType::Put => Some(kv.value().to_vec()),
                etcd_client::EventType::Delete => None,
            };
            out.push(Change {
                revision: kv.mod_revision(),
                key: kv.key().to_vec(),
                value,
                version: kv.version(),
            });
        }
    }
    Ok(out)
}

/// Panics unless every written value appears at most once in `history` (tests write a
/// unique value with every put, so a value seen twice was applied twice).
pub fn assert_each_value_once(history: &[Change]) {
    let mut seen = std::collections::HashMap::new();
    for c in history {
        if let Some(v) = &c.value {
            if let Some(first) = seen.insert(v.clone(), c.revision) {
                panic!(
                    "value {:?} of key {:?} written twice: at revision {first} and {}",
                    String::from_utf8_lossy(v),
                    String::from_utf8_lossy(&c.key),
                    c.revision
                );
            }
        }
    }
}
