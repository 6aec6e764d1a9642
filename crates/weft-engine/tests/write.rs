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
        idem.header.clone().unwrap(),
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

/// Sends `batch` through `resource`'s create operation of the shipped Xero spec to the simulator's
/// first organisation; the answer, or the classified failure.
async fn xero_create(
    sim: &XeroSim,
    resource: &str,
    batch: &[serde_json::Value],
) -> Result<
    (
        Vec<weft_engine::write::ItemResult>,
        weft_engine::http::Answer,
    ),
    weft_engine::http::CallError,
> {
    let spec = shipped("xero");
    let file = spec.file();
    let hosts = Hosts::new(file, &BTreeMap::from([("api".to_owned(), sim.api_url())])).unwrap();
    let token = xero_token(sim).await;
    let (tenant, name) = sim.tenants().into_iter().next().unwrap();
    let ctx = RequestContext {
        tenant: Some(Tenant { id: tenant, name }),
        ..RequestContext::with_field_defaults(file)
    };
    let env = weft_core::template::environment();
    let mut request = build(&env, file, &hosts, resource, OpKind::Create, &ctx, &[]).unwrap();
    request
        .headers
        .push(("Authorization".into(), format!("Bearer {token}")));
    let op = file.resources[resource].create.as_ref().unwrap();
    let answer = send(
        &client().unwrap(),
        file,
        &op.errors,
        &request,
        Some(&body(op, batch)),
        &Sleep,
        &mut fastrand::Rng::with_seed(1),
    )
    .await?;
    let returned = records(&answer.body, &op.records).unwrap();
    let results = item_results(
        0,
        batch.len(),
        &returned,
        op.item_errors.as_ref(),
        &file.resources[resource].primary_key,
    );
    Ok((results, answer))
}

/// Warnings are failures: Xero saves an invoice whose line names an unknown account code without
/// that code and only warns (HTTP 200); the spec's `warnings-field` makes it a failed record,
/// with Xero's message and the id of what was saved, while a clean invoice beside it succeeds.
#[tokio::test]
async fn an_invoice_whose_account_code_was_removed_is_a_failed_item() {
    let sim = XeroSim::start(XeroConfig::default()).unwrap();
    let (tenant, _) = sim.tenants().into_iter().next().unwrap();
    let contact = sim.contacts(&tenant)[0]["ContactID"].clone();
    let bill = |account: &str| {
        json!({"Type": "ACCPAY", "Contact": {"ContactID": contact}, "InvoiceNumber": "KX-ERS-12",
            "Url": "https://kantata.example/expense_reports/12", "PlannedPaymentDate": "2026-02-01",
            "LineItems": [{"Description": "Hotel", "Quantity": 1, "UnitAmount": "180.00", "AccountCode": account}]})
    };
    let (results, answer) = xero_create(&sim, "invoices", &[bill("400"), bill("9999")])
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "Xero accepts both");
    assert_eq!(
        results.iter().map(|r| r.status).collect::<Vec<_>>(),
        ["ok", "failed"]
    );
    assert_eq!(
        results[1].errors,
        ["Account code '9999' has been removed as it does not match a recognised account."]
    );
    let saved = results[1].id.as_deref().expect("the warned bill's id");
    assert!(sim.invoice(&tenant, saved).is_some(), "it exists in Xero");

    // The same holds for a manual journal.
    let journal = json!({"Narration": "Kantata timesheet #5", "JournalLines": [
        {"AccountCode": "9998", "LineAmount": "10.00"}, {"AccountCode": "200", "LineAmount": "-10.00"}]});
    let (results, _) = xero_create(&sim, "manual_journals", &[journal])
        .await
        .unwrap();
    assert_eq!(results[0].status, "failed");
    assert!(results[0].errors[0].contains("'9998' has been removed"));
}

/// An organisation without classic expense claims: the refusal is classified by the receipts'
/// own rule, whose message sends the person to the bills template.
#[tokio::test]
async fn a_receipt_without_classic_expenses_points_to_bills() {
    let sim = XeroSim::start(XeroConfig::default()).unwrap();
    let (tenant, _) = sim.tenants().into_iter().next().unwrap();
    let receipt = json!({"Date": "2026-01-05", "Contact": {"Name": "Cab Co"}, "User": {"UserID": "00000000-0000-0000-0000-000000000000"},
        "LineItems": [{"Description": "Taxi", "UnitAmount": "20.00", "AccountCode": "400"}]});
    for resource in ["receipts", "expense_claims"] {
        let err = xero_create(&sim, resource, std::slice::from_ref(&receipt))
            .await
            .expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("weft init --template kantata-xero-bills") && text.contains("Forbidden"),
            "{resource}: {text}"
        );
    }
    assert!(sim.enable_classic_expenses(&tenant));
    let (results, _) = xero_create(&sim, "receipts", &[receipt]).await.unwrap();
    assert_eq!(results[0].status, "failed", "an unknown user: {results:?}");
}

#[test]
fn a_record_as_read_is_checked_for_what_it_holds_not_for_what_a_write_may_send() {
    let spec = weft_core::builtin::load_all()
        .into_iter()
        .filter_map(|r| r.spec)
        .find(|s| s.id() == "xero")
        .unwrap();
    let contacts = &spec.file().resources["contacts"];
    let read = serde_json::json!({ "ContactID": "c-1", "Name": "Acme", "UpdatedDateUTC": "/Date(1700000000000+0000)/" });
    assert!(weft_engine::write::check_read(contacts, &read).is_empty());
    assert!(
        !weft_engine::write::check_record(contacts, &read, false).is_empty(),
        "read-only on a write"
    );
    let wrong =
        serde_json::json!({ "ContactID": "c-1", "Name": 7, "EmailAddress": "x".repeat(300) });
    let problems = weft_engine::write::check_read(contacts, &wrong);
    assert!(
        problems.iter().any(|p| p.contains("`Name` must be")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`EmailAddress` is longer")),
        "{problems:?}"
    );
}
