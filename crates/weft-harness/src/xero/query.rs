//! Xero's `where` and `order` query parameters: a small parser and evaluator for the subset of
//! the .NET-LINQ-like syntax clients use.
//!
//! Supported: `==` `=` `!=` `<>` `>=` `<=` `>` `<`; `AND` `&&` `OR` `||` `NOT` `!` and parentheses;
//! literals `"text"`, numbers, `true`, `false`, `null`, `DateTime(y, m, d[, h, m, s])`,
//! `GUID("…")`; dotted field paths (`Contact.ContactID`); `.Contains("…")`, `.StartsWith("…")`,
//! `.EndsWith("…")`. Text comparisons ignore case, as Xero's database collation does.

use std::borrow::Cow;
use std::cmp::Ordering;

use rust_decimal::Decimal;
use serde_json::Value;

use super::util::{date_ms, decimal, parse_ms_date};

/// A parsed `where` expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Operand, Op, Operand),
    Method(Vec<String>, Method, String),
    Truthy(Operand),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Ge,
    Le,
    Gt,
    Lt,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Method {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    Field(Vec<String>),
    Text(String),
    Number(Decimal),
    Date(i64),
    Bool(bool),
    Null,
}

/// One key of `order`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrderKey {
    path: Vec<String>,
    pub(crate) descending: bool,
}

impl OrderKey {
    /// The comparable value of this key in a record.
    pub(crate) fn scalar<R: Record + ?Sized>(&self, r: &R) -> Scalar {
        scalar_of(r.field(&self.path))
    }
}

/// A field's value as `where` and `order` see it (objects, arrays and missing fields are null).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field<'a> {
    Null,
    Bool(bool),
    Num(Decimal),
    Str(Cow<'a, str>),
}

/// Something `where` and `order` can read fields of: a JSON record, or a compact view of a
/// seeded one that answers exactly as its JSON would.
pub(crate) trait Record {
    /// The value at a case-insensitive dotted path.
    fn field(&self, path: &[String]) -> Field<'_>;
}

impl Record for Value {
    fn field(&self, path: &[String]) -> Field<'_> {
        match lookup(self, path) {
            Some(Value::Bool(b)) => Field::Bool(*b),
            Some(n @ Value::Number(_)) => decimal(n).map_or(Field::Null, Field::Num),
            Some(Value::String(s)) => Field::Str(Cow::Borrowed(s)),
            _ => Field::Null,
        }
    }
}

/// Parses `order`: `Field [ASC|DESC][, Field [ASC|DESC]]…`.
pub(crate) fn parse_order(text: &str) -> Result<Vec<OrderKey>, String> {
    let mut keys = Vec::new();
    for part in text.split(',') {
        let mut words = part.split_whitespace();
        let Some(field) = words.next() else { continue };
        if !field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        {
            return Err(format!("'{field}' is not a field that can be ordered by"));
        }
        let descending = match words.next().map(str::to_ascii_uppercase).as_deref() {
            None | Some("ASC") => false,
            Some("DESC") => true,
            Some(other) => return Err(format!("'{other}' is not ASC or DESC")),
        };
        keys.push(OrderKey {
            path: field.split('.').map(str::to_owned).collect(),
            descending,
        });
    }
    Ok(keys)
}

