//! One segment of a partition log: a `<base offset, 20 digits>.log` file of
//! record batches, with a sparse offset index and time index.
//!
//! Invariants: batches in the file are whole, valid and in ascending offset
//! order starting at `base_offset`; `size` is the file's length; `next_offset`
//! is one past the last offset in the file (or `base_offset` when empty).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::{self, BatchHeader, HEADER_LEN};
use crate::error::{BatchError, LogError};
use crate::index::{OffsetIndex, TimeIndex};

/// The file name of the segment starting at `base_offset`, with `extension`.
pub fn file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// Parses a segment's base offset from a `.log` file name.
pub fn parse_base_offset(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// What a scan of the file found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanReport {
    pub batches: u64,
    /// Bytes cut off the end because they did not form a valid batch.
    pub truncated_bytes: u64,
}

#[derive(Debug)]
pub struct Segment {
    base_offset: i64,
    dir: PathBuf,
    file: File,
    size: u64,
    next_offset: i64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index_entry: u64,
    index_interval_bytes: u64,
    max_timestamp: i64,
    first_batch_timestamp: Option<i64>,
    unflushed_messages: u64,
}

impl Segment {
    fn path(&self, extension: &str) -> PathBuf {
        self.dir.join(file_name(self.base_offset, extension))
    }

