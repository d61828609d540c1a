//! The stream every benchmark's records belong to, so the header-read and
//! per-record-core figures are about the same header. Needs no feature.

use envelope_router::envelope::HeaderBuilder;

/// `prod.glutton.1234.telemetry_match_event-v1`, schema id 42.
pub fn stream() -> HeaderBuilder {
    HeaderBuilder::new()
        .env("prod")
        .source("glutton")
        .title("1234")
        .category("telemetry_match_event")
        .version(1)
        .schema_id(42)
}
