//! [`EngineConfig`]: what an [`Engine`](crate::Engine) starts with.

use std::collections::BTreeMap;

/// Settings an engine starts with: the `SET` values every job gets unless a script sets
/// them again, and Kafka client properties merged into every Kafka table.
///
/// ```
/// let config = runnel::EngineConfig::default()
///     .set("execution.checkpointing.interval", "10 s")
///     .kafka_property("bootstrap.servers", "127.0.0.1:9092");
/// let engine = runnel::Engine::new(config);
/// assert_eq!(engine.setting("execution.checkpointing.interval").as_deref(), Some("10 s"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// `SET` keys and values, as if the script began with them.
    pub settings: BTreeMap<String, String>,
    /// Kafka client properties (`bootstrap.servers`, `security.protocol`, ...): every
    /// Kafka table gets `'properties.<key>'` unless it sets that option itself.
    pub kafka_properties: BTreeMap<String, String>,
}

impl EngineConfig {
    /// Adds a `SET` value.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// Adds a Kafka client property for every Kafka table.
    pub fn kafka_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.kafka_properties.insert(key.into(), value.into());
        self
    }
}
