//! Differential fuzz target: the zero-copy header reader must agree with
//! prost's full decode (via the presence-tracking mirror) on every input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|record: &[u8]| {
    if let Err(disagreement) = envelope_router::envelope::reference::compare(record) {
        panic!("{disagreement}");
    }
});
