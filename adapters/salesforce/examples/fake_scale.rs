//! How the Salesforce fake's write and read times grow with the records it holds: upserts N
//! contacts (default 20,000) by sync key in Collections calls of 200, printing the time per
//! 2,000, then reads one owner's contacts. A measurement to run by hand, not a test:
//!
//! `cargo run --release -p crmsync-salesforce --features fake --example fake_scale -- 20000`

use std::time::Instant;

use crmsync_salesforce::fake::{CLIENT_ID, CLIENT_SECRET, FakeSalesforce, SYNC_KEY};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let fake = FakeSalesforce::start().await;
    let owners: Vec<String> = (0..10).map(|i| fake.add_user(&format!("Rep {i}"), &[])).collect();
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{}/services/oauth2/token", fake.uri()))
        .form(&[("grant_type", "client_credentials"), ("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)])
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"].as_str().ok_or("no token")?.to_owned();
    let base = format!("{}/services/data/v62.0", fake.uri());
    let started = Instant::now();
    let mut lap = Instant::now();
    for batch in 0..n.div_ceil(200) {
        let records: Vec<Value> = (batch * 200..((batch + 1) * 200).min(n))
            .map(|i| {
                json!({"attributes": {"type": "Contact"}, "LastName": format!("Contact {i}"),
                       "Email": format!("c{i}@example.com"), "OwnerId": owners[i % owners.len()], SYNC_KEY: format!("key-{i}")})
            })
            .collect();
        let r = http
            .patch(format!("{base}/composite/sobjects/Contact/{SYNC_KEY}"))
            .bearer_auth(&token)
            .json(&json!({"allOrNone": false, "records": records}))
            .send()
            .await?;
        let body: Value = r.json().await?;
        if body.as_array().is_none_or(|a| a.iter().any(|x| x["success"] != true)) {
            return Err(format!("batch {batch} failed: {body}").into());
        }
        if (batch + 1) % 10 == 0 {
            println!(
                "{:>6} records: {:>7.1} ms for the last 2,000",
                (batch + 1) * 200,
                lap.elapsed().as_secs_f64() * 1e3
            );
            lap = Instant::now();
        }
    }
    println!("upserted {n} in {:.2} s", started.elapsed().as_secs_f64());
    let t = Instant::now();
    let q = format!("SELECT Id, LastName FROM Contact WHERE OwnerId = '{}'", owners[3]);
    let mut url = format!("{base}/query?q={}", url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>());
    let mut rows = 0;
    loop {
        let page: Value = http.get(&url).bearer_auth(&token).send().await?.json().await?;
        rows += page["records"].as_array().map_or(0, Vec::len);
        match page["nextRecordsUrl"].as_str() {
            Some(next) => url = format!("{}{next}", fake.uri()),
            None => break,
        }
    }
    println!("one owner's {rows} contacts read in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    Ok(())
}
