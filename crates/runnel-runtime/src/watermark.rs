//! [`WatermarkTracker`]: a source's watermark as the minimum over its partitions.

use crate::message::Watermark;

/// Tracks one watermark per partition. The combined watermark is the minimum over the
/// active partitions and exists only once each of them has produced one, so a partition
/// that is behind holds the others back instead of making their rows late. A partition
/// marked idle (no data for a while) stops holding the others back until it has data again.
///
/// When every partition is idle, nothing moves the watermark; [`WatermarkTracker::advance_idle`]
/// lets a job opt into moving it with the processing clock instead, so the last windows of
/// a quiet stream close.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    partitions: Vec<Option<Watermark>>,
    idle: Vec<bool>,
    emitted: Option<Watermark>,
    /// While every partition is idle: the processing time that began at, and the watermark then.
    all_idle_since: Option<(i64, Watermark)>,
}

impl WatermarkTracker {
    pub fn new(partitions: usize) -> Self {
        Self {
            partitions: vec![None; partitions.max(1)],
            idle: vec![false; partitions.max(1)],
            emitted: None,
            all_idle_since: None,
        }
    }

    /// Each partition's watermark so far (for checkpoints).
    pub fn partition_watermarks(&self) -> Vec<Option<Watermark>> {
        self.partitions.clone()
    }

    /// Records that `partition` has seen rows up to watermark `candidate` (a partition's
    /// watermark never goes back). Returns the combined watermark if it advanced.
    pub fn update(&mut self, partition: usize, candidate: Watermark) -> Option<Watermark> {
        if partition >= self.partitions.len() {
            self.partitions.resize(partition + 1, None);
            self.idle.resize(partition + 1, false);
        }
        self.idle[partition] = false;
        self.all_idle_since = None;
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

    /// Whether no partition is reading: each is idle or finished, and at least one is idle.
    pub fn all_idle(&self) -> bool {
        let finished = |p: usize| self.partitions[p] == Some(Watermark::MAX);
        self.idle.iter().any(|i| *i) && (0..self.idle.len()).all(|p| self.idle[p] || finished(p))
    }

    /// Moves the watermark with the processing clock while every partition is idle: by as
    /// much as the clock advanced since they all went idle. `now` is the processing time
    /// (ms). Returns the watermark if it advanced. Rows that arrive later below it are late:
    /// that is the price of opting in.
    pub fn advance_idle(&mut self, now: i64) -> Option<Watermark> {
        if !self.all_idle() {
            self.all_idle_since = None;
            return None;
        }
        let base = match self.emitted {
            Some(w) => w,
            None => self.partitions.iter().flatten().copied().min()?,
        };
        let (since, base) = *self.all_idle_since.get_or_insert((now, base));
        let candidate = base.saturating_add(now - since);
        if self.emitted.is_none_or(|w| candidate > w) {
            self.emitted = Some(candidate);
            Some(candidate)
        } else {
            None
        }
    }

    fn advance(&mut self) -> Option<Watermark> {
        let active = self
            .partitions
            .iter()
            .zip(&self.idle)
            .filter(|(_, idle)| !**idle)
            .map(|(w, _)| *w)
            .collect::<Option<Vec<_>>>()?;
        // With every partition idle (or finished, with others idle) there is nothing to go
        // by: the watermark waits rather than jumping past the idle ones.
        let min = active.into_iter().min()?;
        if min == Watermark::MAX && self.idle.iter().any(|i| *i) {
            return None;
        }
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

    #[test]
    fn with_every_partition_idle_the_clock_can_move_the_watermark() {
        let mut tracker = WatermarkTracker::new(2);
        tracker.update(0, 100);
        assert_eq!(tracker.update(1, 80), Some(80));
        assert_eq!(tracker.advance_idle(5_000), None, "partitions are active");
        tracker.mark_idle(0);
        assert_eq!(tracker.advance_idle(5_000), None, "one is still active");
        assert_eq!(tracker.mark_idle(1), None);
        assert_eq!(tracker.advance_idle(5_000), None, "idle from now on");
        assert_eq!(tracker.advance_idle(5_050), Some(130));
        assert_eq!(tracker.advance_idle(5_060), Some(140));
        assert_eq!(tracker.update(1, 120), None, "active again, below 140");
        assert_eq!(tracker.advance_idle(9_000), None);
    }

    #[test]
    fn a_finished_partition_does_not_release_an_idle_one() {
        let mut tracker = WatermarkTracker::new(2);
        assert_eq!(tracker.update(0, 100), None);
        assert_eq!(tracker.mark_idle(1), Some(100));
        assert_eq!(tracker.finish_partition(0), None, "partition 1 may resume");
        assert!(tracker.all_idle());
        assert_eq!(tracker.finish_partition(1), Some(Watermark::MAX));
    }
}
