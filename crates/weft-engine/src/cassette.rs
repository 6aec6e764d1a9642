//! Recorded exchanges ("cassettes") of a connector without a simulator: what `weft spec record`
//! saved of a real read, replayed by `weft spec test` through the engine, offline.
//!
//! A cassette holds, for one list read of one resource, every HTTP exchange with the API's
//! hosts in order, as the provider answered: the status, the headers a reader acts on (paging
//! links, rate limits, content type; never a cookie or an authorization) and the body. Nothing
//! secret or personal is kept: requests keep only their method, host name and target (never
//! their headers or credentials); a string anywhere in a body that holds one of the
//! connection's secrets becomes `[redacted]`; and the values of fields that name a person's
//! data (e-mail, phone, names of people, addresses, birth dates, tax and bank numbers) are
//! replaced by placeholders of the same kind, so a spec's field rules still see a string where a
//! string was. The real base URLs are written as `{{host:NAME}}`, so paging URLs replay against
//! any address.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The version of the cassette format this engine writes and reads.
pub const FORMAT: u32 = 1;

/// What replaces a secret found in a body.
pub const REDACTED: &str = "[redacted]";

/// One recorded read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cassette {
    /// [`FORMAT`] when written.
    pub format: u32,
    /// The connector's id.
    pub connector: String,
    /// The resource read.
    pub resource: String,
    /// The parameters the read was given.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The tenant the read addressed, when the connector has tenants.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The cursor the read started from (`--since`), as sent.
    #[serde(default)]
    pub cursor: Option<String>,
    /// How many records the read gave.
    pub records: u64,
    /// The exchanges, in the order they were made.
    pub exchanges: Vec<Exchange>,
}

/// One request and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    /// `GET`, `POST`, …
    pub method: String,
    /// The spec's host name the request went to (`api`).
    pub host: String,
    /// Path and query, as sent.
    pub target: String,
    /// The request body, redacted (a search body, for instance), when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The answer's status.
    pub status: u16,
    /// The answer's headers a reader acts on, names lowercased.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The answer's body, redacted, with `{{host:NAME}}` for the real base URLs.
    pub body: String,
}

/// Why a cassette cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CassetteError {
    /// The file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a cassette.
    #[error(
        "{path} is not a cassette this Weft wrote ({reason}); record it again with `weft spec record CONNECTION RESOURCE`"
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Written by a newer Weft.
    #[error(
        "{path} is cassette format {found}, newer than this Weft reads ({FORMAT}); update Weft or record it again"
    )]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its format.
        found: u32,
    },
}

impl Cassette {
    /// Reads a cassette file.
    pub fn load(path: &Path) -> Result<Self, CassetteError> {
        let text = std::fs::read_to_string(path).map_err(|source| CassetteError::Io {
            path: path.to_owned(),
            source,
        })?;
        let c: Cassette = serde_json::from_str(&text).map_err(|e| CassetteError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if c.format > FORMAT {
            return Err(CassetteError::Newer {
                path: path.to_owned(),
                found: c.format,
            });
        }
        Ok(c)
    }

    /// Writes it, pretty-printed (cassettes are reviewed in diffs).
    pub fn save(&self, path: &Path) -> Result<(), CassetteError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| CassetteError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        crate::files::write_atomic(path, format!("{text}\n").as_bytes(), false).map_err(|source| {
            CassetteError::Io {
                path: path.to_owned(),
                source,
            }
        })
    }
}

/// The answer headers kept: those a reader acts on.
pub fn kept_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "content-type" | "link" | "retry-after" | "location"
    ) || name.contains("ratelimit")
        || name.contains("rate-limit")
        || name.starts_with("x-total")
        || name.starts_with("x-page")
        || name.starts_with("x-next")
}

/// Whether a field's name says it holds a person's data.
pub fn is_personal(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    const PARTS: [&str; 16] = [
        "email",
        "phone",
        "mobile",
        "fax",
        "firstname",
        "lastname",
        "fullname",
        "displayname",
        "address",
        "street",
        "postcode",
        "postalcode",
        "zipcode",
        "birth",
        "taxnumber",
        "bankaccount",
    ];
    PARTS.iter().any(|p| k.contains(p)) || k == "ssn" || k == "iban"
}

