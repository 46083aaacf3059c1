//! The fake org's SOQL subset: a lexer, a recursive-descent parser and an evaluator.
//!
//! Supported: `SELECT` of fields, parent fields (`Owner.Name`) and `COUNT()`; `FROM` any fake
//! object; `WHERE` with `=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`, `IN`, `NOT IN`, semi-joins
//! (`IN (SELECT Id FROM …)`), `LIKE`, `AND`/`OR`/`NOT` and parentheses; string, number,
//! boolean, `null`, dateTime and date literals and the date keywords `TODAY`, `YESTERDAY`,
//! `TOMORROW`, `LAST_N_DAYS:n`, `NEXT_N_DAYS:n`; `ORDER BY … ASC|DESC NULLS FIRST|LAST`;
//! `LIMIT`; `OFFSET`. String literals follow Salesforce's escape rules; anything else is a
//! `MALFORMED_QUERY`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{Map, Value, json};

use super::schema::{FieldDef, ObjDef, Ty, Val, id15, object, parse_time};

/// A stored record: canonical field name → value.
pub type Rec = BTreeMap<&'static str, Val>;

/// An error as Salesforce reports it (`errorCode`, `message`).
#[derive(Clone, Debug, PartialEq)]
pub struct QErr {
    pub code: &'static str,
    pub message: String,
}

fn malformed(m: impl Into<String>) -> QErr {
    QErr { code: "MALFORMED_QUERY", message: m.into() }
}

/// Escaped LIKE wildcards keep a private-use stand-in until matching.
const LIT_PERCENT: char = '\u{E000}';
const LIT_UNDERSCORE: char = '\u{E001}';

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    DateLit(String),
    Sym(char),
    Op(&'static str),
}

fn lex(s: &str) -> Result<Vec<Tok>, QErr> {
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = vec![];
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            i += 1;
            let mut v = String::new();
            loop {
                let Some(&c) = cs.get(i) else { return Err(malformed("unterminated string literal")) };
                i += 1;
                match c {
                    '\'' => break,
                    '\\' => {
                        let Some(&e) = cs.get(i) else { return Err(malformed("unterminated string literal")) };
                        i += 1;
                        v.push(match e {
                            'n' | 'N' => '\n',
                            'r' | 'R' => '\r',
                            't' | 'T' => '\t',
                            'b' | 'B' => '\u{8}',
                            'f' | 'F' => '\u{c}',
                            '"' => '"',
                            '\'' => '\'',
                            '\\' => '\\',
                            '%' => LIT_PERCENT,
                            '_' => LIT_UNDERSCORE,
                            'u' | 'U' => {
                                let hex: String = cs.get(i..i + 4).map(|h| h.iter().collect()).unwrap_or_default();
                                i += 4;
                                u32::from_str_radix(&hex, 16)
                                    .ok()
                                    .and_then(char::from_u32)
                                    .ok_or_else(|| malformed(format!("Invalid unicode escape \\u{hex}")))?
                            }
                            other => {
                                return Err(malformed(format!(
                                    "Invalid string literal '\\{other}'. Illegal character sequence '\\{other}' in string literal."
                                )));
                            }
                        });
                    }
                    c => v.push(c),
                }
            }
            out.push(Tok::Str(v));
        } else if c.is_ascii_digit() || (c == '-' && cs.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            i += 1;
            while i < cs.len() && (cs[i].is_ascii_alphanumeric() || matches!(cs[i], '-' | ':' | '.' | '+')) {
                i += 1;
            }
            let t: String = cs[start..i].iter().collect();
            if t.len() >= 10 && t[1..].contains('-') {
                out.push(Tok::DateLit(t));
            } else {
                out.push(Tok::Num(t));
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_' || cs[i] == '.') {
                i += 1;
            }
            out.push(Tok::Ident(cs[start..i].iter().collect()));
        } else if matches!(c, '(' | ')' | ',' | ':') {
            out.push(Tok::Sym(c));
            i += 1;
        } else {
            let two: String = cs[i..(i + 2).min(cs.len())].iter().collect();
            let op = match two.as_str() {
                "!=" | "<>" => Some(("!=", 2)),
                "<=" => Some(("<=", 2)),
                ">=" => Some((">=", 2)),
                _ => match c {
                    '=' => Some(("=", 1)),
                    '<' => Some(("<", 1)),
                    '>' => Some((">", 1)),
                    _ => None,
                },
            };
            let Some((op, n)) = op else { return Err(malformed(format!("unexpected token: '{c}'"))) };
            out.push(Tok::Op(op));
            i += n;
        }
    }
    Ok(out)
}

/// A literal of a condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Null,
    Str(String),
    Bool(bool),
    Num(f64),
    DateTime(DateTime<Utc>),
    Date(NaiveDate),
    /// A date keyword: `[from, to)`.
    Range(DateTime<Utc>, DateTime<Utc>),
}

/// A WHERE condition.
#[derive(Clone, Debug)]
pub enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Cmp(String, &'static str, Lit),
    In(String, bool, Vec<Lit>),
    InSub(String, bool, Box<Query>),
    Like(String, String),
}

