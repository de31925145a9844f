//! The archive manifest parser (`Manifest::from_json`, what the archive runs
//! on every `manifest.json` it loads) and what the archive then does with the
//! manifest it accepted. Seeds: manifests written by a broker archiving real
//! traffic (`fuzz/seed`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use silt_tiering::archive::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = Manifest::from_json(data) else { return };
    let _ = (manifest.start_offset(), manifest.end_offset(), manifest.size_bytes());
    for s in &manifest.segments {
        let _ = (manifest.find(s.base_offset), manifest.segment_bytes_from(s.base_offset), s.next_offset());
    }
    let again = Manifest::from_json(&manifest.to_json()).expect("an accepted manifest round-trips");
    assert_eq!(again, manifest);
    let mut advanced = manifest.clone();
    if let Some(end) = manifest.end_offset() {
        let dropped = advanced.advance_start(end);
        assert_eq!(dropped.len() + advanced.segments.len(), manifest.segments.len());
    }
});
