//! [`StateChains`]: how a task's operator states lie in its changelog partition — per
//! operator a base and the increments written after it, so that a commit writes only
//! what changed and Kafka's compaction drops what a newer base replaced.
//!
//! Keys, for the state key `state/<stage>/<operator>` ([`wire::state_key`]):
//! - the key itself holds the **base**: the operator's whole state (a tombstone while the
//!   chain starts from empty state);
//! - `<key>/inc/<n>` holds the **n-th increment** after the base: what changed in one
//!   commit, as the operator hands it over ([`CheckpointedState::increment`]).
//!
//! A restore takes the newest value of each key and puts the base and its increments
//! together in order, which is the chain [`CheckpointedState::restore`] takes. Once the
//! increments outweigh the base, or there are [`MAX_LINKS`] of them, the next commit
//! writes the state whole as a new base and tombstones the increments. Writes thus stay
//! within about twice what changed, and a restore reads at most about twice the state.
//!
//! An increment without rows (only the watermarks in its metadata moved) is written at
//! the next place without taking it: the next increment with rows replaces it.
//!
//! [`CheckpointedState::increment`]: runnel_runtime::CheckpointedState::increment
//! [`CheckpointedState::restore`]: runnel_runtime::CheckpointedState::restore

use std::collections::HashMap;

use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::wire::{self, ChangelogRecord, LatestRecords};

/// A chain longer than this gets a new base at the next commit, however small its
/// increments: a restore puts every link together.
pub const MAX_LINKS: usize = 64;

/// The changelog layout of one task's operator states, as the task's commits continue it.
#[derive(Debug)]
pub struct StateChains {
    chains: HashMap<String, Chain>,
    /// Record keys whose value is stored in parts, and how many (see
    /// [`wire::state_records`]).
    parts: HashMap<String, usize>,
    /// Values above this size are written in parts.
    part_bytes: usize,
}

/// One operator state's chain in the changelog.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Chain {
    /// The encoded size of the base (0: none, the chain starts from empty state).
    base_bytes: usize,
    /// Increments taken after the base (they hold rows).
    links: usize,
    /// Their encoded size.
    link_bytes: usize,
    /// The highest increment place that may hold a value: `links`, or one more when an
    /// increment without rows was written after them.
    written: usize,
}

/// The key increment `n` of state `key` is stored under.
fn increment_key(key: &str, n: usize) -> String {
    format!("{key}/inc/{n}")
}

/// The state key and place of an increment's key.
fn parse_increment_key(key: &str) -> Option<(&str, usize)> {
    let (base, n) = key.rsplit_once("/inc/")?;
    Some((base, n.parse().ok()?))
}

impl StateChains {
    /// The chains of a task without state.
    pub fn new(part_bytes: usize) -> Self {
        Self {
            chains: HashMap::new(),
            parts: HashMap::new(),
            part_bytes,
        }
    }

    /// The operator states among a task's restored records (their parts already joined,
    /// `parts` counting them), each chain put together, and the chains to continue.
    pub fn restore(
        records: &LatestRecords,
        parts: HashMap<String, usize>,
        part_bytes: usize,
    ) -> std::result::Result<(Self, HashMap<String, RecordBatch>), String> {
        let mut bases = HashMap::new();
        let mut increments: HashMap<&str, Vec<(usize, &[u8])>> = HashMap::new();
        for (key, value) in records {
            let Some(value) = value else { continue };
            if !key.starts_with("state/") {
                continue;
            }
            match parse_increment_key(key) {
                Some((base, n)) => increments.entry(base).or_default().push((n, value)),
                None => {
                    bases.insert(key.as_str(), value.as_slice());
                }
            }
        }
        let mut keys: Vec<&str> = bases.keys().chain(increments.keys()).copied().collect();
        keys.sort_unstable();
        keys.dedup();
        let mut chains = HashMap::new();
        let mut states = HashMap::new();
        for key in keys {
            let mut chain = Chain::default();
            let mut batches = Vec::new();
            if let Some(base) = bases.get(key) {
                chain.base_bytes = base.len();
                batches.push(wire::decode_batch(base).map_err(|e| format!("{key}: {e}"))?);
            }
            let mut links = increments.remove(key).unwrap_or_default();
            links.sort_unstable_by_key(|(n, _)| *n);
            for (n, value) in links {
                chain.links = n;
                chain.written = n;
                chain.link_bytes += value.len();
                let batch = wire::decode_batch(value).map_err(|e| format!("{key}/inc/{n}: {e}"))?;
                batches.push(batch);
            }
            // The newest link's schema carries the operator's progress (its metadata).
            let Some(newest) = batches.last() else {
                continue;
            };
            let state = datafusion::arrow::compute::concat_batches(&newest.schema(), &batches)
                .map_err(|e| format!("{key}: its chain of {} links: {e}", batches.len()))?;
            states.insert(key.to_string(), state);
            chains.insert(key.to_string(), chain);
        }
        Ok((
            Self {
                chains,
                parts,
                part_bytes,
            },
            states,
        ))
    }

