//! The Kantata simulator over real HTTP on 127.0.0.1: OAuth, the bearer check, the envelope,
//! paging, `only`, `include`, default filters, ordering, writes, determinism and faults.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use weft_harness::faults::{Fault, FaultRule, When};
use weft_harness::kantata::{Consent, KantataConfig, KantataSim};

const REDIRECT: &str = "http://localhost:8976/oauth/callback";

fn sim() -> KantataSim {
    KantataSim::start(KantataConfig::default()).expect("the simulator starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// GET `path` (under /api/v1) with the personal token; returns status and JSON body.
async fn get(sim: &KantataSim, path: &str) -> (StatusCode, Value) {
    let url = format!("{}/api/v1{path}", sim.api_url());
    let r = client()
        .get(url)
        .bearer_auth(sim.personal_token())
        .send()
        .await
        .expect("request");
    let status = r.status();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

async fn send(
    sim: &KantataSim,
    method: reqwest::Method,
    path: &str,
    body: &Value,
) -> (StatusCode, String) {
    let url = format!("{}/api/v1{path}", sim.api_url());
    let r = client()
        .request(method, url)
        .bearer_auth(sim.personal_token())
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status();
    (status, r.text().await.unwrap_or_default())
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// The ids in `results`, checking each points into the right map.
fn result_ids(body: &Value, key: &str) -> Vec<String> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            assert_eq!(r["key"], key);
            let id = r["id"].as_str().expect("string id").to_owned();
            assert!(body[key][&id].is_object(), "{id} missing from {key}");
            id
        })
        .collect()
}

async fn authorize(sim: &KantataSim, redirect: &str, state: &str) -> reqwest::Response {
    let url = format!(
        "{}/oauth/authorize?client_id={}&response_type=code&redirect_uri={}&state={state}",
        sim.app_url(),
        sim.client_id(),
        urlencode(redirect)
    );
    client().get(url).send().await.expect("authorize")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn query_of(location: &str) -> HashMap<String, String> {
    let q = location.split_once('?').map_or("", |(_, q)| q);
    q.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%20", " ")))
        .collect()
}

async fn exchange(sim: &KantataSim, code: &str, redirect: &str) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
        ("client_id", sim.client_id()),
        ("client_secret", sim.client_secret()),
    ];
    let r = client()
        .post(format!("{}/oauth/token", sim.app_url()))
        .form(&form)
        .send()
        .await
        .expect("token");
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

async fn me_with(sim: &KantataSim, token: &str) -> (StatusCode, Value) {
    let r = client()
        .get(format!("{}/api/v1/users/me.json", sim.api_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("me");
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn oauth_grant_exchange_and_code_reuse() {
    let sim = sim();
    let r = authorize(&sim, REDIRECT, "xyz").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(REDIRECT), "{location}");
    let q = query_of(&location);
    assert_eq!(q["state"], "xyz");
    let code = q["code"].clone();

    let (status, token) = exchange(&sim, &code, REDIRECT).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    assert_eq!(token["token_type"], "bearer");
    assert!(token.get("refresh_token").is_none() && token.get("expires_in").is_none());
    let access = token["access_token"].as_str().unwrap().to_owned();

    let (status, me) = me_with(&sim, &access).await;
    assert_eq!(status, StatusCode::OK);
    let ids = result_ids(&me, "users");
    assert_eq!(ids, vec![sim.state().demo_user_id()]);
    assert!(me["users"][&ids[0]]["full_name"].is_string());

    // A replayed code is refused and revokes what it produced.
    let (status, err) = exchange(&sim, &code, REDIRECT).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_grant");
    assert_eq!(me_with(&sim, &access).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn oauth_refusals() {
    let sim = sim();
    // Denied consent redirects with the error.
    sim.set_consent(Consent::Deny);
    let r = authorize(&sim, REDIRECT, "s1").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let q = query_of(r.headers()["location"].to_str().unwrap());
    assert_eq!(q["error"], "access_denied");
    assert!(q.contains_key("error_description"));
    assert_eq!(q["state"], "s1");
    assert!(!q.contains_key("code"));
    sim.set_consent(Consent::Grant);

    // A redirect URI that is not registered exactly: a 400 page, no redirect.
    let r = authorize(&sim, "http://localhost:8976/oauth/callback/", "s").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get("location").is_none());
    let r = client()
        .get(format!(
            "{}/oauth/authorize?client_id=nope&response_type=code&redirect_uri={}",
            sim.app_url(),
            urlencode(REDIRECT)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The token call must repeat the redirect URI exactly.
    let code = query_of(
        authorize(&sim, REDIRECT, "s").await.headers()["location"]
            .to_str()
            .unwrap(),
    )["code"]
        .clone();
    let (status, err) = exchange(&sim, &code, "http://localhost:8976/other").await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // Expired after 5 minutes of simulated time.
    let code = query_of(
        authorize(&sim, REDIRECT, "s").await.headers()["location"]
            .to_str()
            .unwrap(),
    )["code"]
        .clone();
    sim.observed().clock.advance(Duration::from_secs(301));
    let (status, err) = exchange(&sim, &code, REDIRECT).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // Within 5 minutes it works, with the credentials in HTTP Basic too.
    let code = query_of(
        authorize(&sim, REDIRECT, "s").await.headers()["location"]
            .to_str()
            .unwrap(),
    )["code"]
        .clone();
    sim.observed().clock.advance(Duration::from_secs(299));
    let r = client()
        .post(format!("{}/oauth/token", sim.app_url()))
        .basic_auth(sim.client_id(), Some(sim.client_secret()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let access = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Wrong secret: invalid_client, 401.
    let r = client()
        .post(format!("{}/oauth/token", sim.app_url()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("client_id", sim.client_id()),
            ("client_secret", "wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");

    // Revocation.
    assert_eq!(me_with(&sim, &access).await.0, StatusCode::OK);
    let r = client()
        .post(format!("{}/oauth/revoke", sim.app_url()))
        .form(&[
            ("token", access.as_str()),
            ("client_id", sim.client_id()),
            ("client_secret", sim.client_secret()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(me_with(&sim, &access).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_tokens_when_enabled() {
    let sim = KantataSim::start(KantataConfig {
        refresh_tokens: true,
        ..KantataConfig::default()
    })
    .unwrap();
    let code = query_of(
        authorize(&sim, REDIRECT, "s").await.headers()["location"]
            .to_str()
            .unwrap(),
    )["code"]
        .clone();
    let (status, token) = exchange(&sim, &code, REDIRECT).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(token["expires_in"], 7200);
    let access = token["access_token"].as_str().unwrap().to_owned();
    let refresh = token["refresh_token"].as_str().unwrap().to_owned();
    sim.observed().clock.advance(Duration::from_secs(7201));
    assert_eq!(me_with(&sim, &access).await.0, StatusCode::UNAUTHORIZED);
    let r = client()
        .post(format!("{}/oauth/token", sim.app_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", sim.client_id()),
            ("client_secret", sim.client_secret()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let fresh = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(me_with(&sim, &fresh).await.0, StatusCode::OK);
}

#[tokio::test]
async fn bearer_is_required() {
    let sim = sim();
    for auth in [None, Some("Bearer nope"), Some("Basic abc")] {
        let mut req = client().get(format!("{}/api/v1/workspaces.json", sim.api_url()));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"errors": [{"type": "oauth", "message": "Invalid OAuth 2 Request"}]})
        );
    }
}

#[tokio::test]
async fn paging_clamps_and_meta() {
    let sim = sim();
    let base = "/time_entries?from_archived_workspaces=true";
    let total = sim.state().count("time_entries");
    assert!(total > 40, "{total}");
    let (_, b) = get(&sim, &format!("{base}&per_page=500")).await;
    assert_eq!(b["meta"]["page_size"], 200);
    assert_eq!(b["count"], total);
    assert_eq!(b["meta"]["count"], total);
    assert_eq!(result_ids(&b, "time_entries").len(), total.min(200));
    let (_, b) = get(&sim, &format!("{base}&per_page=0")).await;
    assert_eq!(b["meta"]["page_size"], 20);
    assert_eq!(result_ids(&b, "time_entries").len(), 20);
    let (_, b) = get(&sim, &format!("{base}&per_page=7&page=0")).await;
    assert_eq!(b["meta"]["page_number"], 1);
    assert_eq!(b["meta"]["page_count"], total.div_ceil(7));
    // Walking every page yields every entry exactly once, in order.
    let mut seen = Vec::new();
    let mut page = 1;
    loop {
        let (_, b) = get(
            &sim,
            &format!("{base}&per_page=7&page={page}&order=updated_at:asc"),
        )
        .await;
        seen.extend(result_ids(&b, "time_entries"));
        if b["meta"]["page_number"].as_u64() >= b["meta"]["page_count"].as_u64() {
            break;
        }
        page += 1;
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (total, total));
    // Past the end: empty results, same count.
    let (_, b) = get(&sim, &format!("{base}&per_page=7&page=999")).await;
    assert_eq!(b["results"], json!([]));
    assert_eq!(b["count"], total);

    // limit + offset only together.
    let (_, all) = get(&sim, &format!("{base}&per_page=200&order=created_at:asc")).await;
    let all = result_ids(&all, "time_entries");
    let (_, b) = get(
        &sim,
        &format!("{base}&limit=5&offset=3&order=created_at:asc"),
    )
    .await;
    assert_eq!(result_ids(&b, "time_entries"), all[3..8].to_vec());
    assert_eq!(b["meta"]["page_size"], 5);
    let (_, b) = get(&sim, &format!("{base}&limit=5&order=created_at:asc")).await;
    assert_eq!(result_ids(&b, "time_entries").len(), 20);

    // Nothing matches: the zero rules.
    let (_, b) = get(
        &sim,
        "/workspaces?updated_after=2030-01-01T00:00:00Z&include=workspace_groups",
    )
    .await;
    assert_eq!(
        b,
        json!({"count": 0, "results": [], "workspaces": {}, "workspace_groups": {},
               "meta": {"count": 0, "page_count": 0, "page_number": 0, "page_size": 20}})
    );
}

#[tokio::test]
async fn only_include_and_line_items() {
    let sim = sim();
    let invoices = sim.invoices();
    let (a, b) = (&invoices[0].id, &invoices[3].id);
    let (_, body) = get(&sim, &format!("/invoices?only={a},{b},999,abc")).await;
    assert_eq!(body["count"], 2);
    let mut ids = result_ids(&body, "invoices");
    ids.sort();
    assert_eq!(ids, vec![a.clone(), b.clone()]);
    assert!(
        body["invoices"][a].get("time_entry_ids").is_none(),
        "ids only when included"
    );

    let include = "time_entries,expenses,fixed_fee_items,additional_items,billing_milestones,workspaces,external_references,user";
    let (status, body) = get(
        &sim,
        &format!("/invoices?include={include},bogus&per_page=200"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for key in [
        "time_entries",
        "expenses",
        "fixed_fee_items",
        "additional_items",
        "billing_milestones",
        "workspaces",
        "external_references",
        "users",
    ] {
        assert!(body[key].is_object(), "{key} map");
    }
    assert!(body.get("bogus").is_none());
    let ids = result_ids(&body, "invoices");
    assert_eq!(ids.len(), invoices.len());
    let mut kinds = [0; 4];
    for id in &ids {
        let inv = &body["invoices"][id];
        let mut total = 0_i64;
        for (field, map, n) in [
            ("time_entry_ids", "time_entries", 0),
            ("expense_ids", "expenses", 1),
            ("fixed_fee_item_ids", "fixed_fee_items", 2),
            ("additional_item_ids", "additional_items", 3),
        ] {
            for line in inv[field].as_array().unwrap() {
                let rec = &body[map][line.as_str().unwrap()];
                assert!(rec.is_object(), "{map} {line}");
                kinds[n] += 1;
                total += if n == 0 {
                    rec["time_in_minutes"].as_i64().unwrap()
                        * rec["rate_in_cents"].as_i64().unwrap()
                        / 60
                } else {
                    rec["amount_in_cents"].as_i64().unwrap()
                };
                if n < 2 {
                    assert_eq!(rec["invoice_id"].as_str(), Some(id.as_str()));
                }
            }
        }
        assert_eq!(inv["billing_milestone_ids"], json!([]));
        let info = sim.invoice(id).unwrap();
        assert_eq!(total, info.total_in_cents);
        let ws = inv["workspace_ids"][0].as_str().unwrap();
        assert!(body["workspaces"][ws].is_object());
        assert!(body["users"][inv["user_id"].as_str().unwrap()].is_object());
        assert_eq!(inv["currency"], "USD");
        let status = inv["status"].as_str().unwrap();
        assert!(["new", "accepted payment", "cancelled"].contains(&status));
        assert!(inv["created_at"].as_str().unwrap().ends_with("-07:00"));
    }
    assert!(
        kinds.iter().all(|k| *k > 0),
        "every kind of line appears: {kinds:?}"
    );
}

#[tokio::test]
async fn archived_projects_are_hidden_by_default() {
    let sim = sim();
    let (_, default) = get(&sim, "/workspaces?per_page=200").await;
    let (_, all) = get(&sim, "/workspaces?per_page=200&include_archived=true").await;
    let visible = result_ids(&default, "workspaces");
    let every = result_ids(&all, "workspaces");
    let archived: Vec<&String> = every
        .iter()
        .filter(|id| all["workspaces"][id.as_str()]["archived"] == true)
        .collect();
    assert!(!archived.is_empty());
    assert_eq!(visible.len() + archived.len(), every.len());
    let id = archived[0];
    let (status, body) = get(&sim, &format!("/workspaces/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["errors"][0]["type"], "system");
    let (status, _) = get(
        &sim,
        &format!("/workspaces/{id}.json?include_archived=true"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (_, te) = get(&sim, "/time_entries?per_page=200").await;
    let (_, te_all) = get(
        &sim,
        "/time_entries?per_page=200&from_archived_workspaces=true",
    )
    .await;
    assert!(te["count"].as_u64() < te_all["count"].as_u64());
    for id in result_ids(&te, "time_entries") {
        let ws = te["time_entries"][&id]["workspace_id"].as_str().unwrap();
        assert_eq!(all["workspaces"][ws]["archived"], false);
    }
}

#[tokio::test]
async fn updated_after_order_and_show() {
    let sim = sim();
    let (_, body) = get(
        &sim,
        "/workspaces?include_archived=true&order=updated_at:asc&per_page=200",
    )
    .await;
    let ids = result_ids(&body, "workspaces");
    let stamps: Vec<String> = ids
        .iter()
        .map(|i| {
            body["workspaces"][i]["updated_at"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut sorted = stamps.clone();
    sorted.sort();
    assert_eq!(stamps, sorted);
    let mid = &stamps[stamps.len() / 2];
    let (_, after) = get(
        &sim,
        &format!(
            "/workspaces?include_archived=true&order=updated_at:asc&updated_after={}",
            urlencode(mid)
        ),
    )
    .await;
    let later = result_ids(&after, "workspaces");
    assert!(!later.is_empty() && later.len() < ids.len());
    for id in &later {
        assert!(after["workspaces"][id]["updated_at"].as_str().unwrap() > mid.as_str());
    }
    // Unknown order field: the default (updated_at:desc).
    let (_, dflt) = get(&sim, "/workspaces?include_archived=true&per_page=200").await;
    let (_, bogus) = get(
        &sim,
        "/workspaces?include_archived=true&per_page=200&order=nope:asc",
    )
    .await;
    assert_eq!(
        result_ids(&dflt, "workspaces"),
        result_ids(&bogus, "workspaces")
    );
    let mut rev = ids.clone();
    rev.reverse();
    let desc: Vec<String> = result_ids(&dflt, "workspaces");
    let desc_stamps: Vec<&str> = desc
        .iter()
        .map(|i| dflt["workspaces"][i]["updated_at"].as_str().unwrap())
        .collect();
    assert!(desc_stamps.windows(2).all(|w| w[0] >= w[1]));

    let (status, body) = get(&sim, "/invoices/1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["errors"][0]["type"], "system");
    let (status, _) = get(&sim, "/nothing_here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = get(&sim, "/workspaces?updated_after=garbage").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn payments_settle_invoices() {
    let sim = sim();
    let id = sim
        .state()
        .invoice_ids_with_status("new")
        .into_iter()
        .find(|i| !sim.invoice(i).unwrap().draft)
        .unwrap();
    let before = sim.invoice(&id).unwrap();
    let ws = before.workspace_ids[0].clone();
    sim.observed().clock.advance(Duration::from_secs(3600));
    let (status, text) = send(&sim, reqwest::Method::POST, "/external_payments", &json!({"external_payment": {"workspace_id": ws, "invoice_id": id, "amount_in_cents": 1, "message": "Xero payment"}})).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let body = parse(&text);
    let pid = result_ids(&body, "external_payments")[0].clone();
    assert_eq!(
        body["external_payments"][&pid]["amount_in_cents"],
        before.total_in_cents
    );
    let after = sim.invoice(&id).unwrap();
    assert_eq!(after.status, "accepted payment");
    assert_eq!(after.balance_in_cents, 0);
    assert!(after.updated_at > before.updated_at);
    assert!(sim.external_payments().iter().any(|p| p.id == pid));
    // Paid already: refused, not recorded twice.
    let (status, text) = send(
        &sim,
        reqwest::Method::POST,
        "/external_payments.json",
        &json!({"external_payment": {"workspace_id": ws, "invoice_id": id}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    // Missing workspace_id names the field.
    let (status, text) = send(
        &sim,
        reqwest::Method::POST,
        "/external_payments",
        &json!({"external_payment": {"invoice_id": id}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let err = parse(&text);
    assert_eq!(err["errors"][0]["type"], "validation");
    assert_eq!(err["errors"][0]["field"], "workspace_id");
}

#[tokio::test]
async fn writes_validate_update_and_delete() {
    let sim = sim();
    let (_, ws) = get(&sim, "/workspaces?per_page=1").await;
    let ws = result_ids(&ws, "workspaces")[0].clone();
    let (status, text) = send(
        &sim,
        reqwest::Method::POST,
        "/time_entries",
        &json!({"time_entry": {"workspace_id": ws, "time_in_minutes": 30}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(parse(&text)["errors"][0]["field"], "date_performed");
    let (status, text) = send(&sim, reqwest::Method::POST, "/time_entries", &json!({"time_entries": [
        {"workspace_id": ws, "time_in_minutes": 30, "date_performed": "2025-12-30", "notes": "a"},
        {"workspace_id": ws, "time_in_minutes": 45, "date_performed": "2025-12-31", "rate_in_cents": 10000}]})).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let created = result_ids(&parse(&text), "time_entries");
    assert_eq!(created.len(), 2);

    sim.observed().clock.advance(Duration::from_secs(120));
    let (status, text) = send(
        &sim,
        reqwest::Method::PUT,
        &format!("/time_entries/{}", created[0]),
        &json!({"time_entry": {"notes": "changed"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let body = parse(&text);
    let rec = &body["time_entries"][&created[0]];
    assert_eq!(rec["notes"], "changed");
    assert!(rec["updated_at"].as_str() > rec["created_at"].as_str());

    let url = format!("{}/api/v1/time_entries/{}.json", sim.api_url(), created[1]);
    let r = client()
        .delete(url)
        .bearer_auth(sim.personal_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.bytes().await.unwrap().is_empty());
    let (status, _) = get(&sim, &format!("/time_entries/{}", created[1])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Invoiced entries cannot be deleted; only draft invoices can.
    let (_, te) = get(
        &sim,
        "/time_entries?invoiced=true&per_page=1&from_archived_workspaces=true",
    )
    .await;
    let invoiced = result_ids(&te, "time_entries")[0].clone();
    let (status, _) = send(
        &sim,
        reqwest::Method::DELETE,
        &format!("/time_entries/{invoiced}"),
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let draft = sim.invoices().into_iter().find(|i| i.draft).unwrap();
    let (status, _) = send(
        &sim,
        reqwest::Method::DELETE,
        &format!("/invoices/{}", draft.id),
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(sim.invoice(&draft.id).is_none());

    // A new group with a taken name is refused.
    let name = {
        let (_, g) = get(&sim, "/workspace_groups?per_page=1").await;
        let id = result_ids(&g, "workspace_groups")[0].clone();
        g["workspace_groups"][&id]["name"]
            .as_str()
            .unwrap()
            .to_uppercase()
    };
    let (status, text) = send(
        &sim,
        reqwest::Method::POST,
        "/workspace_groups",
        &json!({"workspace_group": {"name": name}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(parse(&text)["errors"][0]["field"], "name");
    // Malformed bodies are a 4xx, never a crash.
    let r = client()
        .post(format!("{}/api/v1/time_entries", sim.api_url()))
        .bearer_auth(sim.personal_token())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
}

#[tokio::test]
async fn invoice_external_reference() {
    let sim = sim();
    let id = sim
        .invoices()
        .into_iter()
        .find(|i| i.external_reference_ids.is_empty() && !i.draft)
        .unwrap()
        .id;
    let body = json!({"invoice": {"external_reference": {"service_name": "xero", "service_model": "Invoice", "service_model_ref": "b7f1c8e0-0000-4000-8000-000000000001", "status": "successful"}}});
    let (status, text) = send(
        &sim,
        reqwest::Method::PUT,
        &format!("/invoices/{id}?include=external_references"),
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let b = parse(&text);
    let refs = b["invoices"][&id]["external_reference_ids"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(refs.len(), 1);
    let r = &b["external_references"][refs[0].as_str().unwrap()];
    assert_eq!(
        r["service_model_ref"],
        "b7f1c8e0-0000-4000-8000-000000000001"
    );
    assert_eq!(r["subject_type"], "Invoice");
    // The same service again updates, it does not add.
    let body = json!({"invoice": {"external_reference": {"service_name": "xero", "service_model": "Invoice", "service_model_ref": "b7f1c8e0-0000-4000-8000-000000000002"}}});
    let (status, _) = send(
        &sim,
        reqwest::Method::PUT,
        &format!("/invoices/{id}"),
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let info = sim.invoice(&id).unwrap();
    assert_eq!(info.external_reference_ids.len(), 1);
    let xero: Vec<_> = sim
        .external_references()
        .into_iter()
        .filter(|r| r.service_name == "xero")
        .collect();
    assert_eq!(xero.len(), 1);
    assert_eq!(
        xero[0].service_model_ref,
        "b7f1c8e0-0000-4000-8000-000000000002"
    );
    // Filters see it.
    let (_, linked) = get(&sim, "/invoices?external_reference_service_name=xero").await;
    assert_eq!(result_ids(&linked, "invoices"), vec![id.clone()]);
    let (_, unlinked) = get(
        &sim,
        "/invoices?without_external_reference_service_name=xero&per_page=200",
    )
    .await;
    assert!(!result_ids(&unlinked, "invoices").contains(&id));
    assert_eq!(
        unlinked["count"].as_u64().unwrap() as usize,
        sim.invoices().len() - 1
    );
    // Missing required reference fields name the field.
    let (status, text) = send(
        &sim,
        reqwest::Method::PUT,
        &format!("/invoices/{id}"),
        &json!({"invoice": {"external_reference": {"service_name": "qbo"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(parse(&text)["errors"][0]["field"], "service_model");
}

#[tokio::test]
async fn same_seed_same_bodies() {
    let a = sim();
    let b = sim();
    let c = KantataSim::start(KantataConfig {
        seed: 2,
        ..KantataConfig::default()
    })
    .unwrap();
    assert_eq!(a.client_id(), b.client_id());
    assert_ne!(a.client_id(), c.client_id());
    for path in [
        "/invoices?include=time_entries,expenses,fixed_fee_items,additional_items,workspaces,external_references,user&per_page=200",
        "/workspaces?include_archived=true&include=workspace_groups,primary_workspace_group",
        "/workspace_groups?order=updated_at:asc",
        "/users?on_my_account=true&show_disabled=true",
    ] {
        let (_, x) = get(&a, path).await;
        let (_, y) = get(&b, path).await;
        let (_, z) = get(&c, path).await;
        assert_eq!(x, y, "{path}");
        assert_ne!(x, z, "{path}");
    }
}

#[tokio::test]
async fn faults_from_the_plan() {
    let sim = sim();
    let plan = &sim.observed().faults;
    plan.add(FaultRule::on(
        "/api/v1/workspaces",
        When::Nth(1),
        Fault::Status {
            status: 503,
            body: "{\"errors\":[{\"type\":\"system\",\"message\":\"busy\"}]}".into(),
        },
    ));
    plan.add(FaultRule::on(
        "/api/v1/workspaces",
        When::Nth(2),
        Fault::Reset,
    ));
    let (status, _) = get(&sim, "/workspaces").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let err = client()
        .get(format!("{}/api/v1/workspaces", sim.api_url()))
        .bearer_auth(sim.personal_token())
        .send()
        .await;
    assert!(err.is_err());
    let (status, _) = get(&sim, "/workspaces").await;
    assert_eq!(status, StatusCode::OK);
    sim.rate_limit_next(1);
    let r = client()
        .get(format!("{}/api/v1/invoices", sim.api_url()))
        .bearer_auth(sim.personal_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(
        r.json::<Value>().await.unwrap()["errors"][0]["type"],
        "system"
    );
    assert_eq!(get(&sim, "/invoices").await.0, StatusCode::OK);
    let log = sim.observed().log.requests();
    assert!(log.iter().any(|r| r.status == 429));
}

/// Reads every page the way the shipped spec does and checks the records it would extract.
#[tokio::test]
async fn spec_list_reads() {
    let sim = KantataSim::start(KantataConfig {
        size: 300,
        ..KantataConfig::default()
    })
    .unwrap();
    let reads: [(&str, &str, &str, Option<&str>); 7] = [
        ("/users/me", "", "users", None),
        (
            "/users",
            "on_my_account=true&show_disabled=true",
            "users",
            None,
        ),
        (
            "/workspace_groups",
            "order=updated_at:asc",
            "workspace_groups",
            Some("updated_at"),
        ),
        (
            "/workspaces",
            "include_archived=true&include=workspace_groups,primary_workspace_group&order=updated_at:asc",
            "workspaces",
            Some("updated_at"),
        ),
        (
            "/time_entries",
            "from_archived_workspaces=true&order=updated_at:asc",
            "time_entries",
            Some("updated_at"),
        ),
        (
            "/expenses",
            "from_archived_workspaces=true&order=created_at:asc",
            "expenses",
            Some("created_at"),
        ),
        (
            "/invoices",
            "include=time_entries,expenses,fixed_fee_items,additional_items,billing_milestones,workspaces,external_references,user&order=updated_at:asc",
            "invoices",
            Some("updated_at"),
        ),
    ];
    for (path, query, key, field) in reads {
        let mut all = Vec::new();
        let mut page = 1;
        loop {
            let (status, b) = get(&sim, &format!("{path}?{query}&page={page}&per_page=200")).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            for id in result_ids(&b, key) {
                all.push(b[key][&id].clone());
            }
            if path == "/users/me"
                || b["meta"]["page_number"].as_u64() >= b["meta"]["page_count"].as_u64()
            {
                break;
            }
            page += 1;
        }
        let expected = if path == "/users/me" {
            1
        } else {
            sim.state().count(key)
        };
        assert_eq!(all.len(), expected, "{path}");
        if let Some(field) = field {
            let stamps: Vec<&str> = all.iter().map(|r| r[field].as_str().unwrap()).collect();
            assert!(
                stamps.windows(2).all(|w| w[0] <= w[1]),
                "{path} ordered by {field}"
            );
        }
    }
    // Workspaces carry their groups when asked.
    let (_, b) = get(
        &sim,
        "/workspaces?include_archived=true&include=workspace_groups,primary_workspace_group",
    )
    .await;
    for id in result_ids(&b, "workspaces") {
        let w = &b["workspaces"][&id];
        let g = w["primary_workspace_group_id"].as_str().unwrap();
        assert!(b["workspace_groups"][g]["name"].is_string());
        assert!(
            w["workspace_group_ids"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == g)
        );
    }
    // Group names are unique ignoring case.
    let (_, g) = get(&sim, "/workspace_groups?per_page=200").await;
    let mut names: Vec<String> = result_ids(&g, "workspace_groups")
        .iter()
        .map(|i| {
            g["workspace_groups"][i]["name"]
                .as_str()
                .unwrap()
                .to_lowercase()
        })
        .collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n);
}

#[test]
fn large_accounts_generate() {
    let started = std::time::Instant::now();
    let sim = KantataSim::start(KantataConfig {
        size: 20_000,
        ..KantataConfig::default()
    })
    .unwrap();
    assert_eq!(sim.state().count("invoices"), 20_000);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn create_invoice_and_project() {
    let sim = sim();
    let (status, text) = send(
        &sim,
        reqwest::Method::POST,
        "/workspaces",
        &json!({"workspace": {"description": "x"}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(parse(&text)["errors"][0]["field"], "title");
    let (_, g) = get(&sim, "/workspace_groups?per_page=1").await;
    let group = result_ids(&g, "workspace_groups")[0].clone();
    let (status, text) = send(
        &sim,
        reqwest::Method::POST,
        "/workspaces?include=workspace_groups",
        &json!({"workspace": {"title": "New project", "workspace_group_ids": [group]}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let b = parse(&text);
    let ws = result_ids(&b, "workspaces")[0].clone();
    assert_eq!(b["workspaces"][&ws]["workspace_group_ids"], json!([group]));

    let (_, te) = send(&sim, reqwest::Method::POST, "/time_entries", &json!({"time_entry": {"workspace_id": ws, "time_in_minutes": 90, "date_performed": "2025-12-20", "rate_in_cents": 15000}})).await;
    let te = result_ids(&parse(&te), "time_entries")[0].clone();
    let (status, text) = send(
        &sim,
        reqwest::Method::POST,
        "/invoices",
        &json!({"invoice": {"workspace_id": ws, "time_entry_ids": [te]}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(parse(&text)["errors"][0]["field"], "payment_schedule");
    let (status, text) = send(
        &sim,
        reqwest::Method::POST,
        "/invoices?include=time_entries,fixed_fee_items,additional_items",
        &json!({"invoice": {
        "workspace_id": ws, "payment_schedule": 30, "time_entry_ids": [te],
        "fixed_fee_items": [{"amount": "1000.50", "notes": "Setup"}],
        "additional_items": [{"amount": 12.25, "notes": "Licence"}]}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let b = parse(&text);
    let id = result_ids(&b, "invoices")[0].clone();
    let info = sim.invoice(&id).unwrap();
    assert_eq!(info.total_in_cents, 22_500 + 100_050 + 1_225);
    assert_eq!(info.line_counts, [1, 0, 1, 1]);
    assert_eq!(b["invoices"][&id]["status"], "new");
    assert_eq!(
        b["time_entries"][&te]["invoice_id"].as_str(),
        Some(id.as_str())
    );
    // The entry is taken now.
    let (status, text) = send(
        &sim,
        reqwest::Method::POST,
        "/invoices",
        &json!({"invoice": {"workspace_id": ws, "payment_schedule": 30, "time_entry_ids": [te]}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(parse(&text)["errors"][0]["field"], "time_entry_ids");
    // Cancel.
    let (status, text) = send(
        &sim,
        reqwest::Method::PUT,
        &format!("/invoices/{id}/cancel"),
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(sim.invoice(&id).unwrap().status, "cancelled");
    let (_, next) = get(&sim, "/invoices/next_invoice_number.json").await;
    assert!(next["next_invoice_number"].is_string());
}

#[tokio::test]
async fn malformed_requests_get_answers() {
    let sim = sim();
    let weird_queries = [
        "per_page=-5&page=-3",
        "per_page=99999999999999999999999&page=99999999999999999999",
        "limit=0&offset=-1",
        "limit=abc&offset=xyz",
        "only=,,,-1,18446744073709551616",
        "order=:desc",
        "order=updated_at:sideways",
        "include=,,,%FF%FE",
        "updated_after=%zz",
        "created_before=2026-13-45",
        "date_performed_between=2025-01-01",
        "workspace_id=a,b&invoice_id=%00",
    ];
    for coll in [
        "users",
        "workspace_groups",
        "workspaces",
        "time_entries",
        "expenses",
        "invoices",
        "external_payments",
        "external_references",
        "fixed_fee_items",
        "additional_items",
        "billing_milestones",
        "expense_report_submissions",
        "timesheet_submissions",
        "expense_categories",
        "vendors",
        "custom_fields",
        "custom_field_choices",
        "custom_field_values",
        "subscribed_events",
    ] {
        for q in weird_queries {
            let (status, body) = get(&sim, &format!("/{coll}?{q}")).await;
            assert!(
                status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
                "{coll}?{q}: {status}"
            );
            assert!(body.is_object(), "{coll}?{q}");
        }
        for id in ["0", "-1", "abc", "99999999999999999999999", "me"] {
            let (status, _) = get(&sim, &format!("/{coll}/{id}")).await;
            assert!(
                status.is_client_error() || coll == "users",
                "{coll}/{id}: {status}"
            );
        }
    }
    let bodies = [
        json!(null),
        json!([1, 2]),
        json!({"invoice": 5}),
        json!({"invoice": {"payment_schedule": 99999999999_i64, "workspace_id": "x"}}),
        json!({"invoice": {"external_reference": "nope"}}),
        json!({"time_entries": {"a": 1}}),
        json!({"time_entry": {"workspace_id": -4, "time_in_minutes": 9e40, "date_performed": "soon"}}),
        json!({"external_payment": {"workspace_id": 1, "message": "x".repeat(300)}}),
        json!({"custom_field": {"choices": "x"}}),
        json!({"custom_field": {"choices": [1, {"id": "abc"}, {"label": ""}], "value_type": 7}}),
        json!({"custom_field": {"name": "F", "value_type": "single", "choices": [{"id": 620000}]}}),
        json!({"resolution": 5}),
        json!({"resolution": {"submission_ids": "a,b", "description": ["x"]}}),
        json!({"resolution": {"submission_ids": [7700000, 7700000, 18446744073709551615_u64]}}),
        json!({"custom_field_value": {"subject_type": "Workspace", "subject_id": 40000000, "custom_field_id": 610000, "value": {"x": 1}}}),
        json!({"custom_field_value": {"subject_type": "Nope", "subject_id": "x", "custom_field_id": -1, "value": "[1,,2]"}}),
        json!({"expense_report_submission": {"title": "t", "workspace_id": 40000000, "line_item_ids": "1,-2,x"}}),
        json!({"timesheet_submission": {"title": "t", "workspace_id": 40000000, "line_item_ids": []}}),
        json!({"external_reference": {"subject_type": "Submission", "subject_id": "7700000", "service_name": ""}}),
        json!({"ids": [1, 2]}),
    ];
    let id = sim.invoices()[0].id.clone();
    for body in &bodies {
        for (method, path) in [
            (reqwest::Method::POST, "/invoices".to_owned()),
            (reqwest::Method::POST, "/time_entries".to_owned()),
            (reqwest::Method::POST, "/external_payments".to_owned()),
            (reqwest::Method::PUT, format!("/invoices/{id}")),
            (reqwest::Method::PUT, "/workspaces/1".to_owned()),
            (reqwest::Method::DELETE, "/time_entries".to_owned()),
            (reqwest::Method::DELETE, "/expenses".to_owned()),
            (
                reqwest::Method::POST,
                "/expense_report_submissions".to_owned(),
            ),
            (reqwest::Method::POST, "/timesheet_submissions".to_owned()),
            (reqwest::Method::POST, "/timesheet_approvals".to_owned()),
            (reqwest::Method::POST, "/custom_fields".to_owned()),
            (reqwest::Method::PUT, "/custom_fields/610000".to_owned()),
            (reqwest::Method::POST, "/custom_field_values".to_owned()),
            (
                reqwest::Method::POST,
                "/external_references/create_or_update".to_owned(),
            ),
            (
                reqwest::Method::PUT,
                "/expense_report_submissions/7700000/approve".to_owned(),
            ),
            (
                reqwest::Method::PUT,
                "/timesheet_submissions/7700000/sideways".to_owned(),
            ),
            (reqwest::Method::POST, "/expense_categories".to_owned()),
            (reqwest::Method::PUT, "/vendors/460000".to_owned()),
        ] {
            let (status, _) = send(&sim, method.clone(), &path, body).await;
            assert!(
                status.is_client_error() || status == StatusCode::OK,
                "{method} {path} {body}: {status}"
            );
        }
    }
    // Rails-style form bodies work too.
    let (_, ws) = get(&sim, "/workspaces?per_page=1").await;
    let ws = result_ids(&ws, "workspaces")[0].clone();
    let r = client()
        .post(format!("{}/api/v1/expenses", sim.api_url()))
        .bearer_auth(sim.personal_token())
        .form(&[
            ("expense[workspace_id]", ws.as_str()),
            ("expense[date]", "2025-12-01"),
            ("expense[category]", "Travel"),
            ("expense[amount_in_cents]", "1234"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn matching_and_latency() {
    let sim = KantataSim::start(KantataConfig {
        latency: Some(Duration::from_millis(60)),
        ..KantataConfig::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let (_, g) = get(&sim, "/workspace_groups?per_page=1").await;
    assert!(started.elapsed() >= Duration::from_millis(60));
    let id = result_ids(&g, "workspace_groups")[0].clone();
    let name = g["workspace_groups"][&id]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let prefix: String = name
        .split_whitespace()
        .map(|w| w.chars().take(3).collect::<String>())
        .collect::<Vec<_>>()
        .join(" ");
    let (_, m) = get(
        &sim,
        &format!(
            "/workspace_groups?matching={}",
            urlencode(&prefix.to_lowercase())
        ),
    )
    .await;
    assert!(result_ids(&m, "workspace_groups").contains(&id));
    let (_, none) = get(&sim, "/workspace_groups?matching=zzzz").await;
    assert_eq!(none["count"], 0);
}
