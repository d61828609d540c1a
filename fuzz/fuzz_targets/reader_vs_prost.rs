//! Differential fuzz target: the zero-copy header reader must agree with
//! prost's full decode (via the presence-tracking mirror) on every input,
//! and the message-id peek must never read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|record: &[u8]| {
    // The dedup prefetch hint reads raw bytes too: it must stay in bounds.
    let _ = envelope_router::envelope::EnvelopeView::peek_message_id(record);
    if let Err(disagreement) = envelope_router::envelope::reference::compare(record) {
        panic!("{disagreement}");
    }
});