    /// Creates a new empty segment file.
    pub fn create(dir: &Path, base_offset: i64, index_interval_bytes: u64) -> Result<Segment, LogError> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new().read(true).append(true).create_new(true).open(&path).map_err(LogError::io(&path))?;
        crate::checkpoint::sync_dir(dir)?;
        Ok(Segment::empty(dir, base_offset, file, index_interval_bytes))
    }

    fn empty(dir: &Path, base_offset: i64, file: File, index_interval_bytes: u64) -> Segment {
        Segment {
            base_offset,
            dir: dir.to_owned(),
            file,
            size: 0,
            next_offset: base_offset,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index_entry: 0,
            index_interval_bytes: index_interval_bytes.max(1),
            max_timestamp: -1,
            first_batch_timestamp: None,
            unflushed_messages: 0,
        }
    }

    /// Opens an existing segment. With `recover`, every batch is validated
    /// (CRC included) and the file is cut at the first invalid one: the tail a
    /// crash or torn write left behind. Without it, only headers are read.
    pub fn open(dir: &Path, base_offset: i64, index_interval_bytes: u64, recover: bool) -> Result<(Segment, ScanReport), LogError> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new().read(true).append(true).open(&path).map_err(LogError::io(&path))?;
        let mut segment = Segment::empty(dir, base_offset, file, index_interval_bytes);
        let report = segment.scan(recover, 0)?;
        Ok((segment, report))
    }

    /// Rebuilds the in-memory state (indexes, next offset, timestamps) from the file.
    fn scan(&mut self, recover: bool, start_position: u64) -> Result<ScanReport, LogError> {
        let path = self.path("log");
        let file_len = self.file.metadata().map_err(LogError::io(&path))?.len();
        let mut report = ScanReport::default();
        let mut position = start_position;
        let mut header_buf = [0u8; HEADER_LEN];
        let mut batch_buf = Vec::new();
        while position < file_len {
            let outcome = (|| -> Result<BatchHeader, String> {
                if file_len - position < HEADER_LEN as u64 {
                    return Err(format!("{} trailing bytes", file_len - position));
                }
                self.file.read_exact_at(&mut header_buf, position).map_err(|e| e.to_string())?;
                let header = BatchHeader::parse(&header_buf).map_err(|e| e.to_string())?;
                if position + header.total_len() as u64 > file_len {
                    return Err("batch runs past the end of the file".into());
                }
                if header.base_offset < self.next_offset || header.base_offset < self.base_offset {
                    return Err(format!("batch offset {} goes backwards", header.base_offset));
                }
                if recover {
                    batch_buf.resize(header.total_len(), 0);
                    self.file.read_exact_at(&mut batch_buf, position).map_err(|e| e.to_string())?;
                    batch::validate(&batch_buf).map_err(|e| e.to_string())?;
                }
                Ok(header)
            })();
            match outcome {
                Ok(header) => {
                    self.index_batch(&header, position as u32);
                    position += header.total_len() as u64;
                    self.next_offset = header.next_offset();
                    report.batches += 1;
                }
                Err(reason) if recover => {
                    tracing::warn!(segment = %path.display(), position, %reason, "truncating invalid log tail");
                    self.file.set_len(position).map_err(LogError::io(&path))?;
                    self.file.sync_all().map_err(LogError::io(&path))?;
                    report.truncated_bytes = file_len - position;
                    break;
                }
                Err(reason) => return Err(LogError::CorruptSegment { path, reason }),
            }
        }
        self.size = position;
        Ok(report)
    }

    /// Loads a sealed segment, using its index files when they are sane: only
    /// the batches after the last index entry are read. Otherwise the indexes
    /// are rebuilt from the batch headers.
    pub fn open_sealed(dir: &Path, base_offset: i64, index_interval_bytes: u64) -> Result<Segment, LogError> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new().read(true).append(true).open(&path).map_err(LogError::io(&path))?;
        let size = file.metadata().map_err(LogError::io(&path))?.len();
        let mut segment = Segment::empty(dir, base_offset, file, index_interval_bytes);
        let offset_index = OffsetIndex::read_from(&segment.path("index"), size);
        let time_index = TimeIndex::read_from(&segment.path("timeindex"));
        if let (Some(offset_index), Some(time_index)) = (offset_index, time_index) {
            if let (Some((_, last_position)), Some((max_timestamp, _))) = (offset_index.last(), time_index.last()) {
                segment.first_batch_timestamp = Some(segment.header_at(0)?.max_timestamp);
                segment.offset_index = offset_index;
                segment.time_index = time_index;
                segment.max_timestamp = max_timestamp;
                segment.next_offset = base_offset;
                segment.scan(false, u64::from(last_position))?;
                return Ok(segment);
            }
        }
        segment.scan(false, 0)?;
        Ok(segment)
    }

    fn index_batch(&mut self, header: &BatchHeader, position: u32) {
        let relative = (header.base_offset - self.base_offset) as u32;
        if self.offset_index.is_empty() || self.bytes_since_index_entry >= self.index_interval_bytes {
            self.offset_index.append(relative, position);
            self.time_index.append(self.max_timestamp.max(header.max_timestamp), relative);
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.total_len() as u64;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        if self.first_batch_timestamp.is_none() {
            self.first_batch_timestamp = Some(header.max_timestamp);
        }
    }

    /// Appends one stamped batch. The bytes are in the OS page cache when this
    /// returns (they survive a process crash); [`Segment::flush`] makes them durable.
    pub fn append(&mut self, header: &BatchHeader, bytes: &[u8]) -> Result<(), LogError> {
        assert!(header.base_offset >= self.next_offset, "appends must ascend");
        assert_eq!(header.total_len(), bytes.len(), "header and bytes disagree");
        let position = self.size;
        if let Err(source) = self.file.write_all(bytes) {
            // A short write (disk full) must not leave half a batch behind.
            let path = self.path("log");
            if let Err(cut) = self.file.set_len(position) {
                // The file no longer matches this segment's state. Panicking
                // hands the partition to its supervisor, which reopens the log
                // and cuts the torn tail during recovery.
                panic!("cannot cut a failed write from {}: {cut} (write failed: {source})", path.display());
            }
            return Err(LogError::Io { path, source });
        }
        self.index_batch(header, position as u32);
        self.size += bytes.len() as u64;
        self.next_offset = header.next_offset();
        self.unflushed_messages += header.record_count() as u64;
        Ok(())
    }

    /// Reads whole batches that contain offsets in `[start_offset, end_offset)`,
    /// up to `max_bytes` but always at least one batch.
    ///
    /// One read of up to `max_bytes` from the first batch, then the headers
    /// are walked in memory: a read costs two or three system calls however
    /// many batches it returns (a header read per batch made small batches
    /// the bottleneck of consuming).
    pub fn read(&self, start_offset: i64, end_offset: i64, max_bytes: usize) -> Result<Option<Bytes>, LogError> {
        let Some((start, first)) = self.locate(start_offset)? else { return Ok(None) };
        if first.base_offset >= end_offset {
            return Ok(None);
        }
        let wanted = (first.total_len() as u64).max(max_bytes as u64).min(self.size - start);
        let bytes = self.read_range(start, start + wanted)?;
        let mut end = first.total_len();
        while end < bytes.len() {
            let header = match BatchHeader::parse(&bytes[end..]) {
                Ok(header) => header,
                // Not even a whole header left within max_bytes.
                Err(BatchError::Truncated { .. }) => break,
                Err(e) => return Err(LogError::CorruptSegment { path: self.path("log"), reason: e.to_string() }),
            };
            if header.base_offset >= end_offset || end + header.total_len() > bytes.len() {
                break;
            }
            end += header.total_len();
        }
        Ok(Some(bytes.slice(..end)))
    }

    /// The position and header of the first batch whose last offset is >= `offset`.
    fn locate(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let relative = (offset.max(self.base_offset) - self.base_offset) as u32;
        let mut position = u64::from(self.offset_index.lookup(relative));
        while position < self.size {
            let header = self.header_at(position)?;
            if header.last_offset() >= offset {
                return Ok(Some((position, header)));
            }
            position += header.total_len() as u64;
        }
        Ok(None)
    }

    /// Calls `f` with the header of every batch whose last offset is >= `from_offset`.
    pub fn for_each_header(&self, from_offset: i64, mut f: impl FnMut(&BatchHeader)) -> Result<(), LogError> {
        let Some((mut position, _)) = self.locate(from_offset)? else { return Ok(()) };
        while position < self.size {
            let header = self.header_at(position)?;
            f(&header);
            position += header.total_len() as u64;
        }
        Ok(())
    }

    fn header_at(&self, position: u64) -> Result<BatchHeader, LogError> {
        let mut buf = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut buf, position).map_err(LogError::io(self.path("log")))?;
        BatchHeader::parse(&buf).map_err(|e| LogError::CorruptSegment { path: self.path("log"), reason: e.to_string() })
    }

    fn read_range(&self, start: u64, end: u64) -> Result<Bytes, LogError> {
        let len = usize::try_from(end - start).expect("a read range fits in memory");
        read_exact_at_uninit(&self.file, len, start).map(Bytes::from).map_err(LogError::io(self.path("log")))
    }

    /// The first batch whose max timestamp is >= `timestamp`, with its bytes.
    pub fn find_by_timestamp(&self, timestamp: i64) -> Result<Option<Bytes>, LogError> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        let relative = self.time_index.lookup(timestamp);
        let mut position = u64::from(self.offset_index.lookup(relative));
        while position < self.size {
            let header = self.header_at(position)?;
            let len = header.total_len() as u64;
            if header.max_timestamp >= timestamp {
                return self.read_range(position, position + len).map(Some);
            }
            position += len;
        }
        Ok(None)
    }

    /// The batch holding the segment's largest timestamp (ListOffsets MAX_TIMESTAMP).
    pub fn batch_with_max_timestamp(&self) -> Result<Option<Bytes>, LogError> {
        self.find_by_timestamp(self.max_timestamp)
    }

    /// Removes every batch whose base offset is >= `offset`. A batch that
    /// straddles `offset` is removed whole. Returns the new next offset.
    pub fn truncate_to(&mut self, offset: i64) -> Result<i64, LogError> {
        let path = self.path("log");
        let mut position = 0u64;
        let mut rebuilt = Segment::empty(&self.dir, self.base_offset, self.file.try_clone().map_err(LogError::io(&path))?, self.index_interval_bytes);
        while position < self.size {
            let header = self.header_at(position)?;
            if header.last_offset() >= offset {
                break;
            }
            rebuilt.index_batch(&header, position as u32);
            rebuilt.next_offset = header.next_offset();
            position += header.total_len() as u64;
        }
        self.file.set_len(position).map_err(LogError::io(&path))?;
        self.file.sync_all().map_err(LogError::io(&path))?;
        rebuilt.size = position;
        *self = rebuilt;
        Ok(self.next_offset)
    }

    /// fsyncs the log file.
    pub fn flush(&mut self) -> Result<(), LogError> {
        if self.unflushed_messages > 0 {
            self.file.sync_data().map_err(LogError::io(self.path("log")))?;
            self.unflushed_messages = 0;
        }
        Ok(())
    }

    /// Flushes the log and writes the index files (on roll and clean shutdown).
    pub fn seal(&mut self) -> Result<(), LogError> {
        self.flush()?;
        self.offset_index.write_to(&self.path("index"))?;
        self.time_index.write_to(&self.path("timeindex"))
    }

    /// Deletes the segment's files.
    pub fn delete(self) -> Result<(), LogError> {
        for ext in ["log", "index", "timeindex"] {
            let path = self.path(ext);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(LogError::Io { path, source }),
            }
        }
        Ok(())
    }

    /// The segment's `.log` file.
    pub fn log_path(&self) -> PathBuf {
        self.path("log")
    }
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    /// The largest record timestamp in the segment, -1 when empty.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    /// The first batch's timestamp, which `segment.ms` rolling is measured from.
    pub fn first_batch_timestamp(&self) -> Option<i64> {
        self.first_batch_timestamp
    }
    pub fn unflushed_messages(&self) -> u64 {
        self.unflushed_messages
    }

    /// A second handle on the `.log` file, to fsync it without holding the segment.
    pub fn sync_handle(&self) -> Result<File, LogError> {
        self.file.try_clone().map_err(LogError::io(self.path("log")))
    }

    /// Records that an fsync through [`Segment::sync_handle`] made `messages` more records durable.
    pub fn mark_flushed(&mut self, messages: u64) {
        self.unflushed_messages = self.unflushed_messages.saturating_sub(messages);
    }
}