/// The placeholder for a personal value: same JSON kind, no content.
fn placeholder(key: &str, value: &Value, n: &mut u64) -> Value {
    match value {
        Value::String(s) if s.is_empty() => value.clone(),
        Value::String(_) => {
            *n += 1;
            let k = key.to_ascii_lowercase();
            if k.contains("email") {
                Value::String(format!("person{n}@example.com"))
            } else {
                Value::String(format!("redacted {n}"))
            }
        }
        Value::Number(_) => Value::from(0),
        Value::Array(items) => Value::Array(items.iter().map(|v| placeholder(key, v, n)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), placeholder(k, v, n)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Redacts a JSON value in place: personal fields replaced by placeholders, any string holding
/// one of `secrets` by [`REDACTED`].
pub fn redact(value: &mut Value, secrets: &[String]) {
    let mut n = 0;
    redact_in(value, secrets, &mut n);
}

fn redact_in(value: &mut Value, secrets: &[String], n: &mut u64) {
    match value {
        Value::String(s)
            if secrets
                .iter()
                .any(|x| !x.is_empty() && s.contains(x.as_str())) =>
        {
            *s = REDACTED.to_owned();
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_in(v, secrets, n)),
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_personal(k) {
                    *v = placeholder(k, v, n);
                } else {
                    redact_in(v, secrets, n);
                }
            }
        }
        _ => {}
    }
}

/// A body as kept: JSON redacted ([`redact`]); anything else with the secrets cut out. Base
/// URLs (`(name, url)`) become `{{host:NAME}}`.
pub fn keep_body(body: &str, secrets: &[String], bases: &[(String, String)]) -> String {
    let mut text = match serde_json::from_str::<Value>(body) {
        Ok(mut v) => {
            redact(&mut v, secrets);
            v.to_string()
        }
        Err(_) => {
            let mut t = body.to_owned();
            for s in secrets.iter().filter(|s| !s.is_empty()) {
                t = t.replace(s.as_str(), REDACTED);
            }
            t
        }
    };
    for (name, url) in bases {
        let url = url.trim_end_matches('/');
        if !url.is_empty() {
            text = text
                .replace(url, &format!("{{{{host:{name}}}}}"))
                .replace(&url.replace('/', "\\/"), &format!("{{{{host:{name}}}}}"));
        }
    }
    text
}

/// A kept body with `{{host:NAME}}` turned into the URLs replaying it.
pub fn replay_body(body: &str, bases: &[(String, String)]) -> String {
    let mut text = body.to_owned();
    for (name, url) in bases {
        text = text.replace(&format!("{{{{host:{name}}}}}"), url.trim_end_matches('/'));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn personal_fields_and_secrets_are_replaced_and_the_rest_kept() {
        let mut v = json!({
            "RecordID": "c-1",
            "Name": "Acme Ltd",
            "EmailAddress": "jane@acme.example",
            "FirstName": "Jane",
            "Phones": [{ "PhoneNumber": "555 1234", "PhoneType": "MOBILE" }],
            "Addresses": [{ "AddressLine1": "1 High St", "City": "Leeds" }],
            "Note": "token tok-SECRET-1 pasted by mistake",
            "UpdatedDateUTC": "/Date(1700000000000+0000)/",
            "Total": 12.5
        });
        redact(&mut v, &["tok-SECRET-1".to_owned()]);
        assert_eq!(v["RecordID"], "c-1");
        assert_eq!(v["Name"], "Acme Ltd");
        assert_eq!(v["UpdatedDateUTC"], "/Date(1700000000000+0000)/");
        assert_eq!(v["Total"], 12.5);
        assert_eq!(v["Note"], REDACTED);
        let text = v.to_string();
        for gone in [
            "jane@acme.example",
            "Jane",
            "555 1234",
            "1 High St",
            "Leeds",
        ] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
        assert!(
            v["EmailAddress"]
                .as_str()
                .unwrap()
                .ends_with("@example.com")
        );
    }

    #[test]
    fn base_urls_become_placeholders_and_back() {
        let bases = vec![("api".to_owned(), "https://api.example.com/".to_owned())];
        let kept = keep_body(
            r#"{"next":"https:\/\/api.example.com\/v1\/things?page=2","items":[]}"#,
            &[],
            &bases,
        );
        assert!(kept.contains("{{host:api}}/v1/things?page=2"), "{kept}");
        let replay = vec![("api".to_owned(), "http://127.0.0.1:9".to_owned())];
        assert!(replay_body(&kept, &replay).contains("http://127.0.0.1:9/v1/things?page=2"));
        assert!(kept_header("X-Rate-Limit-Remaining") && kept_header("Link"));
        assert!(!kept_header("Set-Cookie") && !kept_header("Authorization"));
    }
}
