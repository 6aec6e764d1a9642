//! The shipped QuickBooks spec run by the engine's session against the QuickBooks simulator, on
//! its clock: an authorization through the consent page with the company taken from the
//! callback's `realmId`, refresh tokens kept within their first day and rotated after it, a batch
//! of invoices answered item by item by `bId` with one refused, a stale SyncToken classed as
//! `conflict`, a sparse update, a void and a deactivation, and a 429 waited out.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use weft_core::model::ErrorClass;
use weft_engine::connect::{Failure, classify, consent_tenants, test_call};
use weft_engine::http::CallError;
use weft_engine::limits::{Clock, Limiter};
use weft_engine::oauth::{OAuthApp, TokenSet};
use weft_engine::request::{Hosts, OpKind, RequestContext, Tenant};
use weft_engine::secrets::{MasterKey, Secret, SecretStore};
use weft_engine::session::{Session, SessionError};
use weft_engine::tokens::TokenKeeper;
use weft_harness::quickbooks::{Consent, Kind, QuickBooksConfig, QuickBooksLimits, QuickBooksSim};

use common::{SimWait, shipped};

const CALLBACK: &str = "http://localhost:8976/oauth/callback";
const RECORD: &str = "connection:qbo:tokens";

struct Fixture {
    sim: QuickBooksSim,
    clock: Arc<SimWait>,
    dir: std::path::PathBuf,
}

