//! [`JobHandle`]: a running job, and the supervisor task behind it that watches the job's
//! tasks and starts them again after a failure, as the job's [`RestartStrategy`] allows.
//!
//! The supervisor owns the running [`Attempt`] (one run of the job's tasks). The handle
//! talks to it by message (stop), and aborts tasks through handles the supervisor
//! publishes for each attempt, so a job restarts whether or not anyone awaits it (a
//! query read as a stream, a job the shell runs in the background).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_sql::StreamPlan;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinHandle};

use super::start_attempt;
use crate::checkpoint::CheckpointCoordinator;
use crate::config::JobConfig;
use crate::connector::ConnectorFactory;
use crate::error::{Result, RuntimeError};
use crate::metrics::{JobMetrics, MetricsSnapshot};
use crate::restart::{RestartBackoff, RestartStrategy};
use crate::sink::SinkFactory;

/// A running job. Await [`JobHandle::wait`] for its end; [`JobHandle::stop`] or
/// [`JobHandle::abort`] to stop it (dropping the handle leaves it running).
///
/// A job that fails while running is started again from its last checkpoint when its
/// [`RestartStrategy`] allows: the failed run's tasks are stopped, the strategy's delay
/// waited, and the tasks started again. Each restart is logged and counted in
/// [`MetricsSnapshot::restarts`]; the job's counters go on across restarts.
pub struct JobHandle {
    metrics: Arc<JobMetrics>,
    /// Runs the job's attempts; ends with the job.
    supervisor: JoinHandle<Result<()>>,
    /// How the job ended, once [`JobHandle::wait_ref`] saw it.
    ended: Option<Result<(), String>>,
    /// Messages to the supervisor.
    commands: mpsc::UnboundedSender<Command>,
    /// The running attempt's tasks, to abort them without the supervisor.
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

/// What the handle asks of the supervisor.
enum Command {
    /// Stop the job cleanly (see [`JobHandle::stop`]) and answer how it went.
    Stop {
        timeout: Duration,
        done: oneshot::Sender<Result<()>>,
    },
}

/// One run of a job's tasks: the first, or one after a restart.
pub(super) struct Attempt {
    pub tasks: Vec<(String, JoinHandle<Result<()>>)>,
    /// Triggers checkpoints; stopped when the attempt ends.
    pub checkpoint_timer: Option<JoinHandle<()>>,
    /// The job's checkpoints, when it takes them.
    pub checkpoints: Option<Arc<CheckpointCoordinator>>,
    /// Tells the sink to write what it holds and end (a stop without checkpoints).
    pub sink_stop: Option<oneshot::Sender<()>>,
    /// The name of the task that ends when told on `sink_stop`.
    pub stopped_task: String,
}

/// What a job needs to start again after it failed.
pub(super) struct Restarts {
    pub backoff: RestartBackoff,
    pub plan: StreamPlan,
    pub connectors: Arc<dyn ConnectorFactory>,
    pub sinks: Arc<dyn SinkFactory>,
    pub config: JobConfig,
}

impl Attempt {
    /// Waits until every task ended; the first to fail stops the others (a source waiting
    /// for new records would otherwise never notice), and its error is returned.
    /// Cancel-safe: a task's end is taken only once it is returned.
    async fn wait(&mut self) -> Result<()> {
        while !self.tasks.is_empty() {
            let (outcome, finished, _) =
                futures::future::select_all(self.tasks.iter_mut().map(|(_, task)| task)).await;
            let (name, _) = self.tasks.remove(finished);
            let outcome = match outcome {
                Ok(result) => result,
                Err(join) => Err(RuntimeError::Task(format!("{name}: {join}"))),
            };
            if let Err(e) = outcome {
                self.abort();
                return Err(e);
            }
        }
        self.abort();
        Ok(())
    }

    /// Stops every task at once.
    fn abort(&self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
        if let Some(timer) = &self.checkpoint_timer {
            timer.abort();
        }
    }

