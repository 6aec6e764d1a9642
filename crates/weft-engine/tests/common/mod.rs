//! Helpers shared by the engine's tests: the shipped specs, the simulators' clock as the engine's
//! clock, and a Xero access token.
#![allow(dead_code)]

pub(crate) mod faults;
pub(crate) mod local;
pub(crate) mod world;

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use weft_core::{Spec, builtin};
use weft_engine::http::Wait;
use weft_engine::limits::Clock;
use weft_harness::clock::SimClock;
use weft_harness::xero::XeroSim;

/// A shipped spec by id.
pub(crate) fn shipped(id: &str) -> Spec {
    builtin::load_all()
        .into_iter()
        .filter_map(|r| r.spec)
        .find(|s| s.id() == id)
        .expect("a shipped spec")
}

/// The simulators' clock as the engine's: each wait is recorded and moves the clock.
pub(crate) struct SimWait {
    clock: SimClock,
    waits: Mutex<Vec<Duration>>,
}

impl SimWait {
    /// Waits on `clock`.
    pub(crate) fn new(clock: &SimClock) -> Self {
        Self {
            clock: clock.clone(),
            waits: Mutex::new(Vec::new()),
        }
    }

    /// Moves the simulators' clock (time passing between runs).
    pub(crate) fn advance_by(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Every wait so far.
    pub(crate) fn waits(&self) -> Vec<Duration> {
        self.waits.lock().unwrap().clone()
    }
}

impl Wait for SimWait {
    fn wait(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.waits.lock().unwrap().push(duration);
        if self.clock.is_event_driven() {
            return self.clock.sleep(duration);
        }
        self.clock.advance(duration);
        Box::pin(async {})
    }
}

impl Clock for SimWait {
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}

/// The QuickBooks simulator's consent played as a browser would (redirects not followed) and its
/// code exchanged as the connector's spec does it: the company (`realmId` beside the code) and
/// the access token.
pub(crate) async fn quickbooks_token(
    sim: &weft_harness::quickbooks::QuickBooksSim,
) -> (String, String) {
    let http = weft_engine::http::client().unwrap();
    let mut url = url::Url::parse(&format!("{}/connect/oauth2", sim.appcenter_url())).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", sim.client_id())
        .append_pair("response_type", "code")
        .append_pair("scope", "com.intuit.quickbooks.accounting")
        .append_pair("redirect_uri", "http://localhost:8976/oauth/callback")
        .append_pair("state", "s");
    let consent = http.get(url).send().await.unwrap();
    let back = url::Url::parse(consent.headers()["location"].to_str().unwrap()).unwrap();
    let get = |k: &str| {
        back.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    let token: Value = http
        .post(format!("{}/oauth2/v1/tokens/bearer", sim.oauth_url()))
        .basic_auth(sim.client_id(), Some(sim.client_secret()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", get("code").as_str()),
            ("redirect_uri", "http://localhost:8976/oauth/callback"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        get("realmId"),
        token["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned(),
    )
}

/// A client-credentials access token from the Xero simulator's demo app.
pub(crate) async fn xero_token(sim: &XeroSim) -> String {
    let token: Value = weft_engine::http::client()
        .unwrap()
        .post(format!("{}/connect/token", sim.identity_url()))
        .basic_auth(sim.client_id(), Some(sim.client_secret()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    token["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}
