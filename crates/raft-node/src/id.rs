use std::time::{SystemTime, UNIX_EPOCH};

/// Generates request ids unique across members and restarts, as etcd's `idutil` does:
/// the low 16 bits of the member id, then a 40-bit millisecond timestamp taken at start,
/// then an 8-bit counter that carries into the timestamp bits.
#[derive(Debug)]
pub struct IdGenerator {
    prefix: u64,
    suffix: u64,
}

impl IdGenerator {
    /// A generator for the member `member_id`, seeded with the current time.
    pub fn new(member_id: u64) -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self::with_time(member_id, millis)
    }

    /// A generator seeded with an explicit millisecond timestamp (for tests).
    pub fn with_time(member_id: u64, unix_millis: u64) -> Self {
        IdGenerator {
            prefix: (member_id & 0xffff) << 48,
            suffix: (unix_millis & 0xff_ffff_ffff) << 8,
        }
    }

    /// The next id; never 0.
    pub fn next_id(&mut self) -> u64 {
        self.suffix = (self.suffix + 1) & 0xffff_ffff_ffff;
        self.prefix | self.suffix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_member_prefix_and_increase() {
        let mut g = IdGenerator::with_time(0x1234_5678_9abc_def0, 0x01_0000_0000);
        let a = g.next_id();
        let b = g.next_id();
        assert_eq!(a >> 48, 0xdef0);
        assert_eq!(b, a + 1);
        assert_eq!(a & 0xff, 1);
    }
}
