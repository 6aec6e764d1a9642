//! Paths to values inside a provider's JSON: `MetaData.LastUpdatedTime`, `paging.next.link`.
//!
//! One rule wherever a spec names a value by its path (records, cursor fields, page counts,
//! next cursors and links): names separated by `.`, and a name that itself holds `.` (or `"`
//! or `\`) written as a TOML basic string, exactly as diagnostics quote such keys:
//! `properties."hs.lastmodified"` is the key `hs.lastmodified` inside `properties`.

/// Why a text is not a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Nothing, or an empty name between dots.
    #[error("an empty name (write names separated by `.`, such as `meta.page_count`)")]
    EmptyName,
    /// A quoted name that is not closed.
    #[error("a quoted name is not closed with `\"`")]
    Unclosed,
    /// Text right after a quoted name.
    #[error("a quoted name must be followed by `.` or the end")]
    AfterQuote,
}

/// The names of `path`, in order.
pub fn segments(path: &str) -> Result<Vec<String>, PathError> {
    let mut out = Vec::new();
    let mut chars = path.chars().peekable();
    loop {
        let mut name = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => name.extend(chars.next()),
                    c => name.push(c),
                }
            }
            if !closed {
                return Err(PathError::Unclosed);
            }
            if name.is_empty() {
                return Err(PathError::EmptyName);
            }
            match chars.next() {
                None => {
                    out.push(name);
                    return Ok(out);
                }
                Some('.') => out.push(name),
                Some(_) => return Err(PathError::AfterQuote),
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != '.') {
                name.push(c);
            }
            if name.is_empty() {
                return Err(PathError::EmptyName);
            }
            out.push(name);
            if chars.next().is_none() {
                return Ok(out);
            }
        }
    }
}

/// The value at `path` in `value`; `None` when a name is missing (or `path` is not a path).
pub fn lookup<'a>(value: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let names = segments(path).ok()?;
    names.iter().try_fold(value, |v, name| match v {
        // A list is reached into by position (`Receipts.0.ReceiptID`).
        serde_json::Value::Array(items) => name.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => v.get(name.as_str()),
    })
}

/// The value at `path` in `value`, mutably.
pub fn lookup_mut<'a>(
    value: &'a mut serde_json::Value,
    path: &str,
) -> Option<&'a mut serde_json::Value> {
    let names = segments(path).ok()?;
    names
        .iter()
        .try_fold(value, |v, name| v.get_mut(name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_reached_into_by_position() {
        let v = serde_json::json!({"Receipts": [{"ReceiptID": "r1"}, {"ReceiptID": "r2"}]});
        assert_eq!(
            lookup(&v, "Receipts.1.ReceiptID"),
            Some(&serde_json::json!("r2"))
        );
        assert_eq!(lookup(&v, "Receipts.2.ReceiptID"), None);
        assert_eq!(lookup(&v, "Receipts.x"), None);
    }

    #[test]
    fn dotted_and_quoted_names() {
        assert_eq!(segments("a").unwrap(), ["a"]);
        assert_eq!(
            segments("MetaData.LastUpdatedTime").unwrap(),
            ["MetaData", "LastUpdatedTime"]
        );
        assert_eq!(
            segments(r#"properties."hs.last.modified""#).unwrap(),
            ["properties", "hs.last.modified"]
        );
        assert_eq!(
            segments(r#""a\"b".c"#).unwrap(),
            ["a\"b", "c"],
            "a quote inside a quoted name is escaped"
        );
        for bad in ["", ".", "a.", ".a", "a..b", r#""""#] {
            assert_eq!(segments(bad), Err(PathError::EmptyName), "{bad:?}");
        }
        assert_eq!(segments(r#""a.b"#), Err(PathError::Unclosed));
        assert_eq!(segments(r#""a"b"#), Err(PathError::AfterQuote));
        let v = serde_json::json!({"a": {"b.c": 1, "b": {"c": 2}}});
        assert_eq!(lookup(&v, r#"a."b.c""#), Some(&serde_json::json!(1)));
        assert_eq!(lookup(&v, "a.b.c"), Some(&serde_json::json!(2)));
        assert_eq!(lookup(&v, "a.x"), None);
    }
}
