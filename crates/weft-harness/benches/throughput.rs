//! Requests per second the simulators serve on loopback, so they never bound Weft's own
//! benchmarks. Run with `cargo bench -p weft-harness --bench throughput [-- --requests N]`.
//!
//! Each measurement sends N requests from 8 concurrent HTTP clients (keep-alive) and reports
//! requests per second over the whole batch; rate limits are raised out of the way.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use weft_harness::kantata::{KantataConfig, KantataSim};
use weft_harness::xero::{XeroConfig, XeroLimits, XeroSim};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let requests = args
        .iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000usize);
    println!("| simulator | request | requests | rate |\n|---|---|---|---|");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");

    let kantata = KantataSim::start(KantataConfig {
        size: 2_000,
        ..KantataConfig::default()
    })
    .expect("kantata starts");
    let token = kantata.personal_token().to_owned();
    let url = format!("{}/api/v1/workspaces?per_page=20", kantata.api_url());
    let auth = [("Authorization", format!("Bearer {token}"))];
    let rate = runtime.block_on(measure(&[url], &auth, requests));
    println!("| kantata | GET /api/v1/workspaces?per_page=20 | {requests} | {rate:.0} req/s |");
    let urls: Vec<String> = (0..requests)
        .map(|i| {
            format!(
                "{}/api/v1/invoices?per_page=20&page={}&include=time_entries,expenses",
                kantata.api_url(),
                1 + i % 25
            )
        })
        .collect();
    let rate = runtime.block_on(measure(&urls, &auth, requests));
    println!(
        "| kantata | GET /api/v1/invoices?per_page=20&page=1..25&include=time_entries,expenses | {requests} | {rate:.0} req/s |"
    );

    let limits = XeroLimits::unlimited();
    let xero = XeroSim::start(XeroConfig {
        size: 2_000,
        limits,
        ..XeroConfig::default()
    })
    .expect("xero starts");
    let (tenant, _) = xero.tenants().into_iter().next().expect("a tenant");
    let token = runtime.block_on(xero_token(&xero));
    let headers = [
        ("Authorization", format!("Bearer {token}")),
        ("xero-tenant-id", tenant),
        ("Accept", "application/json".into()),
    ];
    let url = format!(
        "{}/api.xro/2.0/Invoices?page=1&pageSize=100",
        xero.api_url()
    );
    let rate = runtime.block_on(measure(&[url], &headers, requests));
    println!(
        "| xero | GET /api.xro/2.0/Invoices?page=1&pageSize=100 (same page) | {requests} | {rate:.0} req/s |"
    );
    // Distinct requests: every call asks for a different modification time, so nothing is
    // answered from the simulator's render cache.
    let urls: Vec<String> = (0..requests)
        .map(|i| {
            format!(
                "{}/api.xro/2.0/Invoices?page=1&pageSize=100&where=Total%3E%3D{}",
                xero.api_url(),
                i
            )
        })
        .collect();
    let rate = runtime.block_on(measure(&urls, &headers, requests));
    println!(
        "| xero | GET /api.xro/2.0/Invoices?page=1&pageSize=100&where=… (all distinct) | {requests} | {rate:.0} req/s |"
    );
    let urls: Vec<String> = (0..requests)
        .map(|i| {
            format!(
                "{}/api.xro/2.0/Contacts?page={}&pageSize=10",
                xero.api_url(),
                1 + i % 50
            )
        })
        .collect();
    let rate = runtime.block_on(measure(&urls, &headers, requests));
    println!(
        "| xero | GET /api.xro/2.0/Contacts?page=1..50&pageSize=10 | {requests} | {rate:.0} req/s |"
    );
}

/// A client-credentials access token from the Xero simulator's demo app.
async fn xero_token(xero: &XeroSim) -> String {
    let client = reqwest::Client::new();
    let response: serde_json::Value = client
        .post(format!("{}/connect/token", xero.identity_url()))
        .basic_auth(xero.client_id(), Some(xero.client_secret()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token call")
        .json()
        .await
        .expect("token JSON");
    response["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

async fn measure(urls: &[String], headers: &[(&str, String)], requests: usize) -> f64 {
    const CLIENTS: usize = 8;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CLIENTS {
        let client = client.clone();
        let urls: Vec<String> = if urls.len() >= CLIENTS {
            urls.iter().skip(worker).step_by(CLIENTS).cloned().collect()
        } else {
            urls.to_vec()
        };
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let share = requests / CLIENTS + usize::from(worker < requests % CLIENTS);
        tasks.push(tokio::spawn(async move {
            for i in 0..share {
                let mut request = client.get(&urls[i % urls.len()]);
                for (k, v) in &headers {
                    request = request.header(k, v);
                }
                let response = request.send().await.expect("request");
                assert!(response.status().is_success(), "{}", response.status());
                let _ = response.bytes().await.expect("body");
            }
        }));
    }
    for task in tasks {
        task.await.expect("worker");
    }
    requests as f64 / started.elapsed().as_secs_f64()
}
