//! The jobs a server holds. Each submitted script runs on an [`Engine`] of its own (its
//! tables and settings are its own), watched by a task that records how it ended; the
//! [`JobStore`] keeps what is needed to run it again after a restart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use runnel::{Engine, EngineConfig, Executed, JobFile, JobHandle, JobInfo};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::error::{Result, ServerError};
use crate::store::{Desired, JobStore, StoredJob};

/// How long a stop waits for the final checkpoint.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Flink's default is no checkpoints; a job on a server is meant to outlive the server's
/// restarts, so it checkpoints every 10 s unless its settings or SQL say otherwise.
const DEFAULT_CHECKPOINT_INTERVAL: &str = "10 s";

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Its statements are being planned and its tasks started.
    Starting,
    Running,
    /// Taking its final checkpoint.
    Stopping,
    /// Its sources ended and everything was written.
    Finished,
    Failed,
    Stopped,
}

/// How to stop a job.
#[derive(Debug, Clone, Copy)]
pub struct StopRequest {
    /// Take a final checkpoint first (when the job checkpoints), so a start resumes there.
    pub final_checkpoint: bool,
    /// The server is shutting down: the job runs again when the server starts.
    pub resume_on_start: bool,
}

/// One job the server holds.
pub struct ManagedJob {
    store: JobStore,
    record: Mutex<StoredJob>,
    phase: Mutex<Phase>,
    /// The engine of the current (or last) run: its jobs and their counters.
    engine: Mutex<Option<Arc<Engine>>>,
    /// Tells the current run's watcher to stop it.
    stop: Mutex<Option<oneshot::Sender<StopRequest>>>,
    /// When the current run started, in ms since the epoch.
    started_at_ms: Mutex<Option<i64>>,
    /// How many times the job was started (the first run included).
    starts: AtomicU64,
    /// Its streaming plans and job graphs, as `EXPLAIN` prints them.
    plan: Mutex<Option<String>>,
}