/// An aggregate function of the select list (`COUNT(Id)`, `MAX(CreatedDate) latest`).
#[derive(Clone, Debug)]
pub struct Agg {
    pub func: AggFn,
    pub field: String,
    pub alias: Option<String>,
}

/// The aggregate functions the fake evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFn {
    Count,
    CountDistinct,
    Min,
    Max,
}

/// A parsed query.
#[derive(Clone, Debug)]
pub struct Query {
    /// Field paths, or `None` for `COUNT()`.
    pub select: Option<Vec<String>>,
    /// Aggregate functions of the select list (then the rows are `AggregateResult`s).
    pub aggs: Vec<Agg>,
    /// `GROUP BY` field paths.
    pub group_by: Vec<String>,
    pub from: String,
    pub cond: Option<Cond>,
    pub order: Vec<(String, bool, bool)>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    now: DateTime<Utc>,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(kw))
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        let yes = self.is_kw(kw);
        if yes {
            self.pos += 1;
        }
        yes
    }
    fn expect_kw(&mut self, kw: &str) -> Result<(), QErr> {
        if self.eat_kw(kw) { Ok(()) } else { Err(self.unexpected(&format!("expecting {kw}"))) }
    }
    fn eat_sym(&mut self, c: char) -> bool {
        let yes = self.peek() == Some(&Tok::Sym(c));
        if yes {
            self.pos += 1;
        }
        yes
    }
    fn expect_sym(&mut self, c: char) -> Result<(), QErr> {
        if self.eat_sym(c) { Ok(()) } else { Err(self.unexpected(&format!("expecting '{c}'"))) }
    }
    fn unexpected(&self, what: &str) -> QErr {
        match self.peek() {
            Some(t) => malformed(format!("unexpected token: {} ({what})", tok_text(t))),
            None => malformed(format!("unexpected end of query ({what})")),
        }
    }
    fn ident(&mut self) -> Result<String, QErr> {
        match self.next() {
            Some(Tok::Ident(s)) if !is_reserved(&s) => Ok(s),
            _ => {
                self.pos -= 1;
                Err(self.unexpected("expecting a field or object name"))
            }
        }
    }

    fn query(&mut self) -> Result<Query, QErr> {
        self.expect_kw("SELECT")?;
        let (select, aggs) = self.select_list()?;
        self.expect_kw("FROM")?;
        let from = self.ident()?;
        self.tail(select, aggs, from)
    }

    /// What follows `FROM obj`: `WHERE`, `GROUP BY`, `ORDER BY`, `LIMIT`, `OFFSET`.
    fn tail(&mut self, select: Option<Vec<String>>, aggs: Vec<Agg>, from: String) -> Result<Query, QErr> {
        let cond = if self.eat_kw("WHERE") { Some(self.or()?) } else { None };
        let mut group_by = vec![];
        if self.eat_kw("GROUP") {
            self.expect_kw("BY")?;
            group_by.push(self.ident()?);
            while self.eat_sym(',') {
                group_by.push(self.ident()?);
            }
            if select.is_none() {
                return Err(malformed("COUNT() cannot be used with GROUP BY: use COUNT(Id)"));
            }
        }
        let mut order = vec![];
        if self.eat_kw("ORDER") {
            self.expect_kw("BY")?;
            loop {
                let f = self.ident()?;
                let asc = if self.eat_kw("DESC") {
                    false
                } else {
                    self.eat_kw("ASC");
                    true
                };
                let mut nulls_first = asc;
                if self.eat_kw("NULLS") {
                    nulls_first = if self.eat_kw("FIRST") {
                        true
                    } else {
                        self.expect_kw("LAST")?;
                        false
                    };
                }
                order.push((f, asc, nulls_first));
                if !self.eat_sym(',') {
                    break;
                }
            }
        }
        let mut limit = None;
        let mut offset = None;
        loop {
            if self.eat_kw("LIMIT") {
                limit = Some(self.count()?);
            } else if self.eat_kw("OFFSET") {
                offset = Some(self.count()?);
            } else {
                break;
            }
        }
        Ok(Query { select, aggs, group_by, from, cond, order, limit, offset })
    }

    /// The select list: `COUNT()` alone (`None`), or fields and aggregate functions.
    fn select_list(&mut self) -> Result<(Option<Vec<String>>, Vec<Agg>), QErr> {
        if self.is_kw("COUNT")
            && self.toks.get(self.pos + 1) == Some(&Tok::Sym('('))
            && self.toks.get(self.pos + 2) == Some(&Tok::Sym(')'))
        {
            self.pos += 3;
            return Ok((None, vec![]));
        }
        let (mut fields, mut aggs) = (vec![], vec![]);
        loop {
            let func = match self.peek() {
                Some(Tok::Ident(s)) if self.toks.get(self.pos + 1) == Some(&Tok::Sym('(')) => {
                    match s.to_ascii_uppercase().as_str() {
                        "COUNT" => Some(AggFn::Count),
                        "COUNT_DISTINCT" => Some(AggFn::CountDistinct),
                        "MIN" => Some(AggFn::Min),
                        "MAX" => Some(AggFn::Max),
                        _ => return Err(malformed(format!("unknown function {s}"))),
                    }
                }
                _ => None,
            };
            match func {
                Some(func) => {
                    self.pos += 2;
                    let field = self.ident()?;
                    self.expect_sym(')')?;
                    let alias = match self.peek() {
                        Some(Tok::Ident(a)) if !is_reserved(a) => {
                            let a = a.clone();
                            self.pos += 1;
                            Some(a)
                        }
                        _ => None,
                    };
                    aggs.push(Agg { func, field, alias });
                }
                None => fields.push(self.ident()?),
            }
            if !self.eat_sym(',') {
                return Ok((Some(fields), aggs));
            }
        }
    }

    fn count(&mut self) -> Result<usize, QErr> {
        match self.next() {
            Some(Tok::Num(n)) => n.parse().map_err(|_| malformed(format!("invalid number {n}"))),
            _ => {
                self.pos -= 1;
                Err(self.unexpected("expecting a number"))
            }
        }
    }

    fn or(&mut self) -> Result<Cond, QErr> {
        let mut parts = vec![self.and()?];
        while self.eat_kw("OR") {
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 { parts.pop().expect("one") } else { Cond::Or(parts) })
    }
    fn and(&mut self) -> Result<Cond, QErr> {
        let mut parts = vec![self.not()?];
        while self.eat_kw("AND") {
            parts.push(self.not()?);
        }
        Ok(if parts.len() == 1 { parts.pop().expect("one") } else { Cond::And(parts) })
    }
    fn not(&mut self) -> Result<Cond, QErr> {
        if self.eat_kw("NOT") {
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        if self.eat_sym('(') {
            let c = self.or()?;
            self.expect_sym(')')?;
            return Ok(c);
        }
        let field = self.ident()?;
        let negated = self.is_kw("NOT")
            && matches!(self.toks.get(self.pos + 1), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("IN"));
        if negated {
            self.pos += 1;
        }
        if self.eat_kw("IN") {
            self.expect_sym('(')?;
            if self.is_kw("SELECT") {
                let q = self.query()?;
                self.expect_sym(')')?;
                return Ok(Cond::InSub(field, negated, Box::new(q)));
            }
            let mut vals = vec![self.literal()?];
            while self.eat_sym(',') {
                vals.push(self.literal()?);
            }
            self.expect_sym(')')?;
            return Ok(Cond::In(field, negated, vals));
        }
        if self.eat_kw("LIKE") {
            return match self.next() {
                Some(Tok::Str(s)) => Ok(Cond::Like(field, s)),
                _ => {
                    self.pos -= 1;
                    Err(self.unexpected("LIKE needs a string"))
                }
            };
        }
        match self.next() {
            Some(Tok::Op(op)) => Ok(Cond::Cmp(field, op, self.literal()?)),
            _ => {
                self.pos -= 1;
                Err(self.unexpected("expecting an operator"))
            }
        }
    }

    fn literal(&mut self) -> Result<Lit, QErr> {
        let today = self.now.date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        match self.next() {
            Some(Tok::Str(s)) => Ok(Lit::Str(s)),
            Some(Tok::Num(n)) => n.parse().map(Lit::Num).map_err(|_| malformed(format!("invalid number {n}"))),
            Some(Tok::DateLit(d)) => {
                if let Ok(date) = NaiveDate::parse_from_str(&d, "%Y-%m-%d") {
                    Ok(Lit::Date(date))
                } else {
                    parse_time(&d)
                        .map(Lit::DateTime)
                        .ok_or_else(|| malformed(format!("line 1: invalid date/time literal {d}")))
                }
            }
            Some(Tok::Ident(s)) => {
                let up = s.to_ascii_uppercase();
                let day = Duration::days(1);
                match up.as_str() {
                    "NULL" => Ok(Lit::Null),
                    "TRUE" => Ok(Lit::Bool(true)),
                    "FALSE" => Ok(Lit::Bool(false)),
                    "TODAY" => Ok(Lit::Range(today, today + day)),
                    "YESTERDAY" => Ok(Lit::Range(today - day, today)),
                    "TOMORROW" => Ok(Lit::Range(today + day, today + day * 2)),
                    "LAST_N_DAYS" | "NEXT_N_DAYS" => {
                        self.expect_sym(':')?;
                        let n = self.count()? as i64;
                        Ok(if up == "LAST_N_DAYS" {
                            Lit::Range(today - Duration::days(n), today + day)
                        } else {
                            Lit::Range(today, today + Duration::days(n + 1))
                        })
                    }
                    _ => Err(malformed(format!("unexpected token: {s} (expecting a literal)"))),
                }
            }
            _ => {
                self.pos -= 1;
                Err(self.unexpected("expecting a literal"))
            }
        }
    }
}

