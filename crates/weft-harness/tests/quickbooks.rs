//! The QuickBooks Online simulator over real HTTP on 127.0.0.1: the consent's realmId, refresh
//! tokens that rotate after a day and die at once, revocation, the gateway's 401 and 403, the
//! envelopes, query paging, batches matched by bId, requestid replays, SyncToken checks and the
//! throttles' 429 (checked against docs/reference/quickbooks.md).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use weft_harness::quickbooks::{Consent, Kind, QuickBooksConfig, QuickBooksLimits, QuickBooksSim};

const REDIRECT: &str = "http://localhost:8976/oauth/callback";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The consent page's redirect, as query pairs.
async fn consent(sim: &QuickBooksSim, c: &reqwest::Client, scope: &str) -> Vec<(String, String)> {
    let mut url = reqwest::Url::parse(&format!("{}/connect/oauth2", sim.appcenter_url())).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", sim.client_id())
        .append_pair("response_type", "code")
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
    sim: &QuickBooksSim,
    c: &reqwest::Client,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let r = c
        .post(format!("{}/oauth2/v1/tokens/bearer", sim.oauth_url()))
        .basic_auth(sim.client_id(), Some(sim.client_secret()))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

/// Consent to the company `realm` (the first when `None`) and exchange the code: (realm, tokens).
async fn connect(sim: &QuickBooksSim, c: &reqwest::Client, realm: Option<&str>) -> (String, Value) {
    sim.set_consent(Consent::Grant {
        realm: realm.map(str::to_owned),
    });
    let back = consent(sim, c, "com.intuit.quickbooks.accounting").await;
    assert_eq!(get(&back, "state"), Some("s-1"));
    let realm = get(&back, "realmId").unwrap().to_owned();
    let code = get(&back, "code").unwrap().to_owned();
    let (status, tokens) = token(
        sim,
        c,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    (realm, tokens)
}

async fn api(
    sim: &QuickBooksSim,
    c: &reqwest::Client,
    access: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut r = c
        .request(method, format!("{}{path}", sim.api_url()))
        .bearer_auth(access)
        .header("Accept", "application/json");
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

fn query_path(realm: &str, q: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").unwrap();
    url.query_pairs_mut()
        .append_pair("query", q)
        .append_pair("minorversion", "75");
    format!("/v3/company/{realm}/query?{}", url.query().unwrap())
}

#[tokio::test]
async fn consent_names_the_realm_and_refresh_tokens_rotate_after_a_day_then_die() {
    let sim = QuickBooksSim::start(QuickBooksConfig {
        companies: 2,
        ..QuickBooksConfig::default()
    })
    .unwrap();
    let c = client();
    let realms: Vec<String> = sim.companies().into_iter().map(|(r, _)| r).collect();
    let back = consent(&sim, &c, "openid").await;
    assert_eq!(
        get(&back, "error"),
        Some("invalid_scope"),
        "the accounting scope is needed"
    );

    let (realm, tokens) = connect(&sim, &c, Some(&realms[1])).await;
    assert_eq!(realm, realms[1], "realmId names the company picked");
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 3600);
    assert_eq!(tokens["x_refresh_token_expires_in"], 100 * 86_400);
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    let info = format!("/v3/company/{realm}/companyinfo/{realm}?minorversion=75");
    let (status, _, body) = api(&sim, &c, &access, reqwest::Method::GET, &info, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["CompanyInfo"]["CompanyName"].is_string());
    let other = format!("/v3/company/{0}/companyinfo/{0}", realms[0]);
    let (status, _, body) = api(&sim, &c, &access, reqwest::Method::GET, &other, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["fault"]["error"][0]["code"], "3100", "{body}");

    // Within its first day a refresh token comes back unchanged; after it, a new one replaces it
    // and the old one is dead at once.
    sim.clock().advance(Duration::from_secs(3_700));
    let (status, _, body) = api(&sim, &c, &access, reqwest::Method::GET, &info, None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the access token lives an hour"
    );
    assert_eq!(body["fault"]["error"][0]["code"], "3200", "{body}");
    let (status, again) = token(
        &sim,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &first)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["refresh_token"], first.as_str());
    sim.clock().advance(Duration::from_secs(86_400));
    let (_, rotated) = token(
        &sim,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &first)],
    )
    .await;
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let (status, refused) = token(
        &sim,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &first)],
    )
    .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(sim.refresh_outcomes(), (2, 1));

    // Revocation takes JSON with Basic authentication and ends the grant.
    let fresh = rotated["access_token"].as_str().unwrap().to_owned();
    let r = c
        .post(format!("{}/v2/oauth2/tokens/revoke", sim.developer_url()))
        .basic_auth(sim.client_id(), Some(sim.client_secret()))
        .json(&json!({"token": second}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (status, _, _) = api(&sim, &c, &fresh, reqwest::Method::GET, &info, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, refused) = token(
        &sim,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &second)],
    )
    .await;
    assert_eq!(refused["error"], "invalid_grant");

    // A refresh token unused for 100 days dies too.
    let (_, tokens) = connect(&sim, &c, None).await;
    let idle = tokens["refresh_token"].as_str().unwrap().to_owned();
    sim.clock().advance(Duration::from_secs(101 * 86_400));
    let (_, refused) = token(
        &sim,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &idle)],
    )
    .await;
    assert_eq!(refused["error"], "invalid_grant");
    let (status, _) = token(
        &sim,
        &c,
        &[
            ("grant_type", "authorization_code"),
            ("code", "nope"),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn queries_page_inside_the_statement_in_quickbooks_envelopes() {
    let sim = QuickBooksSim::start(QuickBooksConfig {
        size: 60,
        ..QuickBooksConfig::default()
    })
    .unwrap();
    let c = client();
    let (realm, tokens) = connect(&sim, &c, None).await;
    let access = tokens["access_token"].as_str().unwrap();
    let total = sim.records(&realm, Kind::Invoice).len();
    let mut seen = Vec::new();
    for start in (1..).step_by(25) {
        let q = format!(
            "select * from Invoice orderby MetaData.LastUpdatedTime startposition {start} maxresults 25"
        );
        let (status, _, body) = api(
            &sim,
            &c,
            access,
            reqwest::Method::GET,
            &query_path(&realm, &q),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["time"].as_str().unwrap().ends_with("-07:00"));
        let Some(page) = body["QueryResponse"]["Invoice"].as_array() else {
            assert_eq!(
                body["QueryResponse"],
                json!({}),
                "nothing matched: no key at all"
            );
            break;
        };
        assert_eq!(body["QueryResponse"]["startPosition"], start);
        assert_eq!(body["QueryResponse"]["maxResults"], page.len());
        seen.extend(page.iter().map(|i| i["Id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(seen.len(), total);
    let (_, _, body) = api(
        &sim,
        &c,
        access,
        reqwest::Method::GET,
        &query_path(&realm, "select count(*) from Customer"),
        None,
    )
    .await;
    let active = sim
        .records(&realm, Kind::Customer)
        .iter()
        .filter(|r| r["Active"] == true)
        .count();
    assert_eq!(
        body["QueryResponse"]["totalCount"], active,
        "inactive customers are hidden unless asked"
    );
    for (bad, code) in [
        ("select * from Invoice where Nope = '1'", "4000"),
        ("select * from Invoice maxresults 1001", "4000"),
        ("select Id from Invoice", "4000"),
    ] {
        let (status, _, body) = api(
            &sim,
            &c,
            access,
            reqwest::Method::GET,
            &query_path(&realm, bad),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["Fault"]["Error"][0]["code"], code, "{body}");
    }
    let id = &seen[0];
    let (status, _, body) = api(
        &sim,
        &c,
        access,
        reqwest::Method::GET,
        &format!("/v3/company/{realm}/invoice/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["Invoice"]["Id"], id.as_str());
    let (status, _, body) = api(
        &sim,
        &c,
        access,
        reqwest::Method::GET,
        &format!("/v3/company/{realm}/invoice/99999"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["Fault"]["Error"][0]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("610"))
    );
    let (status, _, _) = api(
        &sim,
        &c,
        access,
        reqwest::Method::GET,
        &format!("/v3/company/{realm}/invoice/{id}?minorversion=latest"),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a minor version is a number"
    );
    let (status, _, body) = api(
        &sim,
        &c,
        "nope",
        reqwest::Method::GET,
        &format!("/v3/company/{realm}/invoice/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["fault"]["type"], "AUTHENTICATION");
}

#[tokio::test]
async fn batches_are_answered_by_bid_requestids_replay_and_sync_tokens_are_checked() {
    let sim = QuickBooksSim::start(QuickBooksConfig::default()).unwrap();
    let c = client();
    let (realm, tokens) = connect(&sim, &c, None).await;
    let access = tokens["access_token"].as_str().unwrap();
    let customer = sim.records(&realm, Kind::Customer)[0]["Id"].clone();
    let line = |amount: f64| json!({"Amount": amount, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "1"}}});
    let batch = json!({"BatchItemRequest": [
        {"bId": "0", "operation": "create", "Customer": {"DisplayName": "Batch Customer"}},
        {"bId": "1", "operation": "create", "Invoice": {"CustomerRef": {"value": customer}, "Line": [line(100.0)]}},
        {"bId": "2", "operation": "create", "Invoice": {"CustomerRef": {"value": customer}}},
        {"bId": "3", "Query": "select count(*) from Item"},
    ]});
    let path = format!("/v3/company/{realm}/batch?requestid=weft-batch-1&minorversion=75");
    let (status, _, body) = api(
        &sim,
        &c,
        access,
        reqwest::Method::POST,
        &path,
        Some(batch.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["BatchItemResponse"].as_array().unwrap();
    assert_eq!(items[0]["bId"], "0");
    assert!(items[0]["Customer"]["Id"].is_string());
    assert_eq!(items[1]["Invoice"]["TotalAmt"], 100);
    assert_eq!(
        items[2]["Fault"]["Error"][0]["code"], "6000",
        "an invoice without lines: {}",
        items[2]
    );
    assert!(items[3]["QueryResponse"]["totalCount"].is_u64());
    let invoices = sim.created(&realm, Kind::Invoice);
    let (_, _, replay) = api(&sim, &c, access, reqwest::Method::POST, &path, Some(batch)).await;
    assert_eq!(
        replay, body,
        "the same requestid is answered with the same answer"
    );
    assert_eq!(
        sim.created(&realm, Kind::Invoice),
        invoices,
        "and nothing is made twice"
    );

    // An item cannot use what an earlier item of the same batch made.
    let new_customer = items[0]["Customer"]["Id"].clone();
    let next = (new_customer.as_str().unwrap().parse::<u64>().unwrap() + 1).to_string();
    let (_, _, body) = api(&sim, &c, access, reqwest::Method::POST, &format!("/v3/company/{realm}/batch"), Some(json!({"BatchItemRequest": [
        {"bId": "a", "operation": "create", "Customer": {"DisplayName": "Made In Batch"}},
        {"bId": "b", "operation": "create", "Invoice": {"CustomerRef": {"value": next}, "Line": [line(5.0)]}},
    ]}))).await;
    let made = body["BatchItemResponse"][0]["Customer"]["Id"].clone();
    assert_eq!(made, next.as_str());
    assert_eq!(body["BatchItemResponse"][1]["bId"], "b");
    assert_eq!(
        body["BatchItemResponse"][1]["Fault"]["Error"][0]["code"], "610",
        "{body}"
    );
    let (_, _, body) = api(&sim, &c, access, reqwest::Method::POST, &format!("/v3/company/{realm}/batch"), Some(json!({"BatchItemRequest": [
        {"bId": "x", "operation": "create", "Customer": {"DisplayName": "Later"}},
        {"bId": "y", "operation": "create", "Invoice": {"CustomerRef": {"value": made}, "Line": [line(5.0)]}},
    ]}))).await;
    assert!(
        body["BatchItemResponse"][1]["Invoice"].is_object(),
        "a customer of an earlier batch is visible: {body}"
    );
    let many: Vec<Value> = (0..31).map(|n| json!({"bId": n.to_string(), "operation": "create", "Customer": {"DisplayName": format!("C{n}")}})).collect();
    let (status, _, body) = api(
        &sim,
        &c,
        access,
        reqwest::Method::POST,
        &format!("/v3/company/{realm}/batch"),
        Some(json!({"BatchItemRequest": many})),
    )
    .await;
    assert_eq!(
        (status, body["Fault"]["Error"][0]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("1040"))
    );

    // Updates name the record in the body with its SyncToken; a stale one is refused with 5010.
    let id = new_customer.as_str().unwrap();
    let update =
        |token: &str| json!({"Id": id, "SyncToken": token, "sparse": true, "Notes": "from Weft"});
    let (status, _, body) = api(
        &sim,
        &c,
        access,
        reqwest::Method::POST,
        &format!("/v3/company/{realm}/customer?requestid=u1"),
        Some(update("0")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["Customer"]["SyncToken"].as_str(),
            body["Customer"]["DisplayName"].as_str()
        ),
        (Some("1"), Some("Batch Customer"))
    );
    let (status, _, body) = api(
        &sim,
        &c,
        access,
        reqwest::Method::POST,
        &format!("/v3/company/{realm}/customer?requestid=u2"),
        Some(update("0")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["Fault"]["Error"][0]["Message"], "Stale Object Error",
        "{body}"
    );
    assert_eq!(body["Fault"]["type"], "ValidationFault");
}

#[tokio::test]
async fn throttles_answer_429_without_retry_after_until_the_minute_frees() {
    let sim = QuickBooksSim::start(QuickBooksConfig {
        limits: QuickBooksLimits {
            per_minute: 3,
            batch_per_minute: 1,
            ..QuickBooksLimits::default()
        },
        ..QuickBooksConfig::default()
    })
    .unwrap();
    let c = client();
    let (realm, tokens) = connect(&sim, &c, None).await;
    let access = tokens["access_token"].as_str().unwrap();
    let info = format!("/v3/company/{realm}/companyinfo/{realm}");
    let batch = format!("/v3/company/{realm}/batch");
    let empty = || Some(json!({"BatchItemRequest": []}));
    let (status, _, _) = api(&sim, &c, access, reqwest::Method::POST, &batch, empty()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) =
        api(&sim, &c, access, reqwest::Method::POST, &batch, empty()).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the batch endpoint's own minute"
    );
    assert!(headers.get("retry-after").is_none());
    assert_eq!(body["Fault"]["Error"][0]["code"], "3001");
    assert_eq!(body["Fault"]["type"], "SERVICE");
    for _ in 0..2 {
        assert_eq!(
            api(&sim, &c, access, reqwest::Method::GET, &info, None)
                .await
                .0,
            StatusCode::OK
        );
    }
    assert_eq!(
        api(&sim, &c, access, reqwest::Method::GET, &info, None)
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS,
        "500 a minute (3 here), batch calls included, 429s not counted"
    );
    sim.clock().advance(Duration::from_secs(60));
    assert_eq!(
        api(&sim, &c, access, reqwest::Method::GET, &info, None)
            .await
            .0,
        StatusCode::OK
    );
}
