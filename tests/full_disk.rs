//! A full disk: produce fails with KAFKA_STORAGE_ERROR, the broker stays up,
//! every acknowledged record stays readable, and producing resumes (at the
//! next offset, with no torn batch in between) once space is freed.
//!
//! The data directory is a small tmpfs mounted by the test, which needs root
//! (CI runs as root). Without the privilege the test fails, saying why.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Size of the filesystem the broker writes to.
const DISK_BYTES: usize = 3 * 1024 * 1024;
/// A file that takes part of the disk and is deleted to free space. The clean
/// stop after freeing it writes a few small files per partition (producer
/// state, recovery point, high watermark), each at least a tmpfs page, for
/// the 50 offsets partitions too: the space freed must hold them.
const FILLER_BYTES: usize = 1024 * 1024;
/// Each produced value (the batch is a little larger).
const VALUE_BYTES: usize = 16 * 1024;
/// Enough produces to fill the disk several times over.
const PRODUCES_MAX: usize = 1_000;

/// A tmpfs mounted for the test's lifetime.
struct SmallDisk {
    _parent: tempfile::TempDir,
    mount_point: PathBuf,
}

impl SmallDisk {
    fn mount() -> SmallDisk {
        let parent = tempfile::Builder::new().prefix("silt-disk-").tempdir().expect("create a mount point");
        let mount_point = parent.path().join("disk");
        std::fs::create_dir(&mount_point).expect("create the mount point");
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES}")]).arg("tmpfs").arg(&mount_point).status().expect("run mount");
        assert!(status.success(), "mounting a {DISK_BYTES}-byte tmpfs at {} failed ({status}): this test needs root", mount_point.display());
        SmallDisk { _parent: parent, mount_point }
    }

    fn path(&self) -> &Path {
        &self.mount_point
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount_point).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_and_loses_nothing_acknowledged() {
    let disk = SmallDisk::mount();
    let data_dir = disk.path().join("data");
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![0u8; FILLER_BYTES]).expect("write the filler file");
    let data_dir_text = data_dir.to_string_lossy().into_owned();
    let mut broker = Broker::start_with(&[("SILT_STORAGE__DATA_DIR", data_dir_text.as_str())]);
    let mut client = broker.client();
    let topic = unique_topic("full-disk");
    client.create_topic_ok(&topic, 1);

    let value = vec![b'x'; VALUE_BYTES];
    let mut acknowledged = 0i64;
    let mut refused = None;
    for _ in 0..PRODUCES_MAX {
        let response = client.produce(&topic, 0, plain_batch(&[&value]));
        if response.error_code != 0 {
            refused = Some(response.error_code);
            break;
        }
        assert_eq!(response.base_offset, acknowledged, "offsets are contiguous while there is space");
        acknowledged += 1;
    }
    let code = refused.unwrap_or_else(|| panic!("{PRODUCES_MAX} produces never filled a {DISK_BYTES}-byte disk"));
    assert_eq!(code, 56, "a full disk answers KAFKA_STORAGE_ERROR, got {}", code_name(code));
    assert!(acknowledged > 0, "some records fit before the disk filled");
    broker.assert_alive("the disk filled up");

    // Everything acknowledged is readable, and nothing else is there.
    let records = client.read_all(&topic, 0, 0);
    assert_eq!(records.len() as i64, acknowledged, "exactly the acknowledged records are in the log");
    assert!(records.iter().enumerate().all(|(i, r)| r.offset == i as i64), "offsets 0..{acknowledged} with no gap");

    // Free space: the next produce lands right after the last acknowledged record.
    std::fs::remove_file(&filler).expect("free space");
    let response = client.produce(&topic, 0, plain_batch(&[b"after"]));
    assert_eq!(response.error_code, 0, "produce after freeing space: {}", code_name(response.error_code));
    assert_eq!(response.base_offset, acknowledged, "no torn batch was left behind");

    // A clean stop and restart keep all of it.
    broker.restart();
    let mut client = broker.client();
    let records = client.read_all(&topic, 0, 0);
    assert_eq!(records.len() as i64, acknowledged + 1);
    broker.stop();
}