    /// Writes state `key` into `out`: `increment`, what changed since the last commit,
    /// when the operator tracks that; else, or when the chain is due for a new base, the
    /// whole state `whole` gives (`None`: the operator holds nothing).
    pub fn write(
        &mut self,
        key: &str,
        increment: Option<RecordBatch>,
        whole: impl FnOnce() -> Result<Option<RecordBatch>>,
        out: &mut Vec<ChangelogRecord>,
    ) -> Result<()> {
        let chain = self.chains.get(key).copied().unwrap_or_default();
        if let Some(increment) = increment {
            let bytes = wire::encode_batch(&increment)?;
            if increment.num_rows() == 0 {
                self.put(increment_key(key, chain.links + 1), Some(bytes), out);
                self.chains.insert(
                    key.to_string(),
                    Chain {
                        written: chain.links + 1,
                        ..chain
                    },
                );
                return Ok(());
            }
            let outweighs = chain.link_bytes + bytes.len() > chain.base_bytes;
            if !outweighs && chain.links < MAX_LINKS {
                let n = chain.links + 1;
                let link_bytes = chain.link_bytes + bytes.len();
                self.put(increment_key(key, n), Some(bytes), out);
                self.chains.insert(
                    key.to_string(),
                    Chain {
                        links: n,
                        link_bytes,
                        written: n,
                        ..chain
                    },
                );
                return Ok(());
            }
        }
        // A new base: the whole state, and tombstones for the increments it replaces.
        let base = whole()?
            .map(|batch| wire::encode_batch(&batch))
            .transpose()?;
        let base_bytes = base.as_ref().map_or(0, Vec::len);
        self.put(key.to_string(), base, out);
        for n in 1..=chain.written {
            self.put(increment_key(key, n), None, out);
        }
        self.chains.insert(
            key.to_string(),
            Chain {
                base_bytes,
                ..Chain::default()
            },
        );
        Ok(())
    }

    /// Writes `value` under `key`, in parts when it is large; tombstones the parts its
    /// previous value had beyond the new one's.
    fn put(&mut self, key: String, value: Option<Vec<u8>>, out: &mut Vec<ChangelogRecord>) {
        let previous = self.parts.get(&key).copied().unwrap_or(0);
        let (records, parts) = wire::state_records(&key, value, previous, self.part_bytes);
        out.extend(records);
        if parts > 0 {
            self.parts.insert(key, parts);
        } else {
            self.parts.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    /// A batch of `values`, its schema tagged with `tag` (as a watermark would be).
    fn batch(values: &[i64], tag: &str) -> RecordBatch {
        let metadata = HashMap::from([("tag".to_string(), tag.to_string())]);
        let schema = Schema::new(vec![Field::new("v", DataType::Int64, false)]);
        RecordBatch::try_new(
            Arc::new(schema.with_metadata(metadata)),
            vec![Arc::new(Int64Array::from(values.to_vec()))],
        )
        .unwrap()
    }

    fn values(batch: &RecordBatch) -> Vec<i64> {
        batch
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec()
    }

    /// Applies `records` on top of `latest`, as a changelog partition's reader does.
    fn apply(latest: &mut LatestRecords, records: Vec<ChangelogRecord>) {
        latest.extend(records);
    }

    fn restored(latest: &LatestRecords, part_bytes: usize) -> (StateChains, RecordBatch) {
        let (joined, parts) = wire::join_parts(latest.clone()).unwrap();
        let (chains, mut states) = StateChains::restore(&joined, parts, part_bytes).unwrap();
        (chains, states.remove("state/1/0").unwrap())
    }

    #[test]
    fn increments_follow_their_base_until_they_outweigh_it() {
        let key = "state/1/0";
        let mut chains = StateChains::new(1 << 20);
        let mut latest = LatestRecords::new();
        let whole = |n: i64| move || Ok(Some(batch(&(1..=n).collect::<Vec<_>>(), "whole")));

        // A fresh chain has no base: the first commit writes the state whole.
        let mut out = Vec::new();
        chains
            .write(key, Some(batch(&[1], "a")), whole(1000), &mut out)
            .unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, key);
        apply(&mut latest, out);

        // Small increments follow it...
        for (i, tag) in ["b", "c"].iter().enumerate() {
            let mut out = Vec::new();
            chains
                .write(key, Some(batch(&[10 + i as i64], tag)), whole(1), &mut out)
                .unwrap();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].0, format!("{key}/inc/{}", i + 1));
            apply(&mut latest, out);
        }
        // ...an increment without rows carries the newest metadata at the next place...
        let mut out = Vec::new();
        chains
            .write(key, Some(batch(&[], "d")), whole(1), &mut out)
            .unwrap();
        assert_eq!(out[0].0, format!("{key}/inc/3"));
        apply(&mut latest, out);
        let (_, state) = restored(&latest, 1 << 20);
        let mut expected: Vec<i64> = (1..=1000).collect();
        expected.extend([10, 11]);
        assert_eq!(values(&state), expected);
        assert_eq!(state.schema().metadata()["tag"], "d");

