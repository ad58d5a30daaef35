//! Crash windows for fault tests.

/// A crash window: with the `failpoints` feature, the fail point `$name`
/// configured to `return` aborts the process there, as a power cut would.
/// Without the feature it is nothing.
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, |_| {
            eprintln!("fail point {} reached: aborting", $name);
            std::process::abort()
        });
    };
}
