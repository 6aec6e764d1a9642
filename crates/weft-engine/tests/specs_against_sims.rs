//! The shipped specs, run by the engine's request rendering, extraction and paging against the
//! simulators over real HTTP: every list of both connectors reads to its end, each record once,
//! and as many as the simulator holds.

mod common;

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;
use weft_core::Spec;
use weft_engine::extract::records;
use weft_engine::paginate::Pager;
use weft_engine::request::{Hosts, OpKind, RequestContext, Tenant, build};
use weft_harness::kantata::{KantataConfig, KantataSim};
use weft_harness::xero::{XeroConfig, XeroLimits, XeroSim};

use common::{shipped, xero_token};

/// Reads every page of `resource` and returns its records and the number of requests.
async fn read_all(
    spec: &Spec,
    hosts: &Hosts,
    resource: &str,
    ctx: &RequestContext,
    token: &str,
) -> (Vec<Value>, usize) {
    let env = weft_core::template::environment();
    let file = spec.file();
    let list = file.resources[resource]
        .list
        .as_ref()
        .expect("a list operation");
    let apply = env
        .render_str(
            &file.auth.apply.value,
            minijinja::context! { token => token },
        )
        .expect("the auth header renders");
    let client = reqwest::Client::new();
    let mut pager = Pager::new(list.pagination.as_ref().expect("paging"));
    let mut all = Vec::new();
    let mut calls = 0;
    while let Some(query) = pager.next_query() {
        assert!(calls < 1_000, "{resource}: paging did not end");
        let request = build(&env, file, hosts, resource, OpKind::List, ctx, &query)
            .expect("the request renders");
        let mut call = client
            .get(request.url.as_str())
            .header(&file.auth.apply.header, &apply);
        for (name, value) in &request.headers {
            call = call.header(name, value);
        }
        let response = call.send().await.expect("the simulator answers");
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON body");
        assert!(status.is_success(), "{resource}: {status} {body}");
        let page = records(&body, &list.records).unwrap_or_else(|e| panic!("{resource}: {e}"));
        pager
            .advance(&body, page.len())
            .unwrap_or_else(|e| panic!("{resource}: {e}"));
        all.extend(page);
        calls += 1;
    }
    (all, calls)
}

fn assert_unique(resource: &str, key: &str, records: &[Value]) {
    let mut seen = HashSet::new();
    for r in records {
        let id = r[key].to_string();
        assert!(
            seen.insert(id.clone()),
            "{resource}: record {id} read twice"
        );
    }
}

