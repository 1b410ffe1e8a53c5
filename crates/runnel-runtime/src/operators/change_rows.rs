//! [`ChangeRows`]: an updating stream's batches as keys and whole rows in Arrow's row
//! format, and back — for operators that keep rows per key (`ChangelogNormalize`,
//! `UpsertMaterialize`) — and how those rows are checkpointed.
//!
//! A checkpoint of rows kept per key holds each key's rows in order, the first as `+I` and
//! the rest as `+U`; an increment holds the same for the keys that changed since the
//! previous barrier, and `-D` of its last row for a key gone meanwhile. Read in order, a
//! chain (a snapshot, then its increments) leaves each key with its newest rows.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int8Array};
use datafusion::arrow::datatypes::{Int8Type, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use runnel_sql::changelog::ChangeKind;

use crate::error::{Result, RuntimeError};
use crate::operator::StateIncrement;
use datafusion::common::HashMap;

/// Rows kept per key: each key's rows, oldest first.
pub(crate) type KeyedRows = HashMap<OwnedRow, Vec<OwnedRow>>;

/// Encodes the batches of an updating stream (its columns, then the change column): each
/// row's key (the columns `keys`) and the whole row.
pub(crate) struct ChangeRows {
    /// The batches' schema, change column last.
    pub schema: SchemaRef,
    keys: Vec<usize>,
    key_converter: RowConverter,
    row_converter: RowConverter,
    /// The operator, for errors.
    operator: &'static str,
}

/// A batch of changes, encoded.
pub(crate) struct EncodedChanges {
    pub keys: Rows,
    pub rows: Rows,
    pub kinds: Vec<ChangeKind>,
}

impl ChangeRows {
    pub fn try_new(schema: SchemaRef, keys: &[usize], operator: &'static str) -> Result<Self> {
        let data_fields = &schema.fields()[..schema.fields().len() - 1];
        let sort_field = |i: usize| SortField::new(data_fields[i].data_type().clone());
        let error = |e: ArrowError| Self::error(operator, e);
        Ok(Self {
            key_converter: RowConverter::new(keys.iter().map(|&i| sort_field(i)).collect())
                .map_err(error)?,
            row_converter: RowConverter::new((0..data_fields.len()).map(sort_field).collect())
                .map_err(error)?,
            keys: keys.to_vec(),
            schema,
            operator,
        })
    }

    /// Another encoder of the same batches (for a checkpoint's work off the task).
    fn fresh(&self) -> Result<Self> {
        Self::try_new(self.schema.clone(), &self.keys, self.operator)
    }

    fn error(operator: &str, e: ArrowError) -> RuntimeError {
        RuntimeError::Operator {
            operator: operator.into(),
            source: e.into(),
        }
    }

    /// Each row's key, the row, and its change (an unknown code reads as `+I`).
    pub fn encode(&self, batch: &RecordBatch) -> Result<EncodedChanges> {
        let error = |e: ArrowError| Self::error(self.operator, e);
        let data = &batch.columns()[..batch.num_columns() - 1];
        let key_columns: Vec<ArrayRef> = self.keys.iter().map(|&i| data[i].clone()).collect();
        let kinds = batch
            .column(batch.num_columns() - 1)
            .as_primitive::<Int8Type>()
            .values()
            .iter()
            .map(|&code| ChangeKind::from_code(code).unwrap_or(ChangeKind::Insert))
            .collect();
        Ok(EncodedChanges {
            keys: self
                .key_converter
                .convert_columns(&key_columns)
                .map_err(error)?,
            rows: self.row_converter.convert_columns(data).map_err(error)?,
            kinds,
        })
    }

    /// Rows (in the row format, of this encoder) with their changes, as a batch.
    pub fn to_batch(&self, rows: &[OwnedRow], kinds: &[ChangeKind]) -> Result<RecordBatch> {
        self.rows_to_batch(rows.iter().map(|r| r.row()), kinds)
    }

    /// Rows another encoder of the same batches made, with their changes, as a batch
    /// (read through this one's parser, which checks them).
    fn foreign_to_batch(&self, rows: &[OwnedRow], kinds: &[ChangeKind]) -> Result<RecordBatch> {
        let parser = self.row_converter.parser();
        self.rows_to_batch(rows.iter().map(|r| parser.parse(r.as_ref())), kinds)
    }

    fn rows_to_batch<'a>(
        &self,
        rows: impl IntoIterator<Item = datafusion::arrow::row::Row<'a>>,
        kinds: &[ChangeKind],
    ) -> Result<RecordBatch> {
        let error = |e: ArrowError| Self::error(self.operator, e);
        let mut columns = self.row_converter.convert_rows(rows).map_err(error)?;
        columns.push(Arc::new(Int8Array::from_iter_values(
            kinds.iter().map(|&k| k as i8),
        )));
        RecordBatch::try_new(self.schema.clone(), columns).map_err(error)
    }
}

