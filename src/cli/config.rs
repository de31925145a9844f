//! `silt config check`: loads a broker configuration with the broker's own
//! loader and validation (file, then `SILT_*` environment), without starting
//! anything. Deployment files are tested with it.

use std::path::PathBuf;

use clap::Subcommand;

use super::CliError;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check that a configuration file (plus the SILT_* environment) is valid,
    /// and print the main settings. Exit code 2 and the key at fault if not.
    Check {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

pub fn run(command: ConfigCommand) -> Result<(), CliError> {
    let ConfigCommand::Check { config: path } = command;
    let config = silt::config::Config::load(Some(&path))?;
    println!("{}: valid", path.display());
    println!("kafka.listen      {}", config.kafka.listen);
    println!("http.listen       {}", config.http.listen);
    println!("storage.data_dir  {}", config.storage.data_dir.display());
    Ok(())
}