#[tokio::test]
async fn every_kantata_list_reads_to_its_end() {
    let sim = KantataSim::start(KantataConfig {
        size: 450,
        ..KantataConfig::default()
    })
    .unwrap();
    let spec = shipped("kantata");
    let overrides = BTreeMap::from([
        ("api".to_owned(), sim.api_url()),
        ("app".to_owned(), sim.app_url()),
    ]);
    let hosts = Hosts::new(spec.file(), &overrides).unwrap();
    let ctx = RequestContext::with_field_defaults(spec.file());
    let client = reqwest::Client::new();
    for (name, resource) in &spec.file().resources {
        if resource.list.is_none() {
            continue;
        }
        let (found, calls) = read_all(&spec, &hosts, name, &ctx, sim.personal_token()).await;
        assert_unique(name, &resource.primary_key, &found);
        // The first page's `count` is the total the provider promises for the same query.
        let env = weft_core::template::environment();
        let first = build(&env, spec.file(), &hosts, name, OpKind::List, &ctx, &[]).unwrap();
        let body: Value = client
            .get(first.url.as_str())
            .bearer_auth(sim.personal_token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let total = body["count"].as_u64().unwrap_or_default() as usize;
        assert_eq!(
            found.len(),
            total,
            "{name}: read {} of {total} in {calls} calls",
            found.len()
        );
    }
    let invoices = sim.invoices().len();
    assert!(invoices >= 450, "{invoices}");

    // Incremental: the cursor goes in `updated_after`; a future instant finds nothing, the
    // epoch finds everything.
    let inc = spec.file().resources["invoices"]
        .list
        .as_ref()
        .unwrap()
        .incremental
        .clone()
        .unwrap();
    let everything = read_all(&spec, &hosts, "invoices", &ctx, sim.personal_token())
        .await
        .0
        .len();
    for (since, expected) in [("2099-01-01", 0), ("1970-01-02", everything)] {
        let cursor =
            weft_engine::cursor::format(weft_engine::cursor::parse_since(since).unwrap(), &inc);
        let ctx = RequestContext {
            cursor: Some(cursor),
            ..ctx.clone()
        };
        assert_eq!(
            read_all(&spec, &hosts, "invoices", &ctx, sim.personal_token())
                .await
                .0
                .len(),
            expected,
            "since {since}"
        );
    }
}

#[tokio::test]
async fn every_xero_list_reads_to_its_end() {
    let sim = XeroSim::start(XeroConfig {
        size: 2_300,
        limits: XeroLimits::unlimited(),
        ..XeroConfig::default()
    })
    .unwrap();
    let spec = shipped("xero");
    let overrides = BTreeMap::from([
        ("login".to_owned(), sim.login_url()),
        ("identity".to_owned(), sim.identity_url()),
        ("api".to_owned(), sim.api_url()),
    ]);
    let hosts = Hosts::new(spec.file(), &overrides).unwrap();
    let token = xero_token(&sim).await;
    let token = token.as_str();
    let (tenant_id, tenant_name) = sim.tenants().into_iter().next().unwrap();
    let ctx = RequestContext {
        tenant: Some(Tenant {
            id: tenant_id.clone(),
            name: tenant_name,
        }),
        ..RequestContext::with_field_defaults(spec.file())
    };
    // Records for the lists the seed leaves empty: manual journals over three pages of 100, and
    // classic receipts and a claim (the organisation given classic expense claims).
    assert!(sim.enable_classic_expenses(&tenant_id));
    let put = |path: &str, body: Value| {
        let url = format!("{}/api.xro/2.0{path}", sim.api_url());
        let request = reqwest::Client::new()
            .put(url)
            .bearer_auth(token)
            .header("xero-tenant-id", &tenant_id)
            .header("Accept", "application/json")
            .json(&body);
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    for batch in 0..5 {
        let journals: Vec<Value> = (0..50)
            .map(|n| {
                serde_json::json!({"Narration": format!("Journal {batch}-{n}"), "JournalLines": [
                {"AccountCode": "400", "LineAmount": 1}, {"AccountCode": "200", "LineAmount": -1}]})
            })
            .collect();
        put(
            "/ManualJournals",
            serde_json::json!({ "ManualJournals": journals }),
        )
        .await;
    }
    let user = sim.records(&tenant_id, "Users")[0]["UserID"].clone();
    let contact = sim.contacts(&tenant_id)[0]["ContactID"].clone();
    let receipts: Vec<Value> = (0..3)
        .map(|n| serde_json::json!({"Date": "2026-01-05", "Contact": {"ContactID": contact}, "User": {"UserID": user},
            "LineItems": [{"Description": format!("Expense {n}"), "UnitAmount": 12.5, "AccountCode": "400"}]}))
        .collect();
    let made = put("/Receipts", serde_json::json!({ "Receipts": receipts })).await;
    let ids: Vec<Value> = made["Receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::json!({"ReceiptID": r["ReceiptID"]}))
        .collect();
    put(
        "/ExpenseClaims",
        serde_json::json!({"ExpenseClaims": [{"User": {"UserID": user}, "Receipts": ids}]}),
    )
    .await;
    let mut counts = BTreeMap::new();
    for (name, resource) in &spec.file().resources {
        if resource.list.is_none() || name == "connections" {
            continue;
        }
        let (found, calls) = read_all(&spec, &hosts, name, &ctx, token).await;
        assert_unique(name, &resource.primary_key, &found);
        counts.insert(name.clone(), (found.len(), calls));
    }
    let (invoices, calls) = counts["invoices"];
    assert_eq!(invoices, sim.invoices(&tenant_id).len());
    assert_eq!(
        calls,
        invoices.div_ceil(1_000) + usize::from(invoices % 1_000 == 0),
        "pageSize 1000 with a short-page stop"
    );
    assert_eq!(counts["contacts"].0, sim.contacts(&tenant_id).len());
    assert_eq!(counts["payments"].0, sim.payments(&tenant_id).len());
    assert_eq!(counts["organisation"].0, 1);
    assert_eq!(
        counts["manual_journals"],
        (250, 3),
        "100 a page, three pages"
    );
    assert_eq!(counts["receipts"].0, 3);
    assert_eq!(counts["expense_claims"].0, 1);
    assert_eq!(counts["users"].0, sim.records(&tenant_id, "Users").len());
    assert_eq!(
        counts["tracking_categories"].0, 1,
        "the archived category only with includeArchived"
    );
    for name in ["accounts", "tax_rates", "items"] {
        assert!(
            counts.get(name).is_some_and(|(n, _)| *n > 0),
            "{name}: {counts:?}"
        );
    }
}
