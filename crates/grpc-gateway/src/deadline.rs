//! The client's deadline — the `grpc-timeout` header gRPC clients send with a call — as
//! the server sees it while the call runs: a server that proposes a write can tell raft
//! not to take it once the client has stopped waiting (a late write a client already
//! retried would otherwise be applied twice).

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// The deadline of the call being served on this task, if its client sent one.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Runs `call` with `deadline` as [`current`].
pub async fn scope<F: Future>(deadline: Option<Instant>, call: F) -> F::Output {
    match deadline {
        Some(d) => DEADLINE.scope(d, call).await,
        None => call.await,
    }
}

/// The deadline a `grpc-timeout` header sets from now (gRPC's format: at most eight
/// digits and a unit, `H`, `M`, `S`, `m`, `u` or `n`); None without a valid one.
pub fn from_metadata(metadata: &MetadataMap) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    Some(Instant::now() + parse_timeout(value)?)
}

fn parse_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_grpc_writes_them() {
        assert_eq!(parse_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1999m"), Some(Duration::from_millis(1999)));
        assert_eq!(parse_timeout("5M"), Some(Duration::from_secs(300)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("250000u"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "2", "2s", "-1S", "123456789S", "1.5S", "2 S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_deadline_is_seen_inside_its_scope_only() {
        let d = Instant::now() + Duration::from_secs(3);
        assert_eq!(scope(Some(d), async { current() }).await, Some(d));
        assert_eq!(scope(None, async { current() }).await, None);
        assert_eq!(current(), None);
    }
}
