//! The `runnel` command: the interactive shell (no arguments), job files
//! (`runnel run|validate|explain job.sql|job.toml`) and the server (`runnel serve`, see
//! `runnel-server`).

mod live_result;
mod remote;
mod repl;
mod status;
mod table_view;
mod transactions;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use futures::StreamExt;
use runnel::{Executed, MetricsSnapshot};

use runnel::JobFile;

/// mimalloc, as DataFusion's CLI uses: Arrow batches are allocated and freed by the
/// megabyte on different threads, and glibc's allocator hands such blocks back to the
/// kernel each time (a page fault per page of every new batch: a third of the CPU time
/// of a JSON source in `perf`).
///
/// Built without transparent huge pages (`no_thp`): where the kernel gives them on
/// request, mimalloc asked for them, and every page fault on memory it had given back
/// then cleared 2 MiB. Over the Nexmark file that was 10 % of q11's CPU in `perf`; without
/// them the system time halves and peak memory is 5–25 % lower (`docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "runnel",
    version,
    about = "Runnel: streaming SQL on Arrow. Without a command, starts the interactive shell."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The shell sends its queries to this `runnel serve` (e.g. http://127.0.0.1:8081):
    /// INSERT INTO, SELECT, SHOW JOBS and STOP JOB run there.
    #[arg(long)]
    server: Option<String>,
    /// The server's bearer token.
    #[arg(long, env = "RUNNEL_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job file (`.sql`, or `.toml` naming the SQL, checkpoints, settings and Kafka
    /// defaults): its statements in order; waits until every job ends.
    Run {
        /// The `.sql` or `.toml` file.
        file: PathBuf,
        /// Where the job's checkpoints go (with `SET 'execution.checkpointing.interval'`).
        /// Running the same job again with the same directory resumes where it stopped.
        #[arg(long)]
        checkpoint_dir: Option<PathBuf>,
        /// Serve Prometheus metrics of the job over HTTP on this address (e.g. 127.0.0.1:9249).
        #[arg(long)]
        metrics_addr: Option<SocketAddr>,
        /// For crash tests: pause this many milliseconds between storing each checkpoint
        /// and committing it, so a kill can land there.
        #[arg(long, hide = true)]
        pause_before_commit_ms: Option<u64>,
    },
    /// Print the streaming plan of each query in a job file, without running it.
    Explain { file: PathBuf },
    /// Check a job file without running it: every error it finds, each with its place.
    Validate { file: PathBuf },
    /// Hold many jobs in one process: a REST API, a web dashboard at `/` and Prometheus
    /// metrics at `/metrics`. Submitted jobs resume when the server starts again.
    Serve {
        /// Where to listen. Without a token, loopback addresses only.
        #[arg(long, default_value = "127.0.0.1:8081")]
        addr: SocketAddr,
        /// The bearer token every API call must carry.
        #[arg(long, env = "RUNNEL_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Where submitted jobs and their checkpoints are kept.
        #[arg(long, default_value = "runnel-server")]
        state_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNNEL_LOG")
                .unwrap_or_else(|_| "warn,runnel::status=info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs written to files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        Some(Command::Run {
            file,
            checkpoint_dir,
            metrics_addr,
            pause_before_commit_ms,
        }) => {
            let faults = runnel::runtime::FaultInjection {
                pause_before_commit: pause_before_commit_ms.map(std::time::Duration::from_millis),
                ..Default::default()
            };
            runtime.block_on(run(&file, checkpoint_dir.as_deref(), metrics_addr, faults))
        }
        Some(Command::Explain { file }) => explain(&file),
        Some(Command::Validate { file }) => validate(&file),
        Some(Command::Serve {
            addr,
            token,
            state_dir,
        }) => runtime.block_on(serve(runnel_server::ServerConfig {
            addr,
            token,
            state_dir,
        })),
        None => match cli.server {
            Some(url) => remote::RemoteServer::connect(&url, cli.token)
                .map_err(|e| format!("--server {url}: {e}"))
                .and_then(|server| repl::run(&runtime, Some(server))),
            None => repl::run(&runtime, None),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line each.
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    runnel::error_chain(error).join("\n  caused by: ")
}

fn load(file: &Path) -> Result<JobFile, String> {
    JobFile::load(file, &|name| std::env::var(name).ok())
}

fn validate(file: &Path) -> Result<(), String> {
    let job = load(file)?;
    let checked = job.engine().validate(&job.sql);
    for warning in &checked.warnings {
        eprintln!("{}: warning: {warning}", file.display());
    }
    let errors = checked.errors;
    if errors.is_empty() {
        println!("{}: ok", file.display());
        return Ok(());
    }
    let count = errors.len();
    Err(format!(
        "{}: {count} error{}:\n  {}",
        file.display(),
        if count == 1 { "" } else { "s" },
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n  ")
    ))
}

fn explain(file: &Path) -> Result<(), String> {
    let job = load(file)?;
    let plans = job
        .engine()
        .explain(&job.sql)
        .map_err(|e| format!("{}: {}", file.display(), describe(&e)))?;
    print!("{plans}");
    Ok(())
}

async fn run(
    file: &Path,
    checkpoint_dir: Option<&Path>,
    metrics_addr: Option<SocketAddr>,
    faults: runnel::runtime::FaultInjection,
) -> Result<(), String> {
    // Listen from the start: a stop while the job is still starting must not kill the
    // process with the signal's default action.
    let mut stop = StopSignal::listen();
    let job_file = load(file)?;
    let engine = Arc::new(job_file.engine());
    engine.inject_faults(faults);
    if let Some(dir) = checkpoint_dir {
        let setting = format!(
            "SET 'state.checkpoints.dir' = '{}';",
            dir.display().to_string().replace('\'', "''")
        );
        engine
            .execute(&setting)
            .await
            .map_err(|e| format!("--checkpoint-dir: {}", describe(&e)))?;
    }
    let _metrics_server = match metrics_addr {
        Some(addr) => {
            let (bound, task) = runnel_server::serve_metrics(engine.clone(), addr)
                .await
                .map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
            tracing::info!(%bound, "serving Prometheus metrics");
            Some(AbortOnDrop(task))
        }
        None => None,
    };
    let started = Instant::now();
    let place = |e: runnel::RunnelError| format!("{}: {}", file.display(), describe(&e));
    let mut jobs = Vec::new();
    let mut queries = Vec::new();
    for result in engine.execute(&job_file.sql).await.map_err(&place)? {
        match result {
            Executed::Job(job) => jobs.push(job),
            Executed::Query(stream) => queries.push(stream),
            Executed::Explained(plan) => print!("{plan}"),
            Executed::Created(_) | Executed::Set { .. } => {}
        }
    }
    let total = engine.jobs().len();
    let names = engine
        .jobs()
        .into_iter()
        .map(|job| {
            let name = if total == 1 {
                job_file.name.clone()
            } else {
                format!("{} #{}", job_file.name, job.id)
            };
            (name, job.metrics)
        })
        .collect();
    let _status = AbortOnDrop(status::spawn(names));
    let clear = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        status::CLEAR_LINE
    } else {
        ""
    };
    for mut stream in queries {
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| describe(&e))?;
            for line in
                runnel::connectors::print::format_rows(&batch, "").map_err(|e| e.to_string())?
            {
                println!("{clear}{line}");
            }
        }
        let metrics = stream.finish().await.map_err(&place)?;
        report("query", &metrics, started);
    }
    let count = jobs.len();
    let mut stopping = false;
    for (i, mut job) in jobs.into_iter().enumerate() {
        // SIGTERM or Ctrl-C stops the jobs after a final checkpoint (when they take them).
        let metrics = if stopping {
            job.stop(std::time::Duration::from_secs(60)).await
        } else {
            tokio::select! {
                metrics = job.wait_ref() => metrics,
                _ = stop.recv() => {
                    stopping = true;
                    status::clear();
                    eprintln!("stopping: taking a final checkpoint");
                    job.stop(std::time::Duration::from_secs(60)).await
                }
            }
        };
        let metrics = metrics.map_err(|e| place(e.into()))?;
        let name = if count == 1 {
            "job".to_string()
        } else {
            format!("job {}", i + 1)
        };
        report(&name, &metrics, started);
    }
    Ok(())
}