/// Parses a `where` expression.
pub(crate) fn parse_where(text: &str) -> Result<Expr, String> {
    let tokens = tokenize(text)?;
    let mut p = Parser { tokens, pos: 0 };
    let e = p.or()?;
    if p.pos != p.tokens.len() {
        return Err(format!(
            "Unexpected '{}' in the where clause",
            p.tokens[p.pos].text()
        ));
    }
    Ok(e)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Sym(&'static str),
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Ident(s) | Tok::Num(s) => s.clone(),
            Tok::Str(s) => format!("\"{s}\""),
            Tok::Sym(s) => (*s).to_owned(),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    const SYMS: [&str; 16] = [
        "==", "!=", "<>", ">=", "<=", "&&", "||", "=", "<", ">", "!", "(", ")", ",", ".", "-",
    ];
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("Unterminated string in the where clause".to_owned()),
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        s.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(sym) = SYMS.iter().find(|s| rest.starts_with(**s)) else {
                return Err(format!("Unexpected character '{c}' in the where clause"));
            };
            out.push(Tok::Sym(sym));
            i += sym.chars().count();
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(w))
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(x)) if *x == s) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), String> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(format!("Expected '{s}' in the where clause"))
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        loop {
            if self.is_word("OR") {
                self.pos += 1;
            } else if !self.eat_sym("||") {
                return Ok(left);
            }
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        loop {
            if self.is_word("AND") {
                self.pos += 1;
            } else if !self.eat_sym("&&") {
                return Ok(left);
            }
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.is_word("NOT") || self.eat_sym("!") {
            if self.is_word("NOT") {
                self.pos += 1;
            }
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat_sym("(") {
            let e = self.or()?;
            self.expect_sym(")")?;
            return Ok(e);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let left = self.operand()?;
        // A method call on a field path.
        if let Operand::Field(path) = &left
            && let Some((last, head)) = path.split_last()
        {
            let method = match last.to_ascii_lowercase().as_str() {
                "contains" => Some(Method::Contains),
                "startswith" => Some(Method::StartsWith),
                "endswith" => Some(Method::EndsWith),
                _ => None,
            };
            if let Some(m) = method.filter(|_| self.eat_sym("(")) {
                let arg = match self.operand()? {
                    Operand::Text(s) => s,
                    _ => return Err(format!("{last} needs a text argument")),
                };
                self.expect_sym(")")?;
                return Ok(Expr::Method(head.to_vec(), m, arg));
            }
        }
        let op = match self.peek() {
            Some(Tok::Sym("==" | "=")) => Op::Eq,
            Some(Tok::Sym("!=" | "<>")) => Op::Ne,
            Some(Tok::Sym(">=")) => Op::Ge,
            Some(Tok::Sym("<=")) => Op::Le,
            Some(Tok::Sym(">")) => Op::Gt,
            Some(Tok::Sym("<")) => Op::Lt,
            _ => return Ok(Expr::Truthy(left)),
        };
        self.pos += 1;
        let right = self.operand()?;
        Ok(Expr::Compare(left, op, right))
    }

    fn number_args(&mut self) -> Result<Vec<i64>, String> {
        self.expect_sym("(")?;
        let mut out = Vec::new();
        loop {
            match self.tokens.get(self.pos).cloned() {
                Some(Tok::Num(n)) => {
                    self.pos += 1;
                    out.push(
                        n.parse()
                            .map_err(|_| format!("'{n}' is not a whole number"))?,
                    );
                }
                _ => return Err("DateTime needs numbers".to_owned()),
            }
            if self.eat_sym(")") {
                return Ok(out);
            }
            self.expect_sym(",")?;
        }
    }

    fn operand(&mut self) -> Result<Operand, String> {
        let negative = self.eat_sym("-");
        let Some(tok) = self.tokens.get(self.pos).cloned() else {
            return Err("The where clause ends too early".to_owned());
        };
        self.pos += 1;
        match tok {
            Tok::Str(s) => Ok(Operand::Text(s)),
            Tok::Num(n) => {
                let d: Decimal = n.parse().map_err(|_| format!("'{n}' is not a number"))?;
                Ok(Operand::Number(if negative { -d } else { d }))
            }
            Tok::Ident(w) if w.eq_ignore_ascii_case("true") => Ok(Operand::Bool(true)),
            Tok::Ident(w) if w.eq_ignore_ascii_case("false") => Ok(Operand::Bool(false)),
            Tok::Ident(w) if w.eq_ignore_ascii_case("null") => Ok(Operand::Null),
            Tok::Ident(w) if w.eq_ignore_ascii_case("DateTime") => {
                let a = self.number_args()?;
                let part = |i: usize| a.get(i).copied().unwrap_or(0);
                let cast =
                    |x: i64| i8::try_from(x).map_err(|_| "DateTime part out of range".to_owned());
                if a.len() < 3 {
                    return Err("DateTime needs a year, month and day".to_owned());
                }
                let year =
                    i16::try_from(part(0)).map_err(|_| "DateTime year out of range".to_owned())?;
                date_ms(
                    year,
                    cast(part(1))?,
                    cast(part(2))?,
                    cast(part(3))?,
                    cast(part(4))?,
                    cast(part(5))?,
                )
                .map(Operand::Date)
                .ok_or_else(|| "DateTime is not a valid date".to_owned())
            }
            Tok::Ident(w) if w.eq_ignore_ascii_case("GUID") => {
                self.expect_sym("(")?;
                let s = match self.tokens.get(self.pos).cloned() {
                    Some(Tok::Str(s)) => s,
                    _ => return Err("GUID needs a quoted value".to_owned()),
                };
                self.pos += 1;
                self.expect_sym(")")?;
                Ok(Operand::Text(s))
            }
            Tok::Ident(w) => {
                let mut path = vec![w];
                while self.eat_sym(".") {
                    match self.tokens.get(self.pos).cloned() {
                        Some(Tok::Ident(n)) => {
                            self.pos += 1;
                            path.push(n);
                        }
                        _ => return Err("Expected a field name after '.'".to_owned()),
                    }
                }
                Ok(Operand::Field(path))
            }
            Tok::Sym(s) => Err(format!("Unexpected '{s}' in the where clause")),
        }
    }
}

/// A value inside a record by a case-insensitive dotted path.
fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        let m = cur.as_object()?;
        cur = m.get(p).or_else(|| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(p))
                .map(|(_, v)| v)
        })?;
    }
    Some(cur)
}

