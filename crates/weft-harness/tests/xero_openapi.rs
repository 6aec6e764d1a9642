//! Fidelity: the simulator's real answers validate against Xero's official OpenAPI schemas
//! (XeroAPI/Xero-OpenAPI 16.1.0, from the fixture in `tests/fixtures/xero-openapi/`; see
//! [`openapi`]).

mod openapi;

use openapi::{ACCOUNTING, IDENTITY, Validator};
use serde_json::{Value, json};
use weft_harness::xero::{XeroConfig, XeroLimits, XeroSim};

const REDIRECT: &str = "http://localhost:8976/oauth/callback";

struct Client {
    c: reqwest::Client,
    base: String,
    token: String,
    tenant: String,
}

impl Client {
    async fn new(sim: &XeroSim) -> Self {
        let c = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let r = c
            .get(format!("{}/identity/connect/authorize", sim.login_url()))
            .query(&[("response_type", "code"), ("client_id", sim.client_id()), ("redirect_uri", REDIRECT), ("scope", "openid offline_access accounting.transactions accounting.contacts accounting.settings"), ("state", "s")])
            .send()
            .await
            .expect("authorize");
        let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap_or_default())
            .expect("location");
        let code = location
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("code");
        let t: Value = c
            .post(format!("{}/connect/token", sim.identity_url()))
            .basic_auth(sim.client_id(), Some(sim.client_secret()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=authorization_code&code={code}&redirect_uri={}",
                "http%3A%2F%2Flocalhost%3A8976%2Foauth%2Fcallback"
            ))
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        Self {
            c,
            base: sim.api_url(),
            token: t["access_token"].as_str().unwrap_or_default().to_owned(),
            tenant: sim.tenants()[0].0.clone(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .c
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("xero-tenant-id", &self.tenant);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("call");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }
}

#[tokio::test]
async fn responses_match_the_official_schemas() {
    let sim = XeroSim::start(XeroConfig {
        size: 60,
        limits: XeroLimits::unlimited(),
        ..XeroConfig::default()
    })
    .expect("start");
    let api = Client::new(&sim).await;
    let mut v = Validator::new();
    let acc = ACCOUNTING;
    // The validator does reject what the schemas forbid.
    assert!(!v.valid(
        acc,
        "/components/schemas/Invoices",
        &json!({"Invoices": [{"Status": "BOGUS"}]})
    ));
    assert!(!v.valid(
        acc,
        "/components/schemas/Contacts",
        &json!({"Contacts": [{"ContactID": "not-a-uuid"}]})
    ));
    assert!(!v.valid(
        acc,
        "/components/schemas/Invoices",
        &json!({"pagination": {"page": "1"}})
    ));
    assert!(v.valid(
        acc,
        "/components/schemas/Invoices",
        &json!({"Invoices": [{"Status": "PAID", "Total": 1.5}]})
    ));
    // Without the adjustment, the zone-less dates Xero sends on /connections would be refused.
    let mut raw = Validator::empty();
    raw.add("raw", openapi::unadjusted(IDENTITY));
    let real = json!({"id": "e1eede29-f875-4a5d-8470-17f6a29a88b1", "createdDateUtc": "2019-12-07T18:46:19.5165400"});
    assert!(!raw.valid("raw", "/components/schemas/Connection", &real));
    assert!(v.valid(IDENTITY, "/components/schemas/Connection", &real));

    let connections = api.get("/connections").await;
    v.check(
        IDENTITY,
        "/paths/~1Connections/get/responses/200/content/application~1json/schema",
        &connections,
        "GET /connections",
    );

    let x = "/api.xro/2.0";
    for (path, schema) in [
        ("/Organisation", "Organisations"),
        ("/Contacts?page=1&includeArchived=true", "Contacts"),
        ("/Contacts", "Contacts"),
        ("/Invoices?page=1&pageSize=60", "Invoices"),
        ("/Invoices", "Invoices"),
        ("/Payments?page=1", "Payments"),
        ("/Accounts", "Accounts"),
        ("/TaxRates", "TaxRates"),
        ("/Items", "Items"),
    ] {
        let body = api.get(&format!("{x}{path}")).await;
        v.check(acc, &format!("/components/schemas/{schema}"), &body, path);
    }
    let invoices = api.get(&format!("{x}/Invoices?page=1")).await;
    let id = invoices["Invoices"][1]["InvoiceID"]
        .as_str()
        .unwrap_or_default();
    v.check(
        acc,
        "/components/schemas/Invoices",
        &api.get(&format!("{x}/Invoices/{id}")).await,
        "GET /Invoices/{id}",
    );

    // Writes: a created contact, a batch with an error per element, an invoice, a payment.
    let contact = json!({"Contacts": [{"Name": "Schema Check Ltd", "EmailAddress": "s@c.example"}, {"FirstName": "No name"}]});
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("{x}/Contacts?summarizeErrors=false"),
            Some(contact),
        )
        .await;
    assert_eq!(status, 200);
    v.check(
        acc,
        "/components/schemas/Contacts",
        &body,
        "PUT /Contacts (per element)",
    );
    let contact_id = body["Contacts"][0]["ContactID"].clone();
    let invoice = json!({"Invoices": [{"Type": "ACCREC", "Status": "AUTHORISED", "Contact": {"ContactID": contact_id}, "DueDate": "2026-02-01",
        "LineItems": [{"Description": "Work", "Quantity": 2.5, "UnitAmount": 80, "AccountCode": "200"}]}, {"Type": "ACCREC"}]});
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("{x}/Invoices?summarizeErrors=false"),
            Some(invoice.clone()),
        )
        .await;
    assert_eq!(status, 200);
    v.check(
        acc,
        "/components/schemas/Invoices",
        &body,
        "PUT /Invoices (per element)",
    );
    let invoice_id = body["Invoices"][0]["InvoiceID"].clone();
    let (status, error) = api
        .call(
            reqwest::Method::PUT,
            &format!("{x}/Invoices"),
            Some(invoice),
        )
        .await;
    assert_eq!(status, 400);
    v.check(
        acc,
        "/components/schemas/Error",
        &error,
        "400 ValidationException",
    );
    let payment = json!({"Payments": [{"Invoice": {"InvoiceID": invoice_id}, "Account": {"Code": "090"}, "Date": "2026-01-02", "Amount": 50}]});
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("{x}/Payments"),
            Some(payment),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    v.check(acc, "/components/schemas/Payments", &body, "PUT /Payments");
    v.check(
        acc,
        "/components/schemas/Payments",
        &api.get(&format!("{x}/Payments?page=2&pageSize=10")).await,
        "GET /Payments page 2",
    );
    v.check(
        acc,
        "/components/schemas/Invoices",
        &api.get(&format!(
            "{x}/Invoices/{}",
            invoice_id.as_str().unwrap_or_default()
        ))
        .await,
        "part-paid invoice",
    );
}

