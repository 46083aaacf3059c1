//! The in-memory reference collection passes the conformance kit every adapter runs: once as a
//! provider folder (`find` sees only its scope) and once as a CRM view that finds records of
//! other owners (`in_scope = false`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use crmsync_core::memory::{MemCollection, MemState, Scope};
use crmsync_core::testkit::Harness;
use crmsync_core::{Capabilities, Collection, Contact, Kind, Record};

/// One in-memory service; every collection is a fresh tag (scope) of it.
struct Mem {
    state: Arc<Mutex<MemState>>,
    beyond_scope: bool,
    n: AtomicUsize,
}

fn mem(beyond_scope: bool) -> Mem {
    let state = MemState::shared("x");
    {
        let mut st = state.lock().unwrap();
        st.page_size = 7;
        st.require_family_name = true;
    }
    Mem { state, beyond_scope, n: AtomicUsize::new(0) }
}

#[async_trait]
impl Harness for Mem {
    async fn collection(&self, kind: Kind) -> Arc<dyn Collection> {
        let tag = format!("folder{}", self.n.fetch_add(1, Ordering::Relaxed));
        let caps = Capabilities {
            max_batch: 5,
            fields: kind.fields(),
            incremental: true,
            find_beyond_scope: self.beyond_scope,
        };
        Arc::new(MemCollection::new(self.state.clone(), Scope::Tag(tag), caps))
    }
    async fn expire_cursors(&self, _kind: Kind) -> Result<(), String> {
        self.state.lock().unwrap().expire_cursors();
        Ok(())
    }
    fn invalid_record(&self, kind: Kind) -> Record {
        match kind {
            Kind::Contact => Record::Contact(Contact { given_name: Some("No".into()), ..Default::default() }),
            Kind::Event => {
                let mut e = crmsync_core::testkit::sample(Kind::Event, 0);
                if let Record::Event(ev) = &mut e {
                    std::mem::swap(&mut ev.start, &mut ev.end);
                }
                e
            }
        }
    }
    fn page_size(&self, _kind: Kind) -> usize {
        7
    }
}

mod folder_contacts {
    use super::*;
    crmsync_core::conformance_tests!(Kind::Contact, mem(false));
}

mod folder_events {
    use super::*;
    crmsync_core::conformance_tests!(Kind::Event, mem(false));
}

mod crm_view_contacts {
    use super::*;
    crmsync_core::conformance_tests!(Kind::Contact, mem(true));
}

mod crm_view_events {
    use super::*;
    crmsync_core::conformance_tests!(Kind::Event, mem(true));
}
