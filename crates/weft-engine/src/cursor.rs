//! Incremental cursors: an instant written the way a spec's `incremental` says (format,
//! precision), moved back by its overlap so records changed at the boundary are read again
//! (and deduplicated by primary key) instead of lost.

use jiff::Timestamp;
use weft_core::model::{DateFormat, Incremental, Precision};

/// A `--since` value that is not a date or an instant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a date or an instant; write 2024-05-31 or 2024-05-31T12:00:00Z")]
pub struct SinceError {
    input: String,
}

/// Parses an instant (RFC 3339, with an offset) or a calendar date (midnight UTC).
pub fn parse_since(input: &str) -> Result<Timestamp, SinceError> {
    let text = input.trim();
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts);
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| SinceError {
            input: input.to_owned(),
        })
}

/// The change time a record carries in its cursor field, read in the field's format.
pub fn parse_field(value: &serde_json::Value, format: DateFormat) -> Option<Timestamp> {
    if let DateFormat::EpochSeconds | DateFormat::EpochMillis = format {
        let n = match value {
            serde_json::Value::Number(n) => n.as_i64()?,
            serde_json::Value::String(s) => s.trim().parse().ok()?,
            _ => return None,
        };
        return match format {
            DateFormat::EpochSeconds => Timestamp::from_second(n).ok(),
            _ => Timestamp::from_millisecond(n).ok(),
        };
    }
    let text = value.as_str()?.trim();
    match format {
        DateFormat::Rfc3339 => text.parse().ok(),
        DateFormat::NaiveUtc => text
            .parse::<jiff::civil::DateTime>()
            .ok()?
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp()),
        DateFormat::Date => text
            .parse::<jiff::civil::Date>()
            .ok()?
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp()),
        DateFormat::MsJson => {
            let inner = text.strip_prefix("/Date(")?.strip_suffix(")/")?;
            let end = inner[1..].find(['+', '-']).map_or(inner.len(), |i| i + 1);
            Timestamp::from_millisecond(inner[..end].parse().ok()?).ok()
        }
        DateFormat::EpochSeconds | DateFormat::EpochMillis => None,
    }
}

/// The cursor to send for records changed since `since`, per the spec's rules.
pub fn format(since: Timestamp, incremental: &Incremental) -> String {
    let overlap_ms = incremental.overlap.map_or(0, |o| o.as_millis());
    let ms = since
        .as_millisecond()
        .saturating_sub(i64::try_from(overlap_ms).unwrap_or(i64::MAX));
    let unit = match incremental.precision {
        Precision::Millisecond => 1,
        Precision::Second => 1_000,
        Precision::Day => 86_400_000,
    };
    // Truncating toward the past never skips a record; the overlap already re-reads a little.
    let ms = ms.div_euclid(unit) * unit;
    let at = Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let utc = at.to_zoned(jiff::tz::TimeZone::UTC);
    let millis = incremental.precision == Precision::Millisecond;
    match incremental.format {
        DateFormat::Rfc3339 if millis => utc.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        DateFormat::Rfc3339 => utc.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        DateFormat::NaiveUtc if millis => utc.strftime("%Y-%m-%dT%H:%M:%S%.3f").to_string(),
        DateFormat::NaiveUtc => utc.strftime("%Y-%m-%dT%H:%M:%S").to_string(),
        DateFormat::Date => utc.strftime("%Y-%m-%d").to_string(),
        DateFormat::MsJson => format!("/Date({ms}+0000)/"),
        DateFormat::EpochSeconds => ms.div_euclid(1_000).to_string(),
        DateFormat::EpochMillis => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(format: DateFormat, precision: Precision, overlap: Option<&str>) -> Incremental {
        Incremental {
            field: "updated".into(),
            field_format: DateFormat::Rfc3339,
            param: Some("since".into()),
            header: None,
            format,
            precision,
            overlap: overlap.map(|o| o.parse().unwrap()),
            keyset: false,
        }
    }

    #[test]
    fn formats_with_overlap_and_precision() {
        let at = parse_since("2024-05-31T12:00:30.750Z").unwrap();
        assert_eq!(
            format(at, &inc(DateFormat::Rfc3339, Precision::Second, Some("1m"))),
            "2024-05-31T11:59:30Z"
        );
        assert_eq!(
            format(at, &inc(DateFormat::Rfc3339, Precision::Millisecond, None)),
            "2024-05-31T12:00:30.750Z"
        );
        assert_eq!(
            format(at, &inc(DateFormat::NaiveUtc, Precision::Second, None)),
            "2024-05-31T12:00:30"
        );
        assert_eq!(
            format(at, &inc(DateFormat::Date, Precision::Day, None)),
            "2024-05-31"
        );
        assert_eq!(
            format(at, &inc(DateFormat::MsJson, Precision::Millisecond, None)),
            "/Date(1717156830750+0000)/"
        );
    }

    #[test]
    fn epoch_cursors_in_seconds_and_milliseconds() {
        let at = parse_since("2024-05-31T12:00:30.750Z").unwrap();
        assert_eq!(
            format(
                at,
                &inc(DateFormat::EpochSeconds, Precision::Second, Some("1m"))
            ),
            "1717156770"
        );
        assert_eq!(
            format(
                at,
                &inc(DateFormat::EpochMillis, Precision::Millisecond, None)
            ),
            "1717156830750"
        );
        let secs = parse_field(&serde_json::json!(1_717_156_830), DateFormat::EpochSeconds);
        assert_eq!(secs.unwrap().as_millisecond(), 1_717_156_830_000);
        let text = parse_field(
            &serde_json::json!(" 1717156830750"),
            DateFormat::EpochMillis,
        );
        assert_eq!(text.unwrap().as_millisecond(), 1_717_156_830_750);
        for bad in [
            serde_json::json!("soon"),
            serde_json::json!(1.5),
            serde_json::json!(null),
        ] {
            assert_eq!(parse_field(&bad, DateFormat::EpochMillis), None, "{bad}");
        }
        assert_eq!(
            parse_field(&serde_json::json!(i64::MAX), DateFormat::EpochSeconds),
            None
        );
    }

    #[test]
    fn parses_dates_and_instants_and_refuses_the_rest() {
        assert_eq!(
            parse_since("2024-05-31").unwrap().as_millisecond(),
            1_717_113_600_000
        );
        assert_eq!(
            parse_since("2024-05-31T14:00:00+02:00")
                .unwrap()
                .as_millisecond(),
            1_717_156_800_000
        );
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("2024-13-01").is_err());
    }
}