/// The resources of the other M-Bridge scenarios answer in Xero's schemas too: bills (with a
/// removed account code's warning), users, tracking categories and options, manual journals,
/// receipts and expense claims (classic expenses enabled), and the refusal without them.
#[tokio::test]
async fn scenario_resources_match_the_official_schemas() {
    let sim = XeroSim::start(XeroConfig {
        size: 20,
        limits: XeroLimits::unlimited(),
        ..XeroConfig::default()
    })
    .expect("start");
    let api = Client::new(&sim).await;
    let mut v = Validator::new();
    let acc = ACCOUNTING;
    let x = "/api.xro/2.0";
    let contact_id = sim.contacts(&api.tenant)[0]["ContactID"].clone();

    let bill = json!({"Invoices": [{"Type": "ACCPAY", "Contact": {"ContactID": contact_id}, "InvoiceNumber": "KX-ERS-1",
        "Date": "2026-01-05", "DueDate": "2026-01-05", "PlannedPaymentDate": "2026-01-20", "Url": "https://kantata.example/ers/1",
        "LineItems": [{"Description": "Taxi", "Quantity": 1, "UnitAmount": 23.4, "AccountCode": "9999"}]}]});
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("{x}/Invoices?summarizeErrors=false"),
            Some(bill),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    v.check(
        acc,
        "/components/schemas/Invoices",
        &body,
        "PUT /Invoices (bill, warned)",
    );

    let (status, body) = api
        .call(reqwest::Method::GET, &format!("{x}/Users"), None)
        .await;
    assert_eq!(status, 200);
    v.check(acc, "/components/schemas/Users", &body, "GET /Users");
    let user_id = body["Users"][0]["UserID"].clone();

    for path in [
        "/TrackingCategories",
        "/TrackingCategories?includeArchived=true",
    ] {
        let body = api.get(&format!("{x}{path}")).await;
        v.check(acc, "/components/schemas/TrackingCategories", &body, path);
    }
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("{x}/TrackingCategories"),
            Some(json!({"Name": "Department"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    v.check(
        acc,
        "/components/schemas/TrackingCategories",
        &body,
        "PUT /TrackingCategories",
    );
    let category = body["TrackingCategories"][0]["TrackingCategoryID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("{x}/TrackingCategories/{category}/Options"),
            Some(json!({"Name": "Design"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    v.check(
        acc,
        "/components/schemas/TrackingOptions",
        &body,
        "PUT …/Options",
    );
    let option = body["Options"][0]["TrackingOptionID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, body) = api
        .call(
            reqwest::Method::DELETE,
            &format!("{x}/TrackingCategories/{category}/Options/{option}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    v.check(
        acc,
        "/components/schemas/TrackingOptions",
        &body,
        "DELETE …/Options/{id}",
    );
    let (status, body) = api
        .call(
            reqwest::Method::DELETE,
            &format!("{x}/TrackingCategories/{category}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    v.check(
        acc,
        "/components/schemas/TrackingCategories",
        &body,
        "DELETE /TrackingCategories/{id}",
    );

    let journal = json!({"ManualJournals": [{"Narration": "Kantata timesheet #1", "Date": "2026-01-31", "Url": "https://kantata.example/t/1",
        "JournalLines": [{"AccountCode": "400", "LineAmount": 120.5, "Description": "Time"}, {"AccountCode": "200", "LineAmount": -120.5, "Description": "Balancing"}]},
        {"Narration": "Unbalanced", "JournalLines": [{"AccountCode": "400", "LineAmount": 100}, {"AccountCode": "200", "LineAmount": -10}]}]});
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("{x}/ManualJournals?summarizeErrors=false"),
            Some(journal),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    v.check(
        acc,
        "/components/schemas/ManualJournals",
        &body,
        "PUT /ManualJournals (per element)",
    );
    let journal_id = body["ManualJournals"][0]["ManualJournalID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for path in [
        "/ManualJournals".to_owned(),
        "/ManualJournals?page=1".to_owned(),
        format!("/ManualJournals/{journal_id}"),
    ] {
        let body = api.get(&format!("{x}{path}")).await;
        v.check(acc, "/components/schemas/ManualJournals", &body, &path);
    }

    // Without classic expenses: the refusal is an Error body.
    let (status, body) = api
        .call(reqwest::Method::GET, &format!("{x}/Receipts"), None)
        .await;
    assert_eq!(status, 403, "{body}");
    v.check(
        acc,
        "/components/schemas/Error",
        &body,
        "classic expenses refused",
    );
    assert!(sim.enable_classic_expenses(&api.tenant));
    let receipt = json!({"Receipts": [{"Date": "2026-01-05", "Contact": {"ContactID": contact_id}, "User": {"UserID": user_id},
        "LineAmountTypes": "Inclusive", "Reference": "KX-ERS-2-E1",
        "LineItems": [{"Description": "Lunch", "Quantity": 1, "UnitAmount": 34.5, "AccountCode": "400"}]}]});
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("{x}/Receipts?summarizeErrors=false"),
            Some(receipt),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    v.check(acc, "/components/schemas/Receipts", &body, "PUT /Receipts");
    let receipt_id = body["Receipts"][0]["ReceiptID"].clone();
    v.check(
        acc,
        "/components/schemas/Receipts",
        &api.get(&format!("{x}/Receipts")).await,
        "GET /Receipts",
    );
    let claim = json!({"ExpenseClaims": [{"User": {"UserID": user_id}, "Receipts": [{"ReceiptID": receipt_id}], "Status": "SUBMITTED"}]});
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("{x}/ExpenseClaims"),
            Some(claim),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    v.check(
        acc,
        "/components/schemas/ExpenseClaims",
        &body,
        "PUT /ExpenseClaims",
    );
    v.check(
        acc,
        "/components/schemas/ExpenseClaims",
        &api.get(&format!("{x}/ExpenseClaims")).await,
        "GET /ExpenseClaims",
    );
}
