//! The Xero simulator over real HTTP on 127.0.0.1: OAuth and refresh rotation, tenants, rate
//! limits, reads, batch writes, idempotency, payments, determinism.

mod openapi;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use weft_harness::xero::{Consent, XeroConfig, XeroLimits, XeroSim};

use openapi::Validator;

const REDIRECT: &str = "http://localhost:8976/oauth/callback";
const SCOPES: &str = "openid profile email offline_access accounting.transactions accounting.contacts accounting.settings";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-longer-than-43";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn start(config: XeroConfig) -> XeroSim {
    XeroSim::start(config).expect("simulator starts")
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
}

/// Runs the consent page and returns the redirect's query pairs.
async fn authorize(
    sim: &XeroSim,
    c: &reqwest::Client,
    redirect: &str,
    pkce: bool,
) -> (StatusCode, Vec<(String, String)>) {
    let mut url = reqwest::Url::parse(&format!("{}/identity/connect/authorize", sim.login_url()))
        .expect("url");
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", sim.client_id())
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", SCOPES)
        .append_pair("state", "xyz-123");
    if pkce {
        url.query_pairs_mut()
            .append_pair("code_challenge", &challenge(VERIFIER))
            .append_pair("code_challenge_method", "S256");
    }
    let r = c.get(url).send().await.expect("authorize");
    let status = r.status();
    let pairs = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .and_then(|l| reqwest::Url::parse(l).ok())
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    (status, pairs)
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

async fn token(sim: &XeroSim, c: &reqwest::Client, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = c
        .post(format!("{}/connect/token", sim.identity_url()))
        .basic_auth(sim.client_id(), Some(sim.client_secret()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(form))
        .send()
        .await
        .expect("token");
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

fn form_body(form: &[(&str, &str)]) -> String {
    let mut u = reqwest::Url::parse("http://x/").expect("url");
    u.query_pairs_mut().extend_pairs(form);
    u.query().unwrap_or_default().to_owned()
}

/// Authorizes (PKCE) and exchanges the code: the token response.
async fn login(sim: &XeroSim, c: &reqwest::Client) -> Value {
    let (_, pairs) = authorize(sim, c, REDIRECT, true).await;
    let code = get(&pairs, "code").expect("code").to_owned();
    let (status, body) = token(
        sim,
        c,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

struct Api {
    base: String,
    token: String,
    tenant: String,
    c: reqwest::Client,
}

impl Api {
    async fn new(sim: &XeroSim) -> Self {
        let c = client();
        let t = login(sim, &c).await;
        Self {
            base: format!("{}/api.xro/2.0", sim.api_url()),
            token: t["access_token"].as_str().unwrap_or_default().to_owned(),
            tenant: sim.tenants()[0].0.clone(),
            c,
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.c
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("xero-tenant-id", &self.tenant)
            .header("Accept", "application/json")
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .req(reqwest::Method::GET, path)
            .send()
            .await
            .expect("get");
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    /// A DELETE: the status and the raw body.
    async fn delete(&self, path: &str) -> (StatusCode, Vec<u8>) {
        let r = self
            .req(reqwest::Method::DELETE, path)
            .send()
            .await
            .expect("delete");
        (r.status(), r.bytes().await.expect("body").to_vec())
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .req(method, path)
            .json(body)
            .send()
            .await
            .expect("send");
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn authorization_code_with_state_and_pkce() {
    let sim = start(XeroConfig::default());
    let c = client();
    let (status, pairs) = authorize(&sim, &c, REDIRECT, true).await;
    assert_eq!(status, 302);
    assert_eq!(get(&pairs, "state"), Some("xyz-123"));
    let code = get(&pairs, "code").expect("code").to_owned();

    // Wrong verifier, then the right one, then the code again (single use).
    let bad = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        (
            "code_verifier",
            "wrong-wrong-wrong-wrong-wrong-wrong-wrong-wrong",
        ),
    ];
    assert_eq!(
        token(&sim, &c, &bad).await,
        (StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}))
    );
    let good = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let (status, t) = token(&sim, &c, &good).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["expires_in"], 1800);
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["refresh_token"].is_string() && t["id_token"].is_string());
    let cl = claims(t["access_token"].as_str().unwrap_or_default());
    for k in [
        "nbf",
        "exp",
        "iss",
        "aud",
        "client_id",
        "sub",
        "xero_userid",
        "jti",
        "authentication_event_id",
    ] {
        assert!(cl.get(k).is_some(), "claim {k} in {cl}");
    }
    assert_eq!(
        cl["exp"].as_u64().unwrap_or(0) - cl["nbf"].as_u64().unwrap_or(0),
        1800
    );
    assert!(
        cl["scope"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("offline_access")))
    );
    assert_eq!(
        token(&sim, &c, &good).await.1,
        json!({"error": "invalid_grant"})
    );

    // Redirect URI not registered: an error page, no redirect.
    let (status, _) = authorize(&sim, &c, "http://localhost:9999/evil", true).await;
    assert_eq!(status, 400);

    // Denied.
    sim.set_consent(Consent::Deny);
    let (status, pairs) = authorize(&sim, &c, REDIRECT, false).await;
    assert_eq!(status, 302);
    assert_eq!(get(&pairs, "error"), Some("access_denied"));
    assert_eq!(get(&pairs, "state"), Some("xyz-123"));
    sim.set_consent(Consent::Grant { tenants: vec![] });

    // Expired code (5 minutes).
    let (_, pairs) = authorize(&sim, &c, REDIRECT, true).await;
    let code = get(&pairs, "code").expect("code").to_owned();
    sim.clock().advance(Duration::from_secs(301));
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    assert_eq!(
        token(&sim, &c, &form).await.1,
        json!({"error": "invalid_grant"})
    );

    // Wrong secret.
    let r = c
        .post(format!("{}/connect/token", sim.identity_url()))
        .basic_auth(sim.client_id(), Some("nope"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap_or_default(),
        json!({"error": "invalid_client"})
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_with_a_grace_period() {
    let sim = start(XeroConfig::default());
    let c = client();
    let first = login(&sim, &c).await;
    let r1 = first["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, second) = token(
        &sim,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
    )
    .await;
    assert_eq!(status, 200);
    let r2 = second["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_ne!(r1, r2, "every refresh rotates");
    assert_ne!(first["access_token"], second["access_token"]);
    assert_eq!(
        claims(second["access_token"].as_str().unwrap_or_default())["authentication_event_id"],
        claims(first["access_token"].as_str().unwrap_or_default())["authentication_event_id"]
    );

    // The answer was "lost": the old token still works within 30 minutes, giving the same successor.
    sim.clock().advance(Duration::from_secs(29 * 60));
    let (status, again) = token(
        &sim,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again["refresh_token"].as_str(), Some(r2.as_str()));

    sim.clock().advance(Duration::from_secs(2 * 60));
    let (status, body) = token(
        &sim,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}))
    );

    let (status, third) = token(
        &sim,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &r2)],
    )
    .await;
    assert_eq!(status, 200);
    let r3 = third["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // Unused for 60 days: gone.
    sim.clock().advance(Duration::from_secs(61 * 86_400));
    let (status, _) = token(
        &sim,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &r3)],
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn access_tokens_expire_and_tenants_are_enforced() {
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    let (status, body) = api.get("/Organisation").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["Organisations"][0]["OrganisationID"].as_str(),
        Some(api.tenant.as_str())
    );
    assert_eq!(body["Status"], "OK");

    // No tenant, and a tenant that is not connected.
    let r = api
        .c
        .get(format!("{}/Contacts", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap_or_default()["Detail"],
        "AuthenticationUnsuccessful"
    );
    let r = api
        .c
        .get(format!("{}/Contacts", api.base))
        .bearer_auth(&api.token)
        .header("xero-tenant-id", "00000000-0000-0000-0000-000000000000")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);

    sim.clock().advance(Duration::from_secs(1801));
    let (status, body) = api.get("/Organisation").await;
    assert_eq!(status, 401);
    assert_eq!(body["Title"], "Unauthorized");
    assert!(
        body["Detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("TokenExpired")),
        "{body}"
    );
}

#[tokio::test]
async fn client_credentials_reach_the_first_organisation() {
    let sim = start(XeroConfig::default());
    let c = client();
    let (status, t) = token(
        &sim,
        &c,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "accounting.transactions.read"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert!(t.get("refresh_token").is_none());
    let access = t["access_token"].as_str().unwrap_or_default();
    let r = c
        .get(format!("{}/api.xro/2.0/Invoices?page=1", sim.api_url()))
        .bearer_auth(access)
        .header("xero-tenant-id", &sim.tenants()[0].0)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn connections_follow_consent_and_revocation() {
    let sim = start(XeroConfig {
        organisations: 3,
        ..XeroConfig::default()
    });
    let tenants = sim.tenants();
    let c = client();
    sim.set_consent(Consent::Grant {
        tenants: vec![tenants[1].0.clone()],
    });
    let first = login(&sim, &c).await;
    let access = first["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let event = claims(&access)["authentication_event_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let conns = |token: String, query: String| {
        let c = c.clone();
        let url = format!("{}/connections{query}", sim.api_url());
        async move {
            let r = c
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("connections");
            assert!(r.headers().get("x-appminlimit-remaining").is_some());
            assert!(r.headers().get("x-minlimit-remaining").is_none());
            r.json::<Value>().await.unwrap_or_default()
        }
    };
    let list = conns(access.clone(), format!("?authEventId={event}")).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["tenantId"].as_str(), Some(tenants[1].0.as_str()));
    assert_eq!(list[0]["authEventId"].as_str(), Some(event.as_str()));
    assert_eq!(list[0]["tenantType"], "ORGANISATION");
    let created = list[0]["createdDateUtc"].as_str().unwrap_or_default();
    assert_eq!(created.len(), 27, "{created}");

    // Consent again to another organisation: a new event; both are connected.
    sim.set_consent(Consent::Grant {
        tenants: vec![tenants[2].0.clone()],
    });
    let second = login(&sim, &c).await;
    let access2 = second["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let event2 = claims(&access2)["authentication_event_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_ne!(event, event2);
    let all = conns(access2.clone(), String::new()).await;
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    let just = conns(access2.clone(), format!("?authEventId={event2}")).await;
    assert_eq!(just[0]["tenantId"].as_str(), Some(tenants[2].0.as_str()));

    // Disconnect one: its calls get 403.
    let id = just[0]["id"].as_str().unwrap_or_default();
    let r = c
        .delete(format!("{}/connections/{id}", sim.api_url()))
        .bearer_auth(&access2)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let r = c
        .get(format!("{}/api.xro/2.0/Organisation", sim.api_url()))
        .bearer_auth(&access2)
        .header("xero-tenant-id", &tenants[2].0)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);

    // Revocation removes the rest and kills the refresh token.
    let refresh = second["refresh_token"].as_str().unwrap_or_default();
    let r = c
        .post(format!("{}/connect/revocation", sim.identity_url()))
        .basic_auth(sim.client_id(), Some(sim.client_secret()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("token", refresh)]))
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
    assert_eq!(conns(access2, String::new()).await, json!([]));
    let (status, _) = token(
        &sim,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_minute_limit_counts_down_then_answers_429() {
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    for i in 0..60u64 {
        let r = api
            .req(reqwest::Method::GET, "/Organisation")
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        assert_eq!(h("x-minlimit-remaining"), Some(59 - i));
        assert_eq!(h("x-daylimit-remaining"), Some(4999 - i));
        assert_eq!(h("x-appminlimit-remaining"), Some(9999 - i));
        sim.clock().advance(Duration::from_millis(500));
    }
    let r = api
        .req(reqwest::Method::GET, "/Organisation")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-rate-limit-problem"], "minute");
    // The first call was at t=0, now is t=30 s: the window frees in 30 s.
    assert_eq!(r.headers()["retry-after"], "30");
    sim.clock().advance(Duration::from_secs(30));
    let (status, _) = api.get("/Organisation").await;
    assert_eq!(status, 200);
    // The log sees the 429 too: 59 calls, the refused one and the next within one minute.
    assert_eq!(
        sim.observed().log.max_in_window(Some(&api.tenant), 60_000),
        61
    );
    // The other organisation has its own budget.
    let mut other = Api::new(&sim).await;
    other.tenant = sim.tenants()[1].0.clone();
    assert_eq!(other.get("/Organisation").await.0, 200);
}

#[tokio::test]
async fn daily_and_app_limits() {
    let limits = XeroLimits {
        per_day: 5,
        app_per_minute: 4,
        ..XeroLimits::default()
    };
    let sim = start(XeroConfig {
        limits,
        ..XeroConfig::default()
    });
    let api = Api::new(&sim).await;
    for _ in 0..5 {
        assert_eq!(api.get("/Organisation").await.0, 200);
        sim.clock().advance(Duration::from_secs(60));
    }
    let r = api
        .req(reqwest::Method::GET, "/Organisation")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-rate-limit-problem"], "day");
    assert_eq!(
        r.headers()["retry-after"],
        (86_400 - 300).to_string().as_str()
    );
    assert_eq!(sim.calls_today(&api.tenant), 5);

    let mut other = Api::new(&sim).await;
    other.tenant = sim.tenants()[1].0.clone();
    for _ in 0..4 {
        assert_eq!(other.get("/Organisation").await.0, 200);
    }
    let r = other
        .req(reqwest::Method::GET, "/Organisation")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-rate-limit-problem"], "appminute");
}

#[tokio::test]
async fn the_sixth_concurrent_call_is_refused() {
    let sim = start(XeroConfig {
        latency: Some(Duration::from_millis(1000)),
        ..XeroConfig::default()
    });
    let api = Api::new(&sim).await;
    let calls = (0..6).map(|_| api.req(reqwest::Method::GET, "/Organisation").send());
    let results = futures_util::future::join_all(calls).await;
    let mut statuses: Vec<u16> = results
        .iter()
        .map(|r| r.as_ref().map_or(0, |r| r.status().as_u16()))
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    let refused = results
        .iter()
        .flatten()
        .find(|r| r.status() == 429)
        .expect("a 429");
    assert_eq!(refused.headers()["x-rate-limit-problem"], "concurrent");
    assert_eq!(sim.observed().log.max_in_flight(Some(&api.tenant)), 6);
    // Slots free again once the calls finish.
    assert_eq!(api.get("/Organisation").await.0, 200);
}

#[tokio::test]
async fn paging_is_clamped_and_unpaged_invoices_drop_lines() {
    let sim = start(XeroConfig {
        size: 250,
        limits: XeroLimits::unlimited(),
        ..XeroConfig::default()
    });
    let api = Api::new(&sim).await;
    let (_, p1) = api.get("/Invoices?page=1&pageSize=100").await;
    assert_eq!(
        p1["pagination"],
        json!({"page": 1, "pageSize": 100, "pageCount": 3, "itemCount": 250})
    );
    assert_eq!(p1["Invoices"].as_array().map(Vec::len), Some(100));
    assert!(
        p1["Invoices"][0]["LineItems"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    );
    let (_, p3) = api.get("/Invoices?page=3&pageSize=100").await;
    assert_eq!(p3["Invoices"].as_array().map(Vec::len), Some(50));
    let (_, big) = api.get("/Invoices?page=1&pageSize=5000").await;
    assert_eq!(big["pagination"]["pageSize"], 1000);
    assert_eq!(big["Invoices"].as_array().map(Vec::len), Some(250));
    let (_, tiny) = api.get("/Invoices?page=2&pageSize=0").await;
    assert_eq!(tiny["pagination"]["pageSize"], 1);
    assert_eq!(
        tiny["Invoices"][0]["InvoiceID"],
        big["Invoices"][1]["InvoiceID"]
    );
    // Default order: UpdatedDateUTC ascending.
    let times: Vec<String> = big["Invoices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["UpdatedDateUTC"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by_key(|t| {
        t.trim_start_matches("/Date(")
            .split('+')
            .next()
            .unwrap_or_default()
            .parse::<u64>()
            .unwrap_or(0)
    });
    assert_eq!(times, sorted);
    let (_, unpaged) = api.get("/Invoices").await;
    assert!(unpaged.get("pagination").is_none());
    assert_eq!(unpaged["Invoices"].as_array().map(Vec::len), Some(250));
    assert!(unpaged["Invoices"][0].get("LineItems").is_none());
    // GET by id and by number.
    let id = big["Invoices"][0]["InvoiceID"].as_str().unwrap_or_default();
    let (status, one) = api.get(&format!("/Invoices/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["Invoices"][0], big["Invoices"][0]);
    let (status, by_number) = api.get("/Invoices/INV-0001").await;
    assert_eq!(status, 200);
    assert_eq!(by_number["Invoices"][0]["InvoiceNumber"], "INV-0001");
    let r = api
        .req(
            reqwest::Method::GET,
            "/Invoices/00000000-0000-4000-8000-000000000000",
        )
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    // Reference data.
    for (path, key, min) in [
        ("/Accounts", "Accounts", 20),
        ("/TaxRates", "TaxRates", 5),
        ("/Items", "Items", 5),
        ("/Payments?page=1", "Payments", 50),
        ("/Contacts?page=1", "Contacts", 20),
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            body[key].as_array().is_some_and(|a| a.len() >= min),
            "{path}: {body}"
        );
    }
    let (_, rate) = api.get("/TaxRates/OUTPUT").await;
    assert_eq!(rate["TaxRates"][0]["TaxType"], "OUTPUT");
}

#[tokio::test]
async fn if_modified_since_where_and_order() {
    let sim = start(XeroConfig {
        size: 60,
        limits: XeroLimits::unlimited(),
        ..XeroConfig::default()
    });
    let api = Api::new(&sim).await;
    let (_, all) = api.get("/Invoices?page=1&pageSize=1000").await;
    let invoices = all["Invoices"].as_array().cloned().unwrap_or_default();
    // Seeded records are a minute apart: If-Modified-Since at the 40th keeps 20.
    let ms: i64 = invoices[40]["UpdatedDateUTC"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("/Date(")
        .split('+')
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap_or(0);
    let at = jiff::Timestamp::from_millisecond(ms).expect("ts");
    let since_utc = at.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let r = api
        .req(reqwest::Method::GET, "/Invoices?page=1")
        .header("If-Modified-Since", &since_utc)
        .send()
        .await
        .expect("get");
    let body: Value = r.json().await.unwrap_or_default();
    assert_eq!(body["Invoices"].as_array().map(Vec::len), Some(20));
    assert_eq!(body["Invoices"][0]["InvoiceID"], invoices[40]["InvoiceID"]);
    // The same instant with an offset.
    let with_offset = at
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(-8)))
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let r = api
        .req(reqwest::Method::GET, "/Invoices?page=1")
        .header("If-Modified-Since", &with_offset)
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.json::<Value>().await.unwrap_or_default()["Invoices"]
            .as_array()
            .map(Vec::len),
        Some(20)
    );
    // A change moves a record after every seeded one.
    sim.clock().advance(Duration::from_secs(10));
    let since_now = "2026-01-01T00:00:05Z";
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            "/Contacts",
            &json!({"Contacts": [{"Name": "Fresh Fish Co"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let r = api
        .req(reqwest::Method::GET, "/Contacts?page=1")
        .header("If-Modified-Since", since_now)
        .send()
        .await
        .expect("get");
    let body: Value = r.json().await.unwrap_or_default();
    assert_eq!(body["Contacts"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["Contacts"][0]["Name"], "Fresh Fish Co");

    let count = |status: &str| invoices.iter().filter(|i| i["Status"] == status).count();
    let (_, paid) = api
        .get("/Invoices?page=1&where=Status%3D%3D%22PAID%22")
        .await;
    assert_eq!(
        paid["Invoices"].as_array().map(Vec::len),
        Some(count("PAID"))
    );
    let q = "Type==\"ACCPAY\" AND (Status==\"AUTHORISED\" || Status==\"PAID\")";
    let mut url = reqwest::Url::parse(&format!("{}/Invoices", api.base)).expect("url");
    url.query_pairs_mut()
        .append_pair("page", "1")
        .append_pair("where", q)
        .append_pair("order", "Total DESC");
    let r = api
        .c
        .get(url)
        .bearer_auth(&api.token)
        .header("xero-tenant-id", &api.tenant)
        .send()
        .await
        .expect("get");
    let body: Value = r.json().await.unwrap_or_default();
    let got = body["Invoices"].as_array().cloned().unwrap_or_default();
    let expected = invoices
        .iter()
        .filter(|i| i["Type"] == "ACCPAY" && (i["Status"] == "AUTHORISED" || i["Status"] == "PAID"))
        .count();
    assert_eq!(got.len(), expected);
    assert!(
        got.windows(2)
            .all(|w| w[0]["Total"].as_f64() >= w[1]["Total"].as_f64())
    );
    let contact = invoices[0]["Contact"]["ContactID"]
        .as_str()
        .unwrap_or_default();
    let (_, by_contact) = api
        .get(&format!(
            "/Invoices?page=1&where=Contact.ContactID%3DGUID(%22{contact}%22)"
        ))
        .await;
    let n = invoices
        .iter()
        .filter(|i| i["Contact"]["ContactID"] == contact)
        .count();
    assert_eq!(by_contact["Invoices"].as_array().map(Vec::len), Some(n));
    let (_, listed) = api
        .get(&format!(
            "/Invoices?page=1&ContactIDs={contact}&Statuses=PAID,AUTHORISED"
        ))
        .await;
    let n = invoices
        .iter()
        .filter(|i| {
            i["Contact"]["ContactID"] == contact
                && (i["Status"] == "PAID" || i["Status"] == "AUTHORISED")
        })
        .count();
    assert_eq!(listed["Invoices"].as_array().map(Vec::len), Some(n));
    let (status, bad) = api.get("/Invoices?page=1&where=Status%3D%3D").await;
    assert_eq!(status, 400, "{bad}");
    // Archived contacts only with includeArchived.
    let (_, active) = api.get("/Contacts?page=1").await;
    let (_, with_archived) = api.get("/Contacts?page=1&includeArchived=true").await;
    assert!(
        with_archived["Contacts"].as_array().map(Vec::len)
            > active["Contacts"].as_array().map(Vec::len)
    );
}

#[tokio::test]
async fn contacts_must_have_unique_active_names() {
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            "/Contacts",
            &json!({"Contacts": [{"Name": "Rangi Motors", "EmailAddress": "a@b.example"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let created = &body["Contacts"][0];
    assert_eq!(created["ContactStatus"], "ACTIVE");
    assert_eq!(created["Addresses"].as_array().map(Vec::len), Some(2));
    assert_eq!(created["Phones"].as_array().map(Vec::len), Some(4));
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            "/Contacts",
            &json!({"Name": "rangi motors"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["Type"], "ValidationException");
    let msg = body["Elements"][0]["ValidationErrors"][0]["Message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        msg.contains("must be unique across all active contacts"),
        "{msg}"
    );
    // Archive it; the name is free again.
    let id = created["ContactID"].as_str().unwrap_or_default();
    let (status, _) = api
        .send(
            reqwest::Method::POST,
            &format!("/Contacts/{id}"),
            &json!({"Contacts": [{"ContactStatus": "ARCHIVED"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            "/Contacts",
            &json!({"Contacts": [{"Name": "Rangi Motors"}]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(sim.creates_of(&api.tenant, "Contacts"), 2);
}

#[tokio::test]
async fn invoice_totals_are_exact_to_the_cent() {
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    let contact = sim.contacts(&api.tenant)[0]["ContactID"].clone();
    let body = json!({"Invoices": [{
        "Type": "ACCREC", "Contact": {"ContactID": contact}, "Date": "2026-01-05", "DueDate": "2026-02-04",
        "LineItems": [
            {"Description": "Widgets", "Quantity": 3, "UnitAmount": 19.99, "AccountCode": "200", "TaxType": "OUTPUT"},
            {"Description": "Tiny", "Quantity": 1, "UnitAmount": 0.05, "AccountCode": "200", "TaxType": "OUTPUT"},
            {"Description": "Thirds", "Quantity": 3, "UnitAmount": 33.333, "AccountCode": "260"}
        ]
    }]});
    let (status, out) = api.send(reqwest::Method::PUT, "/Invoices", &body).await;
    assert_eq!(status, 200, "{out}");
    let inv = &out["Invoices"][0];
    // Rate 15% (organisation 0): 59.97 → 9.00 (8.9955); 0.05 → 0.01 (0.0075); 3 × 33.33 = 99.99 → 15.00 (14.9985).
    assert_eq!(inv["LineItems"][0]["LineAmount"].to_string(), "59.97");
    assert_eq!(inv["LineItems"][0]["TaxAmount"].to_string(), "9.0");
    assert_eq!(inv["LineItems"][1]["TaxAmount"].to_string(), "0.01");
    assert_eq!(inv["LineItems"][2]["UnitAmount"].to_string(), "33.33");
    assert_eq!(inv["LineItems"][2]["LineAmount"].to_string(), "99.99");
    assert_eq!(inv["SubTotal"].to_string(), "160.01");
    assert_eq!(inv["TotalTax"].to_string(), "24.01");
    assert_eq!(inv["Total"].to_string(), "184.02");
    assert_eq!(inv["AmountDue"].to_string(), "184.02");
    assert_eq!(inv["Status"], "DRAFT");
    let number = inv["InvoiceNumber"].as_str().unwrap_or_default();
    assert!(number.starts_with("INV-"), "{number}");
    assert_eq!(inv["Date"], "/Date(1767571200000+0000)/");

    // Inclusive: tax is carved out of the line.
    let incl = json!({"Type": "ACCREC", "Contact": {"Name": "Brand New Customer"}, "LineAmountTypes": "Inclusive",
        "LineItems": [{"Description": "Gross", "Quantity": 1, "UnitAmount": 115, "AccountCode": "200"}]});
    let (status, out) = api.send(reqwest::Method::PUT, "/Invoices", &incl).await;
    assert_eq!(status, 200, "{out}");
    let inv = &out["Invoices"][0];
    assert_eq!(
        (
            inv["SubTotal"].to_string(),
            inv["TotalTax"].to_string(),
            inv["Total"].to_string()
        ),
        ("100.0".into(), "15.0".into(), "115.0".into())
    );
    assert!(
        sim.contacts(&api.tenant)
            .iter()
            .any(|c| c["Name"] == "Brand New Customer"),
        "unknown contact names create contacts"
    );

    // Duplicate sales number, missing pieces, status rules.
    let dup = json!({"Type": "ACCREC", "InvoiceNumber": number, "Contact": {"ContactID": contact}, "LineItems": [{"Description": "x", "Quantity": 1, "UnitAmount": 1}]});
    let (status, err) = api.send(reqwest::Method::PUT, "/Invoices", &dup).await;
    assert_eq!(status, 400);
    assert_eq!(
        err["Elements"][0]["ValidationErrors"][0]["Message"],
        "Invoice # must be unique."
    );
    let (status, err) = api
        .send(
            reqwest::Method::PUT,
            "/Invoices",
            &json!({"Type": "ACCREC"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        err["Elements"][0]["ValidationErrors"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{err}"
    );
    let id = out["Invoices"][0]["InvoiceID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, _) = api
        .send(
            reqwest::Method::POST,
            &format!("/Invoices/{id}"),
            &json!({"Status": "AUTHORISED"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .send(
            reqwest::Method::POST,
            &format!("/Invoices/{id}"),
            &json!({"Status": "DELETED"}),
        )
        .await;
    assert_eq!(status, 400, "AUTHORISED cannot be DELETED");
    let (status, v) = api
        .send(
            reqwest::Method::POST,
            "/Invoices",
            &json!({"Invoices": [{"InvoiceID": id, "Status": "VOIDED"}]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["Invoices"][0]["Status"], "VOIDED");
}

#[tokio::test]
async fn batches_summarized_and_per_element() {
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    let batch = json!({"Contacts": [{"Name": "Alpha One"}, {"EmailAddress": "no-name@x.example"}, {"Name": "Gamma Three"}]});
    let (status, body) = api.send(reqwest::Method::PUT, "/Contacts", &batch).await;
    assert_eq!(status, 400);
    assert_eq!(body["ErrorNumber"], 10);
    assert_eq!(body["Message"], "A validation exception occurred");
    assert_eq!(body["Elements"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["Elements"][0]["EmailAddress"], "no-name@x.example");
    // The valid elements were created anyway.
    assert_eq!(sim.creates_of(&api.tenant, "Contacts"), 2);
    let names: Vec<Value> = sim
        .contacts(&api.tenant)
        .iter()
        .map(|c| c["Name"].clone())
        .collect();
    assert!(names.contains(&json!("Alpha One")) && names.contains(&json!("Gamma Three")));

    let batch = json!({"Contacts": [{"Name": "Delta Four"}, {"Name": "Alpha One"}]});
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            "/Contacts?summarizeErrors=false",
            &batch,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let els = body["Contacts"].as_array().cloned().unwrap_or_default();
    assert_eq!(els[0]["StatusAttributeString"], "OK");
    assert!(els[0]["ContactID"].as_str().is_some_and(|s| s.len() == 36));
    assert_eq!(els[1]["StatusAttributeString"], "ERROR");
    assert_eq!(els[1]["HasValidationErrors"], true);
    assert!(els[1]["ValidationErrors"][0]["Message"].is_string());
    assert_eq!(sim.creates(&api.tenant), 3);
}

#[tokio::test]
async fn idempotency_keys_replay_and_refuse_mismatches() {
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    let body = json!({"Contacts": [{"Name": "Once Only Ltd"}]});
    let put = |key: String, body: Value| {
        let r = api
            .req(reqwest::Method::PUT, "/Contacts?summarizeErrors=false")
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let r = r.send().await.expect("put");
            (r.status(), r.text().await.unwrap_or_default())
        }
    };
    let first = put("key-1".into(), body.clone()).await;
    assert_eq!(first.0, 200);
    let again = put("key-1".into(), body.clone()).await;
    assert_eq!(again, first, "replayed byte for byte");
    assert_eq!(sim.creates(&api.tenant), 1);
    let other = put(
        "key-1".into(),
        json!({"Contacts": [{"Name": "Someone Else"}]}),
    )
    .await;
    assert_eq!(other.0, 400);
    assert!(other.1.contains("different request"), "{}", other.1);
    let long = put("k".repeat(129), body.clone()).await;
    assert_eq!(long.0, 400);
    // After the window the key is new again: a second create, refused as a duplicate name.
    sim.clock().advance(Duration::from_secs(361));
    let late = put("key-1".into(), body.clone()).await;
    assert_eq!(late.0, 200);
    assert!(late.1.contains("\"ERROR\""), "{}", late.1);
    assert_eq!(sim.creates(&api.tenant), 1);
}

#[tokio::test]
async fn payments_settle_invoices() {
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    let contact = sim.contacts(&api.tenant)[0]["ContactID"].clone();
    let (_, out) = api
        .send(
            reqwest::Method::PUT,
            "/Invoices",
            &json!({"Invoices": [{"Type": "ACCREC", "Status": "AUTHORISED", "Contact": {"ContactID": contact},
                "LineItems": [{"Description": "Job", "Quantity": 2, "UnitAmount": 50, "AccountCode": "200"}]}]}),
        )
        .await;
    let inv = out["Invoices"][0].clone();
    let id = inv["InvoiceID"].as_str().unwrap_or_default().to_owned();
    assert_eq!(inv["Total"].to_string(), "115.0");
    let pay = |amount: &str| json!({"Payments": [{"Invoice": {"InvoiceID": id}, "Account": {"Code": "090"}, "Date": "2026-01-01", "Amount": amount.parse::<f64>().unwrap_or(0.0)}]});
    let (status, p) = api
        .send(
            reqwest::Method::PUT,
            "/Payments?summarizeErrors=false",
            &pay("15.00"),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["Payments"][0]["StatusAttributeString"], "OK");
    let (_, after) = api.get(&format!("/Invoices/{id}")).await;
    assert_eq!(after["Invoices"][0]["AmountDue"].to_string(), "100.0");
    assert_eq!(after["Invoices"][0]["Status"], "AUTHORISED");
    let (status, err) = api
        .send(reqwest::Method::PUT, "/Payments", &pay("100.01"))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        err["Elements"][0]["ValidationErrors"][0]["Message"],
        "Payment amount exceeds the amount outstanding on this document"
    );
    let paid = sim.pay_invoice(&api.tenant, &id, "100.00").expect("paid");
    assert_eq!(paid["Amount"].to_string(), "100.0");
    let inv = sim.invoice(&api.tenant, &id).expect("invoice");
    assert_eq!(inv["Status"], "PAID");
    assert_eq!(inv["AmountDue"].to_string(), "0.0");
    assert!(inv["FullyPaidOnDate"].is_string());
    // Voiding a paid invoice is refused; deleting the payment reopens it.
    let (status, _) = api
        .send(
            reqwest::Method::POST,
            &format!("/Invoices/{id}"),
            &json!({"Status": "VOIDED"}),
        )
        .await;
    assert_eq!(status, 400);
    let pid = p["Payments"][0]["PaymentID"].as_str().unwrap_or_default();
    // The body Xero documents for a deletion is the bare status (`PaymentDelete`).
    let deletion = json!({"Status": "DELETED"});
    let mut v = Validator::new();
    v.accounting("PaymentDelete", &deletion, "a payment deletion");
    assert!(!v.valid(
        openapi::ACCOUNTING,
        "/components/schemas/PaymentDelete",
        &json!({"Payments": [{"Status": "DELETED"}]})
    ));
    let (status, del) = api
        .send(
            reqwest::Method::POST,
            &format!("/Payments/{pid}"),
            &deletion,
        )
        .await;
    assert_eq!(status, 200, "{del}");
    v.accounting("Payments", &del, "POST /Payments/{id} (deleted)");
    assert_eq!(del["Payments"][0]["Status"], "DELETED");
    let inv = sim.invoice(&api.tenant, &id).expect("invoice");
    assert_eq!(
        (inv["Status"].clone(), inv["AmountDue"].to_string()),
        (json!("AUTHORISED"), "15.0".to_owned())
    );
    assert_eq!(
        sim.payments(&api.tenant)
            .iter()
            .filter(|p| p["Status"] == "AUTHORISED" && p["Invoice"]["InvoiceID"] == id.as_str())
            .count(),
        1
    );
}

#[tokio::test]
async fn same_seed_same_data() {
    let a = start(XeroConfig {
        seed: 7,
        size: 40,
        ..XeroConfig::default()
    });
    let b = start(XeroConfig {
        seed: 7,
        size: 40,
        ..XeroConfig::default()
    });
    let c = start(XeroConfig {
        seed: 8,
        size: 40,
        ..XeroConfig::default()
    });
    assert_eq!(a.client_id(), b.client_id());
    assert_eq!(a.tenants(), b.tenants());
    assert_ne!(a.tenants(), c.tenants());
    let (ta, tb) = (&a.tenants()[1].0, &b.tenants()[1].0);
    assert_eq!(a.invoices(ta), b.invoices(tb));
    assert_eq!(a.contacts(ta), b.contacts(tb));
    assert_eq!(a.payments(ta), b.payments(tb));
    assert_ne!(a.invoices(ta), c.invoices(&c.tenants()[1].0));
    let api_a = Api::new(&a).await;
    let api_b = Api::new(&b).await;
    let strip = |mut v: Value| {
        if let Some(m) = v.as_object_mut() {
            m.remove("Id");
        }
        v
    };
    assert_eq!(
        strip(api_a.get("/Invoices?page=1").await.1),
        strip(api_b.get("/Invoices?page=1").await.1)
    );
    let statuses: std::collections::BTreeSet<String> = a
        .invoices(ta)
        .iter()
        .map(|i| i["Status"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(statuses.len() >= 5, "{statuses:?}");
}

#[tokio::test]
async fn a_million_invoices_start_at_once() {
    let started = std::time::Instant::now();
    let sim = start(XeroConfig {
        size: 1_000_000,
        limits: XeroLimits::unlimited(),
        ..XeroConfig::default()
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let api = Api::new(&sim).await;
    let (_, last) = api.get("/Invoices?page=1000&pageSize=1000").await;
    assert_eq!(last["pagination"]["itemCount"], 1_000_000);
    assert_eq!(last["Invoices"].as_array().map(Vec::len), Some(1000));
    let id = last["Invoices"][999]["InvoiceID"]
        .as_str()
        .unwrap_or_default();
    let (status, one) = api.get(&format!("/Invoices/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["Invoices"][0], last["Invoices"][999]);
    let (status, _) = api.get("/Invoices").await;
    assert_eq!(
        status, 400,
        "unpaged lists over 100,000 records are refused"
    );
}

#[tokio::test]
async fn malformed_requests_get_4xx_answers() {
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    let raw = |method: reqwest::Method, path: &str, body: &'static str| {
        let r = api
            .req(method, path)
            .header("content-type", "application/json")
            .body(body);
        async move { r.send().await.expect("send").status().as_u16() }
    };
    assert_eq!(
        raw(reqwest::Method::PUT, "/Contacts", "{not json").await,
        400
    );
    assert_eq!(raw(reqwest::Method::PUT, "/Contacts", "42").await, 400);
    assert_eq!(
        raw(reqwest::Method::PUT, "/Contacts", r#"{"Contacts": 5}"#).await,
        400
    );
    assert_eq!(raw(reqwest::Method::PUT, "/Invoices", r#"{"Invoices": [{"Type": "ACCREC", "Date": "/Date()/", "Contact": {"Name": "X"}, "LineItems": [{"Quantity": 1e300, "UnitAmount": 1e300, "Description": "big"}]}]}"#).await, 400);
    assert_eq!(raw(reqwest::Method::PUT, "/Invoices", r#"{"Invoices": [{"Type": "ACCREC", "Contact": {"Name": "X"}, "LineItems": [{"Quantity": 79228162514264337593543950335, "UnitAmount": 10, "Description": "overflow"}]}]}"#).await, 400);
    assert_eq!(raw(reqwest::Method::PUT, "/Accounts", "{}").await, 405);
    assert_eq!(raw(reqwest::Method::POST, "/Organisation", "{}").await, 501);
    assert_eq!(raw(reqwest::Method::GET, "/Nonsense", "").await, 404);
    assert_eq!(
        raw(reqwest::Method::GET, "/Invoices?page=abc", "").await,
        400
    );
    assert_eq!(
        raw(reqwest::Method::GET, "/Invoices?page=1&where=((", "").await,
        400
    );
    assert_eq!(
        raw(
            reqwest::Method::GET,
            "/Invoices?page=1&order=Total%20SIDEWAYS",
            ""
        )
        .await,
        400
    );
    let r = api
        .req(reqwest::Method::GET, "/Invoices?page=1")
        .header("If-Modified-Since", "yesterday-ish")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
    // A bad token and no token.
    let r = api
        .c
        .get(format!("{}/Invoices", api.base))
        .bearer_auth("garbage")
        .header("xero-tenant-id", &api.tenant)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    let r = api
        .c
        .get(format!("{}/connections", sim.api_url()))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    // The token endpoint.
    let c = client();
    let (status, body) = token(&sim, &c, &[("grant_type", "password")]).await;
    assert_eq!(
        (status.as_u16(), body),
        (400, json!({"error": "unsupported_grant_type"}))
    );
    let r = c
        .get(format!(
            "{}/identity/connect/authorize?client_id=nobody",
            sim.login_url()
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
    // Still serving.
    assert_eq!(api.get("/Organisation").await.0, 200);
}

#[tokio::test]
async fn a_lost_response_is_recovered_by_the_idempotency_key() {
    use weft_harness::faults::{Fault, FaultRule, When};
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    sim.observed().faults.add(
        FaultRule::on("/api.xro/2.0/Invoices", When::Nth(1), Fault::LoseResponse).method("PUT"),
    );
    let contact = sim.contacts(&api.tenant)[0]["ContactID"].clone();
    let body = json!({"Invoices": [{"Type": "ACCPAY", "InvoiceNumber": "BILL-7", "Contact": {"ContactID": contact}, "LineItems": [{"Description": "Paper", "Quantity": 1, "UnitAmount": 10, "AccountCode": "429"}]}]});
    let send = || {
        api.req(reqwest::Method::PUT, "/Invoices?summarizeErrors=false")
            .header("Idempotency-Key", "bill-7-attempt")
            .json(&body)
            .send()
    };
    assert!(send().await.is_err(), "the first answer is lost");
    assert_eq!(
        sim.creates_of(&api.tenant, "Invoices"),
        1,
        "but the bill was created"
    );
    let retry = send().await.expect("retry");
    assert_eq!(retry.status(), 200);
    let out: Value = retry.json().await.unwrap_or_default();
    assert_eq!(out["Invoices"][0]["InvoiceNumber"], "BILL-7");
    assert_eq!(
        sim.creates_of(&api.tenant, "Invoices"),
        1,
        "the retry replayed instead of creating a duplicate"
    );
}

#[test]
fn the_simulator_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<XeroSim>();
    shareable::<XeroConfig>();
}

#[tokio::test]
async fn a_currency_the_organisation_has_not_enabled_is_refused() {
    // Organisations that use their base currency only.
    let sim = start(XeroConfig {
        currencies: Vec::new(),
        ..XeroConfig::default()
    });
    let api = Api::new(&sim).await;
    let mut v = Validator::new();
    let (_, org) = api.get("/Organisation").await;
    let base = org["Organisations"][0]["BaseCurrency"]
        .as_str()
        .expect("base currency")
        .to_owned();
    assert_ne!(base, "USD");
    let contact = sim.contacts(&api.tenant)[0]["ContactID"].clone();
    let invoice = |currency: &str| {
        json!({"Type": "ACCREC", "Status": "AUTHORISED", "Contact": {"ContactID": contact}, "CurrencyCode": currency,
            "LineItems": [{"Description": "Work", "Quantity": 1, "UnitAmount": 100, "AccountCode": "200"}]})
    };
    let refused = "Organisation is not subscribed to currency USD";

    // Per element: the USD invoice alone fails, with Xero's message; the others are created.
    let (status, out) = api
        .send(
            reqwest::Method::PUT,
            "/Invoices?summarizeErrors=false",
            &json!({"Invoices": [invoice(&base), invoice("USD"), invoice("")]}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    v.accounting("Invoices", &out, "PUT /Invoices with a foreign currency");
    let outcomes: Vec<&Value> = out["Invoices"]
        .as_array()
        .expect("invoices")
        .iter()
        .map(|i| &i["StatusAttributeString"])
        .collect();
    assert_eq!(outcomes, [&json!("OK"), &json!("ERROR"), &json!("OK")]);
    assert_eq!(
        out["Invoices"][1]["ValidationErrors"][0]["Message"],
        refused
    );
    assert_eq!(out["Invoices"][1]["HasErrors"], true);
    assert_eq!(
        out["Invoices"][2]["CurrencyCode"], base,
        "an empty code is the base currency"
    );

    // Summarized: a 400 ValidationException naming the element; nothing in USD exists.
    let (status, err) = api
        .send(
            reqwest::Method::PUT,
            "/Invoices",
            &json!({"Invoices": [invoice("usd")]}),
        )
        .await;
    assert_eq!(status, 400);
    v.accounting("Error", &err, "400 for a foreign currency");
    assert_eq!(
        err["Elements"][0]["ValidationErrors"][0]["Message"],
        refused
    );
    assert!(
        sim.invoices(&api.tenant)
            .iter()
            .all(|i| i["CurrencyCode"] == base.as_str()),
        "no invoice in a currency the organisation does not use"
    );
    let (_, actions) = api.get("/Organisation/Actions").await;
    v.accounting("Actions", &actions, "GET /Organisation/Actions");
    let multicurrency = |a: &Value| {
        a["Actions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["Name"] == "UseMulticurrency")
            .map(|x| x["Status"].clone())
    };
    assert_eq!(multicurrency(&actions), Some(json!("NOT-ALLOWED")));

    // Once the organisation uses USD, the same invoice goes through in USD.
    assert!(sim.enable_currency(&api.tenant, "USD"));
    let (status, out) = api
        .send(
            reqwest::Method::PUT,
            "/Invoices",
            &json!({"Invoices": [invoice("USD")]}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["Invoices"][0]["CurrencyCode"], "USD");
    let (_, actions) = api.get("/Organisation/Actions").await;
    assert_eq!(multicurrency(&actions), Some(json!("ALLOWED")));

    // By default the organisations use USD too (the Kantata simulator's currency), nothing else.
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    let contact = sim.contacts(&api.tenant)[0]["ContactID"].clone();
    let invoice = |currency: &str| {
        json!({"Type": "ACCREC", "Contact": {"ContactID": contact}, "CurrencyCode": currency,
            "LineItems": [{"Description": "Work", "Quantity": 1, "UnitAmount": 100, "AccountCode": "200"}]})
    };
    let (status, out) = api
        .send(
            reqwest::Method::PUT,
            "/Invoices?summarizeErrors=false",
            &json!({"Invoices": [invoice("USD"), invoice("EUR")]}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["Invoices"][0]["StatusAttributeString"], "OK");
    assert_eq!(
        out["Invoices"][1]["ValidationErrors"][0]["Message"],
        "Organisation is not subscribed to currency EUR"
    );
}

#[tokio::test]
async fn only_organisation_itself_is_the_organisation_record() {
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    let mut v = Validator::new();
    let (status, org) = api.get("/Organisation").await;
    assert_eq!(status, 200);
    v.accounting("Organisations", &org, "GET /Organisation");
    for path in [
        "/Organisation/anything",
        "/Organisation/Actions/more",
        &format!(
            "/Organisation/{}",
            org["Organisations"][0]["OrganisationID"]
                .as_str()
                .unwrap_or_default()
        ),
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, actions) = api.get("/organisation/actions").await;
    assert_eq!(status, 200);
    v.accounting("Actions", &actions, "GET /Organisation/Actions");
}

#[tokio::test]
async fn items_are_deleted_with_delete() {
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    let (_, items) = api.get("/Items").await;
    let before = items["Items"].as_array().expect("items").len();
    let id = items["Items"][0]["ItemID"]
        .as_str()
        .expect("an item")
        .to_owned();
    let (status, body) = api.delete(&format!("/Items/{id}")).await;
    assert_eq!(status, 204);
    assert!(body.is_empty(), "204 has no body");
    let (status, _) = api.get(&format!("/Items/{id}")).await;
    assert_eq!(status, 404);
    let (_, items) = api.get("/Items").await;
    assert_eq!(items["Items"].as_array().map(Vec::len), Some(before - 1));
    // A created item is deleted the same way; an unknown one is not found.
    let (_, created) = api
        .send(
            reqwest::Method::PUT,
            "/Items",
            &json!({"Items": [{"Code": "DEL-1", "Name": "To delete"}]}),
        )
        .await;
    let created = created["Items"][0]["ItemID"].as_str().expect("created");
    for (path, expected) in [
        (format!("/Items/{created}"), 204),
        (format!("/Items/{created}"), 404),
        ("/Items".to_owned(), 405),
    ] {
        assert_eq!(api.delete(&path).await.0, expected, "DELETE {path}");
    }
    // Xero removes invoices by status, never with DELETE.
    let invoice = sim.invoices(&api.tenant)[0]["InvoiceID"]
        .as_str()
        .expect("invoice")
        .to_owned();
    assert_eq!(api.delete(&format!("/Invoices/{invoice}")).await.0, 405);
    assert!(sim.invoice(&api.tenant, &invoice).is_some());
}

#[tokio::test]
async fn search_term_and_summary_only_read_as_xero_documents() {
    let sim = start(XeroConfig {
        size: 300,
        ..XeroConfig::default()
    });
    let api = Api::new(&sim).await;
    let mut v = Validator::new();
    // Contacts: a case-insensitive search over names, number and email address.
    let email = sim.contacts(&api.tenant)[3]["EmailAddress"]
        .as_str()
        .expect("email")
        .to_owned();
    let domain = email.split('@').nth(1).expect("domain").to_uppercase();
    let (status, found) = api
        .get(&format!(
            "/Contacts?searchTerm={domain}&includeArchived=true"
        ))
        .await;
    assert_eq!(status, 200);
    let found = found["Contacts"].as_array().expect("contacts").clone();
    assert!(!found.is_empty());
    let lower = domain.to_lowercase();
    assert!(found.iter().all(|c| {
        [
            "Name",
            "FirstName",
            "LastName",
            "ContactNumber",
            "EmailAddress",
        ]
        .iter()
        .any(|f| {
            c[f].as_str()
                .is_some_and(|s| s.to_lowercase().contains(&lower))
        })
    }));
    let all = sim.contacts(&api.tenant);
    assert!(found.len() < all.len(), "the search narrows the list");
    // Invoices: InvoiceNumber and Reference.
    let (_, invoices) = api.get("/Invoices?searchTerm=inv-0001").await;
    let numbers: Vec<&str> = invoices["Invoices"]
        .as_array()
        .expect("invoices")
        .iter()
        .filter_map(|i| i["InvoiceNumber"].as_str())
        .collect();
    assert!(numbers.contains(&"INV-0001"), "{numbers:?}");
    assert!(
        numbers
            .iter()
            .all(|n| n.to_lowercase().contains("inv-0001"))
    );
    // summaryOnly: paged even without `page`, and without the nested collections.
    let (status, summary) = api.get("/Invoices?summaryOnly=true").await;
    assert_eq!(status, 200);
    v.accounting("Invoices", &summary, "GET /Invoices?summaryOnly=true");
    assert_eq!(summary["pagination"]["page"], 1);
    assert_eq!(summary["Invoices"].as_array().map(Vec::len), Some(100));
    let first = &summary["Invoices"][0];
    assert!(first["InvoiceID"].is_string() && first["Total"].is_number());
    for heavy in ["LineItems", "Payments", "CreditNotes"] {
        assert!(first.get(heavy).is_none(), "{heavy} in a summary");
    }
    let (_, contacts) = api.get("/Contacts?summaryOnly=true&page=1").await;
    v.accounting("Contacts", &contacts, "GET /Contacts?summaryOnly=true");
    let first = &contacts["Contacts"][0];
    assert!(first["Name"].is_string());
    assert!(first.get("Addresses").is_none() && first.get("Phones").is_none());
    // Where Xero has no such parameter, it is ignored.
    let (_, accounts) = api.get("/Accounts?searchTerm=zzz&summaryOnly=true").await;
    let (_, plain) = api.get("/Accounts").await;
    assert_eq!(accounts["Accounts"], plain["Accounts"]);
}

/// Bills (`Type` ACCPAY) through `/Invoices`: a supplier's number may repeat (a sales invoice's
/// may not), discounts are refused, `Url` and `PlannedPaymentDate` come back, and an unknown
/// account code is taken off its line with a warning while the answer stays 200.
#[tokio::test]
async fn bills_repeat_numbers_refuse_discounts_and_warn_of_removed_accounts() {
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    let contact = sim.contacts(&api.tenant)[0]["ContactID"].clone();
    let bill = |number: &str, line: Value| {
        json!({"Invoices": [{"Type": "ACCPAY", "Contact": {"ContactID": contact}, "InvoiceNumber": number,
            "Date": "2026-01-05", "DueDate": "2026-01-05", "PlannedPaymentDate": "2026-01-20",
            "Url": "https://kantata.example/expense_reports/7", "Status": "AUTHORISED", "LineItems": [line]}]})
    };
    let taxi =
        json!({"Description": "Taxi", "Quantity": 1, "UnitAmount": 23.4, "AccountCode": "400"});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, out) = api
            .send(
                reqwest::Method::PUT,
                "/Invoices?summarizeErrors=false",
                &bill("KX-ERS-7", taxi.clone()),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        let b = &out["Invoices"][0];
        assert_eq!(b["StatusAttributeString"], "OK", "{b}");
        assert_eq!(b["Url"], "https://kantata.example/expense_reports/7");
        assert_eq!(b["PlannedPaymentDate"], "/Date(1768867200000+0000)/");
        ids.push(b["InvoiceID"].as_str().unwrap_or_default().to_owned());
    }
    assert_ne!(
        ids[0], ids[1],
        "the same supplier number twice is two bills"
    );
    let (_, got) = api.get(&format!("/Invoices/{}", ids[0])).await;
    assert_eq!(
        got["Invoices"][0]["PlannedPaymentDate"],
        "/Date(1768867200000+0000)/"
    );

    // A sales invoice's number stays unique.
    let sale = json!({"Invoices": [{"Type": "ACCREC", "Contact": {"ContactID": contact}, "InvoiceNumber": "INV-0001",
        "LineItems": [{"Description": "Work", "Quantity": 1, "UnitAmount": 10, "AccountCode": "200"}]}]});
    let (status, out) = api.send(reqwest::Method::PUT, "/Invoices", &sale).await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(
        out["Elements"][0]["ValidationErrors"][0]["Message"],
        "Invoice # must be unique."
    );

    let discounted = json!({"Description": "Taxi", "Quantity": 1, "UnitAmount": 23.4, "AccountCode": "400", "DiscountRate": 10});
    let (status, out) = api
        .send(
            reqwest::Method::PUT,
            "/Invoices",
            &bill("KX-ERS-8", discounted),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(
        out["Elements"][0]["ValidationErrors"][0]["Message"],
        "Discounts are not supported on bills (ACCPAY)."
    );

    // An unknown account: removed from the line, a warning, still 200 (summarized or not).
    let unknown =
        json!({"Description": "Taxi", "Quantity": 1, "UnitAmount": 23.4, "AccountCode": "9999"});
    for query in ["", "?summarizeErrors=false"] {
        let (status, out) = api
            .send(
                reqwest::Method::PUT,
                &format!("/Invoices{query}"),
                &bill("KX-ERS-9", unknown.clone()),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        let b = &out["Invoices"][0];
        assert_eq!(
            b["Warnings"][0]["Message"],
            "Account code '9999' has been removed as it does not match a recognised account."
        );
        assert!(b["LineItems"][0].get("AccountCode").is_none(), "{b}");
        if !query.is_empty() {
            assert_eq!(b["StatusAttributeString"], "WARNING");
        }
    }

    // Inspection helpers: a bill paid in full, another voided.
    let payment = sim.pay_in_full(&api.tenant, &ids[0]).expect("paid");
    assert_eq!(payment["PaymentType"], "ACCPAYPAYMENT");
    assert_eq!(
        sim.invoice(&api.tenant, &ids[0]).expect("bill")["Status"],
        "PAID"
    );
    let voided = sim.void_invoice(&api.tenant, &ids[1]).expect("voided");
    assert_eq!(voided["Status"], "VOIDED");
    assert!(
        sim.void_invoice(&api.tenant, &ids[0]).is_err(),
        "a paid bill cannot be voided"
    );
}

/// Manual journals: Narration required, DRAFT by default, debits equal to credits, at most two
/// tracking entries a line, a posted journal only voided, and found again by its narration.
#[tokio::test]
async fn manual_journals_balance_and_are_found_by_narration() {
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    let lines = |debit: &str, credit: &str| {
        json!([{"AccountCode": "400", "LineAmount": debit.parse::<f64>().unwrap_or(0.0), "Description": "Time"},
               {"AccountCode": "200", "LineAmount": credit.parse::<f64>().unwrap_or(0.0), "Description": "Balancing"}])
    };
    let body = json!({"ManualJournals": [
        {"Narration": "Kantata timesheet Week 3 #41", "Date": "2026-01-31", "JournalLines": lines("120.50", "-120.50")},
        {"Narration": "Kantata timesheet Week 3 #42", "JournalLines": lines("100.00", "-10.00")},
        {"JournalLines": lines("1", "-1")},
        {"Narration": "Tracked", "JournalLines": [
            {"AccountCode": "400", "LineAmount": 5, "Tracking": [{"Name": "Region", "Option": "North"}, {"Name": "A", "Option": "B"}, {"Name": "C", "Option": "D"}]},
            {"AccountCode": "200", "LineAmount": -5}]},
    ]});
    let (status, out) = api
        .send(
            reqwest::Method::PUT,
            "/ManualJournals?summarizeErrors=false",
            &body,
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let js = out["ManualJournals"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(js[0]["Status"], "DRAFT");
    assert_eq!(js[0]["StatusAttributeString"], "OK");
    assert_eq!(js[0]["JournalLines"][1]["LineAmount"].to_string(), "-120.5");
    let message = |j: &Value| j["ValidationErrors"][0]["Message"].clone();
    assert_eq!(
        message(&js[1]),
        "The total debits (100.00) must equal total credits (-10.00)"
    );
    assert_eq!(message(&js[2]), "Narration must be specified");
    assert_eq!(
        message(&js[3]),
        "A journal line can have at most 2 tracking categories."
    );
    let id = js[0]["ManualJournalID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // Found again by its narration, exactly or by a part of it.
    for filter in [
        r#"Narration=="Kantata timesheet Week 3 #41""#,
        r##"Narration.Contains("#41")"##,
    ] {
        let (status, found) = api
            .get(&format!("/ManualJournals?where={}", urlencode(filter)))
            .await;
        assert_eq!(status, 200, "{found}");
        let found = found["ManualJournals"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(found.len(), 1, "{filter}");
        assert_eq!(found[0]["ManualJournalID"], id.as_str());
    }

    // DRAFT → POSTED; POSTED only → VOIDED.
    let post = |status: &str| json!({"ManualJournals": [{"Status": status}]});
    let path = format!("/ManualJournals/{id}");
    let (status, out) = api
        .send(reqwest::Method::POST, &path, &post("POSTED"))
        .await;
    assert_eq!(
        (status.as_u16(), out["ManualJournals"][0]["Status"].clone()),
        (200, json!("POSTED")),
        "{out}"
    );
    let (status, out) = api.send(reqwest::Method::POST, &path, &post("DRAFT")).await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(
        out["Elements"][0]["ValidationErrors"][0]["Message"],
        "A posted manual journal can only be voided."
    );
    let (status, out) = api
        .send(reqwest::Method::POST, &path, &post("VOIDED"))
        .await;
    assert_eq!(
        (status.as_u16(), out["ManualJournals"][0]["Status"].clone()),
        (200, json!("VOIDED")),
        "{out}"
    );

    // Changes since a time, and a replayed write.
    let none: Value = api
        .req(reqwest::Method::GET, "/ManualJournals")
        .header("If-Modified-Since", "2099-01-01T00:00:00")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(none["ManualJournals"].as_array().map(Vec::len), Some(0));
    let once =
        json!({"ManualJournals": [{"Narration": "Replayed", "JournalLines": lines("2", "-2")}]});
    let mut answers = Vec::new();
    for _ in 0..2 {
        let r = api
            .req(reqwest::Method::PUT, "/ManualJournals")
            .header("Idempotency-Key", "weft-tss-9-v1")
            .json(&once)
            .send()
            .await
            .expect("put");
        answers.push(r.json::<Value>().await.expect("json"));
    }
    assert_eq!(
        answers[0]["ManualJournals"][0]["ManualJournalID"],
        answers[1]["ManualJournals"][0]["ManualJournalID"],
        "the same key and body: the same journal"
    );

    // Paged like invoices: 100 a page.
    let many: Vec<Value> = (0..150)
        .map(|n| json!({"Narration": format!("Bulk {n}"), "JournalLines": lines("1", "-1")}))
        .collect();
    for chunk in many.chunks(50) {
        let (status, out) = api
            .send(
                reqwest::Method::PUT,
                "/ManualJournals",
                &json!({"ManualJournals": chunk}),
            )
            .await;
        assert_eq!(status, 200, "{out}");
    }
    let (_, page2) = api.get("/ManualJournals?page=2").await;
    // 150 here, the replayed one and the first: 152.
    assert_eq!(page2["ManualJournals"].as_array().map(Vec::len), Some(52));
    assert_eq!(page2["pagination"]["pageCount"], 2);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Tracking categories: seeded "Region" with an archived option, `includeArchived`, no more
/// than two active categories, names of at most 100 characters, options added, renamed,
/// archived and deleted (through the API and the simulator's own helpers).
#[tokio::test]
async fn tracking_categories_and_their_options() {
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    let (status, out) = api.get("/TrackingCategories").await;
    assert_eq!(status, 200);
    let cats = out["TrackingCategories"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(cats.len(), 1, "the archived category is left out: {out}");
    let region = &cats[0];
    assert_eq!(region["Name"], "Region");
    let names = |c: &Value| -> Vec<String> {
        c["Options"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| o["Name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(names(region), ["North", "South", "Central"]);
    assert!(out.get("pagination").is_none());
    assert!(region.get("UpdatedDateUTC").is_none());
    let (_, all) = api.get("/TrackingCategories?includeArchived=true").await;
    let all = all["TrackingCategories"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(all.len(), 2);
    assert_eq!(names(&all[0]), ["North", "South", "Central", "Islands"]);
    assert_eq!(all[0]["Options"][3]["IsArchived"], true);
    let (_, filtered) = api
        .get(&format!(
            "/TrackingCategories?where={}",
            urlencode(r#"Name=="Region""#)
        ))
        .await;
    assert_eq!(
        filtered["TrackingCategories"].as_array().map(Vec::len),
        Some(1)
    );

    let region_id = region["TrackingCategoryID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let north = region["Options"][0]["TrackingOptionID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    sim.rename_tracking_option(&api.tenant, &region_id, &north, "Northland")
        .expect("renamed");
    sim.archive_tracking_option(&api.tenant, &region_id, &north)
        .expect("archived");
    let added = sim
        .add_tracking_option(&api.tenant, &region_id, "West")
        .expect("added");
    assert_eq!(added["Status"], "ACTIVE");
    let (_, out) = api.get("/TrackingCategories").await;
    assert_eq!(
        names(&out["TrackingCategories"][0]),
        ["South", "Central", "West"]
    );
    assert!(
        sim.add_tracking_option(&api.tenant, &region_id, "west")
            .is_err(),
        "names are unique"
    );

    // A second active category is fine, a third is not; names are at most 100 characters.
    let (status, out) = api
        .send(
            reqwest::Method::PUT,
            "/TrackingCategories",
            &json!({"Name": "Department"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let department = out["TrackingCategories"][0]["TrackingCategoryID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, out) = api
        .send(
            reqwest::Method::PUT,
            "/TrackingCategories",
            &json!({"Name": "Third"}),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(
        out["Elements"][0]["ValidationErrors"][0]["Message"],
        "An organisation can have at most 2 active tracking categories."
    );
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            &format!("/TrackingCategories/{department}/Options"),
            &json!({"Name": "x".repeat(101)}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, out) = api
        .send(
            reqwest::Method::PUT,
            &format!("/TrackingCategories/{department}/Options"),
            &json!({"Name": "Design"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let design = out["Options"][0]["TrackingOptionID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, out) = api
        .send(
            reqwest::Method::POST,
            &format!("/TrackingCategories/{department}/Options/{design}"),
            &json!({"Name": "Design Studio"}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), out["Options"][0]["Name"].clone()),
        (200, json!("Design Studio"))
    );
    let (status, _) = api
        .delete(&format!(
            "/TrackingCategories/{department}/Options/{design}"
        ))
        .await;
    assert_eq!(status, 200);
    let (_, one) = api.get(&format!("/TrackingCategories/{department}")).await;
    assert_eq!(
        one["TrackingCategories"][0]["Options"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "a deleted option is gone: {one}"
    );
    let (status, body) = api
        .delete(&format!("/TrackingCategories/{department}"))
        .await;
    assert_eq!(status, 200);
    let deleted: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(deleted["TrackingCategories"][0]["Status"], "DELETED");
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            "/TrackingCategories",
            &json!({"Name": "Third"}),
        )
        .await;
    assert_eq!(status, 200, "a deleted category is no longer active");
}

/// Users are seeded, read-only and not paged.
#[tokio::test]
async fn users_are_seeded_and_read_only() {
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    let (status, out) = api.get("/Users?page=1").await;
    assert_eq!(status, 200);
    let users = out["Users"].as_array().cloned().unwrap_or_default();
    assert!(users.len() >= 3);
    assert!(out.get("pagination").is_none());
    assert!(
        users
            .iter()
            .all(|u| u["OrganisationRole"].is_string() && u["EmailAddress"].is_string())
    );
    let (_, advisers) = api
        .get(&format!(
            "/Users?where={}",
            urlencode(r#"OrganisationRole=="FINANCIALADVISER""#)
        ))
        .await;
    assert_eq!(advisers["Users"].as_array().map(Vec::len), Some(1));
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            "/Users",
            &json!({"Users": [{"FirstName": "X"}]}),
        )
        .await;
    assert_eq!(status, 405);
}

/// Classic expense claims are refused until the organisation has them; then receipts need a
/// date, a contact, lines and a user, and have no currency; a claim needs a user and a receipt,
/// totals its receipts, and moves SUBMITTED → AUTHORISED → PAID.
#[tokio::test]
async fn classic_expense_claims_only_where_enabled() {
    let sim = start(XeroConfig::default());
    let api = Api::new(&sim).await;
    for path in ["/Receipts", "/ExpenseClaims"] {
        let (status, out) = api.get(path).await;
        assert_eq!(status, 403, "{path}: {out}");
        assert!(
            out["Message"].as_str().is_some_and(
                |m| m.contains("Classic expense claims are not available to this organisation")
            ),
            "{out}"
        );
    }
    assert!(sim.enable_classic_expenses(&api.tenant));
    let (_, users) = api.get("/Users").await;
    let user = users["Users"][1]["UserID"].clone();
    let contact = sim.contacts(&api.tenant)[0]["ContactID"].clone();
    let receipt = |amount: f64, reference: &str| {
        json!({"Date": "2026-01-05", "Contact": {"ContactID": contact}, "User": {"UserID": user}, "Reference": reference,
            "LineAmountTypes": "Inclusive", "LineItems": [{"Description": "Lunch", "Quantity": 1, "UnitAmount": amount, "AccountCode": "400"}]})
    };
    let (status, out) = api
        .send(
            reqwest::Method::PUT,
            "/Receipts?summarizeErrors=false",
            &json!({"Receipts": [receipt(34.5, "KX-ERS-3-E1"), receipt(10.25, "KX-ERS-3-E2"),
                {"LineItems": [{"Description": "x", "UnitAmount": 1}]},
                {"Date": "2026-01-05", "Contact": {"ContactID": contact}, "User": {"UserID": user}, "CurrencyCode": "EUR",
                 "LineItems": [{"Description": "x", "UnitAmount": 1, "AccountCode": "400"}]}]}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let rs = out["Receipts"].as_array().cloned().unwrap_or_default();
    assert_eq!(rs[0]["Status"], "DRAFT");
    assert_eq!(
        (
            rs[0]["ReceiptNumber"].clone(),
            rs[1]["ReceiptNumber"].clone()
        ),
        (json!("1"), json!("2"))
    );
    assert_eq!(rs[0]["Total"].to_string(), "34.5");
    assert!(rs[0].get("CurrencyCode").is_none());
    let errors = |r: &Value| -> Vec<String> {
        r["ValidationErrors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["Message"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        errors(&rs[2]),
        [
            "A User with a UserID must be specified",
            "A Contact must be specified for this type of transaction",
            "A Date must be specified"
        ]
    );
    assert!(
        errors(&rs[3])[0].contains("base currency"),
        "{:?}",
        errors(&rs[3])
    );
    let (_, found) = api
        .get(&format!(
            "/Receipts?where={}",
            urlencode(r#"Reference=="KX-ERS-3-E2""#)
        ))
        .await;
    assert_eq!(found["Receipts"].as_array().map(Vec::len), Some(1));

    let (status, out) = api
        .send(
            reqwest::Method::PUT,
            "/ExpenseClaims",
            &json!({"ExpenseClaims": [{"User": {"UserID": user}, "Receipts": []}]}),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(
        out["Elements"][0]["ValidationErrors"][0]["Message"],
        "An expense claim must have at least one receipt"
    );
    let ids: Vec<Value> = rs[..2]
        .iter()
        .map(|r| json!({"ReceiptID": r["ReceiptID"]}))
        .collect();
    let (status, out) = api
        .send(
            reqwest::Method::PUT,
            "/ExpenseClaims",
            &json!({"ExpenseClaims": [{"User": {"UserID": user}, "Receipts": ids, "Status": "SUBMITTED"}]}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let claim = &out["ExpenseClaims"][0];
    assert_eq!(claim["Total"].to_string(), "44.75");
    assert_eq!(claim["AmountDue"].to_string(), "44.75");
    let claim_id = claim["ExpenseClaimID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (_, r) = api
        .get(&format!(
            "/Receipts/{}",
            rs[0]["ReceiptID"].as_str().unwrap_or_default()
        ))
        .await;
    assert_eq!(r["Receipts"][0]["Status"], "SUBMITTED");
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            "/ExpenseClaims",
            &json!({"User": {"UserID": user}, "Receipts": [{"ReceiptID": rs[0]["ReceiptID"]}]}),
        )
        .await;
    assert_eq!(status, 400, "a receipt is on one claim at a time");
    let paid = sim.pay_expense_claim(&api.tenant, &claim_id).expect("paid");
    assert_eq!(
        (paid["Status"].clone(), paid["AmountDue"].to_string()),
        (json!("PAID"), "0.0".to_owned())
    );
    let (status, _) = api
        .send(
            reqwest::Method::POST,
            &format!("/ExpenseClaims/{claim_id}"),
            &json!({"Status": "VOIDED"}),
        )
        .await;
    assert_eq!(status, 400, "a paid claim stays paid");
}
