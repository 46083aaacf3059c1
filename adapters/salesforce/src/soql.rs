//! SOQL text: literal escaping and small helpers. Every piece of user data that goes into a
//! query passes through [`quote`], [`quote_like`] or [`datetime`]; field names are constants
//! or checked with [`is_identifier`].

use chrono::{DateTime, SecondsFormat, Utc};

/// A SOQL string literal: single-quoted, with Salesforce's escape sequences for `'`, `"`, `\`,
/// newline, carriage return, tab, backspace and form feed, and `\uXXXX` for other control
/// characters. Non-ASCII text passes unchanged (the query is URL-encoded as UTF-8).
/// `%` and `_` stay literal characters here: they only mean wildcards inside `LIKE`, where
/// [`quote_like`] must be used.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        push_escaped(&mut out, c, false);
    }
    out.push('\'');
    out
}

/// A `LIKE` pattern: `prefix` and `suffix` are raw pattern text (`%` meaning "anything"),
/// `value` is user data whose `%` and `_` are escaped so they match only themselves.
pub fn quote_like(prefix: &str, value: &str, suffix: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    out.push('\'');
    out.push_str(prefix);
    for c in value.chars() {
        push_escaped(&mut out, c, true);
    }
    out.push_str(suffix);
    out.push('\'');
    out
}

fn push_escaped(out: &mut String, c: char, like: bool) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\'' => out.push_str("\\'"),
        '"' => out.push_str("\\\""),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '%' if like => out.push_str("\\%"),
        '_' if like => out.push_str("\\_"),
        c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push(c),
    }
}

/// A SOQL dateTime literal (`2026-01-02T10:00:00Z`, whole seconds).
pub fn datetime(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Whether `s` is a plain API name (letters, digits, underscores, starting with a letter), safe
/// to put into a query unquoted.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 80
}

/// An `IN (…)` list of already-quoted literals.
pub fn in_list(quoted: &[String]) -> String {
    format!("({})", quoted.join(", "))
}

/// The length `s` takes once form-URL-encoded into `?q=`.
pub fn encoded_len(s: &str) -> usize {
    url::form_urlencoded::byte_serialize(s.as_bytes()).map(str::len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_every_reserved_character() {
        assert_eq!(quote("Bob's BBQ"), r"'Bob\'s BBQ'");
        assert_eq!(quote("a\\b"), r"'a\\b'");
        assert_eq!(quote("l1\nl2\r\t\"x\""), r#"'l1\nl2\r\t\"x\"'"#);
        assert_eq!(quote("50%_off"), "'50%_off'");
        assert_eq!(quote("Zoë 東京"), "'Zoë 東京'");
        assert_eq!(quote("\u{1}"), r"'\u0001'");
        assert_eq!(quote_like("%", "50%_o'ff", "%"), r"'%50\%\_o\'ff%'");
    }

    #[test]
    fn identifiers_are_strict() {
        assert!(is_identifier("CrmSync_Key__c"));
        assert!(!is_identifier("Key__c FROM User"));
        assert!(!is_identifier("_x"));
        assert!(!is_identifier(""));
    }
}