impl ChangeRows {
    /// `keyed` as a checkpoint writes it (see the module documentation).
    pub fn snapshot<'a>(&self, keyed: impl Iterator<Item = &'a [OwnedRow]>) -> Result<RecordBatch> {
        let (mut rows, mut kinds) = (Vec::new(), Vec::new());
        for held in keyed {
            push_held(held, &mut rows, &mut kinds);
        }
        self.to_batch(&rows, &kinds)
    }

    /// The rows per key of a checkpoint chain read in order (see the module
    /// documentation): `+I` starts a key's rows, `+U` appends to them, `-D` drops them.
    pub fn read_snapshot(&self, state: &RecordBatch) -> Result<KeyedRows> {
        let changes = self.encode(state)?;
        let mut keyed = KeyedRows::default();
        for (i, &kind) in changes.kinds.iter().enumerate() {
            let key = changes.keys.row(i).owned();
            let row = changes.rows.row(i).owned();
            match kind {
                ChangeKind::Insert => {
                    keyed.insert(key, vec![row]);
                }
                ChangeKind::UpdateAfter => keyed.entry(key).or_default().push(row),
                ChangeKind::Delete => {
                    keyed.remove(&key);
                }
                ChangeKind::UpdateBefore => {}
            }
        }
        Ok(keyed)
    }

    /// The increment of the keys in `changed` (each with the last row it was seen with),
    /// whose rows are now `held(key)`: copied now, turned into a batch off the task.
    fn increment<'a>(
        &self,
        changed: HashMap<OwnedRow, OwnedRow>,
        held: impl Fn(&OwnedRow) -> Option<&'a [OwnedRow]>,
    ) -> Result<StateIncrement> {
        let (mut rows, mut kinds) = (Vec::new(), Vec::new());
        for (key, last) in changed {
            match held(&key) {
                Some(held) if !held.is_empty() => push_held(held, &mut rows, &mut kinds),
                _ => {
                    rows.push(last);
                    kinds.push(ChangeKind::Delete);
                }
            }
        }
        let (build_format, compact_format) = (self.fresh()?, self.fresh()?);
        Ok(StateIncrement {
            build: Box::new(move || build_format.foreign_to_batch(&rows, &kinds)),
            compact: Arc::new(move |chain: Vec<RecordBatch>| {
                let Some(newest) = chain.last() else {
                    return Err(RuntimeError::Checkpoint("an empty chain to merge".into()));
                };
                let all = datafusion::arrow::compute::concat_batches(&newest.schema(), &chain)
                    .map_err(|e| Self::error(compact_format.operator, e))?;
                let keyed = compact_format.read_snapshot(&all)?;
                compact_format.snapshot(keyed.values().map(Vec::as_slice))
            }),
        })
    }
}

/// A key's rows as a checkpoint holds them: the first `+I`, the rest `+U`.
fn push_held(held: &[OwnedRow], rows: &mut Vec<OwnedRow>, kinds: &mut Vec<ChangeKind>) {
    for (i, row) in held.iter().enumerate() {
        rows.push(row.clone());
        kinds.push(if i == 0 {
            ChangeKind::Insert
        } else {
            ChangeKind::UpdateAfter
        });
    }
}

/// With incremental checkpoints, the keys whose rows changed since the last barrier,
/// each with the last row it was seen with (a gone key's tombstone); `None` until
/// tracking starts.
#[derive(Default)]
pub(crate) struct ChangedKeys(Option<HashMap<OwnedRow, OwnedRow>>);

impl ChangedKeys {
    /// Starts tracking (see `CheckpointedState::track_increments`).
    pub fn track(&mut self) -> bool {
        self.0.get_or_insert_with(HashMap::default);
        true
    }

    /// Notes that `key`'s rows changed, `row` being the last one seen (when tracking).
    pub fn note(&mut self, key: &OwnedRow, row: &OwnedRow) {
        if let Some(changed) = &mut self.0 {
            changed.insert(key.clone(), row.clone());
        }
    }

    /// The increment since the last call, of keys whose rows are now `held(key)`, written
    /// by `format` (see `CheckpointedState::increment`); `None` when not tracking.
    pub fn increment<'a>(
        &mut self,
        format: &ChangeRows,
        held: impl Fn(&OwnedRow) -> Option<&'a [OwnedRow]>,
    ) -> Result<Option<StateIncrement>> {
        match self.0.as_mut().map(std::mem::take) {
            Some(changed) => format.increment(changed, held).map(Some),
            None => Ok(None),
        }
    }
}
