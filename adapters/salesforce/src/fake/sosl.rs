//! The fake org's SOSL subset, `GET /search?q=`:
//! `FIND {text} [IN ALL | NAME | EMAIL | PHONE FIELDS] [RETURNING Obj[(fields [WHERE …]
//! [ORDER BY …] [LIMIT n])], …] [LIMIT n]`.
//!
//! The search text is terms joined by spaces (all must match) or `OR` (any group must match),
//! `"quoted phrases"` and a trailing `*` wildcard. A term matches a field when its words
//! (letters and digits) appear in a row among the field's words, so `bo@example.com` matches
//! that address and `Ann*` matches `Annabel`. Without `RETURNING` every object is searched.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::schema::{OBJECTS, ObjDef, Ty, Val};
use super::soql::{self, Cond, Db, Lit, QErr};

fn malformed(m: impl Into<String>) -> QErr {
    QErr { code: "MALFORMED_SEARCH", message: m.into() }
}

/// Which fields `IN … FIELDS` searches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    All,
    Name,
    Email,
    Phone,
}

/// Run a SOSL search: the `searchRecords` of the reply.
pub(super) fn search(db: &dyn Db, text: &str, now: DateTime<Utc>, api: &str) -> Result<Value, QErr> {
    let rest = text.trim();
    let rest = strip_kw(rest, "FIND").ok_or_else(|| malformed("expecting FIND"))?;
    let rest =
        rest.trim_start().strip_prefix('{').ok_or_else(|| malformed("the search text goes in braces: FIND {…}"))?;
    let (terms, rest) = braced(rest)?;
    if terms.trim().chars().filter(|c| c.is_alphanumeric()).count() < 2 {
        return Err(malformed("search term must be longer than one character"));
    }
    let groups = parse_terms(&terms);
    let mut rest = rest.trim_start();
    let mut scope = Scope::All;
    if let Some(r) = strip_kw(rest, "IN") {
        let (word, r) = word(r);
        scope = match word.to_ascii_uppercase().as_str() {
            "ALL" => Scope::All,
            "NAME" => Scope::Name,
            "EMAIL" => Scope::Email,
            "PHONE" => Scope::Phone,
            _ => return Err(malformed(format!("unexpected token: {word} (expecting ALL, NAME, EMAIL or PHONE)"))),
        };
        rest = strip_kw(r.trim_start(), "FIELDS").ok_or_else(|| malformed("expecting FIELDS"))?.trim_start();
    }
    let mut returning: Returning = vec![];
    if let Some(r) = strip_kw(rest, "RETURNING") {
        let (items, r) = returning_list(r)?;
        returning = items;
        rest = r.trim_start();
    }
    let mut limit = 2000;
    if let Some(r) = strip_kw(rest, "LIMIT") {
        let (n, r) = word(r);
        limit = n.parse::<usize>().map_err(|_| malformed(format!("invalid LIMIT {n}")))?.min(2000);
        rest = r.trim_start();
    }
    if !rest.is_empty() {
        return Err(malformed(format!("unexpected token: {}", rest.split_whitespace().next().unwrap_or(rest))));
    }
    if returning.is_empty() {
        returning = OBJECTS.iter().map(|o| (o.name.to_owned(), String::new())).collect();
    }
    let mut records = vec![];
    for (name, inner) in returning {
        let mut q = soql::parse_returning(&name, &inner, now)?;
        let Some(obj) = super::schema::object(&name) else {
            return Err(QErr { code: "INVALID_TYPE", message: format!("sObject type '{name}' is not supported.") });
        };
        let ids: Vec<Lit> = db
            .rows(obj, false)
            .into_iter()
            .filter(|r| matches(obj, r, scope, &groups))
            .filter_map(|r| r.get("Id").and_then(Val::as_str).map(|s| Lit::Str(s.to_owned())))
            .collect();
        if ids.is_empty() {
            continue;
        }
        let by_id = Cond::In("Id".into(), false, ids);
        q.cond = Some(match q.cond.take() {
            Some(c) => Cond::And(vec![by_id, c]),
            None => by_id,
        });
        let left = limit.saturating_sub(records.len());
        records.extend(soql::execute(db, &q, false, now, api, left)?.rows);
    }
    Ok(json!({ "searchRecords": records }))
}

/// `s` after the keyword `kw` (case-insensitive, then a space or the end).
fn strip_kw<'a>(s: &'a str, kw: &str) -> Option<&'a str> {
    let head = s.get(..kw.len())?;
    let rest = &s[kw.len()..];
    (head.eq_ignore_ascii_case(kw) && rest.chars().next().is_none_or(|c| c.is_whitespace() || c == '{')).then_some(rest)
}

