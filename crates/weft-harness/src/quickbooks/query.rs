//! The subset of QuickBooks' query language the connector uses, parsed and evaluated:
//! `SELECT * | COUNT(*) FROM Entity [WHERE cond [AND cond]…] [ORDERBY prop [ASC|DESC][, …]]
//! [STARTPOSITION n] [MAXRESULTS m]`, conditions `=`, `<`, `>`, `<=`, `>=`, `LIKE` (with `%`) and
//! `IN (…)` on dotted properties. Keywords are read in any case; `ORDER BY` is taken as `ORDERBY`.

use std::cmp::Ordering;

use rust_decimal::Decimal;
use serde_json::Value;

use super::util::{decimal, parse_instant};

/// The most records one query returns.
pub(crate) const MAX_RESULTS: usize = 1000;
/// Records per query when the statement says nothing.
const DEFAULT_RESULTS: usize = 100;

/// A parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Statement {
    /// `COUNT(*)` rather than `*`.
    pub(crate) count: bool,
    /// The entity, as written (QuickBooks matches it case sensitively).
    pub(crate) entity: String,
    pub(crate) conditions: Vec<Condition>,
    /// Properties to order by, each with "descending".
    pub(crate) order: Vec<(String, bool)>,
    /// 1-based position of the first record.
    pub(crate) start: usize,
    pub(crate) max: usize,
}

/// One `prop op value` (or `prop IN (…)`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    pub(crate) property: String,
    op: Op,
    values: Vec<Literal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
    Like,
    In,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(String),
    Number(Decimal),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Number(String),
    Symbol(&'static str),
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("a quoted value is not closed".to_owned()),
                    Some('\\') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        s.push(other);
                        i += 1;
                    }
                }
            }
            out.push(Token::Text(s));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_digit() || *c == '.')
            {
                i += 1;
            }
            out.push(Token::Number(chars[start..i].iter().collect()));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
            {
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let symbol = match two.as_str() {
                "<=" => Some("<="),
                ">=" => Some(">="),
                _ => None,
            };
            if let Some(s) = symbol {
                out.push(Token::Symbol(s));
                i += 2;
                continue;
            }
            let s = match c {
                '=' => "=",
                '<' => "<",
                '>' => ">",
                '(' => "(",
                ')' => ")",
                ',' => ",",
                '*' => "*",
                other => return Err(format!("unexpected character '{other}'")),
            };
            out.push(Token::Symbol(s));
            i += 1;
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), String> {
        if self.keyword(word) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {word} {}", self.where_()))
        }
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<(), String> {
        match self.next() {
            Some(Token::Symbol(s)) if s == symbol => Ok(()),
            _ => Err(format!("expected '{symbol}'")),
        }
    }

    fn where_(&self) -> String {
        match self.peek() {
            None => "at the end of the statement".to_owned(),
            Some(Token::Word(w)) | Some(Token::Text(w)) | Some(Token::Number(w)) => {
                format!("near '{w}'")
            }
            Some(Token::Symbol(s)) => format!("near '{s}'"),
        }
    }

    fn word(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(w)) => Ok(w),
            _ => Err("expected a property or entity name".to_owned()),
        }
    }

    fn number(&mut self) -> Result<usize, String> {
        match self.next() {
            Some(Token::Number(n)) => n
                .parse()
                .map_err(|_| format!("'{n}' is not a whole number")),
            _ => Err("expected a number".to_owned()),
        }
    }

    fn literal(&mut self) -> Result<Literal, String> {
        match self.next() {
            Some(Token::Text(s)) => Ok(Literal::Text(s)),
            Some(Token::Number(n)) => n
                .parse()
                .map(Literal::Number)
                .map_err(|_| format!("'{n}' is not a number")),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Ok(Literal::Bool(true)),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Ok(Literal::Bool(false)),
            _ => Err("expected a value: 'text', a number, true or false".to_owned()),
        }
    }
}

