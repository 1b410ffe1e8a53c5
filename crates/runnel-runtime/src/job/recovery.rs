//! Where a restarting job resumes: the checkpoint its delivery guarantee selects, checked
//! against the job it belongs to.

use runnel_sql::StreamPlan;

use crate::checkpoint::{CheckpointStore, RestoredCheckpoint};
use crate::config::{DeliveryGuarantee, JobConfig};
use crate::connector::ConnectorFactory;
use crate::error::{Result, RuntimeError};

/// The checkpoint a restarting job resumes from, by its delivery guarantee:
/// - exactly-once: the one whose transaction committed, as the sink's record of it says
///   (a jdbc table's `runnel_checkpoints` row) or else the offsets committed to Kafka with
///   the output (none committed yet: a fresh start). Checkpoints stored after it never
///   committed and are discarded.
/// - at-least-once: the newest complete one.
pub(crate) async fn select_checkpoint(
    store: &CheckpointStore,
    job: &str,
    connectors: &dyn ConnectorFactory,
    config: &JobConfig,
) -> Result<Option<RestoredCheckpoint>> {
    let id = match config.delivery {
        DeliveryGuarantee::ExactlyOnce => match &config.sink {
            Some(sink) if connectors.sink_records_commits(sink) => {
                connectors.committed_checkpoint(sink).await?
            }
            _ => committed_with_offsets(connectors, config).await?,
        },
        DeliveryGuarantee::AtLeastOnce => store.complete().last().copied(),
        DeliveryGuarantee::AtMostOnce => None,
    };
    let Some(id) = id else {
        // Nothing committed: whatever is in the directory never took effect.
        store.discard_after(0);
        return Ok(None);
    };
    // Reading the state files is blocking I/O: off the async workers.
    let reader = store.clone();
    let restored = tokio::task::spawn_blocking(move || reader.load(id))
        .await
        .map_err(|e| RuntimeError::Task(e.to_string()))?;
    let restored = restored.map_err(|e| {
        RuntimeError::Checkpoint(format!(
            "checkpoint {id} is the last one committed, but it cannot be read from {}: {e}",
            store.dir().display()
        ))
    })?;
    if restored.manifest.job != job {
        return Err(RuntimeError::Checkpoint(format!(
            "{} holds checkpoints of a different job (its plan or parallelism changed); use another \
             checkpoint directory to start this one afresh",
            store.dir().display()
        )));
    }
    store.discard_after(id);
    Ok(Some(restored))
}

/// The checkpoint every source's committed offsets name (a Kafka sink commits them in its
/// transactions); an error when they disagree.
async fn committed_with_offsets(
    connectors: &dyn ConnectorFactory,
    config: &JobConfig,
) -> Result<Option<crate::checkpoint::CheckpointId>> {
    let mut committed = None;
    for table in &config.sources {
        let id = connectors.committed_checkpoint(table).await?;
        if committed.is_some() && id != committed {
            return Err(RuntimeError::Checkpoint(format!(
        "the sources' committed offsets name different checkpoints ({committed:?} and {id:?})"
            )));
        }
        committed = id;
    }
    Ok(committed)
}

/// A stable fingerprint of a plan and its parallelism (FNV-1a of their text): a
/// checkpoint restores only into the job that took it, since state is kept per subtask.
pub(crate) fn job_fingerprint(plan: &StreamPlan, config: &JobConfig) -> String {
    let text = format!("{plan}parallelism {}\n", config.parallelism());
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in text.bytes() {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x100000001b3);
    }
    format!("{hash:016x}")
}
