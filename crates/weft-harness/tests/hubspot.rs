//! The HubSpot simulator over real HTTP on 127.0.0.1: the install and token endpoints, the
//! envelope of its errors (401, 403 for a missing scope), list paging, search with its caps and
//! the 10,000-result limit, batches of 100 answered unordered with 207s, and the 429 bodies and
//! rate-limit headers (checked against docs/reference/hubspot.md).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use weft_harness::hubspot::{Consent, HubSpotConfig, HubSpotLimits, HubSpotSim, Object};

const REDIRECT: &str = "http://localhost:8976/oauth/callback";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The install page's redirect, as query pairs.
async fn install(sim: &HubSpotSim, c: &reqwest::Client, scope: &str) -> Vec<(String, String)> {
    let mut url = reqwest::Url::parse(&format!("{}/oauth/authorize", sim.app_url())).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", sim.client_id())
        .append_pair("scope", scope)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("state", "s-1");
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(REDIRECT), "{location}");
    location.query_pairs().into_owned().collect()
}

fn get<'p>(pairs: &'p [(String, String)], k: &str) -> Option<&'p str> {
    pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

async fn token(
    sim: &HubSpotSim,
    c: &reqwest::Client,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut all = vec![
        ("client_id", sim.client_id()),
        ("client_secret", sim.client_secret()),
    ];
    all.extend_from_slice(form);
    let r = c
        .post(format!("{}/oauth/v1/token", sim.api_url()))
        .form(&all)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn install_tokens_scopes_and_the_error_envelope() {
    let sim = HubSpotSim::start(HubSpotConfig::default()).unwrap();
    let c = client();
    sim.set_consent(Consent::Deny);
    let denied = install(&sim, &c, "oauth crm.objects.contacts.read").await;
    assert_eq!(get(&denied, "error"), Some("access_denied"));
    sim.set_consent(Consent::Grant { portal: None });
    let back = install(&sim, &c, "oauth crm.objects.contacts.read").await;
    assert_eq!(get(&back, "state"), Some("s-1"));
    let code = get(&back, "code").unwrap().to_owned();

    // The client's credentials travel in the form body; a wrong secret is refused.
    let r = c
        .post(format!("{}/oauth/v1/token", sim.api_url()))
        .form(&[
            ("client_id", sim.client_id()),
            ("client_secret", "wrong"),
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["status"].clone(), body["error"].clone()),
        (json!("BAD_CLIENT_ID"), json!("invalid_client"))
    );

    let (status, tokens) = token(
        &sim,
        &c,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["expires_in"], 1800);
    let (status, again) = token(
        &sim,
        &c,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(
        (status.as_u16(), again["status"].clone()),
        (400, json!("BAD_AUTH_CODE")),
        "single use"
    );
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    let info: Value = c
        .get(format!("{}/oauth/v1/access-tokens/{access}", sim.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["hub_id"], json!(sim.portals()[0]));

    // A read within the scope works; a write outside it is 403 MISSING_SCOPES.
    let contacts = c
        .get(format!("{}/crm/v3/objects/contacts?limit=2", sim.api_url()))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(contacts.status(), 200);
    assert_eq!(contacts.headers()["x-hubspot-ratelimit-max"], "100");
    assert!(
        contacts
            .headers()
            .get("x-hubspot-ratelimit-daily")
            .is_none(),
        "OAuth apps have no daily cap"
    );
    let forbidden = c
        .post(format!(
            "{}/crm/v3/objects/contacts/batch/create",
            sim.api_url()
        ))
        .bearer_auth(&access)
        .json(&json!({"inputs": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    let body: Value = forbidden.json().await.unwrap();
    assert_eq!(body["category"], "MISSING_SCOPES");
    assert_eq!(
        body["errors"][0]["context"]["requiredScopes"][0],
        "crm.objects.contacts.write"
    );
    assert!(
        body["correlationId"]
            .as_str()
            .is_some_and(|c| c.len() == 36)
    );

    // Thirty minutes later the access token is expired; the refresh answers the same refresh token.
    sim.clock().advance(Duration::from_secs(1_801));
    let expired = c
        .get(format!("{}/crm/v3/objects/contacts", sim.api_url()))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 401);
    let body: Value = expired.json().await.unwrap();
    assert_eq!(body["category"], "EXPIRED_AUTHENTICATION");
    let (status, renewed) = token(
        &sim,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(renewed["refresh_token"], json!(refresh));

    // Deleted, the refresh token is refused; the access token it gave lives on until it expires.
    let deleted = c
        .delete(format!(
            "{}/oauth/v1/refresh-tokens/{refresh}",
            sim.api_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let (status, refused) = token(
        &sim,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(
        (status.as_u16(), refused["error"].clone()),
        (400, json!("invalid_grant"))
    );
    let still = c
        .get(format!("{}/crm/v3/objects/contacts", sim.api_url()))
        .bearer_auth(renewed["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 200);
}

#[tokio::test]
async fn lists_search_and_its_caps() {
    let sim = HubSpotSim::start(HubSpotConfig {
        size: 10_100,
        limits: HubSpotLimits::unlimited(),
        ..HubSpotConfig::default()
    })
    .unwrap();
    let c = client();
    let token = sim.private_app_token(sim.portals()[0]).unwrap().to_owned();
    let api = sim.api_url();

    let too_big = c
        .get(format!("{api}/crm/v3/objects/contacts?limit=101"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 400);
    let page: Value = c
        .get(format!("{api}/crm/v3/objects/deals?limit=3&properties=dealname,dealstage&associations=companies"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["results"].as_array().unwrap().len(), 3);
    let deal = &page["results"][0];
    assert!(deal["properties"]["dealstage"].is_string());
    assert!(
        deal["properties"]["hs_lastmodifieddate"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(
        deal["associations"]["companies"]["results"][0]["type"],
        "deal_to_company"
    );
    let link = page["paging"]["next"]["link"].as_str().unwrap();
    assert!(
        link.starts_with(&api) && link.contains("properties=dealname"),
        "{link}"
    );

    let search = |body: Value| {
        let c = c.clone();
        let token = token.clone();
        let url = format!("{api}/crm/v3/objects/contacts/search");
        async move {
            let r = c
                .post(url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let rate = r.headers().get("x-hubspot-ratelimit-remaining").cloned();
            (status, r.json::<Value>().await.unwrap(), rate)
        }
    };
    let (status, body, rate) = search(json!({"limit": 200})).await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 10_100);
    assert_eq!(body["paging"]["next"]["after"], "200");
    assert!(rate.is_none(), "search answers carry no rate-limit headers");
    let (status, _, _) = search(json!({"limit": 201})).await;
    assert_eq!(status, 400);
    let (status, body, _) = search(json!({"limit": 200, "after": "9800"})).await;
    assert_eq!(status, 200);
    assert_eq!(body["paging"]["next"]["after"], "10000");
    let (status, body, _) = search(json!({"limit": 200, "after": "10000"})).await;
    assert_eq!(status, 400, "no search pages past its 10,000th result");
    assert_eq!(body["category"], "VALIDATION_ERROR");
    let many: Vec<Value> = (0..6)
        .map(|_| json!({"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}]}))
        .collect();
    let (status, _, _) = search(json!({"filterGroups": many})).await;
    assert_eq!(status, 400, "at most five filter groups");
    let contact = &sim.records(sim.portals()[0], Object::Contacts)[7];
    let (status, body, _) = search(json!({
        "filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": contact["properties"]["email"]}]}],
        "properties": ["email", "firstname"],
    }))
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 1);
    assert_eq!(body["results"][0]["id"], contact["id"]);
}

#[tokio::test]
async fn batches_are_unordered_with_207s_and_429s_name_their_limit() {
    let sim = HubSpotSim::start(HubSpotConfig {
        limits: HubSpotLimits {
            burst_per_10s: 5,
            search_per_second: 2,
            ..HubSpotLimits::default()
        },
        ..HubSpotConfig::default()
    })
    .unwrap();
    let c = client();
    let portal = sim.portals()[0];
    let token = sim.private_app_token(portal).unwrap().to_owned();
    let api = sim.api_url();
    let post = |path: &str, body: Value| {
        let c = c.clone();
        let token = token.clone();
        let url = format!("{api}{path}");
        async move {
            let r = c
                .post(url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let daily = r
                .headers()
                .get("x-hubspot-ratelimit-daily-remaining")
                .cloned();
            (status, r.json::<Value>().await.unwrap(), daily)
        }
    };
    let inputs: Vec<Value> = (0..101)
        .map(|i| json!({"properties": {"name": format!("Co {i}")}}))
        .collect();
    let (status, _, _) = post(
        "/crm/v3/objects/companies/batch/create",
        json!({"inputs": inputs}),
    )
    .await;
    assert_eq!(status, 400, "at most 100 inputs");

    let (status, body, daily) = post(
        "/crm/v3/objects/companies/batch/create",
        json!({"inputs": [
            {"properties": {"name": "First"}, "objectWriteTraceId": "a"},
            {"properties": {"name": "Bad", "no_such_property": "x"}, "objectWriteTraceId": "b"},
            {"properties": {"name": "Third"}, "objectWriteTraceId": "c"},
        ]}),
    )
    .await;
    assert_eq!(status, 207);
    assert!(daily.is_some(), "private apps see their daily budget");
    let traces: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["objectWriteTraceId"].as_str().unwrap())
        .collect();
    assert_eq!(
        traces,
        ["c", "a"],
        "results in another order than the inputs"
    );
    assert_eq!(body["numErrors"], 1);
    assert_eq!(body["errors"][0]["context"]["objectWriteTraceId"][0], "b");
    assert_eq!(
        body["errors"][0]["errors"][0]["code"],
        "PROPERTY_DOESNT_EXIST"
    );

    // Without trace ids one bad input refuses the whole batch.
    let (status, body, _) = post(
        "/crm/v3/objects/companies/batch/create",
        json!({"inputs": [{"properties": {"name": "Fine"}}, {"properties": {"amount": "x"}}]}),
    )
    .await;
    assert_eq!(
        (status, body["category"].clone()),
        (400, json!("VALIDATION_ERROR"))
    );
    assert_eq!(sim.created(portal, Object::Companies), 2);

    // Three calls spent of five; two searches in a second, the third one refused with its own
    // policy; then the burst limit.
    let (s1, _, _) = post("/crm/v3/objects/deals/search", json!({})).await;
    let (s2, _, _) = post("/crm/v3/objects/deals/search", json!({})).await;
    let (s3, body, _) = post("/crm/v3/objects/deals/search", json!({})).await;
    assert_eq!((s1, s2, s3), (200, 200, 429));
    assert_eq!(body["policyName"], "SECONDLY");
    let (s, body, _) = post("/crm/v3/objects/deals/batch/read", json!({"inputs": []})).await;
    assert_eq!(s, 429);
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(body["errorType"], "RATE_LIMIT");
    sim.clock().advance(Duration::from_secs(10));
    let (s, _, _) = post(
        "/crm/v3/objects/deals/batch/read",
        json!({"inputs": [{"id": "1"}]}),
    )
    .await;
    assert_eq!(s, 207, "an unknown id is named in errors[]");
}
