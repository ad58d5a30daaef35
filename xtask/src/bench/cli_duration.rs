//! Durations on the command line: `30s`, `2m`, `500ms`.

use std::time::Duration;

/// Parses `30s`, `2m`, `500ms` or a number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 2m or 500ms"))?;
    Duration::try_from_secs_f64(n * scale).map_err(|e| e.to_string())
}
