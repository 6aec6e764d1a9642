//! Small helpers shared by the Kantata simulator: form and query decoding, time rendering and
//! parsing in the account's time zone, deterministic secrets, and JSON error answers.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The simulated account's fixed UTC offset, in hours. Kantata renders times in the account's
/// zone with an explicit offset (its documentation shows `-07:00`).
pub(crate) const ACCOUNT_OFFSET_HOURS: i8 = -7;

/// Decodes `application/x-www-form-urlencoded` text (also used for query strings). Later keys
/// win over earlier ones; invalid escapes are kept literally and invalid UTF-8 is replaced.
pub(crate) fn parse_urlencoded(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Percent-decodes one component, turning `+` into a space.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a value for a redirect URL's query.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A deterministic 64-hex-digit value from the seed, a purpose and a counter, shaped like the
/// tokens and application ids Kantata's OAuth server (Doorkeeper) hands out.
pub(crate) fn secret_hex(seed: u64, purpose: &str, n: u64) -> String {
    let mut h = Sha256::new();
    h.update(b"weft-kantata-sim");
    h.update(seed.to_le_bytes());
    h.update(purpose.as_bytes());
    h.update(n.to_le_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn account_tz() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::fixed(jiff::tz::Offset::constant(ACCOUNT_OFFSET_HOURS))
}

/// Renders Unix seconds as ISO 8601 with the account's offset, e.g. `2025-04-15T16:48:48-07:00`.
pub(crate) fn render_time(secs: i64) -> String {
    match jiff::Timestamp::from_second(secs) {
        Ok(ts) => ts
            .to_zoned(account_tz())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        Err(_) => String::new(),
    }
}

/// The account-local calendar date of Unix seconds.
pub(crate) fn local_date(secs: i64) -> jiff::civil::Date {
    jiff::Timestamp::from_second(secs)
        .map(|ts| ts.to_zoned(account_tz()).date())
        .unwrap_or_default()
}

/// Parses a filter time: RFC 3339 with an offset, a local date-time without one, or a bare date
/// (local midnight). Returns Unix seconds.
pub(crate) fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts.as_second());
    }
    if let Ok(dt) = text.parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned(account_tz())
            .ok()
            .map(|z| z.timestamp().as_second());
    }
    if let Ok(d) = text.parse::<jiff::civil::Date>() {
        return d
            .to_zoned(account_tz())
            .ok()
            .map(|z| z.timestamp().as_second());
    }
    None
}

/// Parses a `YYYY-MM-DD` date.
pub(crate) fn parse_date(text: &str) -> Option<jiff::civil::Date> {
    text.trim().parse::<jiff::civil::Date>().ok()
}

/// A JSON response with `status`.
pub(crate) fn json_response(status: u16, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes_response(status, bytes)
}

/// A JSON response from already-serialized bytes.
pub(crate) fn bytes_response(status: u16, bytes: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// Kantata's error envelope with one error.
pub(crate) fn error_body(kind: &str, message: &str, field: Option<&str>) -> Value {
    let mut e = json!({"type": kind, "message": message});
    if let (Some(f), Some(obj)) = (field, e.as_object_mut()) {
        obj.insert("field".into(), Value::String(f.to_owned()));
    }
    json!({ "errors": [e] })
}

/// An error answer in Kantata's envelope.
pub(crate) fn error(status: u16, kind: &str, message: &str) -> Response<Body> {
    json_response(status, &error_body(kind, message, None))
}

/// A 422 naming the refused field.
pub(crate) fn validation(field: &str, message: &str) -> Response<Body> {
    json_response(422, &error_body("validation", message, Some(field)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_forms() {
        let pairs = parse_urlencoded("a=1&b=x+y%20z&c=%zz&d&e=%4");
        assert_eq!(
            pairs,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("c".into(), "%zz".into()),
                ("d".into(), String::new()),
                ("e".into(), "%4".into()),
            ]
        );
        assert_eq!(percent_decode("%e2%82%ac"), "€");
    }

    #[test]
    fn renders_and_parses_times() {
        assert_eq!(render_time(0), "1969-12-31T17:00:00-07:00");
        assert_eq!(parse_time("1970-01-01T00:00:10Z"), Some(10));
        assert_eq!(parse_time("1969-12-31T17:00:10-07:00"), Some(10));
        assert_eq!(parse_time("1970-01-01"), Some(7 * 3600));
        assert_eq!(parse_time("nope"), None);
    }
}