/// `runnel serve`: serves until SIGTERM or Ctrl-C, then stops the jobs after a final
/// checkpoint (they resume when the server starts again).
async fn serve(config: runnel_server::ServerConfig) -> Result<(), String> {
    let mut stop = StopSignal::listen();
    let state_dir = config.state_dir.clone();
    let mut server = runnel_server::Server::start(config)
        .await
        .map_err(|e| describe(&e))?;
    eprintln!(
        "runnel serve: dashboard at http://{}/ (jobs kept in {})",
        server.addr(),
        state_dir.display()
    );
    tokio::select! {
        failed = server.wait() => failed.map_err(|e| describe(&e))?,
        _ = stop.recv() => {
            eprintln!("stopping: a final checkpoint of every running job");
            server.shutdown().await;
        }
    }
    Ok(())
}

/// Stops a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// SIGTERM or Ctrl-C, listened for from the moment it is made: one that arrives before
/// [`StopSignal::recv`] is first awaited is kept, not lost.
struct StopSignal {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignal {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signals = signal(SignalKind::terminate())
                .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)))
                .ok();
            Self { signals }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Waits for the next SIGTERM or Ctrl-C (forever when they cannot be listened for).
    async fn recv(&mut self) {
        #[cfg(unix)]
        match &mut self.signals {
            Some((term, interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            None => std::future::pending().await,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// One line per finished job on stderr: what went in, out, and what was dropped.
fn report(name: &str, metrics: &MetricsSnapshot, started: Instant) {
    status::clear();
    let seconds = started.elapsed().as_secs_f64();
    let late = if metrics.late_rows_routed > 0 {
        format!(
            "{} late rows ({} written to the late-data sink)",
            metrics.late_rows, metrics.late_rows_routed
        )
    } else {
        format!("{} late rows dropped", metrics.late_rows)
    };
    let bad = if metrics.dead_letters > 0 {
        format!(
            "{} bad records ({} written to dead-letter tables)",
            metrics.bad_records, metrics.dead_letters
        )
    } else {
        format!("{} bad records skipped", metrics.bad_records)
    };
    eprintln!(
        "{name} finished in {seconds:.2}s: {} rows in ({:.0}/s), {} rows out, {late}, {bad}",
        metrics.rows_in,
        metrics.rows_in as f64 / seconds.max(1e-9),
        metrics.rows_out,
    );
}