    /// Stops every task and waits until each let go of what it held (a Kafka producer, a
    /// database connection), so a restart does not meet them.
    async fn end(&mut self) {
        self.abort();
        for (_, task) in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    fn abort_handles(&self) -> Vec<AbortHandle> {
        self.tasks
            .iter()
            .map(|(_, task)| task.abort_handle())
            .chain(self.checkpoint_timer.iter().map(JoinHandle::abort_handle))
            .collect()
    }

    /// See [`JobHandle::stop`]; gives up at `deadline`.
    async fn stop(&mut self, deadline: StopDeadline, metrics: &JobMetrics) -> Stopping {
        if self.checkpoints.is_none() {
            if let Some(stop) = self.sink_stop.take() {
                let _ = stop.send(());
                let stopped = &self.stopped_task;
                if let Some(at) = self.tasks.iter().position(|(name, _)| name == stopped) {
                    let (_, sink) = self.tasks.remove(at);
                    match tokio::time::timeout_at(deadline.at, sink).await {
                        Ok(Ok(Err(e))) => {
                            self.abort();
                            return Stopping::Done(Err(e));
                        }
                        Err(_) => {
                            let timeout = deadline.timeout;
                            tracing::warn!(?timeout, "the sink did not write what it held in time")
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
        if let Some(coordinator) = self.checkpoints.clone() {
            let before = metrics.checkpoints.load(Ordering::Relaxed);
            let id = coordinator.trigger();
            let committed = async {
                while metrics.checkpoints.load(Ordering::Relaxed) == before {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            // A task that fails meanwhile (a sink whose commit a broker refused) fails the
            // attempt: waiting on would only end at the deadline.
            tokio::select! {
                () = committed => {
                    tracing::info!(checkpoint = id, "stopped after a final checkpoint");
                }
                ended = self.wait() => {
                    if let Err(failure) = ended {
                        return Stopping::Failed(failure);
                    }
                }
                () = tokio::time::sleep_until(deadline.at) => {
                    self.abort();
                    let timeout = deadline.timeout;
                    return Stopping::Done(Err(RuntimeError::Checkpoint(format!(
                        "the final checkpoint {id} did not complete within {timeout:?}"
                    ))));
                }
            }
        }
        self.abort();
        Stopping::Done(Ok(()))
    }
}

/// When a stop gives up: `timeout` after it was asked for.
#[derive(Debug, Clone, Copy)]
struct StopDeadline {
    at: tokio::time::Instant,
    timeout: Duration,
}

/// How [`Attempt::stop`] went.
enum Stopping {
    /// The job stopped (after its final checkpoint, when it checkpoints), or the stop
    /// failed for good: the stop's answer.
    Done(Result<()>),
    /// A task failed before the final checkpoint was committed. The job restarts as its
    /// strategy allows, and the new attempt takes the final checkpoint.
    Failed(RuntimeError),
}

/// What the supervisor of a running attempt acts on.
enum Event {
    Failed(RuntimeError),
    Stop(PendingStop),
}

/// A stop asked for and not yet answered, while the job restarts to take its final
/// checkpoint.
struct PendingStop {
    deadline: StopDeadline,
    done: oneshot::Sender<Result<()>>,
}

impl JobHandle {
    /// Starts the supervisor of a job whose first attempt is running.
    pub(super) fn supervise(
        attempt: Attempt,
        restarts: Option<Restarts>,
        metrics: Arc<JobMetrics>,
    ) -> Self {
        let (commands, received) = mpsc::unbounded_channel();
        let tasks = Arc::new(Mutex::new(attempt.abort_handles()));
        let supervisor = tokio::spawn(supervise(
            attempt,
            restarts,
            metrics.clone(),
            received,
            tasks.clone(),
        ));
        Self {
            metrics,
            supervisor,
            ended: None,
            commands,
            tasks,
        }
    }

    /// A job run by one task of its own, `name` (e.g. a member of a job spread over
    /// processes), counting into `metrics`. [`JobHandle::stop`] sends on `stop`, then
    /// waits for the task to end. It is not restarted here: such a task recovers by
    /// itself.
    pub fn from_task(
        name: impl Into<String>,
        task: JoinHandle<Result<()>>,
        metrics: Arc<JobMetrics>,
        stop: oneshot::Sender<()>,
    ) -> Self {
        let name = name.into();
        let attempt = Attempt {
            tasks: vec![(name.clone(), task)],
            checkpoint_timer: None,
            checkpoints: None,
            sink_stop: Some(stop),
            stopped_task: name,
        };
        Self::supervise(attempt, None, metrics)
    }

    /// The job's live counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Shared handle to the live counters.
    pub fn metrics_handle(&self) -> Arc<JobMetrics> {
        self.metrics.clone()
    }

    /// Waits until the job ended: every task finished (`Ok`), or it failed and its restart
    /// strategy allowed no restart (the error that ended it).
    pub async fn wait(mut self) -> Result<MetricsSnapshot> {
        self.wait_ref().await
    }

    /// [`JobHandle::wait`] without giving up the handle, so the job can still be stopped
    /// (e.g. on a signal) while this waits. Cancel-safe.
    pub async fn wait_ref(&mut self) -> Result<MetricsSnapshot> {
        if self.ended.is_none() {
            let ended = match (&mut self.supervisor).await {
                Ok(outcome) => outcome,
                Err(join) => Err(RuntimeError::Task(format!("the job's supervisor: {join}"))),
            };
            // Kept as text: the error itself was returned to the first caller.
            self.ended = Some(ended.as_ref().map(drop).map_err(|e| e.to_string()));
            ended?;
        }
        match &self.ended {
            Some(Err(e)) => Err(RuntimeError::Task(e.clone())),
            _ => Ok(self.metrics.snapshot()),
        }
    }

    /// Stops the job cleanly: when it checkpoints, takes one more checkpoint and waits
    /// (up to `timeout`) until it is committed, so a restart resumes exactly there;
    /// without checkpoints, lets the sink write the rows it holds (a buffering sink would
    /// otherwise lose rows it already took). Then stops every task. A job waiting to
    /// restart just stops (its last checkpoint is where it resumes). Returns the job's
    /// counters.
    pub async fn stop(self, timeout: Duration) -> Result<MetricsSnapshot> {
        let (done, stopped) = oneshot::channel();
        if self.commands.send(Command::Stop { timeout, done }).is_ok() {
            // No answer: the job had ended before it read the request.
            if let Ok(outcome) = stopped.await {
                outcome?;
            }
        }
        self.abort();
        Ok(self.metrics.snapshot())
    }

    /// Stops every task at once.
    pub fn abort(&self) {
        self.supervisor.abort();
        for task in lock(&self.tasks).iter() {
            task.abort();
        }
    }

    /// Whether the job has ended (finished, failed for good, or was stopped).
    pub fn is_finished(&self) -> bool {
        self.ended.is_some() || self.supervisor.is_finished()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a job's attempts until one finishes, the job is stopped, or a failure is not
/// restarted.
async fn supervise(
    mut attempt: Attempt,
    mut restarts: Option<Restarts>,
    metrics: Arc<JobMetrics>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
) -> Result<()> {
    let mut stopping: Option<PendingStop> = None;
    loop {
        // A stop asked for now, or one still waiting while the job restarted.
        let event = match stopping.take() {
            Some(stop) => Event::Stop(stop),
            None => tokio::select! {
                outcome = attempt.wait() => match outcome {
                    Ok(()) => return Ok(()),
                    Err(failure) => Event::Failed(failure),
                },
                Some(Command::Stop { timeout, done }) = commands.recv() => {
                    let at = tokio::time::Instant::now() + timeout;
                    let deadline = StopDeadline { at, timeout };
                    Event::Stop(PendingStop { deadline, done })
                }
            },
        };
        let failure = match event {
            Event::Failed(failure) => failure,
            Event::Stop(stop) => match attempt.stop(stop.deadline, &metrics).await {
                Stopping::Done(result) => {
                    let _ = stop.done.send(result);
                    return Ok(());
                }
                Stopping::Failed(failure) => {
                    tracing::warn!(error = %failure, "the job failed while taking its final checkpoint");
                    stopping = Some(stop);
                    failure
                }
            },
        };
        // The stop (if one is waiting) is answered with the failure when the job does
        // not restart; the failure is the job's end otherwise.
        let give_up = |stopping: Option<PendingStop>, failure: RuntimeError| match stopping {
            Some(stop) => {
                let _ = stop.done.send(Err(failure));
                Ok(())
            }
            None => Err(failure),
        };
        let Some(restarts) = restarts.as_mut() else {
            return give_up(stopping, failure);
        };
        attempt.end().await;
        let mut failure = failure;
        attempt = loop {
            let delay = match failure.is_recoverable() {
                true => restarts.backoff.on_failure(Instant::now()),
                false => None,
            };
            let Some(delay) = delay else {
                if failure.is_recoverable() {
                    tracing::error!(
                        strategy = restarts.backoff.strategy().name(),
                        "the job failed and its restart strategy allows no more restarts"
                    );
                }
                return give_up(stopping, failure);
            };
            if let Some(stop) = &stopping {
                if tokio::time::Instant::now() + delay >= stop.deadline.at {
                    return give_up(stopping, failure);
                }
            }
            let restart = metrics.restarts.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                restart,
                strategy = restarts.backoff.strategy().name(),
                delay_ms = delay.as_millis() as u64,
                error = %failure,
                "the job failed; restarting it from its last checkpoint"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                Some(Command::Stop { done, .. }) = commands.recv() => {
                    let _ = done.send(Ok(()));
                    return Ok(());
                }
            }
            metrics.forget_ended_tasks();
            let started = start_attempt(
                &restarts.plan,
                restarts.connectors.as_ref(),
                restarts.sinks.as_ref(),
                &restarts.config,
                &metrics,
            )
            .await;
            match started {
                Ok(started) => {
                    restarts.backoff.restarted(Instant::now());
                    tracing::info!(
                        restart,
                        checkpoint = metrics.restored_checkpoint.load(Ordering::Relaxed),
                        "the job is running again"
                    );
                    break started;
                }
                Err(e) => failure = e,
            }
        };
        *lock(&tasks) = attempt.abort_handles();
    }
}

impl Restarts {
    /// What a job needs to restart under `config`'s strategy; `None` when it never does.
    pub(super) fn new(
        plan: &StreamPlan,
        connectors: Arc<dyn ConnectorFactory>,
        sinks: Arc<dyn SinkFactory>,
        config: &JobConfig,
    ) -> Option<Self> {
        let strategy = config.restart_strategy();
        (strategy != RestartStrategy::None).then(|| Self {
            backoff: RestartBackoff::new(strategy),
            plan: plan.clone(),
            connectors,
            sinks,
            // Faults a test injects fail the first run only.
            config: JobConfig {
                faults: Default::default(),
                ..config.clone()
            },
        })
    }
}
