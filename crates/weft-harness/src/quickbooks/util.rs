//! Small pieces the QuickBooks simulator shares: its answers' JSON shapes (`Fault`, the gateway's
//! `fault`), times written as QuickBooks writes them, and exact money.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

pub(crate) use crate::mix;

/// The offset QuickBooks writes its times in: the company's zone (US Pacific, without daylight
/// saving: a fixed `-07:00`, the offset of Intuit's own samples).
const OFFSET_SECS: i32 = -7 * 3600;

fn zoned(ms: u64) -> jiff::Zoned {
    let ts = jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let offset = jiff::tz::Offset::from_seconds(OFFSET_SECS).unwrap_or(jiff::tz::Offset::UTC);
    ts.to_zoned(jiff::tz::TimeZone::fixed(offset))
}

/// `2015-07-24T10:35:08-07:00`: a record's `MetaData` time.
pub(crate) fn meta_time(ms: u64) -> String {
    zoned(ms).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// `2015-07-24T10:44:52.998-07:00`: the `time` of an answer.
pub(crate) fn answer_time(ms: u64) -> String {
    zoned(ms).strftime("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()
}

/// `2015-07-24`: the company's calendar day at `ms`.
pub(crate) fn local_date(ms: u64) -> String {
    zoned(ms).strftime("%Y-%m-%d").to_string()
}

/// A calendar day `days` after `date` (`YYYY-MM-DD`), or `date` itself when it does not parse.
pub(crate) fn add_days(date: &str, days: i64) -> String {
    date.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.checked_add(jiff::Span::new().days(days)).ok())
        .map_or_else(|| date.to_owned(), |d| d.to_string())
}

/// An instant a client wrote (RFC 3339 with an offset or `Z`, or a date taken as the company's
/// midnight), in Unix ms.
pub(crate) fn parse_instant(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts.as_millisecond());
    }
    let offset = jiff::tz::Offset::from_seconds(OFFSET_SECS).ok()?;
    if let Ok(dt) = text.parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned(jiff::tz::TimeZone::fixed(offset))
            .ok()
            .map(|z| z.timestamp().as_millisecond());
    }
    text.parse::<jiff::civil::Date>()
        .ok()?
        .to_zoned(jiff::tz::TimeZone::fixed(offset))
        .ok()
        .map(|z| z.timestamp().as_millisecond())
}

/// Rounds to 2 decimal places, half away from zero.
pub(crate) fn round2(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// A decimal as a JSON number (computed exactly, turned into a number only at the edge; 2-decimal
/// amounts print back exactly).
pub(crate) fn money(d: Decimal) -> Value {
    if d.fract().is_zero()
        && let Ok(whole) = i64::try_from(d.trunc())
    {
        return Value::from(whole);
    }
    d.normalize()
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// A JSON value read as an exact decimal (numbers through their text, strings parsed).
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
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    r
}

/// An HTML page (the consent host's errors).
pub(crate) use crate::server::html_response;

/// One error of a `Fault`: QuickBooks' code (a string), its short message, the detail that says
/// what is wrong, and the property concerned (empty when none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QbError {
    pub(crate) code: &'static str,
    pub(crate) message: &'static str,
    pub(crate) detail: String,
    pub(crate) element: String,
}

