//! The shipped hubspot-kantata flow against the HubSpot and Kantata simulators on one simulated
//! clock: closed-won deals become Kantata projects once, under a client group named after the
//! deal's company (found or created once), and each deal names its project afterwards; a deal
//! won later is picked up by the next run, one without a company goes to the default group, a
//! dry run changes nothing; then fifty seeded fault runs (5xx, maintenance, resets, cut and
//! malformed answers, lost responses, 429s, runs dropped at a random request), after which a
//! clean run finishes the job with every won deal at Kantata exactly once.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use weft_engine::flow::Flow;
use weft_engine::limits::{Clock, Limiter};
use weft_engine::oauth::TokenSet;
use weft_engine::request::Hosts;
use weft_engine::run::{Endpoint, Report, Run};
use weft_engine::secrets::{MasterKey, Secret, SecretStore};
use weft_engine::session::Session;
use weft_engine::state::{RunOutcome, State};
use weft_engine::tokens::TokenKeeper;
use weft_harness::clock::SimClock;
use weft_harness::hubspot::{HubSpotConfig, HubSpotLimits, HubSpotSim, Object};
use weft_harness::kantata::{KantataConfig, KantataSim};

use common::faults::fault;
use common::world::template_flow;
use common::{SimWait, shipped};

const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const SEEDS: u64 = 50;

/// A HubSpot account and a Kantata account on one clock, the shipped flow, and its state.
struct Hub {
    hubspot: HubSpotSim,
    kantata: KantataSim,
    clock: Arc<SimWait>,
    dir: std::path::PathBuf,
    flow: Flow,
    portal: u64,
}

fn store(dir: &Path) -> SecretStore {
    SecretStore::open(
        &dir.join("credentials.json"),
        MasterKey::from_base64(KEY).unwrap(),
    )
    .unwrap()
}

