//! Watermark alignment (Flink's `scan.watermark.alignment.*`): the readers of a source,
//! or of every source in one alignment group, advance together in event time. A reader
//! whose watermark is more than the group's maximum drift ahead of the slowest reader
//! stops reading until the others catch up. Without it one reader running ahead (the
//! scheduler favoured it) fills every join and window downstream: they keep its rows
//! until the slowest reader's watermark passes them, so state grows with the skew
//! instead of with the query.
//!
//! Readers that are idle or finished do not hold the group back. A paused reader still
//! answers checkpoint barriers (see `SourceTask::run`).

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::message::Watermark;

/// How a table's readers keep in step, as its connector reads the table's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkAlignment {
    /// `scan.watermark.alignment.group`: readers of every table naming the same group
    /// keep in step together.
    pub group: String,
    /// `scan.watermark.alignment.max-drift`: how far (event time, ms) a reader may run
    /// ahead of the slowest one.
    pub max_drift_ms: i64,
}

/// A reader's place in its group: where its watermark stands, or `None` while it does
/// not hold the group back (idle, finished).
type Slot = Option<Watermark>;

/// The readers of one alignment group in one job.
#[derive(Debug)]
pub(crate) struct AlignmentGroup {
    max_drift_ms: i64,
    slots: Mutex<Vec<Slot>>,
    /// Woken whenever a reader's slot changes.
    changed: Notify,
}

impl AlignmentGroup {
    pub fn new(max_drift_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            max_drift_ms: max_drift_ms.max(0),
            slots: Mutex::new(Vec::new()),
            changed: Notify::new(),
        })
    }

    /// Adds a reader that has no watermark yet (it holds the others at their first
    /// drift until it has one).
    pub fn join(self: &Arc<Self>) -> AlignedReader {
        let mut slots = self.lock();
        slots.push(Some(Watermark::MIN));
        AlignedReader {
            group: self.clone(),
            slot: slots.len() - 1,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        // A reader that panicked while holding the lock left whole values behind.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, slot: usize, value: Slot) {
        let mut slots = self.lock();
        if slots[slot] != value {
            slots[slot] = value;
            drop(slots);
            self.changed.notify_waiters();
        }
    }
}

/// One reader of an [`AlignmentGroup`]. Leaves the group when dropped.
#[derive(Debug)]
pub(crate) struct AlignedReader {
    group: Arc<AlignmentGroup>,
    slot: usize,
}

impl AlignedReader {
    /// The reader's watermark moved to `watermark` (or it has rows again after idling).
    pub fn advanced(&self, watermark: Watermark) {
        self.group.set(self.slot, Some(watermark));
    }

    /// The reader stops holding the others back: it is idle, or it has finished.
    pub fn step_aside(&self) {
        self.group.set(self.slot, None);
    }

    /// Whether the reader is more than the maximum drift ahead of the slowest other
    /// reader that holds the group back.
    pub fn is_ahead(&self) -> bool {
        let slots = self.group.lock();
        let Some(Some(own)) = slots.get(self.slot).copied() else {
            return false;
        };
        let slowest = slots
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.slot)
            .filter_map(|(_, slot)| *slot)
            .min();
        slowest.is_some_and(|slowest| own.saturating_sub(slowest) > self.group.max_drift_ms)
    }

    /// Waits until the reader is no longer ahead.
    pub async fn caught_up(&self) {
        loop {
            let changed = self.group.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a change in between is not missed.
            changed.as_mut().enable();
            if !self.is_ahead() {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for AlignedReader {
    fn drop(&mut self) {
        self.step_aside();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_ahead_by_more_than_the_drift_waits_for_the_slowest() {
        let group = AlignmentGroup::new(100);
        let (a, b, c) = (group.join(), group.join(), group.join());
        // Until the others have a watermark, a reader with one is ahead of them.
        a.advanced(1_000);
        assert!(a.is_ahead());
        b.advanced(950);
        c.advanced(900);
        assert!(!a.is_ahead(), "100 ms ahead of c is within the drift");
        a.advanced(1_001);
        assert!(a.is_ahead());
        assert!(!b.is_ahead() && !c.is_ahead());
        // An idle or finished reader does not hold the others back.
        c.step_aside();
        assert!(!a.is_ahead());
        c.advanced(900);
        assert!(a.is_ahead());
        drop(c);
        assert!(!a.is_ahead());
        // Alone, a reader is never ahead.
        drop(b);
        a.advanced(1_000_000);
        assert!(!a.is_ahead());
    }

    #[tokio::test]
    async fn a_paused_reader_resumes_when_the_slowest_catches_up() {
        let group = AlignmentGroup::new(10);
        let (fast, slow) = (group.join(), group.join());
        fast.advanced(100);
        slow.advanced(50);
        assert!(fast.is_ahead());
        let waiting = tokio::spawn(async move {
            fast.caught_up().await;
            fast
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        slow.advanced(95);
        let fast = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("resumed")
            .expect("task");
        assert!(!fast.is_ahead());
    }
}