fn tok_text(t: &Tok) -> String {
    match t {
        Tok::Ident(s) | Tok::Num(s) | Tok::DateLit(s) => s.clone(),
        Tok::Str(s) => format!("'{s}'"),
        Tok::Sym(c) => c.to_string(),
        Tok::Op(o) => (*o).to_owned(),
    }
}

fn is_reserved(s: &str) -> bool {
    [
        "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "GROUP", "ORDER", "BY", "LIMIT", "OFFSET", "NULL",
        "TRUE", "FALSE",
    ]
    .iter()
    .any(|k| k.eq_ignore_ascii_case(s))
}

/// Parse a whole query; trailing tokens are an error.
pub fn parse(text: &str, now: DateTime<Utc>) -> Result<Query, QErr> {
    if text.trim().is_empty() {
        return Err(malformed("SOQL statements cannot be empty or null"));
    }
    let mut p = Parser { toks: lex(text)?, pos: 0, now };
    let q = p.query()?;
    if p.pos < p.toks.len() {
        return Err(p.unexpected("expecting end of query"));
    }
    Ok(q)
}

/// One object of a SOSL `RETURNING` clause, `Contact(Id, Name WHERE … ORDER BY … LIMIT n)`:
/// the part in parentheses (`inner`, maybe empty: then `Id`) parsed as the query it stands for.
pub fn parse_returning(from: &str, inner: &str, now: DateTime<Utc>) -> Result<Query, QErr> {
    let mut p = Parser { toks: lex(inner)?, pos: 0, now };
    let (select, aggs) = if p.toks.is_empty() { (Some(vec!["Id".to_owned()]), vec![]) } else { p.select_list()? };
    if select.is_none() || !aggs.is_empty() {
        return Err(QErr { code: "MALFORMED_SEARCH", message: "RETURNING takes field names".into() });
    }
    let q = p.tail(select, aggs, from.to_owned())?;
    if p.pos < p.toks.len() {
        return Err(p.unexpected("expecting ')'"));
    }
    Ok(q)
}