impl Hub {
    fn new(name: &str, contacts: usize, limits: HubSpotLimits) -> Self {
        let clock = SimClock::manual(1_760_000_000_000);
        let hubspot = HubSpotSim::start(HubSpotConfig {
            size: contacts,
            clock: clock.clone(),
            limits,
            ..HubSpotConfig::default()
        })
        .unwrap();
        let kantata = KantataSim::start(KantataConfig {
            size: 3,
            clock: clock.clone(),
            ..KantataConfig::default()
        })
        .unwrap();
        let dir = std::env::temp_dir().join(format!("weft-hubkan-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let portal = hubspot.portals()[0];
        let mut s = store(&dir);
        s.put(
            "connection:hubspot:tokens",
            &TokenSet::fixed(
                Secret::new(hubspot.private_app_token(portal).unwrap().to_owned()),
                0,
            )
            .to_sealed_json(),
        )
        .unwrap();
        s.put(
            "connection:kantata:tokens",
            &TokenSet::fixed(Secret::new(kantata.personal_token().to_owned()), 0).to_sealed_json(),
        )
        .unwrap();
        Self {
            hubspot,
            kantata,
            clock: Arc::new(SimWait::new(&clock)),
            dir,
            flow: template_flow("hubspot-kantata"),
            portal,
        }
    }

    fn session(&self, id: &str, hosts: Vec<(String, String)>) -> Session {
        let spec = shipped(id);
        let hosts = Hosts::new(spec.file(), &hosts.into_iter().collect()).unwrap();
        let http = weft_engine::http::client().unwrap();
        let keeper = TokenKeeper::new(
            id,
            &format!("connection:{id}:tokens"),
            store(&self.dir),
            None,
            None,
            http.clone(),
            self.clock.clone(),
        );
        let limiter = Limiter::new(spec.file(), spec.file().limits.concurrency.default);
        Session::new(spec, hosts, limiter, http, keeper, self.clock.clone())
    }

    fn sessions(&self) -> (Session, Session) {
        (
            self.session("hubspot", self.hubspot.hosts()),
            self.session(
                "kantata",
                vec![
                    ("api".to_owned(), self.kantata.api_url()),
                    ("app".to_owned(), self.kantata.app_url()),
                ],
            ),
        )
    }

    fn requests(&self) -> usize {
        self.hubspot.observed().log.requests().len() + self.kantata.observed().log.requests().len()
    }

    /// One run, dropped (as if the process were killed) once the simulators have received
    /// `kill_after` requests; `None` when it was dropped.
    async fn run_until(&self, dry_run: bool, kill_after: Option<usize>) -> Option<Report> {
        let (hubspot, kantata) = self.sessions();
        let state = State::open(&self.dir.join("state.db")).unwrap();
        let run = Run {
            flow: &self.flow,
            endpoints: BTreeMap::from([
                (
                    "hubspot".to_owned(),
                    Endpoint {
                        session: &hubspot,
                        tenant: None,
                    },
                ),
                (
                    "kantata".to_owned(),
                    Endpoint {
                        session: &kantata,
                        tenant: None,
                    },
                ),
            ]),
            state: &state,
            clock: self.clock.as_ref() as &dyn Clock,
            dry_run,
            only: None,
            wait: None,
            progress: None,
        };
        let Some(limit) = kill_after else {
            return Some(run.run().await.expect("the run started"));
        };
        let start = self.requests();
        let watch = async {
            while self.requests() < start + limit {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        };
        tokio::select! {
            report = run.run() => Some(report.expect("the run started")),
            () = watch => None,
        }
    }

    async fn run(&self) -> Report {
        self.run_until(false, None).await.unwrap()
    }

    /// The deals won in HubSpot.
    fn won(&self) -> Vec<Value> {
        self.hubspot
            .records(self.portal, Object::Deals)
            .into_iter()
            .filter(|d| d["properties"]["dealstage"] == "closedwon")
            .collect()
    }

    /// Every Kantata project, read through the connector.
    async fn projects(&self) -> Vec<Value> {
        let (_, kantata) = self.sessions();
        let mut all = Vec::new();
        kantata
            .list("workspaces", &kantata.context(BTreeMap::new()), |r| {
                all.push(r);
                ControlFlow::Continue(())
            })
            .await
            .unwrap();
        all
    }

    /// Kantata projects by the HubSpot deal their title names.
    async fn projects_by_deal(&self) -> HashMap<String, Vec<Value>> {
        let mut out: HashMap<String, Vec<Value>> = HashMap::new();
        for p in self.projects().await {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            if let Some(rest) = title.rsplit_once("[HubSpot deal ") {
                out.entry(rest.1.trim_end_matches(']').to_owned())
                    .or_default()
                    .push(p);
            }
        }
        out
    }

    /// The name of the deal's first company in HubSpot.
    fn company_of(&self, deal: &Value) -> Option<String> {
        let id = deal["associations"]["companies"]["results"][0]["id"].as_str()?;
        let company = self.hubspot.record(self.portal, Object::Companies, id)?;
        company["properties"]["name"].as_str().map(str::to_owned)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every won deal has exactly one project, under its company's group, and names it.
async fn assert_each_won_deal_once(h: &Hub, what: &str) {
    let by_deal = h.projects_by_deal().await;
    let won = h.won();
    assert_eq!(
        by_deal.len(),
        won.len(),
        "{what}: nothing but the won deals"
    );
    for deal in &won {
        let id = deal["id"].as_str().unwrap();
        let projects = by_deal.get(id).map_or(&[][..], Vec::as_slice);
        assert_eq!(projects.len(), 1, "{what}: deal {id} once");
        let project = &projects[0];
        assert_eq!(
            deal["properties"]["kantata_project_id"], project["id"],
            "{what}: deal {id} names its project"
        );
        let group = &project["primary_workspace_group_id"];
        let group = h
            .kantata
            .state()
            .record("workspace_groups", group.as_str().unwrap())
            .unwrap();
        let expected = h
            .company_of(deal)
            .unwrap_or_else(|| "HubSpot deals without a company".to_owned());
        assert_eq!(group["name"], json!(expected), "{what}: deal {id}'s client");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn won_deals_become_projects_once_under_their_company() {
    let h = Hub::new("scenario", 40, HubSpotLimits::default());
    let won = h.won();
    assert!(won.len() >= 5, "{}", won.len());
    let groups = h.kantata.state().count("workspace_groups");

    // A dry run reads and plans, and changes nothing.
    let dry = h.run_until(true, None).await.unwrap();
    assert_eq!(dry.outcome, RunOutcome::Completed);
    assert!(
        dry.plan.iter().filter(|p| p.action == "create").count() == won.len(),
        "{:?}",
        dry.plan
    );
    assert!(h.projects_by_deal().await.is_empty());
    assert_eq!(h.kantata.state().count("workspace_groups"), groups);

    let first = h.run().await;
    assert_eq!(first.outcome, RunOutcome::Completed, "{:?}", first.plan);
    assert_eq!(first.summary.failed, 0, "{:?}", first.plan);
    assert_eq!(first.summary.created, won.len() as u64);
    assert_eq!(first.summary.written_back, won.len() as u64);
    let h_won = h.won();
    assert_each_won_deal_once(&h, "first run").await;
    let companies: std::collections::BTreeSet<String> =
        h_won.iter().filter_map(|d| h.company_of(d)).collect();
    assert_eq!(
        h.kantata.state().count("workspace_groups"),
        groups + companies.len(),
        "one group per company, however many of its deals were won"
    );

    // Nothing changed: nothing to do, though the write-backs changed the deals.
    let second = h.run().await;
    assert_eq!(
        (
            second.summary.created,
            second.summary.written_back,
            second.summary.failed
        ),
        (0, 0, 0)
    );

    // A deal won a day later, and a won deal without a company.
    h.clock.advance_by(Duration::from_secs(86_400));
    let open = h
        .hubspot
        .records(h.portal, Object::Deals)
        .into_iter()
        .find(|d| {
            !["closedwon", "closedlost"].contains(&d["properties"]["dealstage"].as_str().unwrap())
        })
        .unwrap();
    h.hubspot
        .edit(
            h.portal,
            Object::Deals,
            open["id"].as_str().unwrap(),
            json!({"dealstage": "closedwon"}),
        )
        .unwrap();
    h.hubspot
        .add(
            h.portal,
            Object::Deals,
            json!({"dealname": "Walk-in", "dealstage": "closedwon", "amount": "900"}),
            &[],
        )
        .unwrap();
    let third = h.run().await;
    assert_eq!(
        (third.summary.created, third.summary.failed),
        (2, 0),
        "{:?}",
        third.plan
    );
    assert_each_won_deal_once(&h, "after a deal was won").await;
    let searches = h
        .hubspot
        .observed()
        .log
        .requests()
        .iter()
        .filter(|r| r.path == "/crm/v3/objects/deals/search")
        .count();
    assert!(searches >= 4, "deals are read through search: {searches}");
}

/// Faults on the paths the flow uses, runs dropped at random, then a clean finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn won_deals_under_fifty_seeded_faults_land_once() {
    let (mut fired, mut killed, mut failed_runs) = (0u64, 0u64, 0u64);
    for seed in 0..SEEDS {
        let h = Hub::new(&format!("faults-{seed}"), 24, HubSpotLimits::default());
        let mut rng = fastrand::Rng::with_seed(seed);
        for (plan, prefixes) in [
            (
                &h.hubspot.observed().faults,
                &["/crm/v3/objects/deals", "/crm/v3/objects/companies"][..],
            ),
            (
                &h.kantata.observed().faults,
                &["/api/v1/workspaces", "/api/v1/workspace_groups"][..],
            ),
        ] {
            for _ in 0..rng.usize(1..=3) {
                let prefix = prefixes[rng.usize(..prefixes.len())];
                let p = 0.05 + rng.f64() * 0.25;
                plan.add(weft_harness::faults::FaultRule::on(
                    prefix,
                    weft_harness::faults::When::Probability(p),
                    fault(&mut rng),
                ));
            }
        }
        // Faulty runs, some dropped at a random request.
        for attempt in 0..4 {
            let kill = (attempt == 0 || rng.bool()).then(|| rng.usize(1..16));
            match h.run_until(false, kill).await {
                Some(r) if r.outcome == RunOutcome::Completed && r.summary.failed == 0 => break,
                Some(_) => failed_runs += 1,
                None => killed += 1,
            }
            h.clock.advance_by(Duration::from_secs(60));
        }
        fired += h.hubspot.observed().faults.fired() + h.kantata.observed().faults.fired();
        h.hubspot.observed().faults.clear();
        h.kantata.observed().faults.clear();
        // Without faults, a run finishes the job (records queued by a faulty run are retried).
        let mut last = None;
        for _ in 0..4 {
            h.clock.advance_by(Duration::from_secs(60));
            let r = h.run().await;
            if r.outcome == RunOutcome::Completed && r.summary.failed == 0 {
                last = None;
                break;
            }
            last = Some(format!("{:?}: {:?}", r.outcome, r.plan));
        }
        assert!(last.is_none(), "seed {seed}: no clean run: {last:?}");
        assert_each_won_deal_once(&h, &format!("seed {seed}")).await;
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "hubspot-kantata: {SEEDS} seeds, {fired} faults fired, {killed} runs dropped mid-way, {failed_runs} runs failed"
        );
    }
    assert!(fired > SEEDS, "faults fired: {fired}");
    assert!(killed > SEEDS / 2, "runs killed: {killed}");
}
