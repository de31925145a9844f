//! `silt cluster describe`: the cluster id, the controller, partition health
//! (under-replicated and offline partitions) and every broker with the
//! replicas it holds, leads, and has out of sync.

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
    let partitions: Vec<_> = metadata.topics().iter().flat_map(|t| t.partitions()).collect();
    let under_replicated = partitions.iter().filter(|p| p.isr().len() < p.replicas().len()).count();
    let offline = partitions.iter().filter(|p| p.leader() < 0).count();
    println!("partitions   {} under-replicated, {offline} offline (of {}, internal topics included)", under_replicated, partitions.len());
    println!();
    let mut brokers: Vec<_> = metadata.brokers().iter().collect();
    brokers.sort_by_key(|b| b.id());
    let mut rows = vec![vec!["BROKER".into(), "HOST".into(), "PORT".into(), "REPLICAS".into(), "LEADER-OF-PARTITIONS".into(), "OUT-OF-ISR".into()]];
    for b in brokers {
        let id = b.id();
        let replicas = partitions.iter().filter(|p| p.replicas().contains(&id)).count();
        let leads = partitions.iter().filter(|p| p.leader() == id).count();
        let lagging = partitions.iter().filter(|p| p.replicas().contains(&id) && !p.isr().contains(&id)).count();
        rows.push(vec![id.to_string(), b.host().to_owned(), b.port().to_string(), replicas.to_string(), leads.to_string(), lagging.to_string()]);
    }
    print_table(&rows);
    Ok(())
}