impl Fixture {
    fn new(name: &str, config: QuickBooksConfig) -> Self {
        let sim = QuickBooksSim::start(config).unwrap();
        let clock = Arc::new(SimWait::new(sim.clock()));
        let dir = std::env::temp_dir().join(format!("weft-qbo-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self { sim, clock, dir }
    }

    fn hosts(&self) -> Hosts {
        let spec = shipped("quickbooks");
        Hosts::new(spec.file(), &self.sim.hosts().into_iter().collect()).unwrap()
    }

    fn app(&self) -> OAuthApp {
        let spec = shipped("quickbooks");
        OAuthApp::new(
            spec.file(),
            &self.hosts(),
            self.sim.client_id(),
            Some(Secret::new(self.sim.client_secret().to_owned())),
            CALLBACK,
        )
        .unwrap()
    }

    fn store(&self) -> SecretStore {
        SecretStore::open(
            &self.dir.join("credentials.json"),
            MasterKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap(),
        )
        .unwrap()
    }

    fn tokens(&self) -> TokenSet {
        TokenSet::from_sealed_json(&self.store().get(RECORD).unwrap().unwrap()).unwrap()
    }

    /// A session over the shipped spec with the tokens in the store (refreshed by the spec's
    /// rules through the simulator's token service).
    fn session(&self) -> Session {
        let spec = shipped("quickbooks");
        let http = weft_engine::http::client().unwrap();
        let keeper = TokenKeeper::new(
            "qbo",
            RECORD,
            self.store(),
            Some(self.app()),
            spec.file().auth.oauth2.as_ref().unwrap().refresh.clone(),
            http.clone(),
            self.clock.clone(),
        );
        let limiter = Limiter::new(spec.file(), 4);
        Session::new(
            spec,
            self.hosts(),
            limiter,
            http,
            keeper,
            self.clock.clone(),
        )
    }

    /// The consent page played as a browser would: the code exchanged and the tokens stored;
    /// returns the parameters the provider put beside the code.
    async fn authorize(&self) -> BTreeMap<String, String> {
        let app = self.app();
        let pending = app.start();
        let http = weft_engine::http::client().unwrap();
        let consent = http.get(pending.url.clone()).send().await.unwrap();
        let back = url::Url::parse(consent.headers()["location"].to_str().unwrap()).unwrap();
        let mut params: BTreeMap<String, String> = back.query_pairs().into_owned().collect();
        assert_eq!(
            params.remove("state").as_deref(),
            Some(pending.state.as_str())
        );
        let code = params.remove("code").expect("a code");
        let tokens = app
            .exchange(&http, pending, &code, self.clock.now_ms())
            .await
            .unwrap();
        self.store().put(RECORD, &tokens.to_sealed_json()).unwrap();
        params
    }

    /// Tokens straight from the simulator (the consent tested elsewhere), stored; the company.
    async fn connected(&self) -> Tenant {
        let (realm, token) = common::quickbooks_token(&self.sim).await;
        self.store()
            .put(
                RECORD,
                &TokenSet::fixed(Secret::new(token), self.clock.now_ms()).to_sealed_json(),
            )
            .unwrap();
        Tenant {
            id: realm.clone(),
            name: realm,
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ctx(session: &Session, tenant: &Tenant) -> RequestContext {
    RequestContext {
        tenant: Some(tenant.clone()),
        ..session.context(BTreeMap::new())
    }
}

#[tokio::test]
async fn the_company_comes_from_the_callback_and_refresh_tokens_rotate_after_a_day() {
    let f = Fixture::new(
        "authorize",
        QuickBooksConfig {
            companies: 2,
            ..QuickBooksConfig::default()
        },
    );
    let (second, name) = f.sim.companies()[1].clone();
    f.sim.set_consent(Consent::Grant {
        realm: Some(second.clone()),
    });
    let callback = f.authorize().await;
    let session = f.session();
    let (found, listed) = consent_tenants(&session, &f.tokens(), &callback)
        .await
        .unwrap()
        .expect("the spec has tenants");
    assert_eq!(listed, 1);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, second, "the company picked at the consent");
    let tenant = Tenant {
        id: found[0].id.clone(),
        name: found[0].name.clone(),
    };
    let described = test_call(&session, Some(tenant.clone())).await.unwrap();
    assert!(described.starts_with(&name), "{described}");
    let first = f.tokens();
    let first_refresh = first.refresh_token.clone().unwrap();

    // An hour later the access token has expired: the refresh answers the same refresh token
    // (it is less than a day old).
    f.clock.advance_by(Duration::from_secs(3_700));
    test_call(&session, Some(tenant.clone())).await.unwrap();
    let second_set = f.tokens();
    assert_ne!(
        second_set.access_token.expose(),
        first.access_token.expose()
    );
    assert_eq!(
        second_set.refresh_token.as_ref().unwrap().expose(),
        first_refresh.expose()
    );

    // A day later a new refresh token replaces it, and the old one is dead at once.
    f.clock.advance_by(Duration::from_secs(86_400));
    test_call(&session, Some(tenant)).await.unwrap();
    let rotated = f.tokens().refresh_token.unwrap();
    assert_ne!(rotated.expose(), first_refresh.expose());
    let http = weft_engine::http::client().unwrap();
    let old = f
        .app()
        .refresh(&http, &first_refresh, f.clock.now_ms())
        .await
        .unwrap_err();
    assert!(old.is_invalid_grant(), "{old}");
    assert_eq!(f.sim.refresh_outcomes(), (2, 1));
    assert!(
        f.tokens().granted_at_ms <= f.clock.now_ms() - 86_400_000,
        "the consent's time is kept through refreshes, for the five-year limit"
    );
}

#[tokio::test]
async fn a_batch_of_invoices_is_answered_by_bid_and_one_refused_fails_alone() {
    let f = Fixture::new("batch", QuickBooksConfig::default());
    let tenant = f.connected().await;
    let session = f.session();
    let realm = tenant.id.clone();
    let customers = f.sim.records(&realm, Kind::Customer);
    let active = customers.iter().find(|c| c["Active"] == true).unwrap()["Id"].clone();
    let inactive = customers.iter().find(|c| c["Active"] == false).unwrap()["Id"].clone();
    let invoice = |customer: &Value, amount: u32| {
        json!({"CustomerRef": {"value": customer}, "DocNumber": format!("K-{amount}"), "Line": [
            {"Amount": amount, "DetailType": "SalesItemLineDetail", "Description": "Hours",
             "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": 1, "UnitPrice": amount}}]})
    };
    let records = [
        invoice(&active, 150),
        invoice(&inactive, 300),
        invoice(&active, 450),
    ];
    let file = session.spec().file();
    let resource = &file.resources["invoices"];
    for r in &records {
        assert!(
            weft_engine::write::check_record(resource, r, true).is_empty(),
            "{r}"
        );
    }
    let op = resource.create.as_ref().unwrap();
    let key = weft_engine::write::idempotency_key_for(op, "qbo-test", &records).unwrap();
    assert!(
        key.len() <= 36,
        "QuickBooks takes 36 characters on a batch: {key}"
    );
    let results = session
        .write(
            "invoices",
            "create",
            &ctx(&session, &tenant),
            &records,
            Some(&key),
        )
        .await
        .unwrap();
    let statuses: Vec<&str> = results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, ["ok", "failed", "ok"]);
    assert!(
        results[1].errors[0].contains("Object Not Found"),
        "{:?}",
        results[1].errors
    );
    assert_eq!(results[1].id, None);
    let made: Vec<Value> = [&results[0], &results[2]]
        .iter()
        .map(|r| {
            f.sim
                .record(&realm, Kind::Invoice, r.id.as_deref().unwrap())
                .unwrap()
        })
        .collect();
    assert_eq!(
        (made[0]["TotalAmt"].clone(), made[1]["TotalAmt"].clone()),
        (json!(150), json!(450))
    );
    assert_eq!(f.sim.created(&realm, Kind::Invoice), 2);
    let sent = f.sim.observed().log.requests().last().unwrap().clone();
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", format!("/v3/company/{realm}/batch").as_str())
    );
    assert!(
        sent.query.contains(&format!("requestid={key}")),
        "{}",
        sent.query
    );
    assert!(sent.query.contains("minorversion=75"), "{}", sent.query);

    // Sent again after a lost answer, the same key is answered with the same answer: nothing is
    // created twice.
    let again = session
        .write(
            "invoices",
            "create",
            &ctx(&session, &tenant),
            &records,
            Some(&key),
        )
        .await
        .unwrap();
    assert_eq!(again, results);
    assert_eq!(f.sim.created(&realm, Kind::Invoice), 2);
}

#[tokio::test]
async fn a_stale_sync_token_is_a_conflict_and_updates_are_sparse() {
    let f = Fixture::new("stale", QuickBooksConfig::default());
    let tenant = f.connected().await;
    let session = f.session();
    let realm = tenant.id.clone();
    let unpaid = f
        .sim
        .records(&realm, Kind::Invoice)
        .into_iter()
        .find(|i| i["LinkedTxn"].as_array().is_some_and(Vec::is_empty))
        .unwrap();
    let id = unpaid["Id"].as_str().unwrap().to_owned();
    let by_id = RequestContext {
        id: Some(id.clone()),
        ..ctx(&session, &tenant)
    };
    let answer = session
        .call("invoices", OpKind::Get, &by_id, &[], &[], None)
        .await
        .unwrap();
    let read = answer.body["Invoice"].clone();
    let token = read["SyncToken"].as_str().unwrap().to_owned();
    let file = session.spec().file();
    let invoices = &file.resources["invoices"];
    assert_eq!(
        weft_engine::write::check_record(invoices, &json!({"Id": id}), false),
        ["`SyncToken` is required on an update"]
    );

    // Someone changes the invoice in QuickBooks after Weft read it.
    f.sim
        .edit(
            &realm,
            Kind::Invoice,
            &id,
            json!({"PrivateNote": "changed in QuickBooks"}),
        )
        .unwrap();
    let change =
        |token: &str| json!({"Id": id, "SyncToken": token, "CustomerMemo": {"value": "Thank you"}});
    let err = session
        .write(
            "invoices",
            "update",
            &by_id,
            &[change(&token)],
            Some("weft-upd-1"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            SessionError::Call(CallError::Refused {
                class: ErrorClass::Conflict,
                status: 400,
                ..
            })
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("changed there since it was read"),
        "{err}"
    );
    assert_eq!(classify(&err), Failure::Conflict);

    // Read again, written on top: only the memo changes (a sparse update).
    let fresh = f.sim.record(&realm, Kind::Invoice, &id).unwrap();
    let results = session
        .write(
            "invoices",
            "update",
            &by_id,
            &[change(fresh["SyncToken"].as_str().unwrap())],
            Some("weft-upd-2"),
        )
        .await
        .unwrap();
    assert_eq!(
        (results[0].status, results[0].id.as_deref()),
        ("ok", Some(id.as_str()))
    );
    let updated = f.sim.record(&realm, Kind::Invoice, &id).unwrap();
    assert_eq!(updated["CustomerMemo"]["value"], "Thank you");
    assert_eq!(
        updated["PrivateNote"], "changed in QuickBooks",
        "the rest is kept"
    );
    assert_eq!(updated["Line"], fresh["Line"]);

    // The invoice voided and a customer made inactive, through the spec's actions.
    let voided = session
        .action(
            "invoices",
            "void",
            &ctx(&session, &tenant),
            &id,
            json!({"Id": id, "SyncToken": updated["SyncToken"]}),
            Some("weft-void-1"),
        )
        .await
        .unwrap();
    assert_eq!(voided.status, "ok", "{voided:?}");
    let now = f.sim.record(&realm, Kind::Invoice, &id).unwrap();
    assert_eq!(
        (now["TotalAmt"].clone(), now["PrivateNote"].clone()),
        (json!(0), json!("Voided - changed in QuickBooks"))
    );
    let customer = f
        .sim
        .records(&realm, Kind::Customer)
        .into_iter()
        .find(|c| c["Active"] == true)
        .unwrap();
    let cid = customer["Id"].as_str().unwrap();
    session
        .action(
            "customers",
            "deactivate",
            &ctx(&session, &tenant),
            cid,
            json!({"Id": cid, "SyncToken": customer["SyncToken"]}),
            Some("weft-deact-1"),
        )
        .await
        .unwrap();
    let after = f.sim.record(&realm, Kind::Customer, cid).unwrap();
    assert_eq!(after["Active"], false);
    assert_eq!(after["DisplayName"], customer["DisplayName"]);
}

#[tokio::test]
async fn a_429_without_retry_after_is_backed_off_on_the_simulators_clock() {
    let f = Fixture::new(
        "throttle",
        QuickBooksConfig {
            limits: QuickBooksLimits {
                per_minute: 4,
                ..QuickBooksLimits::default()
            },
            ..QuickBooksConfig::default()
        },
    );
    let tenant = f.connected().await;
    let session = f.session();
    let started = f.clock.now_ms();
    for _ in 0..7 {
        test_call(&session, Some(tenant.clone())).await.unwrap();
    }
    let throttled = f
        .sim
        .observed()
        .log
        .requests()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert!(throttled >= 1, "the fifth call in the minute is throttled");
    let stats = session.stats();
    assert_eq!(stats.calls, 7 + throttled as u64, "each 429 retried");
    assert!(
        f.clock.now_ms() - started >= 60_000,
        "the calls after the fourth waited for the minute to free: {:?}",
        f.clock.waits()
    );
}

/// The shipped spec with its two API hosts (production and sandbox) standing for two simulators.
fn spec_with_api_hosts(production: &str, sandbox: &str) -> weft_core::Spec {
    let text = include_str!("../../../specs/quickbooks.toml")
        .replace(
            "https://quickbooks.api.intuit.com\"",
            &format!("{production}\""),
        )
        .replace(
            "https://sandbox-quickbooks.api.intuit.com\"",
            &format!("{sandbox}\""),
        );
    let report = weft_core::load_str("specs/quickbooks.toml", &text);
    assert!(!report.has_errors(), "{}", report.render());
    report.spec.expect("a valid spec")
}

/// A session over `spec` on fixture `f`'s stored token, its hosts chosen by the connection's
/// `fields` and then `overrides` (the fixture's consent and token hosts always).
fn session_on(
    f: &Fixture,
    spec: &weft_core::Spec,
    fields: &[(&str, &str)],
    overrides: &[(&str, &str)],
) -> Session {
    let fields: BTreeMap<String, String> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut hosts: BTreeMap<String, String> = f
        .sim
        .hosts()
        .into_iter()
        .filter(|(name, _)| name != "api")
        .collect();
    hosts.extend(
        overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let hosts = Hosts::for_connection(spec.file(), &fields, &hosts).unwrap();
    let http = weft_engine::http::client().unwrap();
    let keeper = TokenKeeper::new(
        "qbo",
        RECORD,
        f.store(),
        None,
        None,
        http.clone(),
        f.clock.clone(),
    );
    Session::new(
        spec.clone(),
        hosts,
        Limiter::new(spec.file(), 4),
        http,
        keeper,
        f.clock.clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_field_chooses_the_api_host_and_a_host_override_still_wins() {
    let production = Fixture::new("env-production", QuickBooksConfig::default());
    let sandbox = Fixture::new(
        "env-sandbox",
        QuickBooksConfig {
            seed: 2,
            clock: production.sim.clock().clone(),
            ..QuickBooksConfig::default()
        },
    );
    let spec = spec_with_api_hosts(&production.sim.api_url(), &sandbox.sim.api_url());
    let calls = |f: &Fixture| f.sim.observed().log.requests().len();
    let name = |f: &Fixture| f.sim.companies()[0].1.clone();

    // No value: the field's default, production.
    let tenant = production.connected().await;
    let described = test_call(
        &session_on(&production, &spec, &[], &[]),
        Some(tenant.clone()),
    )
    .await
    .unwrap();
    assert!(described.starts_with(&name(&production)), "{described}");
    assert_eq!((calls(&production), calls(&sandbox)), (1, 0));

    // environment = sandbox: the sandbox host, and only it.
    let sandbox_tenant = sandbox.connected().await;
    let s = session_on(&sandbox, &spec, &[("environment", "sandbox")], &[]);
    let described = test_call(&s, Some(sandbox_tenant.clone())).await.unwrap();
    assert!(described.starts_with(&name(&sandbox)), "{described}");
    assert_eq!((calls(&production), calls(&sandbox)), (1, 1));

    // environment = production named explicitly.
    let s = session_on(&production, &spec, &[("environment", "production")], &[]);
    test_call(&s, Some(tenant.clone())).await.unwrap();
    assert_eq!((calls(&production), calls(&sandbox)), (2, 1));

    // An override of `api` wins over the field: production chosen, the sandbox simulator called.
    let s = session_on(
        &sandbox,
        &spec,
        &[("environment", "production")],
        &[("api", &sandbox.sim.api_url())],
    );
    test_call(&s, Some(sandbox_tenant)).await.unwrap();
    assert_eq!((calls(&production), calls(&sandbox)), (2, 2));

    // A value that is not a choice (a hand-edited weft.toml) is refused before any call.
    let err = Hosts::for_connection(
        spec.file(),
        &BTreeMap::from([("environment".to_owned(), "staging".to_owned())]),
        &BTreeMap::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`environment` is `staging`") && err.contains("production, sandbox"),
        "{err}"
    );

    // The shipped spec, unchanged: production unless the connection says sandbox.
    let shipped = shipped("quickbooks");
    let url = |fields: &[(&str, &str)]| {
        let fields = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Hosts::for_connection(shipped.file(), &fields, &BTreeMap::new())
            .unwrap()
            .get("api")
            .unwrap()
            .to_owned()
    };
    assert_eq!(url(&[]), "https://quickbooks.api.intuit.com");
    assert_eq!(
        url(&[("environment", "sandbox")]),
        "https://sandbox-quickbooks.api.intuit.com"
    );
}
