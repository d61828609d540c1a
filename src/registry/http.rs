//! Client for the Confluent Schema Registry REST API:
//! `GET /schemas/ids/{id}` (does the id exist) and, for the subject check,
//! `GET /schemas/ids/{id}/versions` (which subjects use it).

use super::RegistryError;
use crate::config::RegistryConfig;
use crate::pipeline::schema::SchemaInfo;
use serde::Deserialize;

/// A registry reached over HTTP(S).
pub struct HttpRegistry {
    client: reqwest::Client,
    base: String,
    auth: Option<(String, Option<String>)>,
    with_subjects: bool,
}

/// Confluent's error code for an unknown schema id.
const SCHEMA_NOT_FOUND: u32 = 40403;
/// Confluent's error code for an unknown subject.
const SUBJECT_NOT_FOUND: u32 = 40401;

#[derive(Deserialize)]
struct ErrorBody {
    error_code: u32,
}

/// The `error_code` of a Confluent error body, if the body is one.
fn not_found_code(body: &[u8]) -> Option<u32> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|e| e.error_code)
}

#[derive(Deserialize)]
struct SubjectVersion {
    subject: String,
}

impl HttpRegistry {
    /// A client for `url`; `with_subjects` also fetches the id's subjects.
    pub fn new(url: &str, cfg: &RegistryConfig, with_subjects: bool) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()?;
        Ok(HttpRegistry {
            client,
            base: url.trim_end_matches('/').to_owned(),
            auth: cfg.username.clone().map(|u| (u, cfg.password.clone())),
            with_subjects,
        })
    }

    async fn get(&self, path: &str) -> Result<Option<bytes::Bytes>, RegistryError> {
        let mut req = self.client.get(format!("{}{path}", self.base)).header(
            "accept",
            "application/vnd.schemaregistry.v1+json, application/json",
        );
        if let Some((user, pass)) = &self.auth {
            req = req.basic_auth(user, pass.as_ref());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| RegistryError::Unreachable(e.to_string()))?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return match not_found_code(&body) {
                // The registry's own verdict: no such schema (or subject).
                Some(SCHEMA_NOT_FOUND | SUBJECT_NOT_FOUND) => Ok(None),
                // A gateway, a wrong base path, a proxy: not a verdict.
                _ => {
                    let url = format!("{}{path}", self.base);
                    let body = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                    tracing::error!(%url, %body, "the schema registry URL answered 404 without a Confluent not-found error code (40403/40401): treated as an outage, records wait; is schema.registry.url right?");
                    Err(RegistryError::Status {
                        status: 404,
                        body: format!("{url}: {body}"),
                    })
                }
            };
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            });
        }
        Ok(Some(body))
    }

    /// `Ok(None)` when the registry answers 404.
    pub async fn fetch(&self, id: u32) -> Result<Option<SchemaInfo>, RegistryError> {
        if self.get(&format!("/schemas/ids/{id}")).await?.is_none() {
            return Ok(None);
        }
        if !self.with_subjects {
            return Ok(Some(SchemaInfo { subjects: vec![] }));
        }
        let Some(body) = self.get(&format!("/schemas/ids/{id}/versions")).await? else {
            // Existed a moment ago; a 404 here is a registry inconsistency, not a verdict.
            return Err(RegistryError::Status {
                status: 404,
                body: format!("/schemas/ids/{id}/versions not found though the id exists"),
            });
        };
        let versions: Vec<SubjectVersion> =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Decode(e.to_string()))?;
        Ok(Some(SchemaInfo {
            subjects: versions.into_iter().map(|v| v.subject).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_confluent_not_found_codes_are_verdicts() {
        assert_eq!(
            not_found_code(br#"{"error_code":40403,"message":"Schema not found"}"#),
            Some(SCHEMA_NOT_FOUND)
        );
        assert_eq!(
            not_found_code(br#"{"error_code":40401,"message":"Subject not found"}"#),
            Some(SUBJECT_NOT_FOUND)
        );
        assert_eq!(not_found_code(b"<html>404 Not Found</html>"), None);
        assert_eq!(not_found_code(b""), None);
        assert_eq!(not_found_code(br#"{"error_code":50001}"#), Some(50001));
    }
}
