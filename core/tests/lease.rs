//! Cycles under the rep's lease (`Engine::leased_cycle`) and a revoked grant.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use crmsync_core::memory::{MemCrm, MemProvider, MemStore};
use crmsync_core::*;
use secrecy::SecretString;

/// A provider that never answers (`hang`) or refuses the rep's grant.
#[derive(Debug)]
struct Stuck {
    hang: bool,
}

#[async_trait]
impl Provider for Stuck {
    fn name(&self) -> &str {
        "stuck"
    }
    async fn collection(&self, _: &Rep, _: Kind, _: &Access) -> Result<Arc<dyn Collection>> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        Err(Error::new(ErrorKind::GrantRevoked, "token endpoint: invalid_grant (Token has been expired or revoked)"))
    }
    async fn verify_grant(&self, _: &Rep, _: &SecretString) -> Result<()> {
        Err(Error::new(ErrorKind::GrantRevoked, "invalid_grant"))
    }
}

fn rep(provider: &str, connection: ConnectionMode) -> Rep {
    Rep {
        id: format!("rep-{provider}"),
        name: "Riley Rep".into(),
        crm_user_id: "005RILEY".into(),
        provider: provider.into(),
        mailbox: "riley@example.com".into(),
        connection,
        config: SyncConfig::default(),
    }
}

fn engine(store: &Arc<MemStore>) -> Engine {
    Engine::new(Arc::new(MemCrm::default()), store.clone())
        .with_provider(Arc::new(MemProvider::new("mem")))
        .with_provider(Arc::new(Stuck { hang: true }))
}

fn terms(holder: &str, length: Duration) -> LeaseTerms {
    LeaseTerms { holder: holder.into(), length, wait: false, next_in: None }
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_held_lease_stops_the_cycle_and_names_the_holder() {
    let store = Arc::new(MemStore::default());
    let rep = rep("mem", ConnectionMode::AdminManaged);
    assert_eq!(store.acquire_lease("worker-7", &rep.id, MINUTE, Utc::now()).await.unwrap(), Acquire::Acquired);
    let out = engine(&store).leased_cycle(&rep, &terms("sync-1", MINUTE), std::future::pending()).await.unwrap();
    let Leased::Busy(held) = out else { panic!("expected Busy, got {out:?}") };
    assert_eq!(held.holder, "worker-7");
    assert!(held.until > Utc::now(), "the lease's end is reported");
    assert!(store.status(&rep.id).await.unwrap().last_report.is_none(), "no cycle ran");
    store.release("worker-7", &rep.id, None).await.expect("the holder still holds it");
}

#[tokio::test]
async fn a_cycle_takes_and_releases_the_lease_and_a_waiting_one_runs_after_it() {
    let store = Arc::new(MemStore::default());
    let rep = rep("mem", ConnectionMode::AdminManaged);
    let out = engine(&store).leased_cycle(&rep, &terms("sync-1", MINUTE), std::future::pending()).await.unwrap();
    assert!(matches!(out, Leased::Ran(ref r) if r.state == RepState::Ok), "{out:?}");
    assert_eq!(
        store.acquire_lease("other", &rep.id, MINUTE, Utc::now()).await.unwrap(),
        Acquire::Acquired,
        "the lease was released after the cycle"
    );
    store.release("other", &rep.id, None).await.unwrap();

    // Held for a short while by somebody else: --wait runs once it is free.
    store.acquire_lease("short", &rep.id, Duration::from_millis(700), Utc::now()).await.unwrap();
    let waiting = LeaseTerms { wait: true, ..terms("sync-2", MINUTE) };
    let out = engine(&store).leased_cycle(&rep, &waiting, std::future::pending()).await.unwrap();
    assert!(matches!(out, Leased::Ran(_)), "{out:?}");
}

#[tokio::test]
async fn a_stopped_cycle_is_abandoned_marked_and_its_lease_released() {
    let store = Arc::new(MemStore::default());
    let rep = rep("stuck", ConnectionMode::AdminManaged);
    let stop = tokio::time::sleep(Duration::from_millis(100));
    let out = engine(&store).leased_cycle(&rep, &terms("worker-1", MINUTE), stop).await.unwrap();
    assert!(matches!(out, Leased::Abandoned(ref why) if why.contains("stopped")), "{out:?}");
    let st = store.status(&rep.id).await.unwrap();
    assert_eq!(st.state, RepState::Error, "an abandoned cycle does not leave the rep `syncing`");
    assert!(st.last_error.unwrap().contains("abandoned"));
    assert_eq!(store.acquire_lease("next", &rep.id, MINUTE, Utc::now()).await.unwrap(), Acquire::Acquired);
}

#[tokio::test]
async fn a_cycle_that_loses_its_lease_is_abandoned() {
    let store = Arc::new(MemStore::default());
    let rep = rep("stuck", ConnectionMode::AdminManaged);
    let thief = {
        let store = store.clone();
        let id = rep.id.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            // The holder's lease is taken away (as when it expired and another worker took it).
            store.release("worker-1", &id, None).await.unwrap();
            store.acquire_lease("worker-2", &id, MINUTE, Utc::now()).await.unwrap();
        }
    };
    let (e, t) = (engine(&store), terms("worker-1", Duration::from_millis(300)));
    let (out, ()) = tokio::join!(e.leased_cycle(&rep, &t, std::future::pending()), thief);
    assert!(matches!(out.unwrap(), Leased::Abandoned(ref why) if why.contains("lease was lost")));
    assert!(
        matches!(store.acquire_lease("x", &rep.id, MINUTE, Utc::now()).await.unwrap(), Acquire::Busy(h) if h.holder == "worker-2"),
        "the new holder keeps the rep"
    );
}

#[tokio::test]
async fn a_revoked_grant_puts_a_user_managed_rep_in_needs_reconnect() {
    let store = Arc::new(MemStore::default());
    let e = Engine::new(Arc::new(MemCrm::default()), store.clone()).with_provider(Arc::new(Stuck { hang: false }));
    let user = rep("stuck", ConnectionMode::UserManaged);
    store.set_grant(&user.id, Some(&SecretString::from("1//revoked"))).await.unwrap();
    let report = e.cycle(&user).await.unwrap();
    assert_eq!(report.state, RepState::NeedsReconnect);
    let st = store.status(&user.id).await.unwrap();
    assert_eq!(st.state, RepState::NeedsReconnect);
    assert!(st.last_error.unwrap().contains("connect their account again"));

    // An admin-managed connection has no rep grant to renew: that is an error for the admin.
    let admin = Rep { id: "rep-admin".into(), ..rep("stuck", ConnectionMode::AdminManaged) };
    assert_eq!(e.cycle(&admin).await.unwrap().state, RepState::Error);
}
