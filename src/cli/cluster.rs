//! `silt cluster describe`: the cluster id, the controller and every broker.

use clap::Subcommand;

use super::client::Connection;
use super::{print_table, CliError};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster id, the controller, the brokers and the topic and partition counts.
    Describe {
        #[command(flatten)]
        connection: Connection,
    },
}

#[allow(unsafe_code, reason = "rdkafka has no safe wrapper for rd_kafka_controllerid")]
pub fn run(command: ClusterCommand) -> Result<(), CliError> {
    let ClusterCommand::Describe { connection } = command;
    let admin = connection.admin()?;
    let client = admin.inner();
    let metadata = connection.metadata(client)?;
    let cluster_id = client.fetch_cluster_id(connection.timeout).unwrap_or_else(|| "(unknown)".into());
    let timeout_ms = i32::try_from(connection.timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the client is alive for the call; rd_kafka_controllerid only reads its metadata cache.
    let controller = unsafe { rdkafka::bindings::rd_kafka_controllerid(client.native_ptr(), timeout_ms) };
    let user_topics: Vec<_> = metadata.topics().iter().filter(|t| !t.name().starts_with("__")).collect();
    println!("cluster id   {cluster_id}");
    println!("controller   {}", if controller >= 0 { controller.to_string() } else { "(unknown)".into() });
    println!("topics       {} ({} partitions)", user_topics.len(), user_topics.iter().map(|t| t.partitions().len()).sum::<usize>());
    println!();
    let mut brokers: Vec<_> = metadata.brokers().iter().collect();
    brokers.sort_by_key(|b| b.id());
    let mut rows = vec![vec!["BROKER".into(), "HOST".into(), "PORT".into(), "LEADER-OF-PARTITIONS".into()]];
    for b in brokers {
        let leads = metadata.topics().iter().flat_map(|t| t.partitions()).filter(|p| p.leader() == b.id()).count();
        rows.push(vec![b.id().to_string(), b.host().to_owned(), b.port().to_string(), leads.to_string()]);
    }
    print_table(&rows);
    Ok(())
}
