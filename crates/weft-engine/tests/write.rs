//! Batch writes to the Xero simulator as the spec describes them: per-item results with
//! `summarizeErrors=false`, and the same batch sent twice creating nothing twice.

mod common;

use std::collections::BTreeMap;

use serde_json::json;
use weft_engine::extract::records;
use weft_engine::http::{Sleep, client, send};
use weft_engine::request::{Hosts, OpKind, RequestContext, Tenant, build};
use weft_engine::write::{body, check_record, idempotency_key, item_results};
use weft_harness::xero::{XeroConfig, XeroSim};

use common::{shipped, xero_token};

#[tokio::test]
async fn contacts_batch_reports_each_record_and_replays_without_duplicates() {
    let sim = XeroSim::start(XeroConfig::default()).unwrap();
    let spec = shipped("xero");
    let file = spec.file();
    let hosts = Hosts::new(file, &BTreeMap::from([("api".to_owned(), sim.api_url())])).unwrap();
    let http = client().unwrap();
    let token = xero_token(&sim).await;
    let (tenant, name) = sim.tenants().into_iter().next().unwrap();
    let existing = sim.contacts(&tenant)[0]["Name"]
        .as_str()
        .unwrap()
        .to_owned();

    let resource = &file.resources["contacts"];
    let op = resource.create.as_ref().unwrap();
    let batch = vec![
        json!({"Name": "Weft Test Client One"}),
        json!({"Name": existing}),
        json!({"Name": "Weft Test Client Two"}),
    ];
    assert!(
        batch
            .iter()
            .all(|r| check_record(resource, r, true).is_empty())
    );
    assert_eq!(
        check_record(resource, &json!({"FirstName": "x"}), true),
        vec!["`Name` is required".to_owned()]
    );

    let ctx = RequestContext {
        tenant: Some(Tenant {
            id: tenant.clone(),
            name,
        }),
        ..RequestContext::with_field_defaults(file)
    };
    let env = weft_core::template::environment();
    let mut request = build(&env, file, &hosts, "contacts", OpKind::Create, &ctx, &[]).unwrap();
    request
        .headers
        .push(("Authorization".into(), format!("Bearer {}", token)));
    let idem = op.idempotency.as_ref().unwrap();
    request.headers.push((
        idem.header.clone(),
        idempotency_key("test/contacts", &batch, idem.max_length as usize),
    ));
    assert!(
        request
            .url
            .query()
            .unwrap_or_default()
            .contains("summarizeErrors=false")
    );

    let before = sim.contacts(&tenant).len();
    let mut rng = fastrand::Rng::with_seed(1);
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let answer = send(
            &http,
            file,
            &op.errors,
            &request,
            Some(&body(op, &batch)),
            &Sleep,
            &mut rng,
        )
        .await
        .unwrap();
        let returned = records(&answer.body, &op.records).unwrap();
        outcomes.push(item_results(
            0,
            batch.len(),
            &returned,
            op.item_errors.as_ref(),
            &resource.primary_key,
        ));
    }
    let first = &outcomes[0];
    assert_eq!(
        first.iter().map(|r| r.status).collect::<Vec<_>>(),
        ["ok", "failed", "ok"]
    );
    assert!(first[0].id.is_some() && first[2].id.is_some());
    assert!(!first[1].errors.is_empty(), "Xero says why: {:?}", first[1]);
    assert_eq!(
        outcomes[0], outcomes[1],
        "the second send is a replay of the first"
    );
    assert_eq!(
        sim.contacts(&tenant).len(),
        before + 2,
        "two contacts, created once"
    );
}

