//! The core conformance kit against the adapter pointed at its fake.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{Duration, Utc};
use crmsync_core::testkit::Harness;
use crmsync_core::{Collection, ConnectionMode, Contact, Event, Kind, Provider, Record};
use crmsync_google::GoogleProvider;
use crmsync_google::fake::FakeGoogle;

struct H {
    fake: FakeGoogle,
    provider: GoogleProvider,
    user_managed: bool,
}

#[async_trait]
impl Harness for H {
    async fn collection(&self, kind: Kind) -> Arc<dyn Collection> {
        let mb = common::mailbox();
        self.fake.add_user(&mb);
        let mut rep = common::rep(&mb);
        let mut access = common::access(&rep);
        if self.user_managed {
            rep.connection = ConnectionMode::UserManaged;
            access.grant = Some(self.fake.add_refresh_token(&mb).into());
        }
        self.provider.collection(&rep, kind, &access).await.expect("collection")
    }
    async fn expire_cursors(&self, _kind: Kind) -> Result<(), String> {
        self.fake.expire_cursors();
        Ok(())
    }
    fn invalid_record(&self, kind: Kind) -> Record {
        match kind {
            // Neither a name nor an e-mail address.
            Kind::Contact => Record::Contact(Contact { company: Some("Nameless Ltd".into()), ..Default::default() }),
            Kind::Event => {
                let start = Utc::now() + Duration::days(3);
                Record::Event(Event::new("Backwards", start, start - Duration::hours(1)))
            }
        }
    }
    fn page_size(&self, _kind: Kind) -> usize {
        50
    }
}

async fn harness(user_managed: bool) -> H {
    let fake = FakeGoogle::start().await;
    H { provider: common::provider(&fake, 50), fake, user_managed }
}

mod contacts_admin_managed {
    use super::*;
    crmsync_core::conformance_tests!(Kind::Contact, harness(false).await);
}

mod events_admin_managed {
    use super::*;
    crmsync_core::conformance_tests!(Kind::Event, harness(false).await);
}

mod contacts_user_managed {
    use super::*;
    crmsync_core::conformance_tests!(Kind::Contact, harness(true).await);
}

mod events_user_managed {
    use super::*;
    crmsync_core::conformance_tests!(Kind::Event, harness(true).await);
}
