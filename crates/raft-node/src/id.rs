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

    /// Makes every later id greater than `id`, if `id` carries this generator's prefix
    /// (ids must only grow: a restarted member whose clock went back, or that learns of an
    /// id it issued in an earlier life, moves past it).
    pub fn advance_past(&mut self, id: u64) {
        if id & !0xffff_ffff_ffff == self.prefix {
            self.suffix = self.suffix.max(id & 0xffff_ffff_ffff);
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

    #[test]
    fn advance_past_moves_only_forward_and_only_for_its_own_prefix() {
        let mut g = IdGenerator::with_time(7, 1000);
        let a = g.next_id();
        g.advance_past(a + 500);
        assert_eq!(g.next_id(), a + 501);
        g.advance_past(a);
        assert_eq!(g.next_id(), a + 502);
        g.advance_past((8u64 << 48) | 0xffff_ffff);
        assert_eq!(g.next_id(), a + 503);
    }
}
