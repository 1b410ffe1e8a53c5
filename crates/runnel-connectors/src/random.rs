//! A small, fast, seedable random stream for the generating sources (`nexmark`, `datagen`).

/// splitmix64 over `(seed, event number)`: one independent stream per event.
pub(crate) struct EventRng(u64);

impl EventRng {
    pub(crate) fn new(seed: u64, event: u64) -> Self {
        EventRng(
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ event.wrapping_add(0x632B_E59B_D9B4_E019),
        )
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    pub(crate) fn letters(&mut self, len: usize, out: &mut String) {
        for _ in 0..len {
            out.push((b'a' + self.below(26) as u8) as char);
        }
    }
}
