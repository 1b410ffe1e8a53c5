//! [`restore`]: the changelog records of the tasks a process gains, read together, from
//! the local copies and the changelogs' tails where the process has copies, once they
//! stand where the group's committed offsets do.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::ClientConfig;

use crate::error::{ClusterError, Result};
use crate::local::{LocalCopy, LocalSnapshots};
use crate::topics;
use crate::topology::TaskId;
use crate::wire::{LatestRecords, TaskProgress, PROGRESS_KEY};

/// How long a gained task waits for its changelog and its committed offset to agree.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a gained task's state and input are.
pub struct TaskPlace<'a> {
    pub id: TaskId,
    pub changelog: &'a str,
    pub input: &'a str,
}

/// A gained task's changelog records as restored.
pub struct Restored {
    /// The newest value of each key.
    pub records: LatestRecords,
    /// Read over the local copy: what the changelog's tail after it held (`None`: the
    /// whole changelog was read, and `records` is what it held).
    pub tail: Option<LatestRecords>,
    /// The changelog offset the read stopped at.
    pub end: i64,
}

/// Each task's changelog records, once they stand where its input's committed offset
/// does: from the local copy and the changelog's tail after it where there is a copy,
/// else the whole changelog partition.
///
/// The records and the offsets commit in one transaction, but the broker marks each
/// partition committed on its own: right after a commit (the last owner's, at a
/// rebalance or just before it died) one may show the transaction while the other does
/// not yet. Restoring state older than the offset would lose rows; so the two are read
/// again until they agree.
pub fn restore<C: ConsumerContext>(
    client: &ClientConfig,
    consumer: &BaseConsumer<C>,
    tasks: &[TaskPlace<'_>],
    local: Option<&LocalSnapshots>,
) -> Result<Vec<Restored>> {
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    let mut copies: Vec<Option<LocalCopy>> = tasks
        .iter()
        .map(|task| local.and_then(|local| local.load(task.id)))
        .collect();
    let mut restored: Vec<Option<Restored>> = tasks.iter().map(|_| None).collect();
    loop {
        let pending: Vec<usize> = (0..tasks.len())
            .filter(|&i| restored[i].is_none())
            .collect();
        if pending.is_empty() {
            return Ok(restored.into_iter().flatten().collect());
        }
        // The committed offset is unknown while a dead owner's transaction that committed
        // offsets is still open (the broker aborts it after its timeout): asked again.
        let mut committed = Vec::with_capacity(pending.len());
        for &i in &pending {
            let TaskPlace { id, input, .. } = tasks[i];
            match topics::committed_offset(consumer, input, id.partition) {
                Ok(offset) => committed.push(offset),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(task = %id, error = %e, "waiting for the committed offset");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if committed.len() < pending.len() {
            continue;
        }
        let reads: Vec<topics::ChangelogRead<'_>> = pending
            .iter()
            .map(|&i| topics::ChangelogRead {
                topic: tasks[i].changelog,
                partition: tasks[i].id.partition,
                from: copies[i].as_ref().map(|copy| copy.offset),
            })
            .collect();
        let tails = topics::read_changelogs(client, &reads)?;
        for ((&i, tail), committed) in pending.iter().zip(tails).zip(committed) {
            let TaskPlace {
                id,
                changelog,
                input,
            } = tasks[i];
            let from_copy = copies[i].is_some() && !tail.from_start;
            // The progress record is the tail's, else the copy's.
            let progress_in = match &copies[i] {
                Some(copy) if from_copy && !tail.records.contains_key(PROGRESS_KEY) => {
                    &copy.records
                }
                _ => &tail.records,
            };
            let progress = TaskProgress::restored(progress_in).map_err(|e| {
                ClusterError::Setting(format!(
                    "task {id}: its progress record cannot be read: {e}"
                ))
            })?;
            if progress.next_offset == committed {
                let end = tail.end;
                let (records, tail) = match copies[i].take() {
                    Some(copy) if from_copy => {
                        let mut records = copy.records;
                        records.extend(tail.records.iter().map(|(k, v)| (k.clone(), v.clone())));
                        (records, Some(tail.records))
                    }
                    _ => (tail.records, None),
                };
                restored[i] = Some(Restored { records, tail, end });
            } else if Instant::now() > deadline {
                return Err(ClusterError::Setting(format!(
                    "task {id}: its state in {changelog} stands at offset {:?} of {input} \
                     partition {}, but the group committed offset {committed:?}: another job \
                     of the same name, or its changelog was changed",
                    progress.next_offset, id.partition
                )));
            }
        }
        if restored.iter().any(Option::is_none) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
