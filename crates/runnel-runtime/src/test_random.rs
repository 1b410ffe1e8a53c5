//! A seeded xorshift generator for the crate's randomized tests, so a failure repeats.

/// Seeded with any non-zero value; the same seed gives the same draws.
pub(crate) struct Random(pub u64);

impl Random {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A draw below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
