//! Readable output: the per-rep cycle table (`sync`) shared with `status`.

use std::collections::BTreeSet;
use std::fmt::Write;

use crmsync_core::{CycleReport, KindReport};

/// Rows of counters, contacts and events side by side.
pub fn counters(c: &KindReport, e: &KindReport) -> String {
    let mut rows: Vec<(String, u64, u64)> = vec![
        ("created in CRM".into(), c.created_in_crm, e.created_in_crm),
        ("created in mailbox".into(), c.created_in_provider, e.created_in_provider),
        ("updated in CRM".into(), c.updated_in_crm, e.updated_in_crm),
        ("updated in mailbox".into(), c.updated_in_provider, e.updated_in_provider),
        ("deleted in CRM".into(), c.deleted_in_crm, e.deleted_in_crm),
        ("deleted in mailbox".into(), c.deleted_in_provider, e.deleted_in_provider),
        ("linked (matched)".into(), c.linked, e.linked),
        ("unlinked".into(), c.unlinked, e.unlinked),
        ("links total".into(), c.links_total, e.links_total),
        ("conflicts".into(), c.conflicts, e.conflicts),
        ("item errors".into(), c.errors, e.errors),
    ];
    for (label, cv, ev) in [
        ("deletes held in CRM", c.held_deletes_in_crm, e.held_deletes_in_crm),
        ("deletes held in mailbox", c.held_deletes_in_provider, e.held_deletes_in_provider),
    ] {
        if cv + ev > 0 {
            rows.push((label.into(), cv, ev));
        }
    }
    let reasons: BTreeSet<&String> = c.skipped.keys().chain(e.skipped.keys()).collect();
    for r in reasons {
        rows.push((
            format!("skipped: {r}"),
            c.skipped.get(r).copied().unwrap_or(0),
            e.skipped.get(r).copied().unwrap_or(0),
        ));
    }
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(8);
    let mut out = format!("  {:<w$}  {:>8}  {:>8}\n", "", "contacts", "events");
    for (label, a, b) in rows {
        let _ = writeln!(out, "  {label:<w$}  {a:>8}  {b:>8}");
    }
    out
}

/// One rep's cycle, as `crmsync sync` prints it.
pub fn cycle(r: &CycleReport) -> String {
    let took = match (r.started, r.finished) {
        (Some(s), Some(f)) => format!(", {:.1} s", (f - s).num_milliseconds() as f64 / 1000.0),
        _ => String::new(),
    };
    let mut out = format!("{} ({}) — {}{took}\n", r.rep, r.provider, r.state.as_str());
    if r.started.is_some() && r.finished.is_none() && r.error.is_none() {
        let _ = writeln!(
            out,
            "  not synced: the rep is {}; links held: {} contacts, {} events",
            r.state.as_str(),
            r.contacts.links_total,
            r.events.links_total
        );
        return out;
    }
    out.push_str(&counters(&r.contacts, &r.events));
    let _ = writeln!(out, "  requests: CRM {}, mailbox {}", r.requests.crm, r.requests.provider);
    for (kind, k) in [("contacts", &r.contacts), ("events", &r.events)] {
        if let Some(f) = &k.fatal {
            let _ = writeln!(out, "  {kind} failed: {f}");
        }
        for e in &k.item_errors {
            let _ = writeln!(out, "  {kind} error: {} item {}: {}", e.side, e.id, e.reason);
        }
    }
    if !r.events.unrelated_attendees.is_empty() {
        let list: Vec<String> = r.events.unrelated_attendees.iter().map(|(a, n)| format!("{a} ({n})")).collect();
        let _ = writeln!(out, "  attendees related to no CRM contact (events): {}", list.join(", "));
    }
    if let Some(e) = &r.error {
        let _ = writeln!(out, "  error: {e}");
    }
    out
}

/// A time as RFC 3339 to the second, or `never`.
pub(crate) fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_else(|| "never".into())
}

/// How a held lease is shown: who holds it and until when.
pub(crate) fn busy_line(h: &crmsync_core::LeaseHolder) -> String {
    format!(
        "not synced: its lease is held by {} until {} (another worker or sync is running it)",
        h.holder,
        when(Some(h.until))
    )
}

/// A progress bar over `n` reps on the terminal (callers show it only when stdout is one): the
/// rep running in its message, a spinner that moves while a long cycle runs.
pub fn progress(n: usize, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(n as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} reps {{elapsed}}  {{msg}}"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}
