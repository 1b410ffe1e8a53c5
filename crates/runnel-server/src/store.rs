//! The server's state directory: each submitted job's SQL, settings and last known state
//! in `jobs/<id>/job.json`, next to its checkpoints in `jobs/<id>/checkpoints`, so jobs
//! survive a restart of the server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, ServerError};

/// What the server should do with a job when it starts: run it again, or leave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// Resume it (from its last checkpoint).
    Running,
    /// A person stopped it.
    Stopped,
    /// Its sources ended and it wrote everything.
    Finished,
    /// It failed; it runs again only when started by hand.
    Failed,
}

/// One submitted job as the state directory keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredJob {
    pub id: u64,
    pub name: String,
    pub sql: String,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    #[serde(default)]
    pub kafka_properties: BTreeMap<String, String>,
    /// When it was submitted, in ms since the epoch.
    pub submitted_at_ms: i64,
    pub desired: Desired,
    /// The error it failed with, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// The `jobs/` folder of the state directory.
#[derive(Debug, Clone)]
pub struct JobStore {
    dir: PathBuf,
}

impl JobStore {
    /// The store under `state_dir`, created if missing.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let dir = state_dir.join("jobs");
        std::fs::create_dir_all(&dir).map_err(|source| ServerError::Io {
            what: "cannot create the state directory",
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    fn job_dir(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Where job `id` keeps its checkpoints.
    pub fn checkpoint_dir(&self, id: u64) -> PathBuf {
        self.job_dir(id).join("checkpoints")
    }

    /// Every stored job, by id.
    pub fn load_all(&self) -> Result<Vec<StoredJob>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| ServerError::Io {
            what: "cannot list",
            path: self.dir.clone(),
            source,
        })?;
        let mut jobs = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path().join("job.json");
            if !path.exists() {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| ServerError::Io {
                what: "cannot read",
                path: path.clone(),
                source,
            })?;
            let job: StoredJob = serde_json::from_str(&text).map_err(|e| ServerError::Store {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            jobs.push(job);
        }
        jobs.sort_by_key(|job| job.id);
        Ok(jobs)
    }

    /// Writes `job` (replacing what was stored), through a temporary file so a crash
    /// leaves the old or the new record, never half of one.
    pub fn save(&self, job: &StoredJob) -> Result<()> {
        let dir = self.job_dir(job.id);
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| ServerError::Io { what, path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io("cannot create", &dir))?;
        let text = serde_json::to_string_pretty(job).map_err(|e| ServerError::Store {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let temporary = dir.join("job.json.tmp");
        std::fs::write(&temporary, text).map_err(io("cannot write", &temporary))?;
        let path = dir.join("job.json");
        std::fs::rename(&temporary, &path).map_err(io("cannot replace", &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_stored_and_read_back_in_id_order() {
        let dir = std::env::temp_dir().join(format!("runnel-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = JobStore::open(&dir).unwrap();
        let job = |id, desired| StoredJob {
            id,
            name: format!("job {id}"),
            sql: "INSERT INTO t SELECT * FROM s;".into(),
            settings: BTreeMap::new(),
            kafka_properties: BTreeMap::new(),
            submitted_at_ms: 1,
            desired,
            error: None,
        };
        store.save(&job(10, Desired::Running)).unwrap();
        store.save(&job(2, Desired::Running)).unwrap();
        store.save(&job(2, Desired::Stopped)).unwrap();
        let loaded = store.load_all().unwrap();
        let ids: Vec<_> = loaded.iter().map(|j| (j.id, j.desired)).collect();
        assert_eq!(ids, vec![(2, Desired::Stopped), (10, Desired::Running)]);
        assert!(store
            .checkpoint_dir(2)
            .starts_with(dir.join("jobs").join("2")));

        std::fs::write(dir.join("jobs/10/job.json"), "{").unwrap();
        let error = store.load_all().unwrap_err().to_string();
        assert!(error.contains("jobs/10/job.json"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
