//! The `silt` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(name = "silt", version, about = "A streaming platform that speaks the Apache Kafka protocol")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker. Configuration: the file (optional), then SILT_* environment
    /// variables (e.g. SILT_STORAGE__DATA_DIR=/var/lib/silt), then built-in defaults.
    Broker {
        /// A TOML configuration file, e.g. config/silt.toml.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Stream archived records of a topic to stdout (JSON lines) or into
    /// another topic, straight from the archive.
    Replay(silt::replay::ReplayArgs),
    #[command(flatten)]
    Ops(cli::Command),
    /// Measure a Kafka broker (Silt or any other) and this machine's limits.
    Perf {
        #[command(subcommand)]
        command: silt::perf::PerfCommand,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // openraft logs every vote and state change at info: a line per step of
        // each metadata-quorum election. Its warnings and errors still show.
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,openraft=warn".into()))
        // A log line that cannot be written (stderr's reader went away: EPIPE) is
        // dropped. By default tracing reports it with eprintln!, which panics on the
        // same broken pipe and took the broker down (tests/test_log_sink.py).
        .log_internal_errors(false)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Replay(args) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("silt replay: cannot start a runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(silt::replay::run(args)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("silt replay: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ops(command) => cli::run(command),
        Command::Perf { command } => match silt::perf::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("silt perf: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Broker { config } => {
            let config = match silt::config::Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("silt: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            let system = actix_rt::System::with_tokio_rt(move || {
                tokio::runtime::Builder::new_multi_thread().worker_threads(threads).thread_name("silt-io").enable_all().build().expect("tokio runtime")
            });
            match system.block_on(silt::broker::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("silt: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
