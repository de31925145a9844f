//! The machine's limits a broker is measured against: loopback TCP
//! throughput (`silt perf tcp-loopback`) and sequential disk writes with and
//! without an fdatasync per block (`silt perf disk`).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;

const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;

#[derive(clap::Args, Debug, Clone)]
pub struct TcpArgs {
    /// Seconds to send for.
    #[arg(long, default_value_t = 3.0)]
    pub duration_s: f64,
    /// Bytes per write.
    #[arg(long, default_value_t = 1 << 20)]
    pub write_bytes: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DiskArgs {
    /// Directory to write a scratch file in (the data directory's disk).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Bytes to write.
    #[arg(long, default_value_t = 256 << 20)]
    pub total_bytes: u64,
    /// Bytes per write.
    #[arg(long, default_value_t = 1 << 20)]
    pub block_bytes: usize,
    /// fdatasync after every block.
    #[arg(long)]
    pub fdatasync: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A measured limit.
#[derive(Debug, Serialize)]
pub struct Limit {
    pub mode: &'static str,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub mib_per_s: f64,
}

impl Limit {
    fn new(mode: &'static str, bytes: u64, elapsed: Duration) -> Limit {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Limit { mode, bytes, elapsed_s: secs, mib_per_s: bytes as f64 / BYTES_PER_MIB / secs }
    }

    fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string(self).expect("a limit serialises"));
        } else {
            println!("{}: {} bytes in {:.2} s: {:.1} MiB/s", self.mode, self.bytes, self.elapsed_s, self.mib_per_s);
        }
    }
}

/// One TCP stream over loopback: a sender thread writes `write_bytes` blocks
/// for `duration_s`, this thread reads and discards them.
pub fn tcp_loopback(args: &TcpArgs) -> anyhow::Result<Limit> {
    if args.write_bytes == 0 {
        bail!("--write-bytes must be positive");
    }
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    let addr = listener.local_addr()?;
    let duration = Duration::from_secs_f64(args.duration_s.max(0.1));
    let write_bytes = args.write_bytes;
    let sender = std::thread::Builder::new().name("perf-tcp-sender".into()).spawn(move || -> std::io::Result<()> {
        let mut stream = TcpStream::connect(addr)?;
        let block = vec![0x5au8; write_bytes];
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            stream.write_all(&block)?;
        }
        Ok(())
    })?;
    let (mut stream, _) = listener.accept().context("accepting the loopback connection")?;
    let mut buf = vec![0u8; write_bytes];
    let started = Instant::now();
    let mut received = 0u64;
    loop {
        let n = stream.read(&mut buf).context("reading from loopback")?;
        if n == 0 {
            break;
        }
        received += n as u64;
    }
    let elapsed = started.elapsed();
    sender.join().map_err(|_| anyhow::anyhow!("the sender thread panicked"))?.context("sending over loopback")?;
    Ok(Limit::new("tcp-loopback", received, elapsed))
}

/// Sequential writes of `block_bytes` to a scratch file, optionally with an
/// fdatasync after each; the file is removed afterwards.
pub fn disk(args: &DiskArgs) -> anyhow::Result<Limit> {
    if args.block_bytes == 0 {
        bail!("--block-bytes must be positive");
    }
    let path = args.dir.join(format!(".silt-perf-disk-{}.tmp", std::process::id()));
    let mut file = OpenOptions::new().write(true).create_new(true).open(&path).with_context(|| format!("creating {}", path.display()))?;
    let block: Vec<u8> = (0..args.block_bytes).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    let mut written = 0u64;
    let result = (|| -> std::io::Result<()> {
        while written < args.total_bytes {
            file.write_all(&block)?;
            if args.fdatasync {
                file.sync_data()?;
            }
            written += block.len() as u64;
        }
        Ok(())
    })();
    let elapsed = started.elapsed();
    drop(file);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    result.with_context(|| format!("writing {}", path.display()))?;
    Ok(Limit::new(if args.fdatasync { "disk-write-fdatasync" } else { "disk-write" }, written, elapsed))
}

pub fn run_tcp(args: TcpArgs) -> anyhow::Result<()> {
    tcp_loopback(&args)?.print(args.json);
    Ok(())
}

pub fn run_disk(args: DiskArgs) -> anyhow::Result<()> {
    disk(&args)?.print(args.json);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_disk_measure_something() {
        let tcp = tcp_loopback(&TcpArgs { duration_s: 0.1, write_bytes: 64 << 10, json: false }).unwrap();
        assert!(tcp.bytes > 0 && tcp.mib_per_s > 0.0);
        let dir = tempfile::tempdir().unwrap();
        let disk = disk(&DiskArgs { dir: dir.path().into(), total_bytes: 1 << 20, block_bytes: 256 << 10, fdatasync: true, json: false }).unwrap();
        assert_eq!(disk.bytes, 1 << 20);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the scratch file is removed");
    }
}
