//! What the perf tools share about reaching a broker with librdkafka:
//! connection arguments, client configuration and topic creation.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// How long topic creation and metadata look-ups may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments every perf command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Bootstrap servers (host:port, comma separated).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap_servers: String,
    /// The topic to produce to or consume from.
    #[arg(long, default_value = "silt-perf")]
    pub topic: String,
    /// Partitions to create the topic with when it does not exist.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Extra librdkafka settings, e.g. `--client-prop socket.nagle.disable=true` (repeatable).
    #[arg(long = "client-prop", value_name = "KEY=VALUE")]
    pub client_props: Vec<String>,
    /// Print the final report as one JSON object (and periodic ones as JSON lines on stderr).
    #[arg(long)]
    pub json: bool,
    /// Seconds between periodic reports on stderr.
    #[arg(long, default_value_t = 5.0)]
    pub report_interval_s: f64,
}

impl Target {
    /// A client configuration with the bootstrap servers and the extra settings.
    pub fn config(&self) -> anyhow::Result<ClientConfig> {
        self.config_with(&[])
    }

    /// Like [`Target::config`], with a command's own settings, which
    /// `--client-prop` settings override.
    pub fn config_with(&self, settings: &[(&str, String)]) -> anyhow::Result<ClientConfig> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config.set("client.id", "silt-perf");
        for (key, value) in settings {
            config.set(*key, value);
        }
        for prop in &self.client_props {
            let Some((key, value)) = prop.split_once('=') else {
                bail!("--client-prop must be KEY=VALUE, got {prop:?}");
            };
            config.set(key, value);
        }
        Ok(config)
    }

    pub fn report_interval(&self) -> Duration {
        Duration::from_secs_f64(self.report_interval_s.max(0.1))
    }

    /// Creates the topic with `--partitions` if it does not exist, waits until
    /// its metadata lists every partition with a leader, and returns the
    /// partition count (an existing topic keeps its own).
    pub fn ensure_topic(&self) -> anyhow::Result<i32> {
        if self.partitions < 1 {
            bail!("--partitions must be at least 1, got {}", self.partitions);
        }
        let config = self.config()?;
        let admin: AdminClient<DefaultClientContext> = config.create().context("creating an admin client")?;
        let topic = NewTopic::new(&self.topic, self.partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results = futures::executor::block_on(admin.create_topics([&topic], &options)).context("creating the topic")?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => bail!("cannot create topic {name}: {code}"),
            }
        }
        let consumer: BaseConsumer = config.create().context("creating a metadata client")?;
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        loop {
            let metadata = consumer.fetch_metadata(Some(&self.topic), Duration::from_secs(5));
            if let Ok(metadata) = &metadata {
                if let Some(t) = metadata.topics().iter().find(|t| t.name() == self.topic) {
                    let partitions = t.partitions();
                    if t.error().is_none() && !partitions.is_empty() && partitions.iter().all(|p| p.leader() >= 0) {
                        return Ok(partitions.len() as i32);
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!("topic {} has no leader for every partition after {ADMIN_TIMEOUT:?} (last answer: {metadata:?})", self.topic);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// librdkafka's `acks` value for an `--acks` argument.
pub fn parse_acks(acks: &str) -> anyhow::Result<&'static str> {
    Ok(match acks {
        "0" => "0",
        "1" => "1",
        "all" | "-1" => "all",
        other => bail!("--acks must be 0, 1 or all, got {other:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_accept_kafkas_spellings() {
        assert_eq!(parse_acks("-1").unwrap(), "all");
        assert_eq!(parse_acks("1").unwrap(), "1");
        assert!(parse_acks("2").is_err());
    }
}