/// Comparable form of a value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Null,
    Bool(bool),
    Num(Decimal),
    Date(i64),
    Text(String),
}

fn scalar_of(f: Field<'_>) -> Scalar {
    match f {
        Field::Null => Scalar::Null,
        Field::Bool(b) => Scalar::Bool(b),
        Field::Num(d) => Scalar::Num(d),
        Field::Str(s) => match parse_ms_date(&s) {
            Some(ms) => Scalar::Date(ms),
            None => Scalar::Text(s.to_lowercase()),
        },
    }
}

fn operand_scalar<R: Record + ?Sized>(o: &Operand, record: &R) -> Scalar {
    match o {
        Operand::Field(p) => scalar_of(record.field(p)),
        Operand::Text(s) => Scalar::Text(s.to_lowercase()),
        Operand::Number(d) => Scalar::Num(*d),
        Operand::Date(ms) => Scalar::Date(*ms),
        Operand::Bool(b) => Scalar::Bool(*b),
        Operand::Null => Scalar::Null,
    }
}

fn cmp_scalar(a: &Scalar, b: &Scalar) -> Option<Ordering> {
    match (a, b) {
        (Scalar::Null, Scalar::Null) => Some(Ordering::Equal),
        (Scalar::Null, _) | (_, Scalar::Null) => None,
        (Scalar::Bool(x), Scalar::Bool(y)) => Some(x.cmp(y)),
        (Scalar::Num(x), Scalar::Num(y)) => Some(x.cmp(y)),
        (Scalar::Date(x), Scalar::Date(y)) => Some(x.cmp(y)),
        (Scalar::Text(x), Scalar::Text(y)) => Some(x.cmp(y)),
        // A date field compared with a date given as text ("2026-01-01").
        (Scalar::Date(x), Scalar::Text(t)) => super::util::parse_client_date(t).map(|y| x.cmp(&y)),
        (Scalar::Text(t), Scalar::Date(y)) => super::util::parse_client_date(t).map(|x| x.cmp(y)),
        (Scalar::Num(x), Scalar::Text(t)) => t.parse::<Decimal>().ok().map(|y| x.cmp(&y)),
        (Scalar::Text(t), Scalar::Num(y)) => t.parse::<Decimal>().ok().map(|x| x.cmp(y)),
        _ => None,
    }
}

