//! A small OData `$filter` evaluator: `and`/`or`/`not`, parentheses, `eq ne gt ge lt le`,
//! property paths (`start/dateTime`), `any`/`all` lambdas (`emailAddresses/any(a:a/address eq
//! 'x')`, `singleValueExtendedProperties/Any(ep: ep/id eq '…' and ep/value eq '…')`), and
//! `startswith` / `contains`. String comparison is case-insensitive, as Exchange's is.

use std::collections::HashMap;

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    LParen,
    RParen,
    Colon,
    Comma,
    Slash,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = vec![];
    while i < cs.len() {
        let c = cs[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ':' => {
                out.push(Tok::Colon);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '/' => {
                out.push(Tok::Slash);
                i += 1
            }
            '\'' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match cs.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some('\'') if cs.get(i + 1) == Some(&'\'') => {
                            v.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            v.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            c if c.is_ascii_digit() || (c == '-' && cs.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                let st = i;
                i += 1;
                while i < cs.len() && (cs[i].is_ascii_digit() || cs[i] == '.') {
                    i += 1;
                }
                let t: String = cs[st..i].iter().collect();
                out.push(Tok::Num(t.parse().map_err(|_| format!("bad number {t}"))?));
            }
            c if c.is_alphanumeric() || matches!(c, '_' | '@' | '.' | '$' | '#') => {
                let st = i;
                while i < cs.len() && (cs[i].is_alphanumeric() || matches!(cs[i], '_' | '@' | '.' | '$' | '#')) {
                    i += 1;
                }
                out.push(Tok::Ident(cs[st..i].iter().collect()));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

#[derive(Clone, Debug)]
pub(crate) enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Vec<String>, String, Value),
    Lambda { path: Vec<String>, all: bool, var: String, body: Box<Expr> },
    Func { name: String, path: Vec<String>, arg: String },
}

struct P {
    t: Vec<Tok>,
    i: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.t.get(self.i).cloned();
        self.i += 1;
        t
    }
    fn kw(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(w))
    }
    fn expect(&mut self, t: Tok) -> Result<(), String> {
        match self.next() {
            Some(x) if x == t => Ok(()),
            other => Err(format!("expected {t:?}, found {other:?}")),
        }
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut l = self.and()?;
        while self.kw("or") {
            self.i += 1;
            l = Expr::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut l = self.unary()?;
        while self.kw("and") {
            self.i += 1;
            l = Expr::And(Box::new(l), Box::new(self.unary()?));
        }
        Ok(l)
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if self.kw("not") {
            self.i += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.i += 1;
            let e = self.or()?;
            self.expect(Tok::RParen)?;
            return Ok(e);
        }
        self.primary()
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Ident(s)) => Ok(s),
            other => Err(format!("expected a name, found {other:?}")),
        }
    }
    fn primary(&mut self) -> Result<Expr, String> {
        let first = self.ident()?;
        if self.peek() == Some(&Tok::LParen)
            && ["startswith", "contains", "endswith"].contains(&first.to_lowercase().as_str())
        {
            self.i += 1;
            let path = self.path_rest(None)?;
            self.expect(Tok::Comma)?;
            let arg = match self.next() {
                Some(Tok::Str(s)) => s,
                other => return Err(format!("expected a string, found {other:?}")),
            };
            self.expect(Tok::RParen)?;
            return Ok(Expr::Func { name: first.to_lowercase(), path, arg });
        }
        let mut path = vec![first];
        while self.peek() == Some(&Tok::Slash) {
            self.i += 1;
            let seg = self.ident()?;
            if (seg.eq_ignore_ascii_case("any") || seg.eq_ignore_ascii_case("all")) && self.peek() == Some(&Tok::LParen)
            {
                self.i += 1;
                let var = self.ident()?;
                self.expect(Tok::Colon)?;
                let body = self.or()?;
                self.expect(Tok::RParen)?;
                return Ok(Expr::Lambda { path, all: seg.eq_ignore_ascii_case("all"), var, body: Box::new(body) });
            }
            path.push(seg);
        }
        let op = self.ident()?.to_lowercase();
        if !["eq", "ne", "gt", "ge", "lt", "le"].contains(&op.as_str()) {
            return Err(format!("unsupported operator {op}"));
        }
        let lit = match self.next() {
            Some(Tok::Str(s)) => Value::String(s),
            Some(Tok::Num(n)) => serde_json::json!(n),
            Some(Tok::Ident(w)) if w == "true" || w == "false" => Value::Bool(w == "true"),
            Some(Tok::Ident(w)) if w == "null" => Value::Null,
            other => return Err(format!("expected a literal, found {other:?}")),
        };
        Ok(Expr::Cmp(path, op, lit))
    }
    fn path_rest(&mut self, first: Option<String>) -> Result<Vec<String>, String> {
        let mut path = vec![match first {
            Some(f) => f,
            None => self.ident()?,
        }];
        while self.peek() == Some(&Tok::Slash) {
            self.i += 1;
            path.push(self.ident()?);
        }
        Ok(path)
    }
}