impl QbError {
    pub(crate) fn new(
        code: &'static str,
        message: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            code,
            message,
            detail: detail.into(),
            element: String::new(),
        }
    }

    pub(crate) fn at(mut self, element: &str) -> Self {
        self.element = element.to_owned();
        self
    }

    /// 610: an id that does not exist, or a reference to an inactive record.
    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(
            "610",
            "Object Not Found",
            format!(
                "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees. ({what})"
            ),
        )
    }

    /// 2020: a property the operation needs is missing.
    pub(crate) fn required(property: &str) -> Self {
        Self::new(
            "2020",
            "Required param missing, need to supply the required value for the API",
            format!("Required parameter {property} is missing in the request"),
        )
        .at(property)
    }

    /// 6000: a business rule of the entity.
    pub(crate) fn business(detail: impl std::fmt::Display) -> Self {
        Self::new(
            "6000",
            "A business validation error has occurred while processing your request",
            format!("Business Validation Error: {detail}"),
        )
    }

    /// 5010: an update carrying an old SyncToken.
    pub(crate) fn stale() -> Self {
        Self::new(
            "5010",
            "Stale Object Error",
            "Stale Object Error : You and QuickBooks Online were working on this at the same time. QuickBooks Online finished before you did, so your work was not saved.",
        )
    }

    /// 6240: a name already used.
    pub(crate) fn duplicate_name(detail: &str) -> Self {
        Self::new(
            "6240",
            "Duplicate Name Exists Error",
            format!("The name supplied already exists. : {detail}"),
        )
    }

    /// 2010: a property the entity does not have.
    pub(crate) fn unsupported(property: &str) -> Self {
        Self::new(
            "2010",
            "Request has invalid or unsupported property",
            format!("Property Name:{property} specified is unsupported or invalid"),
        )
        .at(property)
    }

    /// The error as a `Fault.Error` element.
    pub(crate) fn json(&self) -> Value {
        json!({
            "Message": self.message,
            "Detail": self.detail,
            "code": self.code,
            "element": self.element,
        })
    }
}

/// `{"Fault": {"Error": [...], "type": "ValidationFault"}}`: the body of a refused request, or a
/// batch item's fault.
pub(crate) fn fault(errors: &[QbError], kind: &str) -> Value {
    json!({
        "Error": errors.iter().map(QbError::json).collect::<Vec<_>>(),
        "type": kind,
    })
}

/// A 400 `ValidationFault` answer.
pub(crate) fn validation(errors: &[QbError], now: u64) -> Response<Body> {
    json_response(
        400,
        &json!({"Fault": fault(errors, "ValidationFault"), "time": answer_time(now)}),
    )
}

/// 4000: a statement that does not parse, or names what cannot be queried.
pub(crate) fn query_error(reason: &str) -> QbError {
    QbError::new(
        "4000",
        "Error parsing query",
        format!("QueryParserError: {reason}"),
    )
}

/// The answers of the gateway in front of the API, in its own lower-case shape.
pub(crate) fn gateway(
    status: u16,
    code: &str,
    what: &str,
    detail: &str,
    now: u64,
) -> Response<Body> {
    let kind = if status == 401 {
        "AUTHENTICATION"
    } else {
        "SERVICE"
    };
    json_response(
        status,
        &json!({"fault": {
            "error": [{
                "message": format!("message={what}; errorCode=00{code}; statusCode={status}"),
                "detail": detail,
                "code": code,
            }],
            "type": kind,
        }, "time": answer_time(now)}),
    )
}

/// The 429 of a throttled call: a `SERVICE` fault with code 3001, no `Retry-After`.
pub(crate) fn throttled(now: u64) -> Response<Body> {
    json_response(
        429,
        &json!({"Fault": {
            "Error": [{
                "Message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                "Detail": "The request limit was reached.  Try again later",
                "code": "3001",
            }],
            "type": "SERVICE",
        }, "time": answer_time(now)}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_the_company_offset_and_read_back() {
        // 2026-01-01T00:00:00Z
        let ms = 1_767_225_600_000;
        assert_eq!(meta_time(ms), "2025-12-31T17:00:00-07:00");
        assert_eq!(answer_time(ms + 5), "2025-12-31T17:00:00.005-07:00");
        assert_eq!(local_date(ms), "2025-12-31");
        assert_eq!(parse_instant("2025-12-31T17:00:00-07:00"), Some(ms as i64));
        assert_eq!(parse_instant("2026-01-01T00:00:00Z"), Some(ms as i64));
        assert_eq!(parse_instant("2025-12-31T17:00:00"), Some(ms as i64));
        assert_eq!(add_days("2026-01-31", 30), "2026-03-02");
        let d: Decimal = "12.345".parse().unwrap_or_default();
        assert_eq!(money(round2(d)).to_string(), "12.35");
        assert_eq!(decimal(&json!(7.5)), "7.5".parse().ok());
    }
}