impl Expr {
    /// Whether the record satisfies the expression.
    pub(crate) fn matches<R: Record + ?Sized>(&self, record: &R) -> bool {
        match self {
            Expr::And(a, b) => a.matches(record) && b.matches(record),
            Expr::Or(a, b) => a.matches(record) || b.matches(record),
            Expr::Not(e) => !e.matches(record),
            Expr::Truthy(o) => operand_scalar(o, record) == Scalar::Bool(true),
            Expr::Method(path, m, arg) => {
                let Field::Str(text) = record.field(path) else {
                    return false;
                };
                let (t, a) = (text.to_lowercase(), arg.to_lowercase());
                match m {
                    Method::Contains => t.contains(&a),
                    Method::StartsWith => t.starts_with(&a),
                    Method::EndsWith => t.ends_with(&a),
                }
            }
            Expr::Compare(l, op, r) => {
                let (a, b) = (operand_scalar(l, record), operand_scalar(r, record));
                let ord = cmp_scalar(&a, &b);
                match op {
                    Op::Eq => ord == Some(Ordering::Equal),
                    Op::Ne => ord != Some(Ordering::Equal),
                    Op::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
                    Op::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
                    Op::Gt => ord == Some(Ordering::Greater),
                    Op::Lt => ord == Some(Ordering::Less),
                }
            }
        }
    }
}

/// Orders two records by the `order` keys, given each record's key values (missing and null
/// first).
pub(crate) fn compare_keys(keys: &[OrderKey], a: &[Scalar], b: &[Scalar]) -> Ordering {
    for ((key, x), y) in keys.iter().zip(a).zip(b) {
        let o = match (x, y) {
            (Scalar::Null, Scalar::Null) => Ordering::Equal,
            (Scalar::Null, _) => Ordering::Less,
            (_, Scalar::Null) => Ordering::Greater,
            _ => cmp_scalar(x, y).unwrap_or(Ordering::Equal),
        };
        let o = if key.descending { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn where_clauses_evaluate() {
        let inv = json!({"Type": "ACCREC", "Status": "AUTHORISED", "AmountDue": 12.5,
            "Date": "/Date(1767225600000+0000)/", "Contact": {"ContactID": "AbC", "Name": "Peter Pan"},
            "EmailAddress": null});
        let yes = [
            r#"Status=="AUTHORISED""#,
            r#"Type == "ACCREC" AND Status == "AUTHORISED""#,
            r#"Date >= DateTime(2026, 01, 01) && Date < DateTime(2026,12,31)"#,
            r#"Contact.Name.Contains("peter")"#,
            r#"Contact.ContactID = GUID("abc")"#,
            r#"EmailAddress == null"#,
            r#"AmountDue > 10 OR Status == "PAID""#,
            r#"NOT (Status == "PAID")"#,
            r#"Contact.Name.StartsWith("Pe") && AmountDue <= 12.50"#,
        ];
        for w in yes {
            let e = parse_where(w).unwrap_or_else(|err| panic!("{w}: {err}"));
            assert!(e.matches(&inv), "{w}");
        }
        let no = [
            r#"Status != "AUTHORISED""#,
            r#"EmailAddress != null"#,
            r#"AmountDue < 12.5"#,
        ];
        for w in no {
            assert!(
                !parse_where(w).map(|e| e.matches(&inv)).unwrap_or(true),
                "{w}"
            );
        }
        assert!(parse_where("Status ==").is_err());
        assert!(parse_where("\"open").is_err());
        assert!(parse_where("DateTime(2026,13,1) < Date").is_err());
    }
}
