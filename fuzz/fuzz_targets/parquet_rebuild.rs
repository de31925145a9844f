//! Parquet-to-batch rebuilding: an archived segment file read back as the
//! archive reads it (`reader::load_footer`, then `reader::load_row_group` and
//! `format::rebuild_batches` per row group). Every rebuilt batch must be a
//! valid batch. Panics inside the Parquet decoder are contained by the reader
//! (they become `ArchiveError::DecoderPanicked`); any other panic is a crash.
//! Seeds: files a broker archived from real traffic (`fuzz/seed`).
#![no_main]

use std::cell::RefCell;
use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use object_store::path::Path;
use silt_tiering::archive::{format, reader};
use silt_tiering::batch;

thread_local! {
    /// The last panic's message: the hook stays quiet for panics the reader
    /// contains, and this is printed for one that escapes.
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

fuzz_target!(
    init: {
        // SILT_FUZZ_SHOW_CONTAINED=1 prints contained panics too (to find inputs
        // that reach them: run the binary over a corpus with -runs=0).
        let show = std::env::var_os("SILT_FUZZ_SHOW_CONTAINED").is_some();
        std::panic::set_hook(Box::new(move |info| {
            if show {
                eprintln!("contained panic: {info}");
            }
            LAST_PANIC.with(|p| *p.borrow_mut() = info.to_string());
        }));
    },
    |data: &[u8]| {
        if std::panic::catch_unwind(|| rebuild(data)).is_err() {
            eprintln!("a panic escaped the archive reader: {}", LAST_PANIC.with(|p| p.borrow().clone()));
            std::process::abort();
        }
    }
);

fn rebuild(data: &[u8]) {
    let path = Path::from("topic=fuzz/partition=0/00000000000000000000-00000000000000000000.parquet");
    futures::executor::block_on(async {
        let Ok(metadata) = reader::load_footer(&mut Cursor::new(data.to_vec()), &path, data.len() as u64).await else { return };
        for group in 0..metadata.metadata().num_row_groups() {
            let Ok(rows) = reader::load_row_group(Cursor::new(data.to_vec()), metadata.clone(), group, &path).await else { continue };
            let Ok(rebuilt) = format::rebuild_batches(&rows) else { continue };
            for b in &rebuilt {
                let header = batch::validate(&b.bytes).expect("a rebuilt batch is valid");
                assert_eq!((header.base_offset, header.next_offset()), (b.base_offset, b.next_offset));
                batch::decode_records(&b.bytes).expect("a rebuilt batch decodes");
            }
        }
    });
}
