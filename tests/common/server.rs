//! A `runnel serve` process a test starts, stops and restarts, and its REST API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_port, runnel_binary};

/// A running `runnel serve`, killed when dropped.
pub struct Served {
    child: Child,
    pub base: String,
    token: Option<String>,
    log: PathBuf,
    http: reqwest::blocking::Client,
}

impl Served {
    /// Starts `runnel serve` on a free loopback port over `state_dir` and waits until it
    /// answers.
    pub fn start(state_dir: &Path, token: Option<&str>) -> Self {
        let port = free_port();
        let log = state_dir.with_extension("log");
        let mut command = Command::new(runnel_binary());
        command
            .arg("serve")
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state_dir)
            .env_remove("RUNNEL_TOKEN")
            .env("RUNNEL_LOG", "runnel_server=info,runnel_runtime=info")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("server log"),
            );
        if let Some(token) = token {
            command.arg("--token").arg(token);
        }
        let child = command.spawn().expect("start runnel serve");
        let served = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            token: token.map(String::from),
            log,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("HTTP client"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while served.http.get(format!("{}/", served.base)).send().is_err() {
            assert!(
                Instant::now() < deadline,
                "runnel serve did not answer within 30 s: {}",
                served.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        served
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A request with the server's token (when it has one).
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `GET path`: the status and the JSON body.
    pub fn get(&self, path: &str) -> (u16, Value) {
        answer(self.request(reqwest::Method::GET, path))
    }

    /// `POST path` with a JSON body: the status and the JSON body.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        answer(self.request(reqwest::Method::POST, path).json(body))
    }

    /// Polls `GET /v1/jobs/{id}` until `done` holds for its body; panics with the last
    /// body and the log after `timeout`.
    pub fn wait_for_job(&self, id: u64, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, job) = self.get(&format!("/v1/jobs/{id}"));
            if status == 200 && done(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} not as expected within {timeout:?}: {job}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server with SIGTERM (its jobs take a final checkpoint) and checks it
    /// exits cleanly.
    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "runnel serve exited with {status}: {}",
                    self.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "runnel serve did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answer(request: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let response = request.send().expect("HTTP request");
    let status = response.status().as_u16();
    let text = response.text().expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}
