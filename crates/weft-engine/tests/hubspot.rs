//! The shipped HubSpot spec run by the engine's session against the HubSpot simulator, on its
//! clock: an install through the consent page with the portal read from the account details,
//! 30-minute access tokens refreshed with a refresh token that never changes, and that token
//! deleted by a DELETE; contacts read incrementally through search with the cursor in the body;
//! a batch of contacts answered unordered and matched by e-mail address with one refused; an
//! e-mail taken by another contact classed as `conflict`; a TEN_SECONDLY_ROLLING 429 waited out
//! and a DAILY one stopping at a checkpoint; and a flow reading more contacts than one search can
//! reach, as a keyset.

mod common;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use weft_core::model::ErrorClass;
use weft_engine::connect::{Failure, classify, consent_tenants, test_call};
use weft_engine::http::CallError;
use weft_engine::limits::{Clock, Limiter};
use weft_engine::oauth::{OAuthApp, TokenSet};
use weft_engine::request::{Hosts, RequestContext, Tenant};
use weft_engine::secrets::{MasterKey, Secret, SecretStore};
use weft_engine::session::{Session, SessionError};
use weft_engine::tokens::TokenKeeper;
use weft_harness::hubspot::{Consent, HubSpotConfig, HubSpotLimits, HubSpotSim, Object};

use common::{SimWait, shipped};

const CALLBACK: &str = "http://localhost:8976/oauth/callback";
const RECORD: &str = "connection:hubspot:tokens";

struct Fixture {
    sim: HubSpotSim,
    clock: Arc<SimWait>,
    dir: std::path::PathBuf,
}

