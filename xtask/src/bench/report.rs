//! What one run measured: counts, throughput and a latency histogram, printed for
//! people and as one JSON line for scripts.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// Latencies in microseconds, from 1 µs to one hour at 3 significant figures.
#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds"))
    }
}

impl Latency {
    pub fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn mean_us(&self) -> f64 {
        self.0.mean()
    }

    pub fn quantile_us(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }

    pub fn max_us(&self) -> u64 {
        self.0.max()
    }
}

/// The result of one workload run against one target.
pub struct Report {
    /// Workload name as printed and in JSON: `put`, `range-linearizable`, `txn-cas`, ...
    pub workload: String,
    pub conns: usize,
    pub clients: usize,
    /// Operations that succeeded (for `watch`: events delivered).
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latency: Latency,
    /// Workload-specific figures, printed and added to the JSON line.
    pub extra: Map<String, Value>,
}

impl Report {
    pub fn qps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }

    pub fn json(&self, target: &str) -> Value {
        let l = &self.latency;
        let mut line = json!({
            "workload": self.workload,
            "target": target,
            "conns": self.conns,
            "clients": self.clients,
            "ops": self.ops,
            "errors": self.errors,
            "elapsed_s": round3(self.elapsed.as_secs_f64()),
            "qps": round3(self.qps()),
            "latency_us": {
                "avg": round3(l.mean_us()),
                "p50": l.quantile_us(0.50),
                "p90": l.quantile_us(0.90),
                "p99": l.quantile_us(0.99),
                "max": l.max_us(),
            },
        });
        if let Some(err) = &self.first_error {
            line["first_error"] = Value::String(err.clone());
        }
        for (k, v) in &self.extra {
            line[k] = v.clone();
        }
        line
    }

    /// Prints the human-readable summary, then the JSON line.
    pub fn print(&self, target: &str) {
        let l = &self.latency;
        let ms = |us: f64| us / 1000.0;
        println!(
            "{:<20} {target}: {} ops in {:.2}s = {:.0} ops/s  ({} clients, {} conns, {} errors)",
            self.workload,
            self.ops,
            self.elapsed.as_secs_f64(),
            self.qps(),
            self.clients,
            self.conns,
            self.errors,
        );
        println!(
            "{:<20} latency ms: avg {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
            "",
            ms(l.mean_us()),
            ms(l.quantile_us(0.50) as f64),
            ms(l.quantile_us(0.90) as f64),
            ms(l.quantile_us(0.99) as f64),
            ms(l.max_us() as f64),
        );
        if !self.extra.is_empty() {
            let extra: Vec<String> = self.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{:<20} {}", "", extra.join("  "));
        }
        if let Some(err) = &self.first_error {
            println!("{:<20} first error: {err}", "");
        }
        println!("{}", self.json(target));
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
