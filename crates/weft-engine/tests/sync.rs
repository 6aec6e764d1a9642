//! The Kantata → Xero invoice sync against both simulators, on their clock: every invoice once in
//! Xero with the right contact and totals to the cent, links written back, payments recorded
//! once, a second run that changes nothing, and a dry run that changes nothing either.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use common::{SimWait, shipped};
use weft_engine::flow::Flow;
use weft_engine::limits::{Clock, Limiter};
use weft_engine::oauth::TokenSet;
use weft_engine::request::{Hosts, Tenant};
use weft_engine::secrets::{MasterKey, Secret, SecretStore};
use weft_engine::session::Session;
use weft_engine::state::{RunOutcome, State};
use weft_engine::sync::{Report, Run};
use weft_engine::tokens::TokenKeeper;
use weft_harness::clock::SimClock;
use weft_harness::kantata::{KantataConfig, KantataSim};
use weft_harness::xero::{XeroConfig, XeroSim};

pub(crate) struct World {
    pub(crate) kantata: KantataSim,
    pub(crate) xero: XeroSim,
    pub(crate) clock: Arc<SimWait>,
    pub(crate) dir: std::path::PathBuf,
    pub(crate) flow: Flow,
    pub(crate) tenant: Tenant,
}

fn session(
    id: &str,
    hosts: BTreeMap<String, String>,
    token: &str,
    clock: Arc<SimWait>,
    dir: &Path,
) -> Session {
    let spec = shipped(id);
    let hosts = Hosts::new(spec.file(), &hosts).unwrap();
    let record = format!("connection:{id}:tokens");
    let mut store = SecretStore::open(
        &dir.join("credentials.json"),
        MasterKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap(),
    )
    .unwrap();
    store
        .put(
            &record,
            &TokenSet::fixed(Secret::new(token.to_owned()), 0).to_sealed_json(),
        )
        .unwrap();
    let http = weft_engine::http::client().unwrap();
    let keeper = TokenKeeper::new(id, &record, store, None, None, http.clone(), clock.clone());
    let limiter = Limiter::new(spec.file(), spec.file().limits.concurrency.default);
    Session::new(spec, hosts, limiter, http, keeper, clock)
}

