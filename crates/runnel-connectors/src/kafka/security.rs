//! Secured brokers: Flink's way of giving SASL credentials (`properties.sasl.jaas.config`)
//! in librdkafka's terms, and a first connection that turns a wrong password or an
//! untrusted certificate into an error naming the table, instead of a client that
//! retries in silence.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

use crate::error::{ConnectorError, Result};

/// Option keys whose values are secrets: never shown, logged or put in an error.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "token",
        "private.key",
        "key.pem",
        "credentials",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// The username and password of a JAAS line as Flink users write it
/// (`org.apache.kafka.common.security.scram.ScramLoginModule required username="u"
/// password="p";`), for librdkafka's `sasl.username` and `sasl.password`.
pub fn jaas_credentials(jaas: &str) -> Option<(String, String)> {
    let value = |name: &str| -> Option<String> {
        let start = jaas.find(&format!("{name}="))? + name.len() + 1;
        let rest = jaas[start..].trim_start();
        let quoted = rest.strip_prefix('"')?;
        Some(quoted[..quoted.find('"')?].to_string())
    };
    Some((value("username")?, value("password")?))
}

/// Sets what librdkafka needs from the Java client properties a Flink table may carry:
/// `sasl.jaas.config` becomes `sasl.username` and `sasl.password` (checked when the table
/// is declared, see [`check_java_properties`]).
pub fn translate_java_properties(config: &mut ClientConfig) {
    if let Some(jaas) = config.get("sasl.jaas.config").map(str::to_string) {
        if let Some((username, password)) = jaas_credentials(&jaas) {
            config.remove("sasl.jaas.config");
            config.set("sasl.username", username);
            config.set("sasl.password", password);
        }
    }
}

/// Refuses Java client properties librdkafka cannot be given, naming them (never their
/// values).
pub fn check_java_properties(table: &str, jaas: Option<&str>) -> Result<()> {
    match jaas {
        Some(jaas) if jaas_credentials(jaas).is_none() => Err(ConnectorError::Other(format!(
            "table {table}: 'properties.sasl.jaas.config' has no username=\"...\" \
             password=\"...\" (or set 'properties.sasl.username' and 'properties.sasl.password')"
        ))),
        _ => Ok(()),
    }
}

/// Whether the client authenticates or encrypts (`security.protocol` other than
/// `PLAINTEXT`).
pub fn is_secured(config: &ClientConfig) -> bool {
    config
        .get("security.protocol")
        .is_some_and(|p| !p.eq_ignore_ascii_case("plaintext"))
}

/// A client context that keeps the last error librdkafka reported on its own (an
/// authentication or TLS failure is reported so, not returned by a call).
#[derive(Default)]
struct ReportedErrors(Mutex<Option<String>>);

impl ClientContext for ReportedErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for ReportedErrors {}

/// How long the first connection of a secured client may take.
const ACCESS_TIMEOUT: Duration = Duration::from_secs(20);

/// Connects to the brokers `config` names and reads `topic`'s metadata, failing with the
/// reason when they refuse the credentials or the certificate (`what`: the table, for the
/// message).
pub async fn check_access(config: &ClientConfig, topic: &str, what: &str) -> Result<()> {
    let consumer: BaseConsumer<ReportedErrors> = config
        .create_with_context(ReportedErrors::default())
        .map_err(|source| ConnectorError::Kafka {
            context: format!("{what}: creating a client"),
            source,
        })?;
    let (topic, what) = (topic.to_string(), what.to_string());
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        loop {
            let fetched = consumer.fetch_metadata(Some(&topic), Duration::from_millis(500));
            // Errors librdkafka reports on its own (a refused login) arrive as events,
            // served to the context by a poll.
            let _ = consumer.poll(Duration::ZERO);
            let reported = consumer
                .context()
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let refused = reported.as_deref().is_some_and(|r| {
                let r = r.to_ascii_lowercase();
                ["authentication", "sasl", "ssl", "certificate", "handshake"]
                    .iter()
                    .any(|word| r.contains(word))
            });
            match (fetched, reported) {
                (Ok(_), _) => return Ok(()),
                (Err(_), Some(reason)) if refused => {
                    return Err(ConnectorError::Other(format!(
                        "{what}: the brokers refused the connection: {reason}"
                    )))
                }
                (Err(e), reported) if started.elapsed() >= ACCESS_TIMEOUT => {
                    return Err(ConnectorError::Other(format!(
                        "{what}: no broker answered within {ACCESS_TIMEOUT:?}: {}",
                        reported.unwrap_or_else(|| e.to_string())
                    )))
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    })
    .await
    .map_err(|e| ConnectorError::Other(format!("checking access to the brokers: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaas_lines_give_username_and_password() {
        let jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required \
                    username=\"runnel\" password=\"p a;ss\";";
        assert_eq!(
            jaas_credentials(jaas),
            Some(("runnel".into(), "p a;ss".into()))
        );
        assert_eq!(jaas_credentials("PlainLoginModule required;"), None);
        assert!(is_secret("properties.sasl.password"));
        assert!(is_secret("properties.ssl.key.password"));
        assert!(is_secret("properties.sasl.jaas.config"));
        assert!(!is_secret("properties.bootstrap.servers"));
    }
}
