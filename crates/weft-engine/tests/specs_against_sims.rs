//! The shipped specs, run by the engine's request rendering, extraction and paging against the
//! simulators over real HTTP: every list of every connector with a simulator reads to its end,
//! each record once, and as many as the simulator holds.

mod common;

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;
use weft_core::Spec;
use weft_engine::extract::records;
use weft_engine::paginate::Pager;
use weft_engine::request::{Hosts, OpKind, RequestContext, Tenant, build, read_body};
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
    while let Some(ask) = pager.next() {
        assert!(calls < 1_000, "{resource}: paging did not end");
        // The page's values reach the templates too (paging inside a query text).
        let mut page_ctx = ctx.clone();
        ask.apply(&mut page_ctx);
        let request = build(
            &env,
            file,
            hosts,
            resource,
            OpKind::List,
            &page_ctx,
            &ask.query,
        )
        .expect("the request renders");
        let method = reqwest::Method::from_bytes(request.method.as_str().as_bytes()).unwrap();
        let mut call = client
            .request(method, request.url.as_str())
            .header(&file.auth.apply.header, &apply);
        for (name, value) in &request.headers {
            call = call.header(name, value);
        }
        // A list read through a search carries its filter and paging state in a body.
        if let Some(body) = read_body(&env, file, hosts, resource, &page_ctx).unwrap() {
            call = call.json(&body);
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
    // Lists whose provider requires a parameter get the one a flow would pass.
    let required = BTreeMap::from([
        ("external_references", ("subject_type", "Invoice")),
        ("custom_field_values", ("subject_type", "Workspace")),
    ]);
    let mut counts = BTreeMap::new();
    for (name, resource) in &spec.file().resources {
        if resource.list.is_none() {
            continue;
        }
        let mut ctx = ctx.clone();
        if let Some((param, value)) = required.get(name.as_str()) {
            ctx.params.insert((*param).to_owned(), (*value).to_owned());
        }
        let (found, calls) = read_all(&spec, &hosts, name, &ctx, sim.personal_token()).await;
        assert_unique(name, &resource.primary_key, &found);
        counts.insert(name.clone(), found.len());
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
    // The scenario resources hold seeded records, so each read above proved something.
    for name in [
        "expense_report_submissions",
        "timesheet_submissions",
        "expense_categories",
        "vendors",
        "custom_fields",
        "custom_field_choices",
        "custom_field_values",
        "external_references",
        "subscribed_events",
    ] {
        assert!(
            counts.get(name).is_some_and(|n| *n > 0),
            "{name}: {counts:?}"
        );
    }
    // More than a page of reports (200), each read once with its expenses inlined.
    let state = sim.state();
    assert_eq!(
        counts["expense_report_submissions"],
        state
            .submissions(weft_harness::kantata::SubmissionKind::ExpenseReport)
            .len()
    );
    assert!(counts["expense_report_submissions"] > 200);
    assert!(counts["timesheet_submissions"] > 200);

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

/// What a flow sees of the Kantata scenario resources: each submission with its expenses or
/// time entries, submitter and project inlined; each custom field with its choices; writes of a
/// choice list, a value and a reference through the spec's operations; events by cursor.
#[tokio::test]
async fn kantata_scenario_records_carry_their_side_loads() {
    let sim = KantataSim::start(KantataConfig::default()).unwrap();
    let spec = shipped("kantata");
    let file = spec.file();
    let overrides = BTreeMap::from([
        ("api".to_owned(), sim.api_url()),
        ("app".to_owned(), sim.app_url()),
    ]);
    let hosts = Hosts::new(file, &overrides).unwrap();
    let base = RequestContext::with_field_defaults(file);
    let token = sim.personal_token();
    let with = |pairs: &[(&str, &str)]| {
        let mut ctx = base.clone();
        for (k, v) in pairs {
            ctx.params.insert((*k).to_owned(), (*v).to_owned());
        }
        ctx
    };

    // Approved reports of every user (all_on_account is on unless a flow says otherwise).
    let ctx = with(&[("statuses", "approved")]);
    let (reports, _) = read_all(&spec, &hosts, "expense_report_submissions", &ctx, token).await;
    let state = sim.state();
    let approved = state
        .submissions(weft_harness::kantata::SubmissionKind::ExpenseReport)
        .into_iter()
        .filter(|s| s.status == "approved")
        .count();
    assert_eq!(reports.len(), approved);
    assert!(
        reports
            .iter()
            .any(|r| r["user_id"].as_str() != Some(state.demo_user_id().as_str()))
    );
    for r in &reports {
        let expenses = r["expenses"].as_array().expect("expenses inlined");
        assert!(!expenses.is_empty());
        let total: i64 = expenses
            .iter()
            .map(|e| e["amount_in_cents"].as_i64().unwrap())
            .sum();
        assert_eq!(r["line_item_total_in_cents"], total);
        assert!(
            expenses
                .iter()
                .all(|e| e["expense_category_id"].is_string())
        );
        assert_eq!(r["user"]["id"], r["user_id"]);
        assert!(r["user"]["full_name"].is_string());
        assert_eq!(r["workspace"]["id"], r["workspace_id"]);
        assert_eq!(r["resolutions"][0]["type"], "approval");
        assert_eq!(r["status"], "approved");
    }
    // A flow's own all_on_account=false narrows to the caller's reports.
    let ctx = with(&[("all_on_account", "false")]);
    let (own, _) = read_all(&spec, &hosts, "expense_report_submissions", &ctx, token).await;
    assert!(
        own.iter()
            .all(|r| r["user_id"].as_str() == Some(state.demo_user_id().as_str()))
    );

    let (sheets, _) = read_all(
        &spec,
        &hosts,
        "timesheet_submissions",
        &with(&[("statuses", "approved")]),
        token,
    )
    .await;
    assert!(!sheets.is_empty());
    for t in &sheets {
        let entries = t["time_entries"].as_array().expect("time entries inlined");
        assert!(!entries.is_empty());
        assert!(entries.iter().all(|e| e["time_in_minutes"].is_i64()));
        assert!(t["user"]["full_name"].is_string());
    }
    assert!(
        sheets
            .iter()
            .flat_map(|t| t["time_entries"].as_array().unwrap())
            .any(|e| e["rate_in_cents"].is_null())
    );

    // Custom fields with their choices inlined, in list order.
    let field = state.custom_field_id("Xero region").unwrap();
    let ctx = with(&[("subject_type", "Workspace"), ("only", field.as_str())]);
    let (fields, _) = read_all(&spec, &hosts, "custom_fields", &ctx, token).await;
    assert_eq!(fields.len(), 1);
    let choices = fields[0]["choices"].as_array().expect("choices inlined");
    let labels: Vec<&str> = choices
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["EMEA", "Americas", "APAC"]);
    assert!(
        choices
            .iter()
            .all(|c| c["id"].is_string() && c["position"].is_i64())
    );

    // The choice-list PUT through the spec's update operation: keep two, add one.
    let env = weft_core::template::environment();
    let client = reqwest::Client::new();
    let send = |op: &str, resource: &str, ctx: RequestContext| {
        let kind = if op == "update" {
            OpKind::Update
        } else {
            OpKind::Create
        };
        let resource = resource.to_owned();
        let request = build(&env, file, &hosts, &resource, kind, &ctx, &[]).unwrap();
        let operation = if op == "update" {
            file.resources[&resource].update.clone().unwrap()
        } else {
            file.resources[&resource].create.clone().unwrap()
        };
        let record = ctx.record.clone().unwrap();
        let problems =
            weft_engine::write::check_record(&file.resources[&resource], &record, op == "create");
        assert!(problems.is_empty(), "{problems:?}");
        let body = weft_engine::write::body(&operation, &[record]);
        let method = reqwest::Method::from_bytes(request.method.as_str().as_bytes()).unwrap();
        let client = client.clone();
        let url = request.url.clone();
        async move {
            let r = client
                .request(method, url.as_str())
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            assert!(status.is_success(), "{status} {body}");
            records(&body, &operation.records).unwrap()
        }
    };
    let record = serde_json::json!({"choices": [
        {"id": choices[2]["id"], "label": "Asia Pacific"},
        {"id": choices[0]["id"], "label": "EMEA"},
        {"label": "LATAM"},
    ]});
    let ctx = RequestContext {
        id: Some(field.clone()),
        record: Some(record),
        ..base.clone()
    };
    let updated = send("update", "custom_fields", ctx).await;
    let labels: Vec<&str> = updated[0]["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Asia Pacific", "EMEA", "LATAM"]);
    let dropped = state
        .custom_field_choices(&field)
        .into_iter()
        .find(|c| c.label == "Americas")
        .unwrap();
    assert!(!dropped.active);

    // A value and a reference through the create operations.
    let (values, _) = read_all(
        &spec,
        &hosts,
        "custom_field_values",
        &with(&[
            ("subject_type", "Workspace"),
            ("with_custom_field_id", field.as_str()),
        ]),
        token,
    )
    .await;
    let subject = values[0]["subject_id"].as_str().unwrap().to_owned();
    let latam = updated[0]["choices"][2]["id"].as_str().unwrap().to_owned();
    let record = serde_json::json!({"subject_type": "Workspace", "subject_id": subject, "custom_field_id": field, "value": format!("[{latam}]")});
    let created = send(
        "create",
        "custom_field_values",
        RequestContext {
            record: Some(record),
            ..base.clone()
        },
    )
    .await;
    assert_eq!(created[0]["display_value"], "LATAM");
    let report = reports[0]["id"].as_str().unwrap().to_owned();
    let reference = |status: &str| serde_json::json!({"subject_type": "Submission", "subject_id": report, "service_name": "xero", "service_model": "Invoice", "service_model_ref": "bill-1", "status": status});
    let first = send(
        "create",
        "external_references",
        RequestContext {
            record: Some(reference("pending")),
            ..base.clone()
        },
    )
    .await;
    let second = send(
        "create",
        "external_references",
        RequestContext {
            record: Some(reference("successful")),
            ..base.clone()
        },
    )
    .await;
    assert_eq!(first[0]["id"], second[0]["id"], "create_or_update upserts");
    let (refs, _) = read_all(
        &spec,
        &hosts,
        "external_references",
        &with(&[("subject_type", "Submission"), ("service_name", "xero")]),
        token,
    )
    .await;
    assert_eq!(refs.len(), 1);

    // Events by cursor: created_after, oldest first.
    let inc = file.resources["subscribed_events"]
        .list
        .as_ref()
        .unwrap()
        .incremental
        .clone()
        .unwrap();
    let mut all_events = 0;
    for (since, some) in [("1970-01-02", true), ("2099-01-01", false)] {
        let cursor =
            weft_engine::cursor::format(weft_engine::cursor::parse_since(since).unwrap(), &inc);
        let ctx = RequestContext {
            cursor: Some(cursor),
            ..with(&[("event_types", "expense_report:updated,custom_field:updated")])
        };
        let (events, _) = read_all(&spec, &hosts, "subscribed_events", &ctx, token).await;
        assert_eq!(!events.is_empty(), some, "since {since}");
        let stamps: Vec<&str> = events
            .iter()
            .map(|e| e["created_at"].as_str().unwrap())
            .collect();
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
        if some {
            all_events = events.len();
            assert!(
                events
                    .iter()
                    .any(|e| e["event_type"] == "custom_field:updated")
            );
            assert!(events.iter().all(|e| e["subject_id"].is_u64()));
        }
    }
    assert!(all_events > 0);
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

/// Every list of the QuickBooks spec through its query text: paging inside the statement
/// (`STARTPOSITION`, `MAXRESULTS`) to a short page, records under `QueryResponse.<Entity>` (absent
/// when nothing matches), inactive customers, items and accounts read too, the company in the
/// path and `minorversion` on every call; incremental on `MetaData.LastUpdatedTime`.
#[tokio::test]
async fn every_quickbooks_list_reads_to_its_end() {
    use weft_harness::quickbooks::{Kind, QuickBooksConfig, QuickBooksLimits, QuickBooksSim};
    let sim = QuickBooksSim::start(QuickBooksConfig {
        size: 2_300,
        limits: QuickBooksLimits::unlimited(),
        ..QuickBooksConfig::default()
    })
    .unwrap();
    let spec = shipped("quickbooks");
    let hosts = Hosts::new(spec.file(), &sim.hosts().into_iter().collect()).unwrap();
    let (realm, token) = common::quickbooks_token(&sim).await;
    let ctx = RequestContext {
        tenant: Some(Tenant {
            id: realm.clone(),
            name: realm.clone(),
        }),
        ..RequestContext::with_field_defaults(spec.file())
    };
    let mut counts = BTreeMap::new();
    for (name, resource) in &spec.file().resources {
        if resource.list.is_none() {
            continue;
        }
        let (found, calls) = read_all(&spec, &hosts, name, &ctx, &token).await;
        assert_unique(name, &resource.primary_key, &found);
        counts.insert(name.clone(), (found.len(), calls));
    }
    let held = |kind| sim.records(&realm, kind).len();
    assert_eq!(counts["company_info"].0, 1);
    assert_eq!(
        counts["invoices"],
        (2_300, 3),
        "1000 a page, the third one short"
    );
    assert_eq!(counts["payments"].0, held(Kind::Payment));
    assert_eq!(counts["customers"].0, held(Kind::Customer));
    assert_eq!(counts["items"].0, held(Kind::Item));
    assert_eq!(counts["accounts"].0, held(Kind::Account));
    for kind in [Kind::Customer, Kind::Item, Kind::Account] {
        assert!(
            sim.records(&realm, kind)
                .iter()
                .any(|r| r["Active"] == false),
            "{kind:?}: the seed has inactive records, and the list read them"
        );
    }
    let log = sim.observed().log.requests();
    assert!(
        log.iter()
            .all(|r| r.path.starts_with(&format!("/v3/company/{realm}/"))
                && r.query.contains("minorversion=75")),
        "{:?}",
        log.iter().find(|r| !r.query.contains("minorversion=75"))
    );

    // Incremental: the cursor goes inside the statement; a future instant finds nothing, the
    // epoch everything, and a cursor between them the invoices changed since.
    let inc = spec.file().resources["invoices"]
        .list
        .as_ref()
        .unwrap()
        .incremental
        .clone()
        .unwrap();
    let since = |at: &str| {
        let cursor =
            weft_engine::cursor::format(weft_engine::cursor::parse_since(at).unwrap(), &inc);
        RequestContext {
            cursor: Some(cursor),
            ..ctx.clone()
        }
    };
    for (at, expected) in [("2099-01-01", 0), ("1970-01-02", 2_300)] {
        let (found, _) = read_all(&spec, &hosts, "invoices", &since(at), &token).await;
        assert_eq!(found.len(), expected, "since {at}");
    }
    let at_ms = sim.clock().now_ms() as i64 - 120 * 86_400_000;
    let at = jiff::Timestamp::from_millisecond(at_ms)
        .unwrap()
        .to_string();
    let (recent, _) = read_all(&spec, &hosts, "invoices", &since(&at), &token).await;
    // The spec's overlap reads one second before the cursor.
    let cut = jiff::Timestamp::from_millisecond(at_ms - 1_000).unwrap();
    let changed = sim
        .records(&realm, Kind::Invoice)
        .iter()
        .filter(|i| {
            i["MetaData"]["LastUpdatedTime"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_some_and(|t| t >= cut)
        })
        .count();
    assert!(
        !recent.is_empty() && recent.len() < 2_300,
        "{}",
        recent.len()
    );
    assert_eq!(recent.len(), changed);
}

/// Every list of the HubSpot spec: contacts, companies and deals through search (POST, the
/// cursor and the paging state in the body, 200 a page, `paging.next.after`), line items by
/// following `paging.next.link` (an absolute URL on the API host), owners by `after`, and the
/// account details (the tenant) as one record; each object read whole, archived records left
/// out; incremental by the last-change property in epoch milliseconds.
#[tokio::test]
async fn every_hubspot_list_reads_to_its_end() {
    use weft_harness::hubspot::{HubSpotConfig, HubSpotLimits, HubSpotSim, Object};
    let sim = HubSpotSim::start(HubSpotConfig {
        size: 900,
        limits: HubSpotLimits::unlimited(),
        ..HubSpotConfig::default()
    })
    .unwrap();
    let spec = shipped("hubspot");
    let hosts = Hosts::new(spec.file(), &sim.hosts().into_iter().collect()).unwrap();
    let portal = sim.portals()[0];
    let token = sim.private_app_token(portal).unwrap().to_owned();
    // One contact archived, as a person would: lists leave it out.
    let first = sim.records(portal, Object::Contacts)[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    weft_engine::http::client()
        .unwrap()
        .delete(format!("{}/crm/v3/objects/contacts/{first}", sim.api_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let ctx = RequestContext::with_field_defaults(spec.file());
    let mut counts = BTreeMap::new();
    for (name, resource) in &spec.file().resources {
        if resource.list.is_none() {
            continue;
        }
        let (found, calls) = read_all(&spec, &hosts, name, &ctx, &token).await;
        assert_unique(name, &resource.primary_key, &found);
        counts.insert(name.clone(), (found.len(), calls));
    }
    let live = |object| {
        sim.records(portal, object)
            .iter()
            .filter(|r| r["archived"] == false)
            .count()
    };
    assert_eq!(counts["account"], (1, 1));
    assert_eq!(
        counts["contacts"],
        (899, 5),
        "200 a page through search, the archived one left out"
    );
    assert_eq!(counts["companies"].0, live(Object::Companies));
    assert_eq!(counts["deals"].0, live(Object::Deals));
    let lines = live(Object::LineItems);
    assert_eq!(counts["line_items"], (lines, lines.div_ceil(100)));
    assert_eq!(counts["owners"].0, 8);
    let log = sim.observed().log.requests();
    let searches: Vec<_> = log
        .iter()
        .filter(|r| r.path == "/crm/v3/objects/contacts/search")
        .collect();
    assert_eq!(searches.len(), 5);
    assert!(searches.iter().all(|r| r.method == "POST"));
    assert!(
        log.iter()
            .filter(|r| r.path == "/crm/v3/objects/line_items")
            .skip(1)
            .all(|r| r.query.contains("after=")),
        "the next pages follow paging.next.link"
    );

    // Incremental: the cursor goes into the search's filter in epoch milliseconds; a future
    // instant finds nothing, the epoch everything, and a cursor between them the deals changed
    // since.
    let inc = spec.file().resources["deals"]
        .list
        .as_ref()
        .unwrap()
        .incremental
        .clone()
        .unwrap();
    let since = |at: &str| {
        let cursor =
            weft_engine::cursor::format(weft_engine::cursor::parse_since(at).unwrap(), &inc);
        assert!(cursor.bytes().all(|b| b.is_ascii_digit()), "{cursor}");
        RequestContext {
            cursor: Some(cursor),
            ..ctx.clone()
        }
    };
    let deals = live(Object::Deals);
    for (at, expected) in [("2099-01-01", 0), ("1970-01-02", deals)] {
        let (found, _) = read_all(&spec, &hosts, "deals", &since(at), &token).await;
        assert_eq!(found.len(), expected, "since {at}");
    }
    let at_ms = sim.clock().now_ms() as i64 - 90 * 86_400_000;
    let at = jiff::Timestamp::from_millisecond(at_ms)
        .unwrap()
        .to_string();
    let (recent, _) = read_all(&spec, &hosts, "deals", &since(&at), &token).await;
    let changed = sim
        .records(portal, Object::Deals)
        .iter()
        .filter(|d| {
            let t: jiff::Timestamp = d["properties"]["hs_lastmodifieddate"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            t.as_millisecond() >= at_ms
        })
        .count();
    assert_eq!(recent.len(), changed);
    assert!(0 < changed && changed < deals, "{changed} of {deals}");
    let mut last = 0;
    for d in &recent {
        let t: jiff::Timestamp = d["properties"]["hs_lastmodifieddate"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(t.as_millisecond() >= last, "oldest change first");
        last = t.as_millisecond();
    }
}