        // ...and is replaced by the next one with rows.
        let mut out = Vec::new();
        chains
            .write(key, Some(batch(&[12], "e")), whole(1), &mut out)
            .unwrap();
        assert_eq!(out[0].0, format!("{key}/inc/3"));
        apply(&mut latest, out);

        // A restored chain continues where the last commit left it.
        let (mut chains, state) = restored(&latest, 1 << 20);
        expected.push(12);
        assert_eq!(values(&state), expected);
        assert_eq!(state.schema().metadata()["tag"], "e");

        // Increments outweighing the base: a new base, the increments tombstoned.
        let mut out = Vec::new();
        let big: Vec<i64> = (0..2000).collect();
        chains
            .write(key, Some(batch(&big, "f")), whole(42), &mut out)
            .unwrap();
        let keys: Vec<(&str, bool)> = out.iter().map(|(k, v)| (k.as_str(), v.is_some())).collect();
        assert_eq!(
            keys,
            [
                (key, true),
                ("state/1/0/inc/1", false),
                ("state/1/0/inc/2", false),
                ("state/1/0/inc/3", false)
            ]
        );
        apply(&mut latest, out);
        let (_, state) = restored(&latest, 1 << 20);
        assert_eq!(values(&state), (1..=42).collect::<Vec<_>>());
        assert_eq!(state.schema().metadata()["tag"], "whole");
    }

    #[test]
    fn a_long_chain_gets_a_new_base_and_large_values_go_in_parts() {
        let key = "state/1/0";
        let big: Vec<i64> = (0..10_000).collect();
        let mut chains = StateChains::new(10_000);
        let mut latest = LatestRecords::new();
        let mut out = Vec::new();
        chains
            .write(key, None, || Ok(Some(batch(&big, "base"))), &mut out)
            .unwrap();
        assert!(out.len() > 2, "the base is stored in parts: {}", out.len());
        apply(&mut latest, out);
        for i in 0..MAX_LINKS {
            let mut out = Vec::new();
            chains
                .write(
                    key,
                    Some(batch(&[i as i64], "inc")),
                    || unreachable!(),
                    &mut out,
                )
                .unwrap();
            apply(&mut latest, out);
        }
        let (mut chains, state) = restored(&latest, 10_000);
        assert_eq!(state.num_rows(), 10_000 + MAX_LINKS);

        let mut out = Vec::new();
        chains
            .write(key, Some(batch(&[7], "inc")), || Ok(None), &mut out)
            .unwrap();
        assert_eq!(out.iter().filter(|(_, v)| v.is_none()).count(), out.len());
        apply(&mut latest, out);
        let (joined, parts) = wire::join_parts(latest).unwrap();
        let (_, states) = StateChains::restore(&joined, parts, 10_000).unwrap();
        assert!(states.is_empty(), "everything tombstoned: {states:?}");
    }

    #[test]
    fn a_broken_link_is_an_error_naming_it() {
        let mut latest = LatestRecords::new();
        latest.insert("state/2/head/inc/1".into(), Some(b"garbage".to_vec()));
        let error = StateChains::restore(&latest, HashMap::new(), 1000).unwrap_err();
        assert!(error.contains("state/2/head/inc/1"), "{error}");
    }
}