impl World {
    pub(crate) fn new(name: &str, invoices: usize) -> Self {
        let clock = SimClock::manual(1_760_000_000_000);
        let kantata = KantataSim::start(KantataConfig {
            size: invoices,
            clock: clock.clone(),
            ..KantataConfig::default()
        })
        .unwrap();
        let xero = XeroSim::start(XeroConfig {
            organisations: 1,
            size: 3,
            clock: clock.clone(),
            ..XeroConfig::default()
        })
        .unwrap();
        let dir = std::env::temp_dir().join(format!("weft-sync-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/kantata-xero");
        let flow = Flow::load(&template.join("flows/kantata-xero.toml")).unwrap();
        let (id, tname) = xero.tenants()[0].clone();
        Self {
            kantata,
            xero,
            clock: Arc::new(SimWait::new(&clock)),
            dir,
            flow,
            tenant: Tenant { id, name: tname },
        }
    }

    pub(crate) async fn sessions(&self) -> (Session, Session) {
        let xero_token = common::xero_token(&self.xero).await;
        let source = session(
            "kantata",
            BTreeMap::from([
                ("api".to_owned(), self.kantata.api_url()),
                ("app".to_owned(), self.kantata.app_url()),
            ]),
            self.kantata.personal_token(),
            self.clock.clone(),
            &self.dir,
        );
        let dest = session(
            "xero",
            BTreeMap::from([("api".to_owned(), self.xero.api_url())]),
            &xero_token,
            self.clock.clone(),
            &self.dir,
        );
        (source, dest)
    }

    pub(crate) fn state(&self) -> State {
        State::open(&self.dir.join("state.db")).unwrap()
    }

    pub(crate) async fn run(&self, dry_run: bool) -> Report {
        let (source, dest) = self.sessions().await;
        let state = self.state();
        Run {
            flow: &self.flow,
            source: &source,
            dest: &dest,
            tenant: self.tenant.clone(),
            state: &state,
            clock: self.clock.as_ref() as &dyn Clock,
            dry_run,
        }
        .run()
        .await
        .unwrap()
    }

    /// Xero invoices written by the flow, by invoice number.
    pub(crate) fn written(&self) -> HashMap<String, Vec<serde_json::Value>> {
        let mut by_number: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
        for inv in self.xero.invoices(&self.tenant.id) {
            if let Some(n) = inv["InvoiceNumber"].as_str()
                && n.starts_with("KAN-")
            {
                by_number.entry(n.to_owned()).or_default().push(inv);
            }
        }
        by_number
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cents(v: &serde_json::Value) -> i64 {
    let d: rust_decimal::Decimal = v.to_string().parse().unwrap();
    (d * rust_decimal::Decimal::from(100))
        .round()
        .try_into()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invoice_once_with_totals_to_the_cent_then_payments_back_once() {
    let w = World::new("once", 60);
    let eligible: Vec<_> = w
        .kantata
        .invoices()
        .into_iter()
        .filter(|i| !i.draft && i.status != "cancelled")
        .collect();
    assert!(eligible.len() > 20, "the seed gives enough invoices");

    // A dry run changes nothing.
    let dry = w.run(true).await;
    assert_eq!(dry.outcome, RunOutcome::Completed);
    assert_eq!(
        dry.summary.created as usize,
        eligible.len(),
        "{:?} {:?}",
        dry.outcome,
        &dry.plan[..dry.plan.len().min(5)]
    );
    assert!(w.written().is_empty());

    let first = w.run(false).await;
    assert_eq!(first.outcome, RunOutcome::Completed, "{first:?}");
    assert_eq!(first.summary.failed, 0, "{:?}", first.plan);
    assert_eq!(first.summary.created as usize, eligible.len());
    let written = w.written();
    assert_eq!(written.len(), eligible.len());
    for inv in &eligible {
        let got = &written[&format!("KAN-{}", inv.number)];
        assert_eq!(got.len(), 1, "KAN-{} exactly once", inv.number);
        assert_eq!(
            cents(&got[0]["SubTotal"]),
            inv.total_in_cents,
            "KAN-{} total",
            inv.number
        );
        assert_eq!(got[0]["Type"], "ACCREC");
        assert!(got[0]["Contact"]["ContactID"].is_string());
    }
    // Kantata knows each Xero id.
    let refs = w.kantata.external_references();
    assert_eq!(
        refs.iter().filter(|r| r.service_name == "xero").count(),
        eligible.len()
    );

    // A second run changes nothing.
    let second = w.run(false).await;
    assert_eq!(
        second.summary.created + second.summary.updated,
        0,
        "{:?}",
        second.plan
    );
    assert_eq!(second.summary.contacts_created, 0);

    // Paid in Xero → recorded in Kantata, once.
    // An invoice still awaiting payment in Kantata (one paid there already is left alone).
    let unpaid = eligible.iter().find(|i| i.status == "new").unwrap();
    let number = format!("KAN-{}", unpaid.number);
    let xero_inv = written[&number][0].clone();
    w.xero
        .pay_invoice(
            &w.tenant.id,
            xero_inv["InvoiceID"].as_str().unwrap(),
            &xero_inv["AmountDue"].to_string(),
        )
        .unwrap();
    w.xero.clock().advance(std::time::Duration::from_secs(5));
    let third = w.run(false).await;
    let after = w
        .xero
        .invoice(&w.tenant.id, xero_inv["InvoiceID"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        third.summary.payments_written,
        1,
        "{:?} paid invoice: {} {} cursor {:?} now {}",
        third.plan,
        after["Status"],
        after["UpdatedDateUTC"],
        w.state().cursor("kantata-xero", "payment"),
        w.xero.clock().now_ms()
    );
    let fourth = w.run(false).await;
    assert_eq!(fourth.summary.payments_written, 0);
    let kantata_id = eligible
        .iter()
        .find(|i| format!("KAN-{}", i.number) == number)
        .unwrap()
        .id
        .clone();
    let payments: Vec<_> = w
        .kantata
        .external_payments()
        .into_iter()
        .filter(|p| p.invoice_id.as_deref() == Some(kantata_id.as_str()))
        .collect();
    assert_eq!(payments.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_invoices_each_exactly_once_then_nothing_changes() {
    let w = World::new("2000", 2000);
    let eligible: Vec<_> = w
        .kantata
        .invoices()
        .into_iter()
        .filter(|i| !i.draft && i.status != "cancelled")
        .collect();
    let kinds = eligible.iter().fold([0usize; 4], |mut acc, i| {
        for (a, n) in acc.iter_mut().zip(i.line_counts) {
            *a += usize::from(n > 0);
        }
        acc
    });
    assert!(kinds.iter().all(|&k| k > 0), "mixed line items: {kinds:?}");
    let first = w.run(false).await;
    assert_eq!(first.outcome, RunOutcome::Completed);
    assert_eq!(first.summary.failed, 0);
    let written = w.written();
    assert_eq!(written.len(), eligible.len());
    for inv in &eligible {
        let got = &written[&format!("KAN-{}", inv.number)];
        assert_eq!(got.len(), 1);
        assert_eq!(cents(&got[0]["SubTotal"]), inv.total_in_cents);
        let lines = got[0]["LineItems"].as_array().unwrap();
        assert_eq!(lines.len(), inv.line_counts.iter().sum::<usize>());
        assert!(lines.iter().all(|l| l["AccountCode"].is_string()));
    }
    // At most 60 calls in any minute and 5 in flight for the organisation, and no 429.
    let log = &w.xero.observed().log;
    assert!(log.max_in_window(Some(&w.tenant.id), 60_000) <= 60);
    assert!(log.max_in_flight(Some(&w.tenant.id)) <= 5);
    assert!(log.requests().iter().all(|r| r.status != 429));
    let second = w.run(false).await;
    assert_eq!(
        second.summary.created + second.summary.updated + second.summary.failed,
        0
    );
    assert_eq!(w.written().len(), eligible.len());
}
