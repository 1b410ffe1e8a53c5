//! The shell as a client of `runnel serve` (`runnel --server URL`): `INSERT INTO`s are
//! submitted to the server as jobs, `SHOW JOBS` and `STOP JOB` act on the server's jobs,
//! and a `SELECT` runs there as a followed preview whose rows stream back.

use std::io::BufRead;
use std::sync::Arc;

use runnel::arrow::array::{ArrayRef, Int8Array, StringArray};
use runnel::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use runnel::arrow::record_batch::RecordBatch;
use runnel::sql::changelog::ChangeKind;
use serde_json::{json, Value};

/// A server the shell sends its queries to.
pub struct RemoteServer {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

impl RemoteServer {
    /// Connects to the server at `url` (checking that it answers and takes the token).
    pub fn connect(url: &str, token: Option<String>) -> Result<Self, String> {
        let http = reqwest::blocking::Client::builder()
            // A followed query streams for as long as it runs.
            .timeout(None)
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        let server = Self {
            base: url.trim_end_matches('/').to_string(),
            token,
            http,
        };
        server.jobs()?;
        Ok(server)
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    fn send(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, String> {
        let response = request.send().map_err(|e| format!("{}: {e}", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().unwrap_or(Value::Null);
        Err(error_text(&body, status))
    }

    fn call(&self, request: reqwest::blocking::RequestBuilder) -> Result<Value, String> {
        self.send(request)?
            .json()
            .map_err(|e| format!("{}: an answer that is not JSON: {e}", self.base))
    }

    /// The server's jobs, as `GET /v1/jobs` lists them.
    pub fn jobs(&self) -> Result<Vec<Value>, String> {
        let jobs = self.call(self.request(reqwest::Method::GET, "/v1/jobs"))?;
        Ok(jobs.as_array().cloned().unwrap_or_default())
    }

    /// Stops job `id` after a final checkpoint.
    pub fn stop(&self, id: u64) -> Result<Value, String> {
        self.call(self.request(reqwest::Method::POST, &format!("/v1/jobs/{id}/stop")))
    }

    /// Submits a script (declarations and `INSERT INTO`s) as one job.
    pub fn submit(&self, sql: &str) -> Result<Value, String> {
        self.call(
            self.request(reqwest::Method::POST, "/v1/jobs")
                .json(&json!({ "sql": sql })),
        )
    }

    /// Starts a script ending in a `SELECT` on the server and follows its rows.
    pub fn follow(&self, sql: &str) -> Result<FollowedQuery, String> {
        let response = self.send(
            self.request(reqwest::Method::POST, "/v1/preview")
                .json(&json!({ "sql": sql, "follow": true })),
        )?;
        let mut lines = std::io::BufReader::new(response).lines();
        let header: Value = match lines.next() {
            Some(Ok(line)) => serde_json::from_str(&line).map_err(|e| e.to_string())?,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the server ended the query without a word".into()),
        };
        let names: Vec<String> = header["columns"]
            .as_array()
            .map(|columns| {
                columns
                    .iter()
                    .filter_map(|c| c.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let mut fields: Vec<Field> = names
            .iter()
            .map(|name| Field::new(name, DataType::Utf8, true))
            .collect();
        let changes = header["changes"].as_bool().unwrap_or(false);
        if changes {
            fields.push(runnel::sql::changelog::change_field());
        }
        Ok(FollowedQuery {
            schema: Arc::new(Schema::new(fields)),
            changes,
            lines: Box::new(lines),
        })
    }
}

/// An error answer as one message: the server's, then each error with its place.
fn error_text(body: &Value, status: reqwest::StatusCode) -> String {
    let mut text = body["error"]
        .as_str()
        .map_or_else(|| format!("the server answered {status}"), String::from);
    if let Some(errors) = body["errors"].as_array().filter(|e| !e.is_empty()) {
        text = format!("{} error(s):", errors.len());
        for error in errors {
            let place = match (error["line"].as_u64(), error["column"].as_u64()) {
                (Some(line), Some(column)) => format!("line {line}, column {column}: "),
                (Some(line), None) => format!("line {line}: "),
                _ => String::new(),
            };
            text.push_str(&format!(
                "\n  {place}{}",
                error["message"].as_str().unwrap_or_default()
            ));
        }
    }
    text
}

/// The rows of a `SELECT` running on a server, as they come (text columns; an updating
/// query's with their change kinds).
pub struct FollowedQuery {
    pub schema: SchemaRef,
    changes: bool,
    lines: Box<dyn Iterator<Item = std::io::Result<String>> + Send>,
}

impl FollowedQuery {
    /// The next batch of rows; `None` once the query ended.
    pub fn next_batch(&mut self) -> Option<Result<RecordBatch, String>> {
        loop {
            let line = match self.lines.next()? {
                Ok(line) => line,
                Err(e) => return Some(Err(format!("the server's stream broke: {e}"))),
            };
            let message: Value = match serde_json::from_str(&line) {
                Ok(message) => message,
                Err(e) => return Some(Err(format!("a line that is not JSON: {e}"))),
            };
            if let Some(error) = message["error"].as_str() {
                return Some(Err(error.to_string()));
            }
            if message["end"].as_bool() == Some(true) {
                return None;
            }
            if let Some(rows) = message["rows"].as_array() {
                return Some(self.batch(rows));
            }
            // A heartbeat.
        }
    }

    fn batch(&self, rows: &[Value]) -> Result<RecordBatch, String> {
        let width = self.schema.fields().len() - usize::from(self.changes);
        let mut columns: Vec<ArrayRef> = (0..width)
            .map(|i| {
                let values: Vec<Option<&str>> = rows
                    .iter()
                    .map(|row| row["values"][i].as_str().filter(|v| *v != "NULL"))
                    .collect();
                Arc::new(StringArray::from(values)) as ArrayRef
            })
            .collect();
        if self.changes {
            let kinds: Vec<i8> = rows
                .iter()
                .map(|row| {
                    let op = row["op"].as_str().unwrap_or_default();
                    [
                        ChangeKind::Insert,
                        ChangeKind::UpdateBefore,
                        ChangeKind::UpdateAfter,
                        ChangeKind::Delete,
                    ]
                    .into_iter()
                    .find(|kind| kind.short_string() == op)
                    .unwrap_or(ChangeKind::Insert) as i8
                })
                .collect();
            columns.push(Arc::new(Int8Array::from(kinds)));
        }
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| e.to_string())
    }
}
