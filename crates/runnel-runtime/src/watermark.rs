//! [`WatermarkTracker`]: a source's watermark as the minimum over its partitions.

use crate::message::Watermark;

/// Tracks one watermark per partition. The combined watermark is the minimum over all
/// partitions and exists only once every partition has produced one, so a partition that
/// is behind holds the others back instead of making their rows late.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    partitions: Vec<Option<Watermark>>,
    emitted: Option<Watermark>,
}

impl WatermarkTracker {
    pub fn new(partitions: usize) -> Self {
        Self {
            partitions: vec![None; partitions.max(1)],
            emitted: None,
        }
    }

    /// Records that `partition` has seen rows up to watermark `candidate` (a partition's
    /// watermark never goes back). Returns the combined watermark if it advanced.
    pub fn update(&mut self, partition: usize, candidate: Watermark) -> Option<Watermark> {
        if partition >= self.partitions.len() {
            self.partitions.resize(partition + 1, None);
        }
        let slot = &mut self.partitions[partition];
        if slot.is_none_or(|w| candidate > w) {
            *slot = Some(candidate);
        }
        self.advance()
    }

    /// Marks `partition` finished: it no longer holds the watermark back.
    pub fn finish_partition(&mut self, partition: usize) -> Option<Watermark> {
        self.update(partition, Watermark::MAX)
    }

    fn advance(&mut self) -> Option<Watermark> {
        let combined = self
            .partitions
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()?;
        let min = combined.into_iter().min()?;
        if self.emitted.is_none_or(|w| min > w) {
            self.emitted = Some(min);
            Some(min)
        } else {
            None
        }
    }

    /// The last combined watermark returned.
    pub fn current(&self) -> Option<Watermark> {
        self.emitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_partitions_once_all_have_reported() {
        let mut tracker = WatermarkTracker::new(3);
        assert_eq!(tracker.update(0, 100), None);
        assert_eq!(tracker.update(1, 50), None);
        assert_eq!(tracker.update(2, 70), Some(50));
        assert_eq!(
            tracker.update(0, 90),
            None,
            "partition 1 still holds it at 50"
        );
        assert_eq!(tracker.update(1, 80), Some(70));
        assert_eq!(
            tracker.update(1, 10),
            None,
            "a partition's watermark never goes back"
        );
        assert_eq!(tracker.finish_partition(2), Some(80));
        assert_eq!(tracker.current(), Some(80));
    }
}
