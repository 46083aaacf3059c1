//! The bounded request log.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::Fault;

/// One served request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The request's number since the fake started (1 = the first).
    pub seq: u64,
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// The endpoint name the counters use.
    pub endpoint: String,
    /// The status sent (for a dropped reply, the status the cut reply started with).
    pub status: u16,
    /// Time spent serving it, injected latency included, milliseconds.
    pub latency_ms: u64,
    /// The fault injected into it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
}

/// The newest entries, at most `cap`.
#[derive(Debug)]
pub(crate) struct Log {
    entries: VecDeque<LogEntry>,
    cap: usize,
}

/// Entries a log keeps unless told otherwise.
pub(crate) const DEFAULT_CAP: usize = 1000;

impl Default for Log {
    fn default() -> Self {
        Self { entries: VecDeque::new(), cap: DEFAULT_CAP }
    }
}

impl Log {
    pub fn push(&mut self, e: LogEntry) {
        if self.cap == 0 {
            return;
        }
        while self.entries.len() >= self.cap {
            self.entries.pop_front();
        }
        self.entries.push_back(e);
    }

    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
        while self.entries.len() > cap {
            self.entries.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn entries(&self) -> Vec<LogEntry> {
        self.entries.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> LogEntry {
        LogEntry {
            seq,
            method: "GET".into(),
            path: "/".into(),
            endpoint: "x".into(),
            status: 200,
            latency_ms: 0,
            fault: None,
        }
    }

    #[test]
    fn the_log_keeps_the_newest_entries_up_to_its_cap() {
        let mut log = Log::default();
        log.set_cap(3);
        for n in 1..=5 {
            log.push(entry(n));
        }
        assert_eq!(log.entries().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        log.set_cap(1);
        assert_eq!(log.entries().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5]);
    }
}