fn word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = s.find(|c: char| c.is_whitespace() || c == ',').unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// The text up to the closing brace (`\}` escapes one), and what follows it.
fn braced(s: &str) -> Result<(String, &str), QErr> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, e)) = chars.next() {
                    out.push(e);
                }
            }
            '}' => return Ok((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    Err(malformed("missing '}' after the search text"))
}

/// The objects of a `RETURNING` clause: (object, what is in its parentheses).
type Returning = Vec<(String, String)>;

/// `Contact(Id, Name WHERE …), Account` → its [`Returning`] list and the rest of the text.
fn returning_list(s: &str) -> Result<(Returning, &str), QErr> {
    let mut items = vec![];
    let mut rest = s.trim_start();
    loop {
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if end == 0 {
            return Err(malformed("expecting an object name after RETURNING"));
        }
        let name = rest[..end].to_owned();
        rest = rest[end..].trim_start();
        let mut inner = String::new();
        if let Some(r) = rest.strip_prefix('(') {
            let (mut depth, mut quoted, mut close) = (1, false, None);
            let mut prev = ' ';
            for (i, c) in r.char_indices() {
                match c {
                    '\'' if prev != '\\' => quoted = !quoted,
                    '(' if !quoted => depth += 1,
                    ')' if !quoted => {
                        depth -= 1;
                        if depth == 0 {
                            close = Some(i);
                            break;
                        }
                    }
                    _ => {}
                }
                prev = c;
            }
            let close = close.ok_or_else(|| malformed(format!("missing ')' after RETURNING {name}(")))?;
            inner = r[..close].to_owned();
            rest = r[close + 1..].trim_start();
        }
        items.push((name, inner));
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None => return Ok((items, rest)),
        }
    }
}

/// A search term: its words, and whether the last one is a prefix (`Ann*`).
type Term = (Vec<String>, bool);

/// `a b OR "c d"` → groups of terms (any group, all its terms).
fn parse_terms(text: &str) -> Vec<Vec<Term>> {
    let mut groups: Vec<Vec<Term>> = vec![vec![]];
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (raw, r) = match rest.strip_prefix('"') {
            Some(q) => match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            },
            None => {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            }
        };
        rest = r.trim_start();
        if raw.eq_ignore_ascii_case("OR") {
            groups.push(vec![]);
            continue;
        }
        if raw.eq_ignore_ascii_case("AND") {
            continue;
        }
        let prefix = raw.ends_with('*');
        let words = words(raw);
        if !words.is_empty() {
            groups.last_mut().expect("one group").push((words, prefix));
        }
    }
    groups.retain(|g| !g.is_empty());
    groups
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

fn term_in(term: &Term, field: &[String]) -> bool {
    let (ws, prefix) = term;
    let n = ws.len();
    n <= field.len()
        && (0..=field.len() - n).any(|at| {
            ws.iter().enumerate().all(|(k, w)| {
                let f = &field[at + k];
                if *prefix && k == n - 1 { f.starts_with(w.as_str()) } else { f == w }
            })
        })
}

fn searched(obj: &ObjDef, scope: Scope) -> impl Iterator<Item = &'static str> + '_ {
    obj.fields
        .iter()
        .filter(move |f| match scope {
            Scope::All => matches!(f.ty, Ty::Str(_) | Ty::Email | Ty::Picklist(_)),
            Scope::Name => matches!(f.name, "Name" | "FirstName" | "LastName" | "Subject"),
            Scope::Email => matches!(f.ty, Ty::Email),
            Scope::Phone => f.name.ends_with("Phone"),
        })
        .map(|f| f.name)
}

fn matches(obj: &'static ObjDef, rec: &soql::Rec, scope: Scope, groups: &[Vec<Term>]) -> bool {
    let fields: Vec<Vec<String>> = searched(obj, scope)
        .filter_map(|name| obj.field(name))
        .filter_map(|f| match soql::get(obj, rec, f) {
            Val::Str(s) => Some(words(&s)),
            _ => None,
        })
        .collect();
    groups.iter().any(|g| g.iter().all(|t| fields.iter().any(|f| term_in(t, f))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_match_words_in_a_row_and_prefixes() {
        let f = words("Bo.Li@Example.com");
        let t = |s: &str| parse_terms(s);
        assert!(term_in(&t("bo.li@example.com")[0][0], &f));
        assert!(term_in(&t("exam*")[0][0], &f));
        assert!(!term_in(&t("exam")[0][0], &f));
        assert_eq!(t("a b OR \"c d\"").len(), 2);
        assert_eq!(t("\"c d\"")[0][0].0, vec!["c", "d"]);
    }

    #[test]
    fn the_clauses_parse() {
        let (items, rest) =
            returning_list("Contact(Id, Name WHERE LastName = 'a(b' LIMIT 2), Account LIMIT 5").unwrap();
        assert_eq!(
            items,
            vec![
                ("Contact".into(), "Id, Name WHERE LastName = 'a(b' LIMIT 2".into()),
                ("Account".into(), String::new())
            ]
        );
        assert_eq!(rest, "LIMIT 5");
        assert_eq!(braced("a\\}b} IN").unwrap(), ("a}b".to_owned(), " IN"));
        assert!(braced("ab").is_err());
    }
}