/// Parse a `$filter` expression.
pub(crate) fn parse(s: &str) -> Result<Expr, String> {
    let mut p = P { t: lex(s)?, i: 0 };
    let e = p.or()?;
    if p.i != p.t.len() {
        return Err(format!("unexpected trailing input at token {}", p.i));
    }
    Ok(e)
}

fn resolve<'a>(path: &[String], item: &'a Value, vars: &HashMap<String, &'a Value>) -> Option<&'a Value> {
    let (mut cur, rest) = match vars.get(&path[0]) {
        Some(v) => (*v, &path[1..]),
        None => (item, path),
    };
    for seg in rest {
        cur = cur.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(seg)).map(|(_, v)| v)?;
    }
    Some(cur)
}

fn cmp(a: Option<&Value>, op: &str, b: &Value) -> bool {
    use std::cmp::Ordering;
    let ord = match (a.unwrap_or(&Value::Null), b) {
        (Value::String(x), Value::String(y)) => Some(x.to_lowercase().cmp(&y.to_lowercase())),
        (Value::Number(x), Value::Number(y)) => x.as_f64().zip(y.as_f64()).and_then(|(x, y)| x.partial_cmp(&y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    };
    match op {
        "eq" => ord == Some(Ordering::Equal),
        "ne" => ord != Some(Ordering::Equal),
        "gt" => ord == Some(Ordering::Greater),
        "ge" => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        "lt" => ord == Some(Ordering::Less),
        "le" => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        _ => false,
    }
}

/// Whether `item` satisfies `e`.
pub(crate) fn eval(e: &Expr, item: &Value) -> bool {
    eval_in(e, item, &HashMap::new())
}

fn eval_in<'a>(e: &Expr, item: &'a Value, vars: &HashMap<String, &'a Value>) -> bool {
    match e {
        Expr::Or(a, b) => eval_in(a, item, vars) || eval_in(b, item, vars),
        Expr::And(a, b) => eval_in(a, item, vars) && eval_in(b, item, vars),
        Expr::Not(a) => !eval_in(a, item, vars),
        Expr::Cmp(path, op, lit) => cmp(resolve(path, item, vars), op, lit),
        Expr::Func { name, path, arg } => {
            let v = resolve(path, item, vars).and_then(Value::as_str).unwrap_or("").to_lowercase();
            let a = arg.to_lowercase();
            match name.as_str() {
                "startswith" => v.starts_with(&a),
                "endswith" => v.ends_with(&a),
                _ => v.contains(&a),
            }
        }
        Expr::Lambda { path, all, var, body } => {
            let Some(arr) = resolve(path, item, vars).and_then(Value::as_array) else { return *all };
            let test = |el: &'a Value| {
                let mut v2 = vars.clone();
                v2.insert(var.clone(), el);
                eval_in(body, item, &v2)
            };
            if *all { arr.iter().all(test) } else { arr.iter().any(test) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_the_adapter_sends_evaluate() {
        let c = json!({"displayName":"O'Brien","categories":["Salesforce_Sync"],
            "emailAddresses":[{"address":"A@x.io"}],
            "singleValueExtendedProperties":[{"id":"String {g} Name k","value":"v1"}]});
        let t = |f: &str| eval(&parse(f).unwrap_or_else(|e| panic!("{f}: {e}")), &c);
        assert!(t("displayName eq 'O''Brien'"));
        assert!(t("categories/any(c:c eq 'salesforce_sync')"));
        assert!(t("emailAddresses/any(a:a/address eq 'a@x.io')"));
        assert!(t(
            "singleValueExtendedProperties/Any(ep: ep/id eq 'String {g} Name k' and ep/value eq 'v1') or displayName eq 'z'"
        ));
        assert!(!t("singleValueExtendedProperties/Any(ep: ep/id eq 'String {g} Name k' and ep/value eq 'v2')"));
        assert!(t("not (displayName eq 'x') and startswith(displayName,'o''b')"));
        assert!(parse("displayName eq").is_err());
        assert!(parse("displayName like 'x'").is_err());
    }
}
