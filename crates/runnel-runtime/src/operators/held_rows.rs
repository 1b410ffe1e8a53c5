//! [`HeldRows`]: rows an operator keeps for later (the rows of open sessions), stored in
//! the batches they arrived in and addressed by `(batch id, row)`. The interval join,
//! whose rows expire oldest first, keeps its own ([`super::keyed_row_log`]).

use std::collections::VecDeque;

use datafusion::common::HashMap;

use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

/// Where a held row lives: (batch id, row in that batch).
pub type RowRef = (u64, u32);

/// Rows an operator holds, in the batches they arrived in; a batch is dropped once none
/// of its rows is held.
#[derive(Debug, Default)]
pub struct HeldRows {
    /// Batch `first_id + i` and how many of its rows are still held.
    batches: VecDeque<Option<(RecordBatch, usize)>>,
    first_id: u64,
}

impl HeldRows {
    /// Bytes of the held batches (a batch stays whole while any of its rows is held).
    pub fn size(&self) -> usize {
        self.batches
            .iter()
            .flatten()
            .map(|(batch, _)| batch.get_array_memory_size())
            .sum()
    }

    /// Holds every row of `batch`; returns the batch's id.
    pub fn push(&mut self, batch: RecordBatch) -> u64 {
        let rows = batch.num_rows();
        self.batches.push_back(Some((batch, rows)));
        self.first_id + self.batches.len() as u64 - 1
    }

    /// The batch `id`, if still held.
    fn entry(&self, id: u64) -> Option<&(RecordBatch, usize)> {
        let slot = usize::try_from(id.checked_sub(self.first_id)?).ok()?;
        self.batches.get(slot)?.as_ref()
    }

    /// The rows `refs` (in that order) as one batch of `schema`.
    pub fn gather(
        &self,
        schema: &SchemaRef,
        refs: &[RowRef],
    ) -> std::result::Result<RecordBatch, ArrowError> {
        // Positions of the referenced batches in a compact list for `interleave`.
        let mut positions: HashMap<u64, usize> = HashMap::new();
        let mut sources: Vec<&RecordBatch> = Vec::new();
        let mut indices = Vec::with_capacity(refs.len());
        for &(id, row) in refs {
            let position = match positions.get(&id) {
                Some(&position) => position,
                None => {
                    let Some((batch, _)) = self.entry(id) else {
                        return Err(ArrowError::ComputeError(format!(
                            "row ({id}, {row}) is no longer held"
                        )));
                    };
                    sources.push(batch);
                    positions.insert(id, sources.len() - 1);
                    sources.len() - 1
                }
            };
            indices.push((position, row as usize));
        }
        let rows = if refs.is_empty() {
            RecordBatch::new_empty(schema.clone())
        } else {
            interleave_record_batch(&sources, &indices)?
        };
        Ok(rows)
    }

    /// Stops holding the rows `refs` (each once); batches with no held row are dropped.
    pub fn release(&mut self, refs: &[RowRef]) {
        for &(id, _) in refs {
            let Some(slot) = id
                .checked_sub(self.first_id)
                .and_then(|s| usize::try_from(s).ok())
            else {
                continue;
            };
            if let Some(entry) = self.batches.get_mut(slot) {
                if let Some((_, held)) = entry {
                    *held = held.saturating_sub(1);
                    if *held == 0 {
                        *entry = None;
                    }
                }
            }
        }
        while matches!(self.batches.front(), Some(None)) {
            self.batches.pop_front();
            self.first_id += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;

    use super::*;

    #[test]
    fn held_batches_are_dropped_once_no_row_is_held() {
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new(
                "v",
                datafusion::arrow::datatypes::DataType::Int64,
                false,
            ),
        ]));
        let batch = |values: Vec<i64>| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(values))]).unwrap()
        };
        let mut held = HeldRows::default();
        let first = held.push(batch(vec![1, 2]));
        let second = held.push(batch(vec![3]));
        let rows = held.gather(&schema, &[(second, 0), (first, 1)]).unwrap();
        held.release(&[(second, 0), (first, 1)]);
        let values: Vec<i64> = rows
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec();
        assert_eq!(values, [3, 2]);
        assert_eq!(
            held.batches.len(),
            2,
            "row 0 of the first batch is still held"
        );
        held.release(&[(first, 0)]);
        assert!(held.batches.is_empty());
    }
}
