//! A file-backed registry: schema ids and their subjects in YAML, for the
//! embedded demo and tests.
//!
//! ```yaml
//! schemas:
//!   1: { subjects: [telemetry_match_event-v1] }
//!   2: {}            # registered, no subject check possible
//! ```

use crate::pipeline::schema::SchemaInfo;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSchemas {
    schemas: HashMap<u32, FileSchema>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSchema {
    #[serde(default)]
    subjects: Vec<String>,
}

/// Schema ids loaded from a YAML file.
pub struct FileRegistry {
    schemas: HashMap<u32, SchemaInfo>,
}

impl FileRegistry {
    /// Loads the file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read schema file {}: {e}", path.display()))?;
        Self::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses registry YAML.
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let parsed: FileSchemas = serde_saphyr::from_str(text)?;
        Ok(FileRegistry {
            schemas: parsed
                .schemas
                .into_iter()
                .map(|(id, s)| {
                    (
                        id,
                        SchemaInfo {
                            subjects: s.subjects,
                        },
                    )
                })
                .collect(),
        })
    }

    /// The verdict for an id.
    pub fn get(&self, id: u32) -> Option<SchemaInfo> {
        self.schemas.get(&id).cloned()
    }
}
