//! The in-memory reference collection passes the conformance kit every adapter runs.

use std::sync::Arc;

use async_trait::async_trait;
use crmsync_core::memory::{MemCollection, MemState, Scope};
use crmsync_core::testkit::{Harness, check_collection};
use crmsync_core::{Capabilities, Collection, Contact, Kind, Record};
use tokio::sync::Mutex;

#[derive(Default)]
struct Mem {
    current: Mutex<Option<Arc<std::sync::Mutex<MemState>>>>,
}

#[async_trait]
impl Harness for Mem {
    async fn collection(&self, kind: Kind) -> Arc<dyn Collection> {
        let state = MemState::shared("x");
        {
            let mut st = state.lock().unwrap();
            st.page_size = 7;
            st.require_family_name = true;
        }
        *self.current.lock().await = Some(state.clone());
        let caps = Capabilities { max_batch: 5, fields: kind.fields(), incremental: true, find_beyond_scope: false };
        Arc::new(MemCollection::new(state, Scope::Tag("folder".into()), caps))
    }
    async fn expire_cursors(&self, _kind: Kind) {
        self.current.lock().await.as_ref().expect("a collection").lock().unwrap().expire_cursors();
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

#[tokio::test]
async fn memory_collection_passes_the_conformance_kit() {
    let h = Mem::default();
    check_collection(&h, Kind::Contact).await;
    check_collection(&h, Kind::Event).await;
}
