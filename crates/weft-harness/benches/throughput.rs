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
    // Distinct reads that miss the render cache: every request asks for its own
    // If-Modified-Since (the engine's incremental read), page, filter or order.
    let base = seeded_start_ms(2_000);
    let since = move |i: usize| iso(base + i as u64 * 1_000);
    let url = format!(
        "{}/api.xro/2.0/Invoices?page=1&pageSize=100",
        xero.api_url()
    );
    let rate = runtime.block_on(measure_each(&[url], &headers, requests, &since));
    println!(
        "| xero | GET /api.xro/2.0/Invoices?page=1&pageSize=100, If-Modified-Since distinct | {requests} | {rate:.0} req/s |"
    );
    let urls: Vec<String> = (0..20)
        .map(|p| {
            format!(
                "{}/api.xro/2.0/Invoices?page={}&pageSize=100",
                xero.api_url(),
                p + 1
            )
        })
        .collect();
    let rate = runtime.block_on(measure_each(&urls, &headers, requests, &since));
    println!(
        "| xero | GET /api.xro/2.0/Invoices?page=1..20&pageSize=100, If-Modified-Since distinct | {requests} | {rate:.0} req/s |"
    );
    let urls: Vec<String> = (0..requests)
        .map(|i| {
            format!(
                "{}/api.xro/2.0/Invoices?page={}&pageSize=100&order=Total%20DESC&where=Total%3E%3D{}",
                xero.api_url(),
                1 + i % 5,
                i / 5
            )
        })
        .collect();
    let rate = runtime.block_on(measure(&urls, &headers, requests));
    println!(
        "| xero | GET /api.xro/2.0/Invoices?page=1..5&pageSize=100&order=Total DESC&where=… (all distinct) | {requests} | {rate:.0} req/s |"
    );
    let url = format!(
        "{}/api.xro/2.0/Invoices?page=1&pageSize=100&Statuses=AUTHORISED,PAID",
        xero.api_url()
    );
    let rate = runtime.block_on(measure_each(&[url], &headers, requests, &since));
    println!(
        "| xero | GET /api.xro/2.0/Invoices?page=1&pageSize=100&Statuses=AUTHORISED,PAID, If-Modified-Since distinct | {requests} | {rate:.0} req/s |"
    );
    let ids = runtime.block_on(invoice_ids(&xero, &headers, 100));
    let url = format!(
        "{}/api.xro/2.0/Invoices?page=1&pageSize=100&IDs={}",
        xero.api_url(),
        ids.join(",")
    );
    let rate = runtime.block_on(measure_each(&[url], &headers, requests, &since));
    println!(
        "| xero | GET /api.xro/2.0/Invoices?page=1&pageSize=100&IDs=(100 ids), If-Modified-Since distinct | {requests} | {rate:.0} req/s |"
    );
    let url = format!(
        "{}/api.xro/2.0/Invoices?page=1&pageSize=1000",
        xero.api_url()
    );
    let rate = runtime.block_on(measure_each(&[url], &headers, requests / 4, &since));
    println!(
        "| xero | GET /api.xro/2.0/Invoices?page=1&pageSize=1000, If-Modified-Since distinct | {} | {rate:.0} req/s |",
        requests / 4
    );
    drop(xero);

    let xero = XeroSim::start(XeroConfig {
        size: 100_000,
        limits: XeroLimits::unlimited(),
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
    let base = seeded_start_ms(100_000);
    let url = format!(
        "{}/api.xro/2.0/Invoices?page=1&pageSize=100",
        xero.api_url()
    );
    let rate = runtime.block_on(measure_each(&[url], &headers, requests, &|i| {
        iso(base + (i as u64 * 4_999 % 100_000) * 60_000 + 1_000)
    }));
    println!(
        "| xero (100,000 invoices) | GET /api.xro/2.0/Invoices?page=1&pageSize=100, If-Modified-Since distinct | {requests} | {rate:.0} req/s |"
    );
}

/// When the simulator's first seeded invoice was last updated (at its default start of time).
fn seeded_start_ms(size: u64) -> u64 {
    let now: u64 = 1_767_225_600_000;
    now - now % 86_400_000 - 86_400_000 - size * 60_000
}

/// An If-Modified-Since value (UTC, to the second).
fn iso(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(0))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// The InvoiceIDs of the first `n` invoices, spread over the organisation's pages.
async fn invoice_ids(xero: &XeroSim, headers: &[(&str, String)], n: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut request = client.get(format!(
        "{}/api.xro/2.0/Invoices?page=1&pageSize=1000",
        xero.api_url()
    ));
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    let body: serde_json::Value = request
        .send()
        .await
        .expect("invoices call")
        .json()
        .await
        .expect("invoices JSON");
    let all = body["Invoices"].as_array().cloned().unwrap_or_default();
    let step = (all.len() / n.max(1)).max(1);
    all.iter()
        .step_by(step)
        .take(n)
        .filter_map(|v| v["InvoiceID"].as_str().map(str::to_owned))
        .collect()
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
    measure_each(urls, headers, requests, &|_| String::new()).await
}

/// [`measure`] with an If-Modified-Since header made for each request (none when empty).
async fn measure_each(
    urls: &[String],
    headers: &[(&str, String)],
    requests: usize,
    since: &(dyn Fn(usize) -> String + Sync),
) -> f64 {
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
        let since: Vec<String> = (0..share).map(|i| since(i * CLIENTS + worker)).collect();
        tasks.push(tokio::spawn(async move {
            for i in 0..share {
                let mut request = client.get(&urls[i % urls.len()]);
                for (k, v) in &headers {
                    request = request.header(k, v);
                }
                if !since[i].is_empty() {
                    request = request.header("If-Modified-Since", &since[i]);
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
