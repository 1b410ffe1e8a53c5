//! [`WatermarkTracker`]: a source's watermark as the minimum over its partitions.

use crate::message::Watermark;

/// Tracks one watermark per partition. The combined watermark is the minimum over the
/// active partitions and exists only once each of them has produced one, so a partition
/// that is behind holds the others back instead of making their rows late. A partition
/// marked idle (no data for a while) stops holding the others back until it has data again.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    partitions: Vec<Option<Watermark>>,
    idle: Vec<bool>,
    emitted: Option<Watermark>,
}

impl WatermarkTracker {
    pub fn new(partitions: usize) -> Self {
        Self {
            partitions: vec![None; partitions.max(1)],
            idle: vec![false; partitions.max(1)],
            emitted: None,
        }
    }

    /// Records that `partition` has seen rows up to watermark `candidate` (a partition's
    /// watermark never goes back). Returns the combined watermark if it advanced.
    pub fn update(&mut self, partition: usize, candidate: Watermark) -> Option<Watermark> {
        if partition >= self.partitions.len() {
            self.partitions.resize(partition + 1, None);
            self.idle.resize(partition + 1, false);
        }
        self.idle[partition] = false;
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

    /// Marks `partition` idle: it no longer holds the watermark back until its next update.
    pub fn mark_idle(&mut self, partition: usize) -> Option<Watermark> {
        if let Some(idle) = self.idle.get_mut(partition) {
            *idle = true;
        }
        self.advance()
    }

    fn advance(&mut self) -> Option<Watermark> {
        let active = self
            .partitions
            .iter()
            .zip(&self.idle)
            .filter(|(_, idle)| !**idle)
            .map(|(w, _)| *w)
            .collect::<Option<Vec<_>>>()?;
        // With every partition idle there is nothing to go by: the watermark waits.
        let min = active.into_iter().min()?;
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

    #[test]
    fn an_idle_partition_stops_holding_the_others_back_until_it_has_data() {
        let mut tracker = WatermarkTracker::new(2);
        assert_eq!(tracker.update(0, 100), None, "partition 1 has not reported");
        assert_eq!(tracker.mark_idle(1), Some(100));
        assert_eq!(tracker.update(0, 150), Some(150));
        assert_eq!(
            tracker.update(1, 120),
            None,
            "active again, and behind: the watermark waits"
        );
        assert_eq!(tracker.update(1, 200), None, "150 was already emitted");
        assert_eq!(tracker.update(0, 300), Some(200));
        assert_eq!(tracker.mark_idle(1), Some(300));
        assert_eq!(tracker.mark_idle(0), None, "all idle: no advance");
    }
}
