//! A create that the service applies but whose reply never arrives must not create again:
//! `people:batchCreateContacts` is reconciled by sync key, a Calendar insert is answered 409 for
//! its client-supplied id. The fault is injected by a small proxy in front of the fake: it
//! forwards the request (the fake applies it) and closes the connection instead of answering.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{Duration, Utc};
use crmsync_core::{Collection, Contact, Event, Kind, NewItem, Record, Side, SyncKey};
use crmsync_google::fake::FakeGoogle;
use crmsync_google::{Config, GoogleProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Read one HTTP/1.1 request: (method, path, headers, body).
async fn read_request(sock: &mut TcpStream) -> Option<(String, String, Vec<(String, String)>, Vec<u8>)> {
    let mut buf = vec![];
    let mut chunk = [0u8; 8192];
    let end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((method, path, headers, body))
}

/// A proxy to `upstream` that loses the reply of the first `POST` whose path contains `target`.
/// Answers its address and how many replies it lost.
async fn lossy_proxy(upstream: String, target: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lost = Arc::new(AtomicUsize::new(0));
    let counter = lost.clone();
    let client = reqwest::Client::new();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (client, upstream, lost) = (client.clone(), upstream.clone(), counter.clone());
            tokio::spawn(async move {
                let Some((method, path, headers, body)) = read_request(&mut sock).await else { return };
                let mut req = client.request(method.parse().unwrap(), format!("{upstream}{path}")).body(body);
                for (k, v) in headers.iter().filter(|(k, _)| !matches!(k.as_str(), "host" | "content-length")) {
                    req = req.header(k, v);
                }
                let Ok(resp) = req.send().await else { return };
                let status = resp.status();
                let content_type = resp.headers().get("content-type").cloned();
                let bytes = resp.bytes().await.unwrap_or_default();
                if method == "POST"
                    && path.contains(target)
                    && lost.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).is_ok()
                {
                    return; // applied upstream; the reply is lost
                }
                let mut head = format!("HTTP/1.1 {} {}\r\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
                if let Some(ct) = content_type.and_then(|v| v.to_str().ok().map(str::to_owned)) {
                    head.push_str(&format!("content-type: {ct}\r\n"));
                }
                head.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", bytes.len()));
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&bytes).await;
            });
        }
    });
    (format!("http://{addr}"), lost)
}

#[tokio::test]
async fn a_lost_batch_create_reply_creates_no_duplicate() {
    let fake = FakeGoogle::start().await;
    let (proxy, lost) = lossy_proxy(fake.uri(), "people:batchCreateContacts").await;
    let provider = GoogleProvider::new(Config { people_url: proxy, ..fake.config() }).expect("config");
    let mb = common::mailbox();
    fake.add_user(&mb);
    let rep = common::rep(&mb);
    let c = provider.contacts(&rep, &common::access(&rep)).await.expect("contact group");
    let items: Vec<NewItem> = (0..5)
        .map(|i| NewItem {
            sync_key: SyncKey::derive("rep", Kind::Contact, Side::Crm, &format!("003{i}")),
            record: Record::Contact(Contact {
                given_name: Some(format!("G{i}")),
                family_name: Some(format!("F{i}")),
                emails: vec![format!("p{i}@example.com")],
                ..Default::default()
            }),
        })
        .collect();
    let results = c.create_many(&items).await.expect("create_many");
    assert_eq!(lost.load(Ordering::SeqCst), 1, "the fault fired: the first batch's reply was lost");
    for (it, r) in items.iter().zip(&results) {
        let created = r.as_ref().expect("created");
        assert_eq!(created.sync_key.as_ref(), Some(&it.sync_key));
        assert_eq!(fake.count_contacts_with_key(&mb, it.sync_key.as_str()), 1, "exactly one contact per key");
    }
    assert!(fake.duplicate_contact_keys(&mb).is_empty());
    assert_eq!(fake.contacts(&mb).len(), items.len());
    assert_eq!(fake.count("people.batchCreateContacts"), 1, "nothing was created twice: {:?}", fake.counts());
}

#[tokio::test]
async fn a_lost_calendar_insert_reply_creates_no_duplicate() {
    let fake = FakeGoogle::start().await;
    let (proxy, lost) = lossy_proxy(fake.uri(), "calendars/primary/events").await;
    let cfg = Config { calendar_url: format!("{proxy}/calendar/v3"), ..fake.config() };
    let provider = GoogleProvider::new(cfg).expect("config");
    let mb = common::mailbox();
    fake.add_user(&mb);
    let rep = common::rep(&mb);
    let c = provider.events(&rep, &common::access(&rep)).expect("calendar");
    let start = Utc::now() + Duration::hours(30);
    let key = SyncKey::derive("rep", Kind::Event, Side::Crm, "00U1");
    let item = NewItem {
        sync_key: key.clone(),
        record: Record::Event(Event::new("Review", start, start + Duration::minutes(30))),
    };
    let res = c.create_many(&[item]).await.expect("create_many");
    assert_eq!(lost.load(Ordering::SeqCst), 1, "the fault fired: the insert's reply was lost");
    let created = res[0].as_ref().expect("the retry's 409 returns the event that landed");
    assert_eq!(created.sync_key.as_ref(), Some(&key));
    assert_eq!(fake.count_events_with_key(&mb, key.as_str()), 1, "exactly one event");
}
