//! The token lifecycle against the Xero simulator, on its clock: the authorization code flow,
//! refresh ahead of expiry, a lost refresh answer recovered inside the grace period, and
//! `invalid_grant` turning into "needs authorization" that sticks.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{SimWait, shipped};
use weft_engine::limits::Clock;
use weft_engine::oauth::{OAuthApp, TokenSet};
use weft_engine::request::Hosts;
use weft_engine::secrets::{MasterKey, Secret, SecretStore};
use weft_engine::tokens::{TokenError, TokenKeeper};
use weft_harness::faults::{Fault, FaultRule, When};
use weft_harness::xero::{XeroConfig, XeroSim};

const CALLBACK: &str = "http://localhost:8976/oauth/callback";
const RECORD: &str = "connection:x:tokens";

struct Fixture {
    sim: XeroSim,
    clock: Arc<SimWait>,
    dir: std::path::PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let sim = XeroSim::start(XeroConfig {
            organisations: 1,
            size: 3,
            ..XeroConfig::default()
        })
        .unwrap();
        let clock = Arc::new(SimWait::new(sim.clock()));
        let dir = std::env::temp_dir().join(format!("weft-tokens-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self { sim, clock, dir }
    }

    fn app(&self) -> OAuthApp {
        let spec = shipped("xero");
        let hosts = Hosts::new(
            spec.file(),
            &BTreeMap::from([
                ("login".to_owned(), self.sim.login_url()),
                ("identity".to_owned(), self.sim.identity_url()),
                ("api".to_owned(), self.sim.api_url()),
            ]),
        )
        .unwrap();
        OAuthApp::new(
            spec.file(),
            &hosts,
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

    fn keeper(&self) -> TokenKeeper {
        let spec = shipped("xero");
        TokenKeeper::new(
            "x",
            RECORD,
            self.store(),
            Some(self.app()),
            spec.file().auth.oauth2.as_ref().unwrap().refresh.clone(),
            weft_engine::http::client().unwrap(),
            self.clock.clone(),
        )
    }

    /// The authorization code flow, the browser played by following the consent redirect.
    async fn authorize(&self) -> TokenSet {
        let app = self.app();
        let pending = app.start();
        assert!(pending.url.as_str().contains("code_challenge_method=S256"));
        let http = weft_engine::http::client().unwrap();
        let consent = http.get(pending.url.clone()).send().await.unwrap();
        let back = url::Url::parse(consent.headers()["location"].to_str().unwrap()).unwrap();
        let get = |k: &str| {
            back.query_pairs()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(get("state").as_deref(), Some(pending.state.as_str()));
        let code = get("code").unwrap();
        let tokens = app
            .exchange(&http, pending, &code, self.clock.now_ms())
            .await
            .unwrap();
        self.store().put(RECORD, &tokens.to_sealed_json()).unwrap();
        tokens
    }

    /// Whether `token` opens the API (the organisation endpoint).
    async fn works(&self, token: &Secret) -> bool {
        let tenant = self.sim.tenants()[0].0.clone();
        weft_engine::http::client()
            .unwrap()
            .get(format!("{}/api.xro/2.0/Organisation", self.sim.api_url()))
            .bearer_auth(token.expose())
            .header("xero-tenant-id", tenant)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn refreshes_ahead_of_expiry_and_persists_the_rotation_first() {
    let f = Fixture::new("ahead");
    let first = f.authorize().await;
    assert!(format!("{first:?}").contains("[redacted]"));
    let keeper = f.keeper();
    let a = keeper.access_token().await.unwrap();
    assert_eq!(a, first.access_token);
    // 26 of 30 minutes later the token is inside the 5-minute margin: renewed before use.
    f.sim.clock().advance(Duration::from_secs(26 * 60));
    let b = keeper.access_token().await.unwrap();
    assert_ne!(a, b);
    assert!(f.works(&b).await);
    assert_eq!(f.sim.refresh_outcomes(), (1, 0));
    // What is on disk is the rotated pair, so another process starts from it.
    let stored = TokenSet::from_sealed_json(&f.store().get(RECORD).unwrap().unwrap()).unwrap();
    assert_eq!(stored.access_token, b);
    assert_ne!(stored.refresh_token, first.refresh_token);
    // A second keeper (another process) finds it fresh and makes no call.
    assert_eq!(f.keeper().access_token().await.unwrap(), b);
    assert_eq!(f.sim.refresh_outcomes(), (1, 0));
}

#[tokio::test]
async fn a_lost_refresh_answer_is_recovered_within_the_grace_period() {
    let f = Fixture::new("lost");
    f.authorize().await;
    let keeper = f.keeper();
    // Xero rotates the refresh token, then the answer never arrives.
    f.sim
        .identity_observed()
        .faults
        .add(FaultRule::on("/connect/token", When::Nth(1), Fault::LoseResponse).method("POST"));
    f.sim.clock().advance(Duration::from_secs(31 * 60));
    let token = keeper.access_token().await.unwrap();
    assert!(f.works(&token).await);
    assert_eq!(keeper.stats().refresh_calls, 2, "one lost, one retried");
    assert_eq!(f.sim.refresh_outcomes(), (2, 0), "the retry was honoured");
    // The chain goes on: the next expiry refreshes with the token the retry returned.
    f.sim.clock().advance(Duration::from_secs(31 * 60));
    let next = keeper.access_token().await.unwrap();
    assert!(f.works(&next).await);
    assert_eq!(f.sim.refresh_outcomes(), (3, 0));
}

#[tokio::test]
async fn invalid_grant_marks_the_connection_and_keeps_the_tokens() {
    let f = Fixture::new("invalid");
    let tokens = f.authorize().await;
    // The person disconnects the app at Xero: the grant is gone.
    let http = weft_engine::http::client().unwrap();
    f.app()
        .revoke(&http, tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap();
    f.sim.clock().advance(Duration::from_secs(31 * 60));
    let keeper = f.keeper();
    let err = keeper.access_token().await.unwrap_err();
    assert!(
        matches!(err, TokenError::NeedsAuthorization { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("weft connection authorize x"),
        "{err}"
    );
    let refused = f.sim.refresh_outcomes().1;
    assert_eq!(refused, 1);
    // Marked on disk, tokens kept: the next process says the same without asking Xero again.
    let stored = TokenSet::from_sealed_json(&f.store().get(RECORD).unwrap().unwrap()).unwrap();
    assert!(stored.needs_authorization.is_some());
    assert_eq!(stored.refresh_token, tokens.refresh_token);
    let again = f.keeper().access_token().await.unwrap_err();
    assert!(matches!(again, TokenError::NeedsAuthorization { .. }));
    assert_eq!(f.sim.refresh_outcomes().1, refused);
    // Authorizing again clears it.
    f.authorize().await;
    assert!(f.keeper().access_token().await.is_ok());
}

#[tokio::test]
async fn without_a_grace_period_a_lost_refresh_answer_is_not_resent() {
    let f = Fixture::new("nograce");
    f.authorize().await;
    let spec = shipped("xero");
    let mut refresh = spec
        .file()
        .auth
        .oauth2
        .as_ref()
        .unwrap()
        .refresh
        .clone()
        .unwrap();
    refresh.grace = None;
    let keeper = TokenKeeper::new(
        "x",
        RECORD,
        f.store(),
        Some(f.app()),
        Some(refresh),
        weft_engine::http::client().unwrap(),
        f.clock.clone(),
    );
    f.sim
        .identity_observed()
        .faults
        .add(FaultRule::on("/connect/token", When::Nth(1), Fault::LoseResponse).method("POST"));
    f.sim.clock().advance(Duration::from_secs(31 * 60));
    let err = keeper.access_token().await.unwrap_err();
    assert!(matches!(err, TokenError::RefreshLost { .. }), "{err}");
    assert!(err.to_string().contains("weft connection test x"), "{err}");
    assert_eq!(
        keeper.stats().refresh_calls,
        1,
        "the old token was not resent"
    );
    // Nothing was marked: the connection is not declared dead on a guess.
    let stored = TokenSet::from_sealed_json(&f.store().get(RECORD).unwrap().unwrap()).unwrap();
    assert!(stored.needs_authorization.is_none());
}

#[tokio::test]
async fn an_idle_refresh_token_has_a_use_by_date_from_the_spec() {
    let f = Fixture::new("idle");
    let tokens = f.authorize().await;
    let spec = shipped("xero");
    let refresh = spec.file().auth.oauth2.as_ref().unwrap().refresh.clone();
    let use_by = weft_engine::tokens::use_by_ms(&tokens, refresh.as_ref()).unwrap();
    assert_eq!(
        use_by,
        tokens.obtained_at_ms + 60 * 86_400_000,
        "Xero: 60 days"
    );
    let now = tokens.obtained_at_ms;
    assert!(!weft_engine::tokens::lapses_soon(
        use_by,
        refresh.as_ref(),
        now
    ));
    let day = 86_400_000;
    assert!(weft_engine::tokens::lapses_soon(
        use_by,
        refresh.as_ref(),
        now + 50 * day
    ));
    // A pasted token (no refresh token) never lapses from idleness.
    let pasted = TokenSet::fixed(Secret::new("t".into()), now);
    assert_eq!(
        weft_engine::tokens::use_by_ms(&pasted, refresh.as_ref()),
        None
    );
}

/// Issue 15 item 13: a refresh token's absolute lifetime counts from the consent, through
/// refreshes (QuickBooks: five years), and the use-by date is the earlier of that and the idle
/// lifetime; a provider whose refresh tokens never expire declares neither (HubSpot).
#[tokio::test]
async fn an_absolute_refresh_lifetime_counts_from_the_consent_through_refreshes() {
    let f = Fixture::new("absolute");
    let first = f.authorize().await;
    assert_eq!(first.granted_at_ms, first.obtained_at_ms);
    let keeper = f.keeper();
    let day = 86_400_000;
    f.sim.clock().advance(Duration::from_secs(26 * 60));
    keeper.access_token().await.unwrap();
    let refreshed = TokenSet::from_sealed_json(&f.store().get(RECORD).unwrap().unwrap()).unwrap();
    assert!(refreshed.obtained_at_ms > first.obtained_at_ms, "refreshed");
    assert_eq!(
        refreshed.granted_at_ms, first.granted_at_ms,
        "a refresh continues the same consent"
    );
    let mut refresh = shipped("xero")
        .file()
        .auth
        .oauth2
        .as_ref()
        .unwrap()
        .refresh
        .clone()
        .unwrap();
    refresh.idle_lifetime = Some("100d".parse().unwrap());
    refresh.absolute_lifetime = Some("1826d".parse().unwrap());
    let use_by = weft_engine::tokens::use_by_ms(&refreshed, Some(&refresh)).unwrap();
    assert_eq!(
        use_by,
        refreshed.obtained_at_ms + 100 * day,
        "idle binds first"
    );
    // Years of refreshes later the consent's age binds.
    let old = TokenSet {
        obtained_at_ms: first.granted_at_ms + 1800 * day,
        ..refreshed.clone()
    };
    let use_by = weft_engine::tokens::use_by_ms(&old, Some(&refresh)).unwrap();
    assert_eq!(use_by, first.granted_at_ms + 1826 * day);
    assert!(
        weft_engine::tokens::lapses_soon(use_by, Some(&refresh), use_by - 20 * day),
        "warned within 25 days (a quarter of the idle lifetime)"
    );
    // Only an absolute lifetime: warned 30 days ahead at most, not a quarter of five years.
    refresh.idle_lifetime = None;
    let use_by = weft_engine::tokens::use_by_ms(&refreshed, Some(&refresh)).unwrap();
    assert_eq!(use_by, first.granted_at_ms + 1826 * day);
    assert!(!weft_engine::tokens::lapses_soon(
        use_by,
        Some(&refresh),
        use_by - 31 * day
    ));
    assert!(weft_engine::tokens::lapses_soon(
        use_by,
        Some(&refresh),
        use_by - 29 * day
    ));
    // Neither: the refresh token does not lapse.
    refresh.absolute_lifetime = None;
    assert_eq!(
        weft_engine::tokens::use_by_ms(&refreshed, Some(&refresh)),
        None
    );
}

/// Two keepers of one rotating Xero token, each on its own handle of the store (as two
/// processes, or two machines, have), renewing at once: the refresh lock lets one refresh
/// through; the other, re-reading the sealed tokens after taking the lock, finds the new ones.
/// The simulator sees exactly one refresh grant per expiry: no refresh token is sent twice.
async fn two_keepers_refresh_once(f: &Fixture, open: impl Fn() -> SecretStore) {
    let tokens = f.authorize().await;
    open().put(RECORD, &tokens.to_sealed_json()).unwrap();
    let spec = shipped("xero");
    let keeper = || {
        TokenKeeper::new(
            "x",
            RECORD,
            open(),
            Some(f.app()),
            spec.file().auth.oauth2.as_ref().unwrap().refresh.clone(),
            weft_engine::http::client().unwrap(),
            f.clock.clone(),
        )
    };
    let (one, two) = (keeper(), keeper());
    assert_eq!(one.access_token().await.unwrap(), tokens.access_token);
    assert_eq!(two.access_token().await.unwrap(), tokens.access_token);
    for round in 1..=2u64 {
        f.sim.clock().advance(Duration::from_secs(26 * 60));
        let (a, b) = tokio::join!(one.access_token(), two.access_token());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a, b, "both end with the new token");
        assert_eq!(
            f.sim.refresh_outcomes(),
            (round, 0),
            "one refresh per expiry"
        );
        let stored = TokenSet::from_sealed_json(&open().get(RECORD).unwrap().unwrap()).unwrap();
        assert_eq!(stored.access_token, a);
        assert!(f.works(&a).await);
    }
    let (s1, s2) = (one.stats(), two.stats());
    assert_eq!(s1.refresh_calls + s2.refresh_calls, 2);
    assert_eq!(s1.found_fresh + s2.found_fresh, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_the_file_store_refresh_a_rotating_token_once() {
    let f = Fixture::new("two-file");
    let path = f.dir.join("credentials.json");
    two_keepers_refresh_once(&f, || {
        SecretStore::open(
            &path,
            MasterKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap(),
        )
        .unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_machines_on_postgres_refresh_a_rotating_token_once() {
    let Some(pg) = weft_harness::postgres::database("two_machines") else {
        return;
    };
    let f = Fixture::new("two-pg");
    weft_engine::state::State::open_postgres(pg.url(), &f.dir.join("state.db")).unwrap();
    // Each "machine" has its own local folder and its own connection pool.
    let machine = std::sync::atomic::AtomicU32::new(0);
    two_keepers_refresh_once(&f, || {
        let n = machine.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let local = f.dir.join(format!("machine-{n}")).join("credentials.json");
        let pool = weft_engine::state::PgPool::new(
            &weft_engine::state::PgTarget::parse(pg.url()).unwrap(),
        )
        .unwrap();
        SecretStore::open_postgres(
            &pool,
            SecretStore::open(
                &local,
                MasterKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap(),
            )
            .unwrap(),
        )
        .unwrap()
    })
    .await;
    // The file lock was not what held them apart: no lock file was made.
    assert!(!f.dir.join("locks").exists());
}
