//! Small pieces the HubSpot simulator shares: its error envelope, times as HubSpot writes them,
//! and JSON answers.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode};
use serde_json::{Value, json};

pub(crate) use crate::mix;

/// `2019-12-07T16:50:06.678Z`: how HubSpot writes an instant.
pub(crate) fn iso(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// An instant a client wrote: epoch milliseconds as digits, RFC 3339, or a date (midnight UTC).
pub(crate) fn instant(text: &str) -> Option<i64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts.as_millisecond());
    }
    text.parse::<jiff::civil::Date>()
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_millisecond())
}

/// A JSON response with a status.
pub(crate) fn json_response(status: u16, body: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(serde_json::to_vec(body).unwrap_or_default()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    r
}

/// An answer with no body.
pub(crate) fn empty(status: u16) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::NO_CONTENT);
    r
}

/// An HTML page (the consent host's errors).
pub(crate) use crate::server::html_response;

/// A correlation id: a UUID-shaped text drawn from `n`.
pub(crate) fn correlation(n: u64) -> String {
    let a = mix(&[n, 1]);
    let b = mix(&[n, 2]);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 52) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

/// HubSpot's error envelope.
pub(crate) fn envelope(category: &str, message: &str, n: u64) -> Value {
    json!({
        "status": "error",
        "message": message,
        "correlationId": correlation(n),
        "category": category,
    })
}

/// An error answer with HubSpot's envelope, plus `errors[]` when there are details.
pub(crate) fn error(
    status: u16,
    category: &str,
    message: &str,
    details: Vec<Value>,
    n: u64,
) -> Response<Body> {
    let mut body = envelope(category, message, n);
    if !details.is_empty() {
        body["errors"] = Value::Array(details);
    }
    json_response(status, &body)
}
