//! `silt perf`: load generators and limit probes, for Silt or any Kafka broker.
//!
//! | command | module | measures |
//! |---|---|---|
//! | `produce` | [`produce`] | producer throughput and send-to-acknowledgement latency |
//! | `consume` | [`consume`] | consumer throughput |
//! | `end-to-end` | [`end_to_end`] | produce-to-receipt latency at a fixed rate |
//! | `tcp-loopback`, `disk` | [`limits`] | the machine's loopback TCP and sequential write speed |
//! | `produce --raw`, `consume --raw` | [`raw`] | the broker's own ingest and egress ceiling |
//!
//! The clients are librdkafka (the `rdkafka` crate), so the figures are what a
//! real client sees; `--raw` replaces it with pre-encoded requests, so that
//! the broker rather than the client is the bottleneck. Periodic reports go to stderr, the final one to stdout
//! (`--json` for one JSON object). [`stats`] holds the histograms and reports.

pub mod client;
pub mod consume;
pub mod end_to_end;
pub mod limits;
pub mod produce;
pub mod raw;
pub mod stats;

/// The `silt perf` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum PerfCommand {
    /// Produce records as fast as possible or at a target rate (kafka-producer-perf-test).
    Produce(produce::ProduceArgs),
    /// Consume a topic's records (kafka-consumer-perf-test).
    Consume(consume::ConsumeArgs),
    /// Latency from produce to consumer receipt at a fixed rate.
    EndToEnd(end_to_end::EndToEndArgs),
    /// Loopback TCP throughput of this machine (one stream).
    TcpLoopback(limits::TcpArgs),
    /// Sequential write speed of a directory's disk, with or without fdatasync per block.
    Disk(limits::DiskArgs),
}

/// Runs one perf command to completion (blocking; no async runtime needed).
pub fn run(command: PerfCommand) -> anyhow::Result<()> {
    match command {
        PerfCommand::Produce(args) => produce::run(args),
        PerfCommand::Consume(args) => consume::run(args),
        PerfCommand::EndToEnd(args) => end_to_end::run(args),
        PerfCommand::TcpLoopback(args) => limits::run_tcp(args),
        PerfCommand::Disk(args) => limits::run_disk(args),
    }
}