impl Fixture {
    fn new(name: &str, config: HubSpotConfig) -> Self {
        let sim = HubSpotSim::start(config).unwrap();
        let clock = Arc::new(SimWait::new(sim.clock()));
        let dir = std::env::temp_dir().join(format!("weft-hubspot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self { sim, clock, dir }
    }

    fn hosts(&self) -> Hosts {
        let spec = shipped("hubspot");
        Hosts::new(spec.file(), &self.sim.hosts().into_iter().collect()).unwrap()
    }

    fn app(&self) -> OAuthApp {
        let spec = shipped("hubspot");
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

    /// A session over the shipped spec with the tokens in the store.
    fn session(&self) -> Session {
        let spec = shipped("hubspot");
        let http = weft_engine::http::client().unwrap();
        let keeper = TokenKeeper::new(
            "hubspot",
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

    /// The install page played as a browser would: the code exchanged and the tokens stored;
    /// returns what the provider put beside the code.
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

    /// The first portal's private app token, stored as a pasted token.
    fn private_token(&self) -> u64 {
        let portal = self.sim.portals()[0];
        let token = self.sim.private_app_token(portal).unwrap().to_owned();
        self.store()
            .put(
                RECORD,
                &TokenSet::fixed(Secret::new(token), self.clock.now_ms()).to_sealed_json(),
            )
            .unwrap();
        portal
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn list(session: &Session, resource: &str, ctx: &RequestContext) -> Vec<Value> {
    let mut all = Vec::new();
    session
        .list(resource, ctx, |r| {
            all.push(r);
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
    all
}

#[tokio::test]
async fn the_portal_is_the_tenant_and_the_refresh_token_never_changes() {
    let f = Fixture::new(
        "authorize",
        HubSpotConfig {
            portals: 2,
            ..HubSpotConfig::default()
        },
    );
    let second = f.sim.portals()[1];
    f.sim.set_consent(Consent::Grant {
        portal: Some(second),
    });
    let callback = f.authorize().await;
    assert!(
        callback.is_empty(),
        "HubSpot names no portal in the callback"
    );
    let session = f.session();
    let (found, listed) = consent_tenants(&session, &f.tokens(), &callback)
        .await
        .unwrap()
        .expect("the spec has tenants");
    assert_eq!((listed, found.len()), (1, 1));
    assert_eq!(
        found[0].id,
        second.to_string(),
        "the portal picked at install"
    );
    let tenant = Tenant {
        id: found[0].id.clone(),
        name: found[0].name.clone(),
    };
    let described = test_call(&session, Some(tenant.clone())).await.unwrap();
    assert_eq!(described, format!("HubSpot account {second}, UTC, USD"));
    let first = f.tokens();
    let refresh = first.refresh_token.clone().unwrap();

    // Half an hour later the access token has expired: the refresh answers a new one and the
    // same refresh token.
    f.clock.advance_by(Duration::from_secs(31 * 60));
    test_call(&session, Some(tenant.clone())).await.unwrap();
    let renewed = f.tokens();
    assert_ne!(renewed.access_token.expose(), first.access_token.expose());
    assert_eq!(
        renewed.refresh_token.as_ref().unwrap().expose(),
        refresh.expose()
    );
    let token_calls: Vec<_> = f
        .sim
        .observed()
        .log
        .requests()
        .into_iter()
        .filter(|r| r.path == "/oauth/v1/token")
        .collect();
    assert_eq!(token_calls.len(), 2, "the exchange and one refresh");

    // A year later it still works: HubSpot's refresh tokens do not expire.
    f.clock.advance_by(Duration::from_secs(365 * 86_400));
    test_call(&session, Some(tenant.clone())).await.unwrap();

    // Deleting the connection deletes the refresh token: a DELETE with the token in the path.
    let http = weft_engine::http::client().unwrap();
    f.app().revoke(&http, &refresh).await.unwrap();
    let deleted = f.sim.observed().log.requests().last().unwrap().clone();
    assert_eq!(deleted.method, "DELETE");
    assert!(
        deleted.path.starts_with("/oauth/v1/refresh-tokens/"),
        "{}",
        deleted.path
    );
    let refused = f
        .app()
        .refresh(&http, &refresh, f.clock.now_ms())
        .await
        .unwrap_err();
    assert!(refused.is_invalid_grant(), "{refused}");
}

#[tokio::test]
async fn contacts_are_read_incrementally_through_search_with_the_cursor_in_the_body() {
    let f = Fixture::new(
        "search",
        HubSpotConfig {
            size: 450,
            ..HubSpotConfig::default()
        },
    );
    let portal = f.private_token();
    let session = f.session();
    let everything = list(&session, "contacts", &session.context(BTreeMap::new())).await;
    assert_eq!(
        everything.len(),
        450,
        "a read without a cursor finds them all"
    );

    // Two contacts change in HubSpot a day after the last read.
    f.clock.advance_by(Duration::from_secs(86_400));
    let since = f.clock.now_ms();
    let contacts = f.sim.records(portal, Object::Contacts);
    for c in &contacts[10..12] {
        f.sim
            .edit(
                portal,
                Object::Contacts,
                c["id"].as_str().unwrap(),
                json!({"jobtitle": "Director"}),
            )
            .unwrap();
    }
    let inc = session.spec().file().resources["contacts"]
        .list
        .as_ref()
        .unwrap()
        .incremental
        .clone()
        .unwrap();
    let at = jiff::Timestamp::from_millisecond(since as i64).unwrap();
    let cursor = weft_engine::cursor::format(at, &inc);
    assert_eq!(
        cursor,
        (since - 2_000).to_string(),
        "epoch milliseconds, two seconds of overlap before the last read"
    );
    let ctx = RequestContext {
        cursor: Some(cursor),
        ..session.context(BTreeMap::new())
    };
    let changed = list(&session, "contacts", &ctx).await;
    let ids: Vec<&str> = changed.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            contacts[10]["id"].as_str().unwrap(),
            contacts[11]["id"].as_str().unwrap()
        ]
    );
    assert_eq!(changed[0]["properties"]["jobtitle"], "Director");
    let searches: Vec<_> = f
        .sim
        .observed()
        .log
        .requests()
        .into_iter()
        .filter(|r| r.path == "/crm/v3/objects/contacts/search")
        .collect();
    assert_eq!(
        searches.len(),
        4,
        "three pages of 200 for everything, one for the change"
    );
    assert!(
        searches
            .iter()
            .all(|r| r.method == "POST" && r.query.is_empty())
    );
}

#[tokio::test]
async fn a_batch_of_contacts_is_matched_by_email_and_one_refused_fails_alone() {
    let f = Fixture::new("batch", HubSpotConfig::default());
    let portal = f.private_token();
    let session = f.session();
    let taken = f.sim.records(portal, Object::Contacts)[3]["properties"]["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let contact =
        |email: &str, first: &str| json!({"properties": {"email": email, "firstname": first}});
    let records = [
        contact("ana@new.example", "Ana"),
        contact(&taken, "Taken"),
        contact("Bo@New.Example", "Bo"),
    ];
    let file = session.spec().file();
    for r in &records {
        assert!(
            weft_engine::write::check_record(&file.resources["contacts"], r, true).is_empty(),
            "{r}"
        );
    }
    let ctx = session.context(BTreeMap::new());
    let results = session
        .write("contacts", "create", &ctx, &records, None)
        .await
        .unwrap();
    let statuses: Vec<&str> = results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, ["ok", "failed", "ok"]);
    assert!(
        results[1].errors[0].contains("Contact already exists"),
        "{:?}",
        results[1].errors
    );
    // HubSpot answered the two created contacts in another order than they were sent; each
    // result still names its own.
    for (i, email) in [(0, "ana@new.example"), (2, "bo@new.example")] {
        let made = f
            .sim
            .record(portal, Object::Contacts, results[i].id.as_deref().unwrap())
            .unwrap();
        assert_eq!(made["properties"]["email"], email);
    }
    assert_eq!(f.sim.created(portal, Object::Contacts), 2);
    let sent = f.sim.observed().log.requests().last().unwrap().clone();
    assert_eq!(sent.status, 207);

    // An update of a contact that no longer exists fails alone, named in errors[].context.ids.
    let updates = [
        json!({"id": results[0].id.clone().unwrap(), "properties": {"lastname": "Silva"}}),
        json!({"id": "999999999", "properties": {"lastname": "Gone"}}),
    ];
    let updated = session
        .write("contacts", "update", &ctx, &updates, None)
        .await
        .unwrap();
    let statuses: Vec<&str> = updated.iter().map(|r| r.status).collect();
    assert_eq!(statuses, ["ok", "failed"]);
    assert!(
        updated[1].errors[0].contains("Could not get some CONTACT objects"),
        "{:?}",
        updated[1].errors
    );
}

#[tokio::test]
async fn an_email_taken_by_another_contact_is_a_conflict() {
    let f = Fixture::new("conflict", HubSpotConfig::default());
    let portal = f.private_token();
    let session = f.session();
    let contacts = f.sim.records(portal, Object::Contacts);
    let taken = contacts[1]["properties"]["email"].as_str().unwrap();
    let change = json!({"id": contacts[0]["id"], "properties": {"email": taken}});
    let err = session
        .write(
            "contacts",
            "update",
            &session.context(BTreeMap::new()),
            &[change],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            SessionError::Call(CallError::Refused {
                class: ErrorClass::Conflict,
                status: 409,
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(classify(&err), Failure::Conflict);
    let unchanged = f
        .sim
        .record(
            portal,
            Object::Contacts,
            contacts[0]["id"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(
        unchanged["properties"]["email"],
        contacts[0]["properties"]["email"]
    );
}

#[tokio::test]
async fn a_ten_secondly_429_is_waited_out_and_a_daily_one_is_a_checkpoint() {
    let f = Fixture::new(
        "burst",
        HubSpotConfig {
            limits: HubSpotLimits {
                burst_per_10s: 3,
                ..HubSpotLimits::default()
            },
            ..HubSpotConfig::default()
        },
    );
    let portal = f.private_token();
    let session = f.session();
    // Another integration of the same account spends the ten seconds' budget first.
    let http = weft_engine::http::client().unwrap();
    let token = f.sim.private_app_token(portal).unwrap().to_owned();
    for _ in 0..3 {
        let answer = http
            .get(format!("{}/account-info/v3/details", f.sim.api_url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let started = f.clock.now_ms();
    test_call(&session, None).await.unwrap();
    let log = f.sim.observed().log.requests();
    assert_eq!(log.iter().filter(|r| r.status == 429).count(), 1);
    assert!(
        f.clock.now_ms() - started >= 10_000,
        "waited for the ten seconds to pass: {:?}",
        f.clock.waits()
    );
    assert!(
        f.clock
            .waits()
            .iter()
            .all(|w| *w <= Duration::from_secs(10)),
        "waited for the named budget's window, not a blind backoff: {:?}",
        f.clock.waits()
    );
    // From then on HubSpot's remaining-calls header keeps Weft inside the budget: no more 429s.
    for _ in 0..6 {
        test_call(&session, None).await.unwrap();
    }
    let log = f.sim.observed().log.requests();
    assert_eq!(
        log.iter().filter(|r| r.status == 429).count(),
        1,
        "{:?}",
        f.clock.waits()
    );

    let f = Fixture::new(
        "daily",
        HubSpotConfig {
            limits: HubSpotLimits {
                daily: 3,
                ..HubSpotLimits::default()
            },
            ..HubSpotConfig::default()
        },
    );
    let portal = f.private_token();
    let session = f.session();
    // Another integration of the account spends the day's calls: the next call is a 429 naming
    // DAILY, which stops the run instead of waiting.
    let token = f.sim.private_app_token(portal).unwrap().to_owned();
    for _ in 0..3 {
        http.get(format!("{}/account-info/v3/details", f.sim.api_url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
    }
    let err = session
        .call(
            "owners",
            weft_engine::request::OpKind::List,
            &session.context(BTreeMap::new()),
            &[],
            &[],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            SessionError::Call(CallError::DailyCap { budget, .. }) if budget == "daily"
        ),
        "{err}"
    );
    assert_eq!(classify(&err), Failure::RateLimited);
    let refused = f.sim.observed().log.requests();
    assert_eq!(
        refused.iter().filter(|r| r.status == 429).count(),
        1,
        "a daily cap is not retried"
    );

    // When Weft spends the day itself, the remaining-calls header stops it before HubSpot has to.
    let f = Fixture::new(
        "daily-own",
        HubSpotConfig {
            limits: HubSpotLimits {
                daily: 3,
                ..HubSpotLimits::default()
            },
            ..HubSpotConfig::default()
        },
    );
    f.private_token();
    let session = f.session();
    for _ in 0..3 {
        test_call(&session, None).await.unwrap();
    }
    let err = test_call(&session, None).await.unwrap_err();
    assert!(
        matches!(
            &err,
            weft_engine::connect::TestFailure::Call(SessionError::Limit(
                weft_engine::limits::LimitError::Exhausted { budget, .. }
            )) if budget == "daily"
        ),
        "{err:?}"
    );
    assert!(
        f.sim
            .observed()
            .log
            .requests()
            .iter()
            .all(|r| r.status == 200),
        "no call was sent past the cap"
    );
}

/// A flow reads contacts through search as a keyset: each page restarts from the newest change
/// seen, so reading more than 10,000 contacts never asks HubSpot for a page past its 10,000th
/// result, which it refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_reads_more_contacts_than_one_search_can_reach() {
    use weft_engine::run::{Endpoint, Run};
    use weft_engine::state::{RunOutcome, State};
    use weft_harness::hubspot::SEARCH_CAP;
    let f = Fixture::new(
        "keyset",
        HubSpotConfig {
            size: 10_500,
            limits: HubSpotLimits::unlimited(),
            ..HubSpotConfig::default()
        },
    );
    let portal = f.private_token();
    let contacts = f.sim.records(portal, Object::Contacts).len();
    assert!(contacts > SEARCH_CAP, "{contacts}");
    std::fs::create_dir_all(&f.dir).unwrap();
    let path = f.dir.join("read-contacts.toml");
    std::fs::write(
        &path,
        r#"
description = "Reads every contact and writes nothing."

[connections.hubspot]
connector = "hubspot"

[streams.contacts]
source = { connection = "hubspot", resource = "contacts" }

[[streams.contacts.skip]]
when = "true"
reason = "only read"

[streams.contacts.write]
connection = "hubspot"
resource = "companies"
fields = { properties = "{'name': record.properties.email}" }
"#,
    )
    .unwrap();
    let flow = weft_engine::flow::Flow::load(&path).unwrap();
    let session = f.session();
    let state = State::open(&f.dir.join("state.db")).unwrap();
    let report = Run {
        flow: &flow,
        endpoints: BTreeMap::from([(
            "hubspot".to_owned(),
            Endpoint {
                session: &session,
                tenant: None,
            },
        )]),
        state: &state,
        clock: f.clock.as_ref() as &dyn Clock,
        dry_run: false,
        only: None,
        wait: None,
        progress: None,
    }
    .run()
    .await
    .unwrap();
    assert_eq!(report.outcome, RunOutcome::Completed, "{:?}", report.plan);
    assert_eq!(
        report.summary.skipped, contacts as u64,
        "every contact read once"
    );
    let log = f.sim.observed().log.requests();
    let searches: Vec<_> = log
        .iter()
        .filter(|r| r.path == "/crm/v3/objects/contacts/search")
        .collect();
    assert!(
        searches.iter().all(|r| r.status == 200),
        "no search was refused"
    );
    assert!(
        searches.len() > contacts / 200,
        "{} searches of 200 for {contacts} contacts",
        searches.len()
    );
    assert_eq!(f.sim.created(portal, Object::Companies), 0);
}