/// Parses a statement.
pub(crate) fn parse(text: &str) -> Result<Statement, String> {
    let mut p = Parser {
        tokens: tokens(text)?,
        at: 0,
    };
    p.expect_keyword("select")?;
    let count = if p.keyword("count") {
        p.at += 1;
        p.expect_symbol("(")?;
        p.expect_symbol("*")?;
        p.expect_symbol(")")?;
        true
    } else {
        p.expect_symbol("*")
            .map_err(|_| "only select * and select count(*) are supported".to_owned())?;
        false
    };
    p.expect_keyword("from")?;
    let entity = p.word()?;
    let mut conditions = Vec::new();
    if p.keyword("where") {
        p.at += 1;
        loop {
            let property = p.word()?;
            let op = match p.next() {
                Some(Token::Symbol("=")) => Op::Eq,
                Some(Token::Symbol("<")) => Op::Lt,
                Some(Token::Symbol(">")) => Op::Gt,
                Some(Token::Symbol("<=")) => Op::Le,
                Some(Token::Symbol(">=")) => Op::Ge,
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("like") => Op::Like,
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("in") => Op::In,
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("or") => {
                    return Err("OR is not supported".to_owned());
                }
                _ => return Err(format!("expected an operator after {property}")),
            };
            let values = if op == Op::In {
                p.expect_symbol("(")?;
                let mut values = vec![p.literal()?];
                while matches!(p.peek(), Some(Token::Symbol(","))) {
                    p.at += 1;
                    values.push(p.literal()?);
                }
                p.expect_symbol(")")?;
                values
            } else {
                vec![p.literal()?]
            };
            conditions.push(Condition {
                property,
                op,
                values,
            });
            if p.keyword("and") {
                p.at += 1;
                continue;
            }
            if p.keyword("or") {
                return Err("OR is not supported".to_owned());
            }
            break;
        }
    }
    let mut order = Vec::new();
    if p.keyword("orderby") || p.keyword("order") {
        if p.keyword("order") {
            p.at += 1;
            p.expect_keyword("by")?;
        } else {
            p.at += 1;
        }
        loop {
            let property = p.word()?;
            let desc = if p.keyword("desc") {
                p.at += 1;
                true
            } else {
                if p.keyword("asc") {
                    p.at += 1;
                }
                false
            };
            order.push((property, desc));
            if matches!(p.peek(), Some(Token::Symbol(","))) {
                p.at += 1;
                continue;
            }
            break;
        }
    }
    let mut start = 1;
    let mut max = DEFAULT_RESULTS;
    if p.keyword("startposition") {
        p.at += 1;
        start = p.number()?;
        if start == 0 {
            return Err("STARTPOSITION starts at 1".to_owned());
        }
    }
    if p.keyword("maxresults") {
        p.at += 1;
        max = p.number()?;
        if max > MAX_RESULTS {
            return Err(format!("MAXRESULTS may be at most {MAX_RESULTS}"));
        }
    }
    if p.peek().is_some() {
        return Err(format!("unexpected text {}", p.where_()));
    }
    Ok(Statement {
        count,
        entity,
        conditions,
        order,
        start,
        max,
    })
}

/// The value at a dotted path; a reference object (`{"value": "7", "name": …}`) stands for its
/// `value`, as QuickBooks compares `CustomerRef = '7'`.
fn at<'v>(record: &'v Value, path: &str) -> Option<&'v Value> {
    let v = path.split('.').try_fold(record, |v, k| v.get(k))?;
    match v {
        Value::Object(m) if m.contains_key("value") => m.get("value"),
        other => Some(other),
    }
}

/// Compares a record's value with a literal: instants as instants, numbers as numbers, ids (digit
/// strings) as numbers, other text without regard to case.
fn compare(value: &Value, literal: &Literal) -> Option<Ordering> {
    match (value, literal) {
        (Value::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        (Value::Number(_), Literal::Number(b)) => decimal(value).map(|a| a.cmp(b)),
        (Value::Number(_), Literal::Text(b)) => {
            Some(decimal(value)?.cmp(&b.trim().parse::<Decimal>().ok()?))
        }
        (Value::String(a), Literal::Number(b)) => Some(a.trim().parse::<Decimal>().ok()?.cmp(b)),
        (Value::String(a), Literal::Text(b)) => Some(compare_text(a, b)),
        _ => None,
    }
}

fn compare_text(a: &str, b: &str) -> Ordering {
    let instant = |s: &str| s.contains('T').then(|| parse_instant(s)).flatten();
    if let (Some(x), Some(y)) = (instant(a), instant(b)) {
        return x.cmp(&y);
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(a)
        && digits(b)
        && let (Ok(x), Ok(y)) = (a.parse::<u128>(), b.parse::<u128>())
    {
        return x.cmp(&y);
    }
    a.to_lowercase().cmp(&b.to_lowercase())
}

fn like(value: &str, pattern: &str) -> bool {
    let value = value.to_lowercase();
    let parts: Vec<String> = pattern
        .to_lowercase()
        .split('%')
        .map(str::to_owned)
        .collect();
    if parts.len() == 1 {
        return value == parts[0];
    }
    let (first, last) = (&parts[0], &parts[parts.len() - 1]);
    if !value.starts_with(first.as_str()) || !value.ends_with(last.as_str()) {
        return false;
    }
    let mut rest = &value[first.len()..value.len().saturating_sub(last.len()).max(first.len())];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle.as_str()) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    value.len() >= first.len() + last.len()
}

impl Condition {
    /// Whether `record` meets the condition; a record without the property never does.
    pub(crate) fn matches(&self, record: &Value) -> bool {
        let Some(value) = at(record, &self.property) else {
            return false;
        };
        match self.op {
            Op::In => self
                .values
                .iter()
                .any(|l| compare(value, l) == Some(Ordering::Equal)),
            Op::Like => match (value, self.values.first()) {
                (Value::String(v), Some(Literal::Text(p))) => like(v, p),
                _ => false,
            },
            op => {
                let Some(ord) = self.values.first().and_then(|l| compare(value, l)) else {
                    return false;
                };
                match op {
                    Op::Eq => ord == Ordering::Equal,
                    Op::Lt => ord == Ordering::Less,
                    Op::Gt => ord == Ordering::Greater,
                    Op::Le => ord != Ordering::Greater,
                    Op::Ge => ord != Ordering::Less,
                    Op::Like | Op::In => false,
                }
            }
        }
    }
}

/// What a record is ordered by, for one property: absent values first, then booleans, numbers
/// (ids, written as digit strings, among them), instants, and other text without regard to case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SortKey {
    Missing,
    Bool(bool),
    Number(Decimal),
    Instant(i64),
    Text(String),
}

