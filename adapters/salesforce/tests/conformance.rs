//! The core conformance kit against the adapter pointed at its fake.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use crmsync_core::testkit::{Harness, Outcome, more_than_a_page};
use crmsync_core::{Collection, Contact, Crm, Event, Kind, Record};
use crmsync_salesforce::SalesforceCrm;
use crmsync_salesforce::fake::FakeSalesforce;

/// The fake pages at 250 here (the 2,000-record default is covered by the adapter tests), so
/// the kit's "more than a page" check crosses a page boundary with few records.
const PAGE: usize = 250;

struct SfHarness {
    fake: FakeSalesforce,
    crm: SalesforceCrm,
    n: AtomicUsize,
}

#[async_trait]
impl Harness for SfHarness {
    async fn collection(&self, kind: Kind) -> Arc<dyn Collection> {
        // A fresh scope: a new owner.
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let user = self.fake.add_user(&format!("Kit Rep{n}"), &[]);
        self.crm.collection(&common::rep(&user), kind, &common::access()).await.expect("collection")
    }
    async fn expire_cursors(&self, _kind: Kind) -> Result<(), String> {
        self.fake.expire_cursors();
        Ok(())
    }
    fn invalid_record(&self, kind: Kind) -> Record {
        match kind {
            // The org requires LastName.
            Kind::Contact => Record::Contact(Contact { given_name: Some("Nolast".into()), ..Default::default() }),
            // Subject is limited to 255 characters.
            Kind::Event => {
                let start = chrono::Utc::now() + chrono::Duration::days(1);
                Record::Event(Event::new(&"x".repeat(300), start, start + chrono::Duration::minutes(30)))
            }
        }
    }
    fn page_size(&self, _kind: Kind) -> usize {
        PAGE
    }
}

async fn harness() -> SfHarness {
    let fake = FakeSalesforce::start().await;
    fake.set_page_size(PAGE);
    let crm = SalesforceCrm::new(fake.config()).unwrap();
    SfHarness { fake, crm, n: AtomicUsize::new(0) }
}

mod contacts {
    use super::*;
    crmsync_core::conformance_tests!(Kind::Contact, harness().await);
}

mod events {
    use super::*;
    crmsync_core::conformance_tests!(Kind::Event, harness().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kits_large_read_crosses_a_page() {
    for kind in Kind::ALL {
        let h = harness().await;
        assert_eq!(more_than_a_page(&h, kind).await, Outcome::Ran);
        assert!(h.fake.count("query_more") > 0, "the kit's large read crossed a page ({kind:?})");
    }
}
