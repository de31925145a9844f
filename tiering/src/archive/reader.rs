//! Reading archived files back: Parquet's async reader over byte ranges of
//! one archived object whose size the manifest already knows (so no HEAD
//! request), and the two steps every read takes, for any reader: the footer
//! ([`load_footer`]) and one row group's rows ([`load_row_group`]).
//!
//! An archived file is input like any other: a damaged or hostile one gets an
//! error, never a panic. The footer's column chunks must lie inside the file
//! before any page is read, and a panic inside the Parquet decoder (it has
//! panicked on corrupt definition levels, in arrow-buffer) is caught and
//! becomes [`ArchiveError::DecoderPanicked`] for that read. This needs the
//! unwinding panic strategy, which every Silt profile uses.

use std::any::Any;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::error::ArchiveError;

/// Bytes read from the end of a file at once for its footer: one request
/// covers the footer of a typical archive file.
pub(crate) const FOOTER_PREFETCH_BYTES: usize = 64 << 10;

pub(crate) struct ObjectFileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl ObjectFileReader {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64) -> ObjectFileReader {
        ObjectFileReader { store, path, size }
    }
}

/// Store errors travel through Parquet whole, so that the archive can tell a
/// missing object from an unreachable store by type ([`read_error`]).
fn to_parquet(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectFileReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.store.get_range(&self.path, range).await.map_err(to_parquet) }.boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(to_parquet) }.boxed()
    }

    fn get_metadata<'a>(&'a mut self, options: Option<&'a ArrowReaderOptions>) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(FOOTER_PREFETCH_BYTES))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// Loads the footer of the archived file `path`, `size` bytes long, and
/// checks that every column chunk it lists lies inside the file.
pub async fn load_footer<R: AsyncFileReader>(reader: &mut R, path: &Path, size: u64) -> Result<ArrowReaderMetadata, ArchiveError> {
    let load = AssertUnwindSafe(ArrowReaderMetadata::load_async(reader, ArrowReaderOptions::new())).catch_unwind().await;
    let metadata = contained(path, load)?.map_err(|e| read_error(path, e))?;
    check_footer(metadata.metadata(), size).map_err(|reason| ArchiveError::CorruptFile { path: path.to_string(), reason })?;
    Ok(metadata)
}

/// Decodes the rows of row group `index` of the archived file `path`, whose
/// footer [`load_footer`] loaded.
pub async fn load_row_group<R: AsyncFileReader + Unpin + Send + 'static>(
    reader: R,
    metadata: ArrowReaderMetadata,
    index: usize,
    path: &Path,
) -> Result<Vec<RecordBatch>, ArchiveError> {
    if index >= metadata.metadata().num_row_groups() {
        return Err(ArchiveError::CorruptFile { path: path.to_string(), reason: format!("row group {index} is not in the file") });
    }
    let read = async move {
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata).with_row_groups(vec![index]).build()?;
        stream.try_collect::<Vec<_>>().await
    };
    let read = AssertUnwindSafe(read).catch_unwind().await;
    contained(path, read)?.map_err(|e| read_error(path, e))
}

/// Refuses a footer whose column chunks do not lie inside the file: a
/// negative offset or length, or one past the end. The Parquet reader would
/// assert on the first and ask the store for a range that is not there.
fn check_footer(metadata: &ParquetMetaData, size: u64) -> Result<(), String> {
    for (g, group) in metadata.row_groups().iter().enumerate() {
        if group.num_rows() < 0 {
            return Err(format!("row group {g} has {} rows", group.num_rows()));
        }
        for (c, column) in group.columns().iter().enumerate() {
            let data = column.data_page_offset();
            let start = column.dictionary_page_offset().unwrap_or(data);
            let length = column.compressed_size();
            let (Ok(start), Ok(data), Ok(length)) = (u64::try_from(start), u64::try_from(data), u64::try_from(length)) else {
                return Err(format!("row group {g} column {c} has a negative offset or length (starts at {start}, data at {data}, {length} bytes)"));
            };
            let inside = start.checked_add(length).is_some_and(|end| end <= size && start <= data && data < end);
            if !inside {
                return Err(format!("row group {g} column {c} ({start}+{length}, data at {data}) does not lie inside the file's {size} bytes"));
            }
        }
    }
    Ok(())
}