/// The key `record` is ordered by for `property` (computed once per record, not per comparison).
pub(crate) fn sort_key(record: &Value, property: &str) -> SortKey {
    match at(record, property) {
        None | Some(Value::Null) => SortKey::Missing,
        Some(Value::Bool(b)) => SortKey::Bool(*b),
        Some(v @ Value::Number(_)) => decimal(v).map_or(SortKey::Missing, SortKey::Number),
        Some(Value::String(s)) => {
            if !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && let Ok(n) = s.parse::<Decimal>()
            {
                return SortKey::Number(n);
            }
            match s.contains('T').then(|| parse_instant(s)).flatten() {
                Some(ms) => SortKey::Instant(ms),
                None => SortKey::Text(s.to_lowercase()),
            }
        }
        Some(other) => SortKey::Text(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_statements_the_spec_sends_parse() {
        let s = parse("select * from Invoice where MetaData.LastUpdatedTime >= '2026-01-01T00:00:00Z' and DocNumber = 'O\\'Brien' orderby MetaData.LastUpdatedTime startposition 1001 maxresults 1000").unwrap();
        assert_eq!(s.entity, "Invoice");
        assert_eq!(s.conditions.len(), 2);
        assert_eq!(s.order, [("MetaData.LastUpdatedTime".to_owned(), false)]);
        assert_eq!((s.start, s.max), (1001, 1000));
        assert_eq!(
            s.conditions[1].values,
            [Literal::Text("O'Brien".to_owned())]
        );
        let s =
            parse("SELECT COUNT(*) FROM Customer WHERE Active IN (true, false) ORDER BY Id DESC")
                .unwrap();
        assert!(s.count);
        assert_eq!(s.order, [("Id".to_owned(), true)]);
        assert_eq!((s.start, s.max), (1, 100));
        for bad in [
            "select Id from Invoice",
            "select * from Invoice where A = '1' or B = '2'",
            "select * from Invoice maxresults 1001",
            "select * from Invoice startposition 0",
            "select * from Invoice where DocNumber = 'open",
            "select * from Invoice trailing",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conditions_compare_instants_ids_references_and_patterns() {
        let r = json!({"Id": "12", "Active": true, "TotalAmt": 10.5,
            "CustomerRef": {"value": "7", "name": "Acme"}, "DisplayName": "Acme Builders",
            "MetaData": {"LastUpdatedTime": "2025-12-31T17:00:00-07:00"}});
        let holds = |where_: &str| {
            parse(&format!("select * from X where {where_}"))
                .unwrap()
                .conditions[0]
                .matches(&r)
        };
        assert!(holds("MetaData.LastUpdatedTime >= '2026-01-01T00:00:00Z'"));
        assert!(!holds("MetaData.LastUpdatedTime > '2026-01-01T00:00:00Z'"));
        assert!(holds("Id > '9'"), "ids compare as numbers");
        assert!(holds("Id in ('3', '12')"));
        assert!(holds("CustomerRef = '7'"));
        assert!(holds("TotalAmt < 11"));
        assert!(holds("Active = true"));
        assert!(holds("DisplayName like 'acme%'"));
        assert!(holds("DisplayName like '%build%'"));
        assert!(!holds("DisplayName like 'build%'"));
        assert!(!holds("Missing = 'x'"));
    }
}
