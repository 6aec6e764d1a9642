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
