//! [`LocalSnapshots`]: a copy of each task's changelog records in the process's
//! checkpoint directory, so that a task coming back to this process (a restart after a
//! crash, a rebalance that returns it) reads only the tail of its changelog.
//!
//! A task's copy is `<dir>/<stage>-<partition>/`: one file per changelog key under
//! `records/` (its name the key in hex, its content the value; a tombstone removes it),
//! and `offset`, the changelog offset from which a restore reads the tail. Records are
//! copied only after the transaction that wrote them committed, and `offset` is only
//! ever set to a place up to which the copy holds every committed record. Reading the
//! changelog from `offset` on over the copy, newest value per key winning, therefore
//! gives what reading it from its start gives, even when another process owned the task
//! in between. A copy that cannot be read or written is dropped, and the task is
//! restored from its whole changelog: the changelog stays the truth.

use std::io;
use std::path::{Path, PathBuf};

use crate::topology::TaskId;
use crate::wire::LatestRecords;

/// The copies of the changelogs of the tasks this process owned, under one directory.
#[derive(Debug, Clone)]
pub struct LocalSnapshots {
    dir: PathBuf,
}

/// A task's copy as read back: its records, and the changelog offset to read on from.
pub struct LocalCopy {
    pub records: LatestRecords,
    pub offset: i64,
}

impl LocalSnapshots {
    /// Copies kept under `dir` (made when first written).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn task_dir(&self, id: TaskId) -> PathBuf {
        self.dir.join(format!("{}-{}", id.stage, id.partition))
    }

    /// Task `id`'s copy, if there is a whole one.
    pub fn load(&self, id: TaskId) -> Option<LocalCopy> {
        let dir = self.task_dir(id);
        let offset = std::fs::read_to_string(dir.join("offset")).ok()?;
        let offset = offset.trim().parse().ok()?;
        let mut records = LatestRecords::new();
        match read_records(&dir.join("records"), &mut records) {
            Ok(()) => Some(LocalCopy { records, offset }),
            Err(e) => {
                tracing::warn!(task = %id, error = %e, dir = %dir.display(), "dropping the local copy of a task's state");
                self.forget(id);
                None
            }
        }
    }

    /// Copies `records` (a committed transaction's, or a restore's tail) into task
    /// `id`'s copy, in order; then, if given, notes that it holds every committed record
    /// before changelog offset `offset`. A copy that cannot be written is dropped.
    pub fn write<'a>(
        &self,
        id: TaskId,
        records: impl IntoIterator<Item = (&'a String, &'a Option<Vec<u8>>)>,
        offset: Option<i64>,
    ) {
        let dir = self.task_dir(id);
        if let Err(e) = write_records(&dir, records, offset) {
            tracing::warn!(task = %id, error = %e, dir = %dir.display(), "dropping the local copy of a task's state");
            self.forget(id);
        }
    }

    /// Drops task `id`'s copy.
    pub fn forget(&self, id: TaskId) {
        let _ = std::fs::remove_dir_all(self.task_dir(id));
    }
}

fn hex(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(name: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..name.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(name.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn read_records(dir: &Path, records: &mut LatestRecords) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(key) = name.to_str().and_then(unhex) else {
            continue; // a temporary file a crash left
        };
        records.insert(key, Some(std::fs::read(entry.path())?));
    }
    Ok(())
}

fn write_records<'a>(
    dir: &Path,
    records: impl IntoIterator<Item = (&'a String, &'a Option<Vec<u8>>)>,
    offset: Option<i64>,
) -> io::Result<()> {
    let values = dir.join("records");
    std::fs::create_dir_all(&values)?;
    for (key, value) in records {
        let path = values.join(hex(key));
        match value {
            Some(value) => {
                let temporary = values.join(format!(".{}", hex(key)));
                std::fs::write(&temporary, value)?;
                std::fs::rename(&temporary, &path)?;
            }
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            },
        }
    }
    if let Some(offset) = offset {
        let temporary = dir.join(".offset");
        std::fs::write(&temporary, offset.to_string())?;
        std::fs::rename(&temporary, dir.join("offset"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_keeps_the_newest_value_of_each_key_and_its_offset() {
        let dir = std::env::temp_dir().join(format!("runnel-local-{}", std::process::id()));
        let snapshots = LocalSnapshots::new(dir.clone());
        let id = TaskId {
            stage: 1,
            partition: 4,
        };
        assert!(snapshots.load(id).is_none(), "nothing yet");
        let first: Vec<crate::wire::ChangelogRecord> = vec![
            ("progress".into(), Some(b"p1".to_vec())),
            ("state/1/0".into(), Some(b"base".to_vec())),
            ("state/1/0/inc/1".into(), Some(b"i1".to_vec())),
        ];
        // Records without an offset: no whole copy yet.
        snapshots.write(id, first.iter().map(|(k, v)| (k, v)), None);
        assert!(snapshots.load(id).is_none());
        let second: Vec<crate::wire::ChangelogRecord> = vec![
            ("progress".into(), Some(b"p2".to_vec())),
            ("state/1/0/inc/1".into(), None),
            ("state/1/0/inc/9".into(), None),
        ];
        snapshots.write(id, second.iter().map(|(k, v)| (k, v)), Some(42));
        let copy = snapshots.load(id).unwrap();
        assert_eq!(copy.offset, 42);
        let mut keys: Vec<_> = copy.records.iter().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                (&"progress".to_string(), &Some(b"p2".to_vec())),
                (&"state/1/0".to_string(), &Some(b"base".to_vec()))
            ]
        );
        snapshots.forget(id);
        assert!(snapshots.load(id).is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
