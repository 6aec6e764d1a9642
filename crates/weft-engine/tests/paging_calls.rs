//! Reads ask only for pages that exist, and the call count a session reports is the number of
//! requests the provider received (the simulators' request log), retries included.

mod common;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use weft_engine::limits::Limiter;
use weft_engine::oauth::TokenSet;
use weft_engine::request::{Hosts, RequestContext, Tenant};
use weft_engine::secrets::{MasterKey, Secret, SecretStore};
use weft_engine::session::Session;
use weft_engine::tokens::TokenKeeper;
use weft_harness::clock::SimClock;
use weft_harness::kantata::{KantataConfig, KantataSim};
use weft_harness::xero::{XeroConfig, XeroLimits, XeroSim};

use common::{SimWait, shipped, xero_token};

const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// A session over connector `id` with a fixed token, at the spec's highest concurrency (the
/// most room to ask ahead).
fn session(
    id: &str,
    name: &str,
    hosts: BTreeMap<String, String>,
    token: &str,
    clock: &SimClock,
) -> Session {
    let spec = shipped(id);
    let dir = std::env::temp_dir().join(format!("weft-paging-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut store = SecretStore::open(
        &dir.join("credentials.json"),
        MasterKey::from_base64(KEY).unwrap(),
    )
    .unwrap();
    store
        .put(
            "connection:t:tokens",
            &TokenSet::fixed(Secret::new(token.to_owned()), 0).to_sealed_json(),
        )
        .unwrap();
    let clock = Arc::new(SimWait::new(clock));
    let http = weft_engine::http::client().unwrap();
    let keeper = TokenKeeper::new(
        "t",
        "connection:t:tokens",
        store,
        None,
        None,
        http.clone(),
        clock.clone(),
    );
    let hosts = Hosts::new(spec.file(), &hosts).unwrap();
    let limiter = Limiter::new(spec.file(), spec.file().limits.concurrency.max);
    Session::new(spec, hosts, limiter, http, keeper, clock)
}

/// Reads `resource` to its end (or `limit` records); returns how many were handed over.
async fn read(session: &Session, resource: &str, ctx: &RequestContext, limit: u64) -> u64 {
    let mut seen = 0;
    session
        .list(resource, ctx, |_| {
            seen += 1;
            if seen >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn xero_reads_ask_ahead_within_the_page_count_and_stop_at_it() {
    let clock = SimClock::manual(1_760_000_000_000);
    let sim = XeroSim::start(XeroConfig {
        organisations: 1,
        size: 5_000,
        clock: clock.clone(),
        limits: XeroLimits::unlimited(),
        ..XeroConfig::default()
    })
    .unwrap();
    let token = xero_token(&sim).await;
    let hosts = BTreeMap::from([
        ("login".to_owned(), sim.login_url()),
        ("identity".to_owned(), sim.identity_url()),
        ("api".to_owned(), sim.api_url()),
    ]);
    let session = session("xero", "xero", hosts, &token, &clock);
    let (id, name) = sim.tenants()[0].clone();
    let ctx = RequestContext {
        tenant: Some(Tenant { id, name }),
        ..session.context(BTreeMap::new())
    };
    let log = &sim.observed().log;
    log.clear();
    let all = read(&session, "invoices", &ctx, u64::MAX).await;
    assert_eq!(all, 5_000);
    // Five full pages of 1,000, and `pagination.pageCount` says five: nothing past them, and
    // pages after the first asked for ahead (several in flight).
    let sent = log.count("GET", "/api.xro/2.0/Invoices");
    assert_eq!(sent, 5, "calls past the end of the list");
    assert_eq!(
        session.stats().calls,
        sent as u64,
        "the count matches the wire"
    );
    // Once the first page has told the count, the next pages are asked for together: a read
    // that stops within the second page has asked for more than two.
    log.clear();
    assert_eq!(read(&session, "invoices", &ctx, 1_500).await, 1_500);
    let sent = log.count("GET", "/api.xro/2.0/Invoices");
    assert!(sent > 2, "pages asked for ahead: {sent}");
}

#[tokio::test]
async fn kantata_reads_ask_ahead_only_within_the_page_count_and_count_every_call() {
    let clock = SimClock::manual(1_760_000_000_000);
    let sim = KantataSim::start(KantataConfig {
        size: 4_950,
        clock: clock.clone(),
        ..KantataConfig::default()
    })
    .unwrap();
    let hosts = BTreeMap::from([
        ("api".to_owned(), sim.api_url()),
        ("app".to_owned(), sim.app_url()),
    ]);
    let session = session("kantata", "kantata", hosts, sim.personal_token(), &clock);
    let ctx = session.context(BTreeMap::new());
    let log = &sim.observed().log;
    log.clear();
    let read = read(&session, "invoices", &ctx, u64::MAX).await;
    let pages = read.div_ceil(200) as usize;
    assert!(pages >= 25, "{read} invoices");
    let sent = log.count("GET", "/api/v1/invoices");
    assert_eq!(sent, pages, "calls past meta.page_count");
    assert_eq!(session.stats().calls, sent as u64);

    // Stopping early (`weft read --limit`): pages already asked for are still counted.
    log.clear();
    let before = session.stats().calls;
    assert_eq!(read_limited(&session, &ctx).await, 450);
    let sent = log.count("GET", "/api/v1/invoices");
    assert!(sent >= 3, "{sent}");
    assert_eq!(session.stats().calls - before, sent as u64);

    // Retries are calls too: two 429s before the first page, then the read goes on.
    log.clear();
    let before = session.stats().calls;
    sim.rate_limit_next(2);
    let again = read_first_page(&session, &ctx).await;
    assert_eq!(again, 200);
    let sent = log.requests().len();
    assert_eq!(sent, 3, "two refused, one answered");
    assert_eq!(session.stats().calls - before, sent as u64);
}

async fn read_limited(session: &Session, ctx: &RequestContext) -> u64 {
    read(session, "invoices", ctx, 450).await
}

async fn read_first_page(session: &Session, ctx: &RequestContext) -> u64 {
    read(session, "invoices", ctx, 200).await
}
