//! Crash windows for fault tests.

/// A crash window: with the `failpoints` feature, the fail point `$name` configured to
/// `return` (e.g. `FAILPOINTS=raft::after_wal_write=return`) aborts the process there, as
/// a power cut would. Without the feature it compiles to nothing.
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, |_| {
            eprintln!("fail point {} reached: aborting", $name);
            std::process::abort()
        });
    };
}