/// Nested field rules apply to each element of a list: a line's amount that is not a decimal,
/// or `NaN`, is refused with the line's position; an exact decimal (as flows write it) passes.
#[test]
fn list_elements_are_checked_by_their_nested_rules() {
    let spec = shipped("xero");
    let invoices = &spec.file().resources["invoices"];
    let record = |amount: serde_json::Value| {
        json!({
            "Type": "ACCREC",
            "Contact": {"ContactID": "c"},
            "LineItems": [
                {"Description": "a", "UnitAmount": 10},
                {"Description": "b", "UnitAmount": amount}
            ]
        })
    };
    assert!(check_record(invoices, &record(json!(12.5)), true).is_empty());
    let exact = weft_engine::exact::mark("104.17".parse().unwrap());
    assert!(check_record(invoices, &record(json!(exact)), true).is_empty());
    for bad in [
        json!("ten"),
        json!("NaN"),
        json!("inf"),
        json!("-Infinity"),
        json!(true),
    ] {
        let problems = check_record(invoices, &record(bad.clone()), true);
        assert_eq!(
            problems,
            vec!["`LineItems[1].UnitAmount` must be a decimal number".to_owned()],
            "{bad}"
        );
    }
}

/// Deleting a payment is the spec's `payments.update`: the body Xero documents is the bare
/// `{"Status":"DELETED"}` (the OpenAPI's `PaymentDelete`), not wrapped in `Payments`.
#[tokio::test]
async fn a_payment_is_deleted_with_the_bare_documented_body() {
    let sim = XeroSim::start(XeroConfig::default()).unwrap();
    let spec = shipped("xero");
    let file = spec.file();
    let hosts = Hosts::new(file, &BTreeMap::from([("api".to_owned(), sim.api_url())])).unwrap();
    let token = xero_token(&sim).await;
    let (tenant, name) = sim.tenants().into_iter().next().unwrap();
    let payment = sim
        .payments(&tenant)
        .into_iter()
        .find(|p| p["Status"] == "AUTHORISED")
        .expect("a seeded payment");
    let id = payment["PaymentID"].as_str().unwrap().to_owned();

    let op = file.resources["payments"].update.as_ref().unwrap();
    let deletion = json!({"Status": "DELETED"});
    let sent = body(op, std::slice::from_ref(&deletion));
    assert_eq!(sent, deletion, "the body is the bare status");

    let ctx = RequestContext {
        id: Some(id.clone()),
        tenant: Some(Tenant {
            id: tenant.clone(),
            name,
        }),
        ..RequestContext::with_field_defaults(file)
    };
    let env = weft_core::template::environment();
    let mut request = build(&env, file, &hosts, "payments", OpKind::Update, &ctx, &[]).unwrap();
    request
        .headers
        .push(("Authorization".into(), format!("Bearer {token}")));
    let answer = send(
        &client().unwrap(),
        file,
        &op.errors,
        &request,
        Some(&sent),
        &Sleep,
        &mut fastrand::Rng::with_seed(1),
    )
    .await
    .unwrap();
    let returned = records(&answer.body, &op.records).unwrap();
    assert_eq!(returned[0]["Status"], "DELETED");
    let stored = sim
        .payments(&tenant)
        .into_iter()
        .find(|p| p["PaymentID"] == id.as_str())
        .unwrap();
    assert_eq!(stored["Status"], "DELETED");
}

/// A write whose operation declares an idempotency key gets one, as long as the spec's
/// `max-length`, in the declared header; one that declares none gets no key and no header.
#[test]
fn keys_and_their_header_only_where_the_operation_declares_them() {
    use weft_engine::write::{idempotency_key_for, key_header};
    let (xero, kantata) = (shipped("xero"), shipped("kantata"));
    let op = |s: &weft_core::Spec, r: &str| s.file().resources[r].create.clone().unwrap();
    let batch = [json!({"Name": "A"})];
    let keyed = op(&xero, "invoices");
    let key = idempotency_key_for(&keyed, "scope", &batch).unwrap();
    let max = keyed.idempotency.as_ref().unwrap().max_length as usize;
    assert!(key.len() <= max);
    assert_eq!(
        key_header(&keyed, Some(&key)),
        Some(("Idempotency-Key".to_owned(), key.clone()))
    );
    let bare = op(&kantata, "external_payments");
    assert!(bare.idempotency.is_none());
    assert_eq!(idempotency_key_for(&bare, "scope", &batch), None);
    assert_eq!(key_header(&bare, Some(&key)), None);
}