/// The result of a read that may have panicked inside the Parquet decoder.
fn contained<T>(path: &Path, result: std::thread::Result<T>) -> Result<T, ArchiveError> {
    result.map_err(|payload| ArchiveError::DecoderPanicked { path: path.to_string(), reason: panic_message(payload.as_ref()) })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(message), _) => (*message).to_owned(),
        (_, Some(message)) => message.clone(),
        _ => "a panic without a message".to_owned(),
    }
}

/// A failed read of an archived file: the store's own error when the reader
/// passed one up (a missing object, an unreachable store), otherwise the file
/// itself is unreadable.
fn read_error(path: &Path, e: ParquetError) -> ArchiveError {
    match e {
        ParquetError::External(source) => match source.downcast::<object_store::Error>() {
            Ok(store) => ArchiveError::store(path)(*store),
            Err(source) => ArchiveError::Unreadable { path: path.to_string(), source: ParquetError::External(source) },
        },
        source => ArchiveError::Unreadable { path: path.to_string(), source },
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use kafka_protocol::records::Compression;
    use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaDataWriter};

    use super::*;
    use crate::archive::format::{encode_segment, rebuild_batches, EncodeOptions};
    use crate::batch::tests::make_batch;

    fn path() -> Path {
        Path::from("topic=t/partition=0/00000000000000000000-00000000000000000009.parquet")
    }

    fn file() -> Bytes {
        encode_segment(&make_batch(10, 1_000, Compression::None), "t", 0, &EncodeOptions::default()).unwrap().parquet
    }

    /// `file` with every column chunk of its footer rewritten by `f`; the pages stay as they are.
    fn with_footer(file: &Bytes, f: impl Fn(ColumnChunkMetaData) -> ColumnChunkMetaData) -> Vec<u8> {
        let metadata = ParquetMetaDataReader::new().parse_and_finish(file).unwrap();
        let footer_len = u32::from_le_bytes(file[file.len() - 8..file.len() - 4].try_into().unwrap()) as usize;
        let mut out = file[..file.len() - 8 - footer_len].to_vec();
        let mut builder = metadata.into_builder();
        let groups = builder
            .take_row_groups()
            .into_iter()
            .map(|g| {
                let columns = g.columns().iter().cloned().map(&f).collect();
                g.into_builder().set_column_metadata(columns).build().unwrap()
            })
            .collect();
        ParquetMetaDataWriter::new(&mut out, &builder.set_row_groups(groups).build()).finish().unwrap();
        out
    }

    fn load(bytes: &[u8]) -> Result<ArrowReaderMetadata, ArchiveError> {
        futures::executor::block_on(load_footer(&mut Cursor::new(bytes.to_vec()), &path(), bytes.len() as u64))
    }

    fn corrupt(bytes: &[u8]) -> String {
        match load(bytes) {
            Err(ArchiveError::CorruptFile { reason, .. }) => reason,
            other => panic!("a footer pointing outside the file was accepted: {other:?}"),
        }
    }

    #[test]
    fn a_real_file_reads_back_through_footer_and_row_group() {
        let file = file();
        let metadata = load(&file).unwrap();
        let rows = futures::executor::block_on(load_row_group(Cursor::new(file.to_vec()), metadata, 0, &path())).unwrap();
        let rebuilt = rebuild_batches(&rows).unwrap();
        assert_eq!((rebuilt.len(), rebuilt[0].next_offset), (1, 10));
        let unchanged = with_footer(&file, |c| c);
        assert!(load(&unchanged).is_ok(), "rewriting the footer as it is keeps the file readable");
    }

    #[test]
    fn negative_footer_offsets_and_lengths_are_refused() {
        let file = file();
        let negative_offset = with_footer(&file, |c| c.into_builder().set_data_page_offset(-4).set_dictionary_page_offset(None).build().unwrap());
        assert!(corrupt(&negative_offset).contains("negative"));
        let negative_dictionary = with_footer(&file, |c| c.into_builder().set_dictionary_page_offset(Some(-1)).build().unwrap());
        assert!(corrupt(&negative_dictionary).contains("negative"));
        let negative_length = with_footer(&file, |c| c.into_builder().set_total_compressed_size(-100).build().unwrap());
        assert!(corrupt(&negative_length).contains("negative"));
        let past_the_end = with_footer(&file, |c| c.into_builder().set_total_compressed_size(1 << 40).build().unwrap());
        assert!(corrupt(&past_the_end).contains("does not lie inside"));
    }

    #[test]
    fn a_missing_row_group_or_a_damaged_file_is_an_error() {
        let file = file();
        let metadata = load(&file).unwrap();
        let missing = futures::executor::block_on(load_row_group(Cursor::new(file.to_vec()), metadata, 1, &path()));
        assert!(matches!(missing, Err(ArchiveError::CorruptFile { .. })), "{missing:?}");
        assert!(matches!(load(&file[..file.len() / 2]), Err(ArchiveError::Unreadable { .. })));
        assert!(matches!(load(b"PAR1"), Err(ArchiveError::Unreadable { .. })));
    }

    /// Files the parquet_rebuild fuzz target generated (fuzz/fuzz_targets/
    /// parquet_rebuild.rs, from archived seeds) on which the Parquet decoder
    /// panics: each must be an error for the read, never a panic.
    #[test]
    fn corrupt_files_that_panic_the_parquet_decoder_are_errors() {
        let cases: [(&[u8], &str); 3] = [
            (include_bytes!("testdata/def-levels-out-of-bounds.parquet"), "offset + len out of bounds"),
            (include_bytes!("testdata/byte-array-divide-by-zero.parquet"), "divide by zero"),
            (include_bytes!("testdata/dictionary-decoder-unset.parquet"), "Decoder for dict should have been set"),
        ];
        for (file, message) in cases {
            let metadata = load(file).unwrap();
            let read = futures::executor::block_on(load_row_group(Cursor::new(file.to_vec()), metadata, 0, &path()));
            assert!(matches!(&read, Err(ArchiveError::DecoderPanicked { reason, .. }) if reason.contains(message)), "{message}: {read:?}");
        }
    }

    /// A file whose footer makes the Parquet crate's Thrift decoder skip for
    /// seconds (`skip_till_depth`): the 30-minute parquet_rebuild run
    /// reported it as a libFuzzer timeout. The read still ends, with an error.
    #[test]
    fn a_footer_that_keeps_the_thrift_decoder_skipping_still_ends_in_an_error() {
        let file = include_bytes!("testdata/thrift-skip-slow.parquet");
        let read = load(file).and_then(|metadata| {
            (0..metadata.metadata().num_row_groups())
                .map(|i| futures::executor::block_on(load_row_group(Cursor::new(file.to_vec()), metadata.clone(), i, &path())))
                .collect::<Result<Vec<_>, _>>()
        });
        assert!(matches!(&read, Err(ArchiveError::Unreadable { source, .. }) if source.to_string().contains("file_offset is missing")), "{read:?}");
    }

    #[test]
    fn a_panic_in_the_decoder_becomes_an_error_for_that_read() {
        let read = futures::executor::block_on(AssertUnwindSafe(async { panic!("index out of bounds") }).catch_unwind());
        let error = contained::<()>(&path(), read).unwrap_err();
        assert!(matches!(&error, ArchiveError::DecoderPanicked { reason, .. } if reason == "index out of bounds"), "{error:?}");
    }
}
