//! Job files: a `.sql` script, or a `.toml` file naming the job, its SQL (inline or by
//! path), checkpoints, settings and default Kafka properties. `${VAR}` (or
//! `${VAR:-default}`) is replaced from the environment in both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A job as `runnel run`, `validate` and `explain` take it.
#[derive(Debug, Default)]
pub struct JobFile {
    /// The job's name (the TOML's `name`, else the file's stem).
    pub name: String,
    pub sql: String,
    /// `SET` values the SQL starts with (checkpoint directory and interval among them).
    pub settings: BTreeMap<String, String>,
    /// Kafka client properties every Kafka table gets unless it sets them.
    pub kafka_properties: BTreeMap<String, String>,
}

/// The TOML form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobToml {
    name: Option<String>,
    /// Inline SQL.
    sql: Option<String>,
    /// Path of a `.sql` file, relative to the TOML file.
    sql_file: Option<PathBuf>,
    #[serde(default)]
    checkpoint: Option<CheckpointToml>,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    /// Kafka client properties (`bootstrap.servers`, `security.protocol`, `sasl.*`, ...).
    #[serde(default)]
    kafka: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointToml {
    dir: Option<String>,
    interval: Option<String>,
    /// `execution.checkpointing.incremental`.
    incremental: Option<bool>,
}

impl JobFile {
    /// Reads a `.sql` or `.toml` job file, substituting `${VAR}`s with `env`.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let text = read(path)?;
        let stem = path
            .file_stem()
            .map_or_else(|| "job".to_string(), |s| s.to_string_lossy().into_owned());
        if path.extension().is_some_and(|e| e == "toml") {
            let base = path.parent().unwrap_or(Path::new("."));
            return Self::from_toml(&path.display().to_string(), base, &text, stem, env);
        }
        Ok(Self {
            name: stem,
            sql: substitute(&text, env).map_err(|e| format!("{}:{e}", path.display()))?,
            ..Default::default()
        })
    }

    /// A job file's TOML text (as a server receives it), named `name` unless it names
    /// itself; `sql_file` paths are relative to `base`.
    pub fn from_toml_text(
        text: &str,
        name: String,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        Self::from_toml("job file", base, text, name, env)
    }

    /// `label` names the file in errors.
    fn from_toml(
        label: &str,
        base: &Path,
        text: &str,
        stem: String,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let place = |e: String| format!("{label}:{e}");
        let text = substitute(text, env).map_err(place)?;
        let job: JobToml = toml::from_str(&text).map_err(|e| {
            // toml's message names the line and column and quotes the spot.
            format!("{label}: {}", e.to_string().trim_end())
        })?;
        let sql = match (job.sql, job.sql_file) {
            (Some(sql), None) => sql,
            (None, Some(file)) => {
                let file = base.join(file);
                substitute(&read(&file)?, env).map_err(|e| format!("{}:{e}", file.display()))?
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{label}: give the SQL either inline (`sql`) or by path (`sql_file`), not both"
                ))
            }
            (None, None) => {
                return Err(format!(
                    "{label}: the job has no SQL: add `sql = \"...\"` or `sql_file = \"job.sql\"`"
                ))
            }
        };
        let mut settings = job.settings;
        if let Some(checkpoint) = job.checkpoint {
            if let Some(dir) = checkpoint.dir {
                settings.insert("state.checkpoints.dir".into(), dir);
            }
            if let Some(interval) = checkpoint.interval {
                settings.insert("execution.checkpointing.interval".into(), interval);
            }
            if let Some(incremental) = checkpoint.incremental {
                settings.insert(
                    "execution.checkpointing.incremental".into(),
                    incremental.to_string(),
                );
            }
        }
        Ok(Self {
            name: job.name.unwrap_or(stem),
            sql,
            settings,
            kafka_properties: job.kafka,
        })
    }

    /// An engine configured as the file says.
    pub fn engine(&self) -> crate::Engine {
        crate::Engine::new(crate::EngineConfig {
            settings: self.settings.clone(),
            kafka_properties: self.kafka_properties.clone(),
        })
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Replaces `${NAME}` and `${NAME:-default}` with `env(NAME)` (or the default). An unset
/// variable without a default is an error naming it and its line (`LINE: ...`).
pub fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let line = text.len() - rest.len() + start;
        let line = text[..line].matches('\n').count() + 1;
        let Some(end) = after.find('}') else {
            return Err(format!("{line}: `${{` without a closing `}}`"));
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!("{line}: `${{{inner}}}` is not a variable name"));
        }
        match (env(name), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "{line}: ${{{name}}} is not set in the environment (set it, or write ${{{name}:-default}})"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOPIC" => Some("claims.events".into()),
            "BROKERS" => Some("127.0.0.1:9092".into()),
            _ => None,
        }
    }

    #[test]
    fn variables_are_substituted_with_defaults_and_unset_ones_named() {
        assert_eq!(
            substitute("'topic' = '${TOPIC}', '${MODE:-earliest}'", &env).unwrap(),
            "'topic' = 'claims.events', 'earliest'"
        );
        let error = substitute("a\nb ${MISSING}", &env).unwrap_err();
        assert!(error.starts_with("2: ${MISSING} is not set"), "{error}");
        assert!(substitute("${1X}", &env)
            .unwrap_err()
            .contains("not a variable"));
        assert!(substitute("${OPEN", &env).unwrap_err().contains("closing"));
    }

    #[test]
    fn a_toml_job_gathers_sql_checkpoints_settings_and_kafka_defaults() {
        let dir = std::env::temp_dir().join(format!("runnel-job-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("job.sql"), "SELECT 1 FROM ${TOPIC};").unwrap();
        let path = dir.join("job.toml");
        std::fs::write(
            &path,
            "name = \"claims\"\nsql_file = \"job.sql\"\n[checkpoint]\ndir = \"/tmp/c\"\ninterval = \"5 s\"\nincremental = true\n\
             [settings]\n\"table.exec.state.ttl\" = \"1 h\"\n[kafka]\n\"bootstrap.servers\" = \"${BROKERS}\"\n",
        )
        .unwrap();
        let job = JobFile::load(&path, &env).unwrap();
        assert_eq!(job.name, "claims");
        assert_eq!(job.sql, "SELECT 1 FROM claims.events;");
        assert_eq!(job.settings["state.checkpoints.dir"], "/tmp/c");
        assert_eq!(job.settings["execution.checkpointing.interval"], "5 s");
        assert_eq!(job.settings["execution.checkpointing.incremental"], "true");
        assert_eq!(job.settings["table.exec.state.ttl"], "1 h");
        assert_eq!(job.kafka_properties["bootstrap.servers"], "127.0.0.1:9092");

        std::fs::write(
            &path,
            "name = \"x\"\nsql = \"SELECT 1;\"\nparallelism = 3\n",
        )
        .unwrap();
        let error = JobFile::load(&path, &env).unwrap_err();
        assert!(
            error.contains("unknown field `parallelism`") && error.contains("line 3"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