/// What the evaluator needs from the org.
pub trait Db {
    /// Live records of an object (with deleted ones when `all`).
    fn rows(&self, obj: &'static ObjDef, all: bool) -> Vec<&Rec>;
    /// Any live record by id.
    fn by_id(&self, id: &str) -> Option<(&'static ObjDef, &Rec)>;
    /// The live rows whose `field` holds one of the `folded` values (as [`fold`] folds them),
    /// in id order; `None` when `field` has no index (the caller scans).
    fn lookup(&self, obj: &'static ObjDef, field: &str, folded: &[String]) -> Option<Vec<&Rec>>;
}

/// A resolved field path: a field, or a parent's field through a lookup.
#[derive(Clone, Copy, Debug)]
pub enum Path {
    Field(&'static FieldDef),
    Parent { rel: &'static FieldDef, rel_name: &'static str, field: &'static FieldDef },
}

impl Path {
    fn def(&self) -> &'static FieldDef {
        match self {
            Path::Field(f) => f,
            Path::Parent { field, .. } => field,
        }
    }
}

fn invalid_field(obj: &ObjDef, name: &str) -> QErr {
    QErr {
        code: "INVALID_FIELD",
        message: format!(
            "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
            obj.name
        ),
    }
}

/// Resolve `Owner.Name`-style paths against `obj`.
pub fn resolve(obj: &'static ObjDef, path: &str) -> Result<Path, QErr> {
    let parts: Vec<&str> = path.split('.').collect();
    match parts.as_slice() {
        [f] => obj.field(f).map(Path::Field).ok_or_else(|| invalid_field(obj, f)),
        [rel, f] => {
            let ref_name = match rel.strip_suffix("__r") {
                Some(base) => format!("{base}__c"),
                None => format!("{rel}Id"),
            };
            let rel_def = obj.field(&ref_name).ok_or_else(|| QErr {
                code: "INVALID_FIELD",
                message: format!("Didn't understand relationship '{rel}' in field path. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name."),
            })?;
            let Ty::Ref(targets) = rel_def.ty else { return Err(invalid_field(obj, path)) };
            let target = object(targets[0]).ok_or_else(|| invalid_field(obj, path))?;
            let field = target.field(f).ok_or_else(|| invalid_field(target, f))?;
            let rel_name = rel_def.name.strip_suffix("Id").unwrap_or(rel_def.name);
            Ok(Path::Parent { rel: rel_def, rel_name, field })
        }
        _ => Err(invalid_field(obj, path)),
    }
}

/// A field of a stored record (Contact `Name` is computed).
pub fn get(obj: &ObjDef, rec: &Rec, f: &FieldDef) -> Val {
    if obj.name == "Contact" && f.name == "Name" {
        let parts: Vec<&str> =
            ["FirstName", "LastName"].iter().filter_map(|k| rec.get(k).and_then(Val::as_str)).collect();
        return if parts.is_empty() { Val::Null } else { Val::Str(parts.join(" ")) };
    }
    rec.get(f.name).cloned().unwrap_or(Val::Null)
}

fn value(db: &dyn Db, obj: &ObjDef, rec: &Rec, p: &Path) -> Val {
    match p {
        Path::Field(f) => get(obj, rec, f),
        Path::Parent { rel, field, .. } => match rec.get(rel.name) {
            Some(Val::Str(id)) => match db.by_id(id) {
                Some((pobj, prec)) => pobj.field(field.name).map(|f| get(pobj, prec, f)).unwrap_or(Val::Null),
                None => Val::Null,
            },
            _ => Val::Null,
        },
    }
}

fn type_error(f: &FieldDef, lit: &Lit) -> QErr {
    let ty = match f.ty {
        Ty::DateTime => "dateTime",
        Ty::Date => "date",
        Ty::Bool => "boolean",
        Ty::Int => "int",
        _ => "string",
    };
    QErr {
        code: "INVALID_FIELD",
        message: format!(
            "value of filter criterion for field '{}' must be of type {ty} and should not be enclosed in quotes ({lit:?})",
            f.name
        ),
    }
}

/// Case-insensitive order (no allocation for ASCII text).
fn ci_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.bytes().map(|c| c.to_ascii_lowercase()).cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
    } else {
        a.to_lowercase().cmp(&b.to_lowercase())
    }
}

/// Order of a stored value against a literal; `None` when they do not compare.
fn compare(f: &FieldDef, v: &Val, lit: &Lit) -> Result<Option<Ordering>, QErr> {
    let midnight = |d: &NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    Ok(match (v, lit) {
        (Val::Null, _) | (_, Lit::Null) => None,
        (Val::Str(a), Lit::Str(b)) => {
            let b: std::borrow::Cow<str> = if b.contains([LIT_PERCENT, LIT_UNDERSCORE]) {
                b.replace(LIT_PERCENT, "%").replace(LIT_UNDERSCORE, "_").into()
            } else {
                b.as_str().into()
            };
            if matches!(f.ty, Ty::Id | Ty::Ref(_)) { Some(id15(a).cmp(id15(&b))) } else { Some(ci_cmp(a, &b)) }
        }
        (Val::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
        (Val::Int(a), Lit::Num(b)) => (*a as f64).partial_cmp(b),
        (Val::DateTime(a), Lit::DateTime(b)) => Some(a.cmp(b)),
        (Val::Date(a), Lit::Date(b)) => Some(a.cmp(b)),
        (Val::DateTime(a), Lit::Range(from, to)) => Some(if a < from {
            Ordering::Less
        } else if a >= to {
            Ordering::Greater
        } else {
            Ordering::Equal
        }),
        (Val::Date(d), Lit::Range(from, to)) => {
            let a = midnight(d);
            Some(if a < *from {
                Ordering::Less
            } else if a >= *to {
                Ordering::Greater
            } else {
                Ordering::Equal
            })
        }
        (_, lit) => return Err(type_error(f, lit)),
    })
}

fn cmp_op(f: &FieldDef, v: &Val, op: &str, lit: &Lit) -> Result<bool, QErr> {
    if matches!(lit, Lit::Null) || matches!(v, Val::Null) {
        let both_null = matches!(lit, Lit::Null) && matches!(v, Val::Null);
        return Ok(match op {
            "=" => both_null,
            "!=" => !both_null,
            _ => false,
        });
    }
    let Some(o) = compare(f, v, lit)? else { return Ok(false) };
    Ok(match op {
        "=" => o == Ordering::Equal,
        "!=" => o != Ordering::Equal,
        "<" => o == Ordering::Less,
        "<=" => o != Ordering::Greater,
        ">" => o == Ordering::Greater,
        ">=" => o != Ordering::Less,
        _ => false,
    })
}

/// Case-insensitive LIKE with `%`, `_` and escaped literal wildcards.
pub fn like(value: &str, pattern: &str) -> bool {
    let v: Vec<char> = value.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    // Iterative wildcard matching with backtracking on the last `%`.
    let (mut i, mut j) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < v.len() {
        if j < p.len() && p[j] == '%' {
            star = Some((j, i));
            j += 1;
        } else if j < p.len()
            && (p[j] == '_'
                || p[j] == v[i]
                || (p[j] == LIT_PERCENT && v[i] == '%')
                || (p[j] == LIT_UNDERSCORE && v[i] == '_'))
        {
            i += 1;
            j += 1;
        } else if let Some((sj, si)) = star {
            j = sj + 1;
            i = si + 1;
            star = Some((sj, si + 1));
        } else {
            return false;
        }
    }
    while j < p.len() && p[j] == '%' {
        j += 1;
    }
    j == p.len()
}

/// A condition with its field paths resolved and semi-joins evaluated.
enum RCond {
    And(Vec<RCond>),
    Or(Vec<RCond>),
    Not(Box<RCond>),
    Cmp(Path, &'static str, Lit),
    In(Path, bool, Vec<Lit>),
    /// `IN` over string literals on a text or id field: a set of folded keys.
    InSet(Path, bool, std::collections::HashSet<String>),
    Like(Path, String),
}

fn prepare(db: &dyn Db, obj: &'static ObjDef, c: &Cond, all: bool, now: DateTime<Utc>) -> Result<RCond, QErr> {
    Ok(match c {
        Cond::And(cs) => RCond::And(cs.iter().map(|c| prepare(db, obj, c, all, now)).collect::<Result<_, _>>()?),
        Cond::Or(cs) => RCond::Or(cs.iter().map(|c| prepare(db, obj, c, all, now)).collect::<Result<_, _>>()?),
        Cond::Not(c) => RCond::Not(Box::new(prepare(db, obj, c, all, now)?)),
        Cond::Cmp(f, op, lit) => RCond::Cmp(resolve(obj, f)?, op, lit.clone()),
        Cond::In(f, neg, lits) => in_cond(resolve(obj, f)?, *neg, lits.clone()),
        Cond::Like(f, pat) => {
            let p = resolve(obj, f)?;
            if !matches!(p.def().ty, Ty::Str(_) | Ty::Email | Ty::Picklist(_) | Ty::Id | Ty::Ref(_)) {
                return Err(QErr {
                    code: "INVALID_FIELD",
                    message: format!("invalid operator on field '{f}': LIKE needs a text field"),
                });
            }
            RCond::Like(p, pat.clone())
        }
        Cond::InSub(f, neg, q) => {
            let p = resolve(obj, f)?;
            let sub = execute(db, q, false, now, "62.0", usize::MAX)?;
            let field =
                q.select.as_ref().and_then(|s| s.first()).ok_or_else(|| malformed("semi-join needs one field"))?;
            let sub_obj = object(&q.from).ok_or_else(|| malformed("bad semi-join"))?;
            let sub_path = resolve(sub_obj, field)?;
            let key = match sub_path {
                Path::Field(fd) => fd.name,
                Path::Parent { .. } => return Err(malformed("semi-join selects a parent field")),
            };
            let vals = sub
                .rows
                .iter()
                .filter_map(|r| r.get(key).and_then(Value::as_str))
                .map(|s| Lit::Str(s.to_owned()))
                .collect();
            let _ = all;
            in_cond(p, *neg, vals)
        }
    })
}

/// The folded form of a text value for set lookups (ids compare on 15 characters).
fn fold(f: &FieldDef, s: &str) -> String {
    let s = s.replace(LIT_PERCENT, "%").replace(LIT_UNDERSCORE, "_");
    if matches!(f.ty, Ty::Id | Ty::Ref(_)) { id15(&s).to_owned() } else { s.to_lowercase() }
}

fn in_cond(p: Path, neg: bool, lits: Vec<Lit>) -> RCond {
    let text = matches!(p.def().ty, Ty::Str(_) | Ty::Email | Ty::Picklist(_) | Ty::Id | Ty::Ref(_));
    if text && lits.iter().all(|l| matches!(l, Lit::Str(_))) {
        let set = lits
            .iter()
            .filter_map(|l| match l {
                Lit::Str(s) => Some(fold(p.def(), s)),
                _ => None,
            })
            .collect();
        return RCond::InSet(p, neg, set);
    }
    RCond::In(p, neg, lits)
}

fn eval(db: &dyn Db, obj: &ObjDef, rec: &Rec, c: &RCond) -> Result<bool, QErr> {
    Ok(match c {
        RCond::And(cs) => {
            for c in cs {
                if !eval(db, obj, rec, c)? {
                    return Ok(false);
                }
            }
            true
        }
        RCond::Or(cs) => {
            for c in cs {
                if eval(db, obj, rec, c)? {
                    return Ok(true);
                }
            }
            false
        }
        RCond::Not(c) => !eval(db, obj, rec, c)?,
        RCond::Cmp(p, op, lit) => cmp_op(p.def(), &value(db, obj, rec, p), op, lit)?,
        RCond::In(p, neg, lits) => {
            let v = value(db, obj, rec, p);
            let mut hit = false;
            for l in lits {
                if cmp_op(p.def(), &v, "=", l)? {
                    hit = true;
                    break;
                }
            }
            hit != *neg
        }
        RCond::InSet(p, neg, set) => {
            let hit = match value(db, obj, rec, p) {
                Val::Str(v) => set.contains(&fold(p.def(), &v)),
                _ => false,
            };
            hit != *neg
        }
        RCond::Like(p, pat) => match value(db, obj, rec, p) {
            Val::Str(s) => like(&s, pat),
            _ => false,
        },
    })
}

fn order_vals(a: &Val, b: &Val) -> Ordering {
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => ci_cmp(x, y),
        (Val::Bool(x), Val::Bool(y)) => x.cmp(y),
        (Val::Int(x), Val::Int(y)) => x.cmp(y),
        (Val::DateTime(x), Val::DateTime(y)) => x.cmp(y),
        (Val::Date(x), Val::Date(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// The result of a query: the total and the JSON rows (all of them; the caller pages).
#[derive(Debug)]
pub struct Executed {
    pub total: usize,
    pub rows: Vec<Value>,
    pub count_only: bool,
}

/// The rows an index narrows a condition to: a top-level (or AND-ed) `field = 'v'` or
/// `field IN ('v', …)` on an indexed field. The full condition is still evaluated on them.
fn indexed<'a>(db: &'a dyn Db, obj: &'static ObjDef, c: &RCond) -> Option<Vec<&'a Rec>> {
    match c {
        RCond::And(cs) => cs.iter().find_map(|c| indexed(db, obj, c)),
        RCond::InSet(Path::Field(f), false, set) => {
            let keys: Vec<String> = set.iter().cloned().collect();
            db.lookup(obj, f.name, &keys)
        }
        RCond::Cmp(Path::Field(f), "=", Lit::Str(s)) => db.lookup(obj, f.name, &[fold(f, s)]),
        _ => None,
    }
}

/// Run a parsed query against `db`. `all` includes deleted rows (`queryAll`).
pub fn execute(db: &dyn Db, q: &Query, all: bool, now: DateTime<Utc>, api: &str, cap: usize) -> Result<Executed, QErr> {
    let obj = object(&q.from).ok_or_else(|| QErr {
        code: "INVALID_TYPE",
        message: format!("sObject type '{}' is not supported.", q.from),
    })?;
    let select: Option<Vec<Path>> =
        q.select.as_ref().map(|s| s.iter().map(|f| resolve(obj, f)).collect::<Result<_, _>>()).transpose()?;
    let cond = q.cond.as_ref().map(|c| prepare(db, obj, c, all, now)).transpose()?;
    let order: Vec<(Path, bool, bool)> =
        q.order.iter().map(|(f, asc, nf)| Ok((resolve(obj, f)?, *asc, *nf))).collect::<Result<_, QErr>>()?;
    let candidates = match (&cond, all) {
        (Some(c), false) => indexed(db, obj, c),
        _ => None,
    };
    let mut rows: Vec<&Rec> = vec![];
    for r in candidates.unwrap_or_else(|| db.rows(obj, all)) {
        if match &cond {
            Some(c) => eval(db, obj, r, c)?,
            None => true,
        } {
            rows.push(r);
        }
    }
    if !order.is_empty() {
        rows.sort_by(|a, b| {
            for (p, asc, nulls_first) in &order {
                let (va, vb) = (value(db, obj, a, p), value(db, obj, b, p));
                let o = match (&va, &vb) {
                    (Val::Null, Val::Null) => Ordering::Equal,
                    (Val::Null, _) => {
                        if *nulls_first {
                            Ordering::Less
                        } else {
                            Ordering::Greater
                        }
                    }
                    (_, Val::Null) => {
                        if *nulls_first {
                            Ordering::Greater
                        } else {
                            Ordering::Less
                        }
                    }
                    _ => {
                        let o = order_vals(&va, &vb);
                        if *asc { o } else { o.reverse() }
                    }
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
    }
    let skip = q.offset.unwrap_or(0);
    let take = q.limit.unwrap_or(usize::MAX).min(cap);
    if !q.aggs.is_empty() || !q.group_by.is_empty() {
        let out: Vec<Value> = aggregate(db, obj, q, &rows)?.into_iter().skip(skip).take(take).collect();
        return Ok(Executed { total: out.len(), rows: out, count_only: false });
    }
    let rows: Vec<&Rec> = rows.into_iter().skip(skip).take(take).collect();
    let Some(select) = select else {
        return Ok(Executed { total: rows.len(), rows: vec![], count_only: true });
    };
    let out: Vec<Value> = rows.iter().map(|r| row_json(db, obj, r, &select, api)).collect();
    Ok(Executed { total: out.len(), rows: out, count_only: false })
}

/// The `AggregateResult` rows of an aggregate query over the matching `rows` (already in the
/// query's order): one per group in first-seen order, or one for all rows without `GROUP BY`.
/// Grouped fields keep their field name; aggregates their alias or `expr0`, `expr1`, ….
fn aggregate(db: &dyn Db, obj: &'static ObjDef, q: &Query, rows: &[&Rec]) -> Result<Vec<Value>, QErr> {
    let grouped = |f: &str| q.group_by.iter().any(|g| g.eq_ignore_ascii_case(f));
    if let Some(f) = q.select.iter().flatten().find(|f| !grouped(f)) {
        return Err(malformed(format!("Field must be grouped or aggregated: {f}")));
    }
    if let Some((f, ..)) = q.order.iter().find(|(f, ..)| !grouped(f)) {
        return Err(malformed(format!("Ordered field must be grouped or aggregated: {f}")));
    }
    let keys: Vec<Path> = q.group_by.iter().map(|f| resolve(obj, f)).collect::<Result<_, _>>()?;
    let aggs: Vec<(&Agg, Path)> =
        q.aggs.iter().map(|a| Ok((a, resolve(obj, &a.field)?))).collect::<Result<_, QErr>>()?;
    let fold_val = |v: &Val| v.to_json().to_string().to_lowercase();
    let mut groups: Vec<(Vec<Val>, Vec<&Rec>)> = vec![];
    let mut index: std::collections::HashMap<Vec<String>, usize> = std::collections::HashMap::new();
    for r in rows {
        let vals: Vec<Val> = keys.iter().map(|p| value(db, obj, r, p)).collect();
        let folded: Vec<String> = vals.iter().map(fold_val).collect();
        let at = *index.entry(folded).or_insert_with(|| {
            groups.push((vals, vec![]));
            groups.len() - 1
        });
        groups[at].1.push(r);
    }
    if keys.is_empty() && groups.is_empty() {
        groups.push((vec![], vec![]));
    }
    let out = groups
        .into_iter()
        .map(|(vals, members)| {
            let mut m = Map::new();
            m.insert("attributes".into(), json!({"type": "AggregateResult"}));
            for ((g, p), v) in q.group_by.iter().zip(&keys).zip(&vals) {
                if q.select.iter().flatten().any(|f| f.eq_ignore_ascii_case(g)) {
                    m.insert(p.def().name.to_owned(), v.to_json());
                }
            }
            let mut unnamed = 0;
            for (a, p) in &aggs {
                let present: Vec<Val> =
                    members.iter().map(|r| value(db, obj, r, p)).filter(|v| !matches!(v, Val::Null)).collect();
                let result = match a.func {
                    AggFn::Count => json!(present.len()),
                    AggFn::CountDistinct => {
                        json!(present.iter().map(fold_val).collect::<std::collections::HashSet<_>>().len())
                    }
                    AggFn::Min => present.iter().min_by(|x, y| order_vals(x, y)).map_or(Value::Null, Val::to_json),
                    AggFn::Max => present.iter().max_by(|x, y| order_vals(x, y)).map_or(Value::Null, Val::to_json),
                };
                let name = a.alias.clone().unwrap_or_else(|| {
                    unnamed += 1;
                    format!("expr{}", unnamed - 1)
                });
                m.insert(name, result);
            }
            Value::Object(m)
        })
        .collect();
    Ok(out)
}

/// `{"type": …, "url": …}` of a record.
pub fn attributes(obj: &ObjDef, id: Option<&str>, api: &str) -> Value {
    match id {
        Some(id) => json!({"type": obj.name, "url": format!("/services/data/v{api}/sobjects/{}/{id}", obj.name)}),
        None => json!({"type": obj.name}),
    }
}

fn row_json(db: &dyn Db, obj: &ObjDef, rec: &Rec, select: &[Path], api: &str) -> Value {
    let mut m = Map::new();
    m.insert("attributes".into(), attributes(obj, rec.get("Id").and_then(Val::as_str), api));
    for p in select {
        match p {
            Path::Field(f) => {
                m.insert(f.name.to_owned(), get(obj, rec, f).to_json());
            }
            Path::Parent { rel, rel_name, field, .. } => {
                let parent = match rec.get(rel.name) {
                    Some(Val::Str(id)) => db.by_id(id),
                    _ => None,
                };
                match parent {
                    Some((pobj, prec)) => {
                        let entry = m.entry(rel_name.to_string()).or_insert_with(|| {
                            let mut pm = Map::new();
                            pm.insert("attributes".into(), attributes(pobj, prec.get("Id").and_then(Val::as_str), api));
                            Value::Object(pm)
                        });
                        if let (Value::Object(pm), Some(fd)) = (entry, pobj.field(field.name)) {
                            pm.insert(fd.name.to_owned(), get(pobj, prec, fd).to_json());
                        }
                    }
                    None => {
                        m.insert(rel_name.to_string(), Value::Null);
                    }
                }
            }
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_supported_subset() {
        let now = Utc::now();
        let q = parse(
            "SELECT Id, Owner.Name FROM Contact WHERE (LastName = 'O\\'Brien' OR Email IN ('a@b.c')) AND NOT Phone != null \
             AND CreatedDate > 2026-01-01T00:00:00Z AND CreatedDate = LAST_N_DAYS:3 ORDER BY LastName DESC NULLS LAST LIMIT 5 OFFSET 1",
            now,
        )
        .unwrap();
        assert_eq!(q.limit, Some(5));
        assert_eq!(q.offset, Some(1));
        assert!(parse("SELECT COUNT() FROM Contact", now).unwrap().select.is_none());
        assert_eq!(parse("SELECT Id FROM Contact WHERE Name = 'a\\qb'", now).unwrap_err().code, "MALFORMED_QUERY");
        assert_eq!(parse("", now).unwrap_err().message, "SOQL statements cannot be empty or null");
        assert!(parse("SELECT Id FROM Contact WHERE Name = 'x' OR", now).is_err());
        assert!(parse("SELECT Id FROM Contact WHERE Name = 'x' garbage", now).is_err());
    }

    #[test]
    fn like_honours_escaped_wildcards() {
        assert!(like("50% off", "50%"));
        assert!(like("ABC", "a_c"));
        assert!(!like("50x off", &format!("50{LIT_PERCENT}%")));
        assert!(like("50% off", &format!("50{LIT_PERCENT}%")));
        assert!(!like("a_c", &format!("ab{LIT_UNDERSCORE}")));
        assert!(like("snake_case", &format!("%{LIT_UNDERSCORE}%")));
        assert!(!like("snakecase", &format!("%{LIT_UNDERSCORE}%")));
    }
}
