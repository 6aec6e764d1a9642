//! Small pieces every part of the Xero simulator shares: identifiers, Xero's date formats, exact
//! money, and the JSON bodies of its error answers.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Map, Value, json};

/// A version-4-shaped UUID from the generator.
pub(crate) fn uuid(rng: &mut fastrand::Rng) -> String {
    let a = rng.u64(..);
    let b = rng.u64(..);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        8 + (b >> 62),
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

/// The first 24 characters of a UUID (everything but the last group), for ids that carry an index.
pub(crate) fn uuid_prefix(rng: &mut fastrand::Rng) -> String {
    let full = uuid(rng);
    full[..24].to_owned()
}

/// An id made of a prefix and an index in its last group, so the index can be read back.
pub(crate) fn indexed_id(prefix: &str, index: usize) -> String {
    format!("{prefix}{index:012x}")
}

/// The index inside an id made by [`indexed_id`] with `prefix`.
pub(crate) fn index_of(prefix: &str, id: &str) -> Option<usize> {
    let id = id.to_ascii_lowercase();
    let rest = id.strip_prefix(prefix)?;
    if rest.len() != 12 {
        return None;
    }
    usize::from_str_radix(rest, 16).ok()
}

pub(crate) use crate::mix;

/// Xero's entity date: `/Date(ms+0000)/`.
pub(crate) fn ms_date(ms: u64) -> String {
    format!("/Date({ms}+0000)/")
}

/// The instant inside a `/Date(ms)/` or `/Date(ms+hhmm)/` string, in Unix ms.
pub(crate) fn parse_ms_date(s: &str) -> Option<i64> {
    let inner = s.strip_prefix("/Date(")?.strip_suffix(")/")?;
    let end = inner
        .get(1..)?
        .find(['+', '-'])
        .map_or(inner.len(), |i| i + 1);
    inner.get(..end)?.parse().ok()
}

/// `2026-01-01T00:00:00` for a Unix ms (UTC, no zone), as in `DateString`.
pub(crate) fn iso_seconds(ms: u64) -> String {
    let ts = timestamp(ms);
    ts.strftime("%Y-%m-%dT%H:%M:%S").to_string()
}

/// `2026-01-01T00:00:00.0000000`: `/connections` dates (7 fractional digits, no zone).
pub(crate) fn iso_seven(ms: u64) -> String {
    format!("{}.{:03}0000", iso_seconds(ms), ms % 1000)
}

fn timestamp(ms: u64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// Midnight UTC of the day holding `ms`.
pub(crate) fn day_start(ms: u64) -> u64 {
    ms - ms % 86_400_000
}

/// Unix ms of a calendar date and time (UTC).
pub(crate) fn date_ms(y: i16, m: i8, d: i8, h: i8, mi: i8, s: i8) -> Option<i64> {
    let dt = jiff::civil::DateTime::new(y, m, d, h, mi, s, 0).ok()?;
    let ts = dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(ts.as_millisecond())
}

/// A date sent by a client: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS` (taken as UTC), RFC 3339 with a
/// zone, or `/Date(ms)/`. Returns Unix ms.
pub(crate) fn parse_client_date(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(ms) = parse_ms_date(s) {
        return Some(ms);
    }
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Some(ts.as_millisecond());
    }
    if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        return Some(
            dt.to_zoned(jiff::tz::TimeZone::UTC)
                .ok()?
                .timestamp()
                .as_millisecond(),
        );
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        return date_ms(d.year(), d.month(), d.day(), 0, 0, 0);
    }
    None
}

/// Rounds to 2 decimal places, half away from zero.
pub(crate) fn round2(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// A decimal as a JSON number. serde_json holds numbers as f64 here, so the amount (computed
/// exactly) is converted only at the edge; every value with at most 15 significant digits, which
/// covers Xero's 2 and 4 decimal amounts, prints back exactly.
pub(crate) fn money(d: Decimal) -> Value {
    let text = d.normalize().to_string();
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// A JSON value read as an exact decimal (numbers through their shortest text, strings parsed).
pub(crate) fn decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => n.to_string().parse().ok().or_else(|| {
            n.as_f64()
                .and_then(|f| Decimal::from_scientific(&format!("{f:e}")).ok())
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A JSON response with a status.
pub(crate) fn json_response(status: u16, body: &Value) -> Response<Body> {
    bytes_response(status, serde_json::to_vec(body).unwrap_or_default())
}

/// A JSON response from bytes already serialized.
pub(crate) fn bytes_response(status: u16, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// A plain-text response.
pub(crate) fn text_response(status: u16, text: &str, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(text.to_owned()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    r
}

/// The problem-details body Xero uses for 401 and 403.
pub(crate) fn problem(status: u16, title: &str, detail: &str, instance: &str) -> Response<Body> {
    json_response(
        status,
        &json!({
            "Type": null,
            "Title": title,
            "Status": status,
            "Detail": detail,
            "Instance": instance,
            "Extensions": {}
        }),
    )
}

/// A 400 whose body is Xero's exception shape without elements (bad query, bad JSON…).
pub(crate) fn exception(error_number: u32, kind: &str, message: &str) -> Response<Body> {
    json_response(
        400,
        &json!({"ErrorNumber": error_number, "Type": kind, "Message": message}),
    )
}

/// The 404 Xero answers for an unknown record or path (plain text).
pub(crate) fn not_found() -> Response<Body> {
    text_response(
        404,
        "The resource you're looking for cannot be found",
        "text/plain; charset=utf-8",
    )
}

/// A string field of a JSON object.
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Looks a key up case-insensitively (clients send `contactID` as often as `ContactID`).
pub(crate) fn get_ci<'a>(v: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    v.get(key).or_else(|| {
        v.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_dates_round_trip() {
        let mut rng = fastrand::Rng::with_seed(1);
        let p = uuid_prefix(&mut rng);
        let id = indexed_id(&p, 77);
        assert_eq!(id.len(), 36);
        assert_eq!(index_of(&p, &id), Some(77));
        assert_eq!(parse_ms_date(&ms_date(1_500)), Some(1_500));
        assert_eq!(
            parse_ms_date("/Date(1439434356790)/"),
            Some(1_439_434_356_790)
        );
        assert_eq!(
            parse_client_date("2026-01-02"),
            Some(1_767_225_600_000 + 86_400_000)
        );
        assert_eq!(
            parse_client_date("2026-01-01T01:00:00+01:00"),
            Some(1_767_225_600_000)
        );
        assert_eq!(iso_seven(1_767_225_600_123), "2026-01-01T00:00:00.1230000");
        let d: Decimal = "12.345".parse().unwrap_or_default();
        assert_eq!(money(round2(d)).to_string(), "12.35");
    }
}
