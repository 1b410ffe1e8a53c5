//! A small, fast, seedable random stream for the generating sources (`nexmark`, `datagen`).

/// splitmix64 over `(seed, event number)`: one independent stream per event.
pub(crate) struct EventRng(u64);

/// SplitMix64's increment: each draw moves the state on by it.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl EventRng {
    pub(crate) fn new(seed: u64, event: u64) -> Self {
        EventRng(
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ event.wrapping_add(0x632B_E59B_D9B4_E019),
        )
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Moves past `draws` values of [`EventRng::next`] without making them (the stream
    /// is a counter: one addition).
    pub(crate) fn skip(&mut self, draws: u64) {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA.wrapping_mul(draws));
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

/// The rows a generating source's parallel reader makes: the row numbers are cut into
/// blocks of `size`, and reader `i` of `n` takes blocks `i`, `i + n`, `i + 2n`, ... Each
/// block is generated whole (row `r` is the same whichever reader makes it), so the rows
/// are the same at any parallelism, and each reader's event times still rise.
#[derive(Debug, Clone)]
pub(crate) struct RowBlocks {
    split: runnel_runtime::SourceSplit,
    size: u64,
    /// The first row of this reader's next block.
    next: u64,
}

impl RowBlocks {
    /// `resume`: the position a checkpoint recorded ([`RowBlocks::position`]).
    pub(crate) fn new(split: runnel_runtime::SourceSplit, size: u64, resume: Option<u64>) -> Self {
        let size = size.max(1);
        Self {
            split,
            size,
            next: resume.unwrap_or(split.index as u64 * size),
        }
    }

    /// The next block's rows `[start, end)`, ending at `total` rows; `None` once past it.
    pub(crate) fn next_block(&mut self, total: Option<u64>) -> Option<(u64, u64)> {
        let start = self.next;
        if total.is_some_and(|total| start >= total) {
            return None;
        }
        let end = total.map_or(start + self.size, |total| total.min(start + self.size));
        self.next = start + self.size * self.split.count.max(1) as u64;
        Some((start, end))
    }

    /// Where to resume: the first row of the next block.
    pub(crate) fn position(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_runtime::SourceSplit;

    #[test]
    fn readers_share_the_rows_without_overlap() {
        let mut rows = Vec::new();
        for index in 0..3 {
            let mut blocks = RowBlocks::new(SourceSplit { index, count: 3 }, 4, None);
            while let Some((start, end)) = blocks.next_block(Some(30)) {
                rows.extend(start..end);
            }
        }
        rows.sort_unstable();
        assert_eq!(rows, (0..30).collect::<Vec<_>>());
        // A reader resumed at its position continues with its next block.
        let mut blocks = RowBlocks::new(SourceSplit { index: 1, count: 3 }, 4, None);
        blocks.next_block(None);
        let mut resumed = RowBlocks::new(
            SourceSplit { index: 1, count: 3 },
            4,
            Some(blocks.position()),
        );
        assert_eq!(resumed.next_block(None), Some((16, 20)));
    }
}