/// Reads exactly `len` bytes at `offset` into a new buffer without zeroing it
/// first: zeroing a fetch's buffer cost as much CPU as the read itself.
#[allow(unsafe_code, reason = "pread into spare capacity avoids zeroing a buffer the kernel overwrites")]
fn read_exact_at_uninit(file: &File, len: usize, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let filled = buf.len();
        let at = libc::off_t::try_from(offset + filled as u64).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: the pointer and length describe the vector's spare capacity,
        // which pread only writes to; `set_len` then covers exactly the bytes
        // the kernel reported as written.
        let n = unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().add(filled).cast(), len - filled, at) };
        match n {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // SAFETY: see above; n <= len - filled.
            n => unsafe { buf.set_len(filled + n as usize) },
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::make_batch;
    use kafka_protocol::records::Compression;

    fn append_n(segment: &mut Segment, batches: usize, per_batch: usize) {
        for _ in 0..batches {
            let raw = make_batch(per_batch, 1000 + segment.next_offset(), Compression::None);
            let stamped = batch::stamp(&raw, segment.next_offset(), 0, None);
            let header = batch::validate(&stamped).unwrap();
            segment.append(&header, &stamped).unwrap();
        }
    }

    #[test]
    fn reads_back_from_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 0, 256).unwrap();
        append_n(&mut segment, 50, 4);
        assert_eq!(segment.next_offset(), 200);
        let bytes = segment.read(77, i64::MAX, 1).unwrap().unwrap();
        let header = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(header.base_offset, 76, "the batch containing offset 77");
        assert_eq!(bytes.len(), header.total_len(), "max_bytes 1 still returns one whole batch");
        assert!(segment.read(200, i64::MAX, 1 << 20).unwrap().is_none());
        let until = segment.read(0, 8, 1 << 20).unwrap().unwrap();
        assert_eq!(batch::split_validated(&until, 1 << 20).unwrap().len(), 2, "stops at the end offset");
        let batch_len = bytes.len();
        let budget = segment.read(0, i64::MAX, batch_len * 5 / 2).unwrap().unwrap();
        assert_eq!(budget.len(), 2 * batch_len, "only whole batches within max_bytes");
        let tail = segment.read(196, i64::MAX, 1 << 20).unwrap().unwrap();
        assert_eq!(BatchHeader::parse(&tail).unwrap().base_offset, 196, "reads stop at the end of the file");
        assert_eq!(tail.len(), batch_len);
    }

    #[test]
    fn recovers_from_a_torn_tail_and_keeps_whole_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 0, 4096).unwrap();
        append_n(&mut segment, 10, 3);
        let good_size = segment.size();
        drop(segment);
        let path = dir.path().join(file_name(0, "log"));
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[0xab; 40]).unwrap();
        drop(file);
        let (segment, report) = Segment::open(dir.path(), 0, 4096, true).unwrap();
        assert_eq!(report.truncated_bytes, 40);
        assert_eq!(segment.size(), good_size);
        assert_eq!(segment.next_offset(), 30);
        assert!(Segment::open(dir.path(), 0, 4096, true).unwrap().1.truncated_bytes == 0);
    }

    #[test]
    fn truncation_removes_whole_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 100, 64).unwrap();
        append_n(&mut segment, 10, 5);
        assert_eq!(segment.truncate_to(112).unwrap(), 110);
        assert_eq!(segment.next_offset(), 110);
        append_n(&mut segment, 1, 5);
        assert_eq!(segment.next_offset(), 115);
        let (reopened, report) = Segment::open(dir.path(), 100, 64, true).unwrap();
        assert_eq!((reopened.next_offset(), report.truncated_bytes), (115, 0));
    }

    #[test]
    fn finds_batches_by_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 0, 128).unwrap();
        append_n(&mut segment, 20, 2); // batch at offset o has timestamps 1000+o, 1000+o+1
        let bytes = segment.find_by_timestamp(1021).unwrap().unwrap();
        assert_eq!(BatchHeader::parse(&bytes).unwrap().base_offset, 20);
        assert!(segment.find_by_timestamp(5000).unwrap().is_none());
        segment.seal().unwrap();
        let sealed = Segment::open_sealed(dir.path(), 0, 128).unwrap();
        assert_eq!(sealed.max_timestamp(), 1039);
    }

    #[test]
    fn names_parse_back() {
        assert_eq!(parse_base_offset(&file_name(12345, "log")), Some(12345));
        assert_eq!(parse_base_offset("123.log"), None);
        assert_eq!(parse_base_offset(&file_name(1, "index")), None);
    }
}