/// A poisoned lock still holds consistent data here: every change is one assignment.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl ManagedJob {
    pub fn id(&self) -> u64 {
        lock(&self.record).id
    }

    pub fn phase(&self) -> Phase {
        *lock(&self.phase)
    }

    pub fn record(&self) -> StoredJob {
        lock(&self.record).clone()
    }

    pub fn plan(&self) -> Option<String> {
        lock(&self.plan).clone()
    }

    /// The jobs (one per `INSERT INTO`) of the current or last run, with their counters.
    pub fn statements(&self) -> Vec<JobInfo> {
        lock(&self.engine)
            .as_ref()
            .map(|engine| engine.jobs())
            .unwrap_or_default()
    }

    pub fn started_at_ms(&self) -> Option<i64> {
        *lock(&self.started_at_ms)
    }

    /// Restarts: starts of the job after the first (the server restarted, or it was
    /// stopped and started), and those its restart strategy made after failures.
    pub fn restarts(&self) -> u64 {
        let failures: u64 = self
            .statements()
            .iter()
            .map(|statement| statement.metrics.snapshot().restarts)
            .sum();
        self.starts.load(Ordering::Relaxed).saturating_sub(1) + failures
    }

    fn set_phase(&self, phase: Phase) {
        *lock(&self.phase) = phase;
    }

    /// Records how the job should be treated from now on, in memory and on disk.
    fn settle(&self, desired: Desired, error: Option<String>) {
        let record = {
            let mut record = lock(&self.record);
            record.desired = desired;
            record.error = error;
            record.clone()
        };
        if let Err(e) = self.store.save(&record) {
            tracing::error!(job = record.id, error = %e, "cannot store the job's state");
        }
    }

    /// The engine a run gets: the job's settings, its checkpoints in the state directory.
    fn engine(&self) -> Engine {
        Engine::new(self.engine_config())
    }

    fn engine_config(&self) -> EngineConfig {
        let record = self.record();
        let mut settings = record.settings.clone();
        settings
            .entry(runnel::settings::CHECKPOINT_DIR.to_string())
            .or_insert_with(|| self.store.checkpoint_dir(record.id).display().to_string());
        settings
            .entry("execution.checkpointing.interval".to_string())
            .or_insert_with(|| DEFAULT_CHECKPOINT_INTERVAL.to_string());
        EngineConfig {
            settings,
            kafka_properties: record.kafka_properties,
        }
    }

    /// Starts a run: plans and starts the job's statements, then watches them. A job
    /// that fails to start is marked failed with the reason.
    async fn launch(self: Arc<Self>) {
        self.starts.fetch_add(1, Ordering::Relaxed);
        self.set_phase(Phase::Starting);
        *lock(&self.started_at_ms) = Some(now_ms());
        let sql = self.record().sql;
        if lock(&self.plan).is_none() {
            // Planning asks connectors about their tables (a Kafka topic's partitions):
            // not on the runtime's threads.
            let (config, script) = (self.engine_config(), sql.clone());
            let plan =
                tokio::task::spawn_blocking(move || Engine::new(config).explain(&script).ok());
            *lock(&self.plan) = plan.await.ok().flatten();
        }
        let engine = Arc::new(self.engine());
        *lock(&self.engine) = Some(engine.clone());
        let (stop, stopped) = oneshot::channel();
        *lock(&self.stop) = Some(stop);
        let handles = match engine.execute(&sql).await {
            Ok(results) => results
                .into_iter()
                .filter_map(|result| match result {
                    Executed::Job(job) => Some(job),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            Err(e) => {
                let error = describe(&e);
                tracing::warn!(job = self.id(), %error, "the job failed to start");
                self.set_phase(Phase::Failed);
                self.settle(Desired::Failed, Some(error));
                return;
            }
        };
        self.settle(Desired::Running, None);
        self.set_phase(Phase::Running);
        tracing::info!(job = self.id(), statements = handles.len(), "job running");
        tokio::spawn(self.watch(handles, stopped));
    }

    /// Waits for the run's jobs to end, or for a stop.
    async fn watch(
        self: Arc<Self>,
        mut handles: Vec<JobHandle>,
        stopped: oneshot::Receiver<StopRequest>,
    ) {
        enum Ended {
            Ran(std::result::Result<(), String>),
            Stop(StopRequest),
        }
        let ended = tokio::select! {
            outcome = futures::future::try_join_all(handles.iter_mut().map(|h| h.wait_ref())) => {
                Ended::Ran(outcome.map(drop).map_err(|e| describe(&e)))
            }
            request = stopped => match request {
                Ok(request) => Ended::Stop(request),
                // The server dropped the job without a word: stop it where it is.
                Err(_) => Ended::Stop(StopRequest { final_checkpoint: false, resume_on_start: true }),
            },
        };
        let id = self.id();
        match ended {
            Ended::Ran(Ok(())) => {
                tracing::info!(job = id, "job finished");
                self.set_phase(Phase::Finished);
                self.settle(Desired::Finished, None);
            }
            Ended::Ran(Err(error)) => {
                tracing::warn!(job = id, %error, "job failed");
                self.set_phase(Phase::Failed);
                self.settle(Desired::Failed, Some(error));
            }
            Ended::Stop(request) => {
                self.set_phase(Phase::Stopping);
                let mut error = None;
                for handle in handles {
                    if request.final_checkpoint {
                        if let Err(e) = handle.stop(STOP_TIMEOUT).await {
                            error = Some(describe(&runnel::RunnelError::from(e)));
                        }
                    } else {
                        handle.abort();
                    }
                }
                tracing::info!(
                    job = id,
                    final_checkpoint = request.final_checkpoint,
                    "job stopped"
                );
                self.set_phase(Phase::Stopped);
                let desired = if request.resume_on_start {
                    Desired::Running
                } else {
                    Desired::Stopped
                };
                self.settle(desired, error);
            }
        }
    }

    /// Asks the current run to stop; false when it is not running.
    fn request_stop(&self, request: StopRequest) -> bool {
        match lock(&self.stop).take() {
            Some(stop) => stop.send(request).is_ok(),
            None => false,
        }
    }

    /// Waits until the job is in none of the running phases.
    async fn settled(&self) {
        while matches!(
            self.phase(),
            Phase::Starting | Phase::Running | Phase::Stopping
        ) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An error and its causes on one line.
fn describe(error: &dyn std::error::Error) -> String {
    runnel::error_chain(error).join(": ")
}

/// A job as submitted: a SQL script, or a job file's TOML text.
pub struct Submission {
    pub name: Option<String>,
    pub sql: Option<String>,
    pub job_file: Option<String>,
}

/// Every job the server holds, by id.
pub struct ServerJobs {
    store: JobStore,
    jobs: Mutex<BTreeMap<u64, Arc<ManagedJob>>>,
    next_id: AtomicU64,
}

impl ServerJobs {
    /// The jobs stored in `store`; those that were running are started again.
    pub fn restore(store: JobStore) -> Result<Arc<Self>> {
        let stored = store.load_all()?;
        let next_id = stored.iter().map(|job| job.id).max().unwrap_or(0) + 1;
        let jobs = Arc::new(Self {
            store: store.clone(),
            jobs: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(next_id),
        });
        for record in stored {
            let resume = record.desired == Desired::Running;
            let phase = match record.desired {
                Desired::Running => Phase::Starting,
                Desired::Stopped => Phase::Stopped,
                Desired::Finished => Phase::Finished,
                Desired::Failed => Phase::Failed,
            };
            let job = jobs.add(record, phase);
            if resume {
                tracing::info!(job = job.id(), "resuming the job");
                tokio::spawn(job.launch());
            }
        }
        Ok(jobs)
    }

    fn add(&self, record: StoredJob, phase: Phase) -> Arc<ManagedJob> {
        let id = record.id;
        let job = Arc::new(ManagedJob {
            store: self.store.clone(),
            record: Mutex::new(record),
            phase: Mutex::new(phase),
            engine: Mutex::new(None),
            stop: Mutex::new(None),
            started_at_ms: Mutex::new(None),
            starts: AtomicU64::new(0),
            plan: Mutex::new(None),
        });
        lock(&self.jobs).insert(id, job.clone());
        job
    }

    /// Checks a submission (every planning error with its place), stores it and starts it.
    pub fn submit(&self, submission: Submission) -> Result<Arc<ManagedJob>> {
        let no_env = |_: &str| None;
        let file = match (submission.sql, submission.job_file) {
            (Some(sql), None) => JobFile {
                name: submission.name.clone().unwrap_or_default(),
                sql,
                ..Default::default()
            },
            (None, Some(toml)) => JobFile::from_toml_text(
                &toml,
                submission.name.clone().unwrap_or_default(),
                std::path::Path::new("."),
                &no_env,
            )
            .map_err(ServerError::BadRequest)?,
            _ => {
                return Err(ServerError::BadRequest(
                    "give the job as `sql` (a SQL script) or `job_file` (a job file's TOML), one of them"
                        .into(),
                ))
            }
        };
        check_job(&file)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name = match file.name.trim() {
            "" => format!("job {id}"),
            name => name.to_string(),
        };
        let record = StoredJob {
            id,
            name,
            sql: file.sql,
            settings: file.settings,
            kafka_properties: file.kafka_properties,
            submitted_at_ms: now_ms(),
            desired: Desired::Running,
            error: None,
        };
        self.store.save(&record)?;
        let job = self.add(record, Phase::Starting);
        tokio::spawn(job.clone().launch());
        Ok(job)
    }

    pub fn get(&self, id: u64) -> Result<Arc<ManagedJob>> {
        lock(&self.jobs)
            .get(&id)
            .cloned()
            .ok_or(ServerError::NoSuchJob(id))
    }

    pub fn all(&self) -> Vec<Arc<ManagedJob>> {
        lock(&self.jobs).values().cloned().collect()
    }

    /// Stops job `id` and waits until it stopped.
    pub async fn stop(&self, id: u64, final_checkpoint: bool) -> Result<Arc<ManagedJob>> {
        let job = self.get(id)?;
        let request = StopRequest {
            final_checkpoint,
            resume_on_start: false,
        };
        if !job.request_stop(request) {
            return Err(ServerError::Conflict {
                id,
                reason: format!("it is {:?}, not running", job.phase()).to_lowercase(),
            });
        }
        job.settled().await;
        Ok(job)
    }

    /// Starts job `id` again (from its last checkpoint); it must not be running.
    pub fn start(&self, id: u64) -> Result<Arc<ManagedJob>> {
        let job = self.get(id)?;
        {
            let mut phase = lock(&job.phase);
            if matches!(*phase, Phase::Starting | Phase::Running | Phase::Stopping) {
                return Err(ServerError::Conflict {
                    id,
                    reason: "it is running already".into(),
                });
            }
            *phase = Phase::Starting;
        }
        tokio::spawn(job.clone().launch());
        Ok(job)
    }

    /// Stops every running job after a final checkpoint, leaving each to resume when the
    /// server starts again.
    pub async fn shutdown(&self) {
        let request = StopRequest {
            final_checkpoint: true,
            resume_on_start: true,
        };
        let running: Vec<_> = self
            .all()
            .into_iter()
            .filter(|job| job.request_stop(request))
            .collect();
        for job in running {
            job.settled().await;
        }
    }
}

/// Refuses a job that does not plan, or that has nothing to run continuously.
fn check_job(file: &JobFile) -> Result<()> {
    let engine = file.engine();
    let checked = engine.validate(&file.sql);
    if !checked.errors.is_empty() {
        return Err(ServerError::Invalid(checked.errors));
    }
    let statements =
        runnel::sql::parse_script(&file.sql).map_err(|e| ServerError::BadRequest(e.to_string()))?;
    if statements
        .iter()
        .any(|s| matches!(s, runnel::sql::Statement::Query(_)))
    {
        return Err(ServerError::BadRequest(
            "a job on the server writes into tables (INSERT INTO); run a SELECT with POST /v1/preview"
                .into(),
        ));
    }
    if !statements
        .iter()
        .any(|s| matches!(s, runnel::sql::Statement::Insert { .. }))
    {
        return Err(ServerError::BadRequest(
            "the job has no INSERT INTO: nothing would run".into(),
        ));
    }
    Ok(())
}
