//! The token lifecycle against the Xero simulator, on its clock: the authorization code flow,
//! refresh ahead of expiry, a lost refresh answer recovered inside the grace period, and
//! `invalid_grant` turning into "needs authorization" that sticks, and a refresh cut off after
//! Xero rotated the token (a process killed before sealing) known, recovered and counted on
//! both stores.

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
    /// With a database the credentials are on PostgreSQL (the local file beside them).
    pg: Option<weft_harness::postgres::TestDb>,
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
        Self {
            sim,
            clock,
            dir,
            pg: None,
        }
    }

    /// The same with the credentials on a fresh PostgreSQL database; `None` without PostgreSQL.
    fn on_postgres(name: &str) -> Option<Self> {
        let pg = weft_harness::postgres::database(name)?;
        let mut f = Self::new(name);
        std::fs::create_dir_all(&f.dir).unwrap();
        weft_engine::state::State::open_postgres(pg.url(), &f.dir.join("state.db")).unwrap();
        f.pg = Some(pg);
        Some(f)
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

    /// A new handle on the store (on PostgreSQL a pool of its own, as another process has).
    fn store(&self) -> SecretStore {
        let local = SecretStore::open(
            &self.dir.join("credentials.json"),
            MasterKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap(),
        )
        .unwrap();
        match &self.pg {
            None => local,
            Some(pg) => {
                let target = weft_engine::state::PgTarget::parse(pg.url()).unwrap();
                let pool = weft_engine::state::PgPool::new(&target).unwrap();
                SecretStore::open_postgres(&pool, local).unwrap()
            }
        }
    }

    fn stored(&self) -> TokenSet {
        TokenSet::from_sealed_json(&self.store().get(RECORD).unwrap().unwrap()).unwrap()
    }

    /// A refresh that Xero handles (rotating the refresh token) and whose process is killed
    /// while the answer is on its way: the keeper's work is dropped mid-await, as a SIGKILL
    /// ends it, after its intent was sealed and before the new tokens were.
    async fn cut_off_refresh(&self) {
        self.sim.identity_observed().faults.add(
            FaultRule::on(
                "/connect/token",
                When::Nth(1),
                Fault::HoldResponse(Duration::from_secs(30)),
            )
            .method("POST"),
        );
        let victim = self.keeper();
        let mut refreshing = Box::pin(victim.access_token());
        // Bounded: Xero handles the grant within moments; its answer is held for 30 s.
        for _ in 0..500 {
            if self.sim.refresh_outcomes().0 == 1 {
                break;
            }
            let step = tokio::time::timeout(Duration::from_millis(10), &mut refreshing).await;
            assert!(step.is_err(), "the held answer arrived");
        }
        assert_eq!(
            self.sim.refresh_outcomes(),
            (1, 0),
            "Xero rotated the token"
        );
        drop(refreshing);
        assert_eq!(victim.stats().recoveries, 0);
        self.sim.identity_observed().faults.clear();
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
    assert_eq!(
        keeper.stats().recoveries,
        1,
        "the retry is a resend, counted"
    );
    assert_eq!(f.sim.refresh_reuses(), 1);
    assert_eq!(keeper.notices().len(), 1, "{:?}", keeper.notices());
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

/// Issue 17 item 3: a process killed between Xero's rotation and the sealing of the new tokens.
/// The next refresher finds the sealed intent, sends the old refresh token once more (Xero's
/// grace period), says so naming when and by whom the cut-off refresh began, and counts it.
async fn a_refresh_cut_off_after_rotation_is_recovered_once_and_reported(f: Fixture) {
    let first = f.authorize().await;
    f.sim.clock().advance(Duration::from_secs(31 * 60));
    let began = f.clock.now_ms();
    f.cut_off_refresh().await;
    // What the killed process left: the old tokens and the intent of its refresh, sealed.
    let left = f.stored();
    assert_eq!(left.refresh_token, first.refresh_token);
    let intent = left.refresh_intent.clone().expect("the intent was sealed");
    assert_eq!(intent.started_ms, began);
    assert!(
        intent.by.contains(&std::process::id().to_string()),
        "{intent:?}"
    );
    assert_eq!(left.refresh_recoveries, 0);

    let keeper = f.keeper();
    let token = keeper.access_token().await.unwrap();
    assert!(f.works(&token).await);
    assert_eq!(keeper.stats().refresh_calls, 1, "sent once");
    assert_eq!(keeper.stats().recoveries, 1);
    assert_eq!(
        f.sim.refresh_reuses(),
        1,
        "the old token, within the grace period"
    );
    assert_eq!(f.sim.refresh_outcomes(), (2, 0));
    let notices = keeper.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    let shown = jiff::Timestamp::from_second((began / 1000) as i64)
        .unwrap()
        .to_string();
    assert!(notices[0].contains("connection `x`"), "{}", notices[0]);
    assert!(notices[0].contains(&shown), "{} lacks {shown}", notices[0]);
    assert!(notices[0].contains(&intent.by), "{}", notices[0]);
    for t in f.sim.issued_tokens() {
        assert!(!notices[0].contains(&t), "a token in the notice");
    }
    // The new tokens replaced the record and the intent in one write; the count stays.
    let now = f.stored();
    assert_eq!(now.access_token, token);
    assert_ne!(now.refresh_token, first.refresh_token);
    assert_eq!(now.refresh_intent, None);
    assert_eq!(now.refresh_recoveries, 1);
    // Nothing else is lost: the chain goes on from the recovered token, with no resend.
    f.sim.clock().advance(Duration::from_secs(31 * 60));
    let next = f.keeper().access_token().await.unwrap();
    assert!(f.works(&next).await);
    assert_eq!(f.sim.refresh_reuses(), 1);
    assert_eq!(f.stored().refresh_recoveries, 1);
}

/// Past the grace period the resend is refused: the error says the refresh of that time was cut
/// off and the grace period has passed, names the command to reconnect, and the tokens are kept.
async fn past_the_grace_period_a_cut_off_refresh_says_so(f: Fixture) {
    let first = f.authorize().await;
    f.sim.clock().advance(Duration::from_secs(31 * 60));
    let began = f.clock.now_ms();
    f.cut_off_refresh().await;
    f.sim.clock().advance(Duration::from_secs(31 * 60));
    let keeper = f.keeper();
    let err = keeper.access_token().await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, TokenError::NeedsAuthorization { .. }),
        "{text}"
    );
    let shown = jiff::Timestamp::from_second((began / 1000) as i64)
        .unwrap()
        .to_string();
    assert!(
        text.contains(&format!("refresh begun at {shown}")),
        "{text}"
    );
    assert!(text.contains("cut off"), "{text}");
    assert!(text.contains("grace period"), "{text}");
    assert!(text.contains("`weft connection authorize x`"), "{text}");
    assert_eq!(f.sim.refresh_reuses(), 1);
    assert_eq!(keeper.stats().recoveries, 1);
    // The tokens are kept as they were; the next use says the same without asking Xero.
    let stored = f.stored();
    assert_eq!(stored.refresh_token, first.refresh_token);
    assert_eq!(stored.access_token, first.access_token);
    assert_eq!(stored.refresh_intent, None);
    let again = f.keeper().access_token().await.unwrap_err().to_string();
    assert!(again.contains("cut off"), "{again}");
    assert_eq!(f.sim.refresh_outcomes(), (1, 1));
}

#[tokio::test]
async fn a_cut_off_refresh_is_recovered_on_the_file_store() {
    a_refresh_cut_off_after_rotation_is_recovered_once_and_reported(Fixture::new("cut-file")).await;
}

#[tokio::test]
async fn a_cut_off_refresh_is_recovered_on_postgres() {
    if let Some(f) = Fixture::on_postgres("cut_pg") {
        a_refresh_cut_off_after_rotation_is_recovered_once_and_reported(f).await;
    }
}

#[tokio::test]
async fn a_cut_off_refresh_past_the_grace_period_on_the_file_store() {
    past_the_grace_period_a_cut_off_refresh_says_so(Fixture::new("cut-late-file")).await;
}

#[tokio::test]
async fn a_cut_off_refresh_past_the_grace_period_on_postgres() {
    if let Some(f) = Fixture::on_postgres("cut_late_pg") {
        past_the_grace_period_a_cut_off_refresh_says_so(f).await;
    }
}
