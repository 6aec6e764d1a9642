//! The console's Flows, Runs and Errors pages against the Kantata and Xero simulators: the
//! shipped kantata-xero flow in a workspace whose connections reach the simulators, driven
//! request by request; every page checked for the secrets it must never show.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt as _;
use weft_engine::workspace::Workspace;
use weft_harness::kantata::KantataSim;
use weft_harness::xero::XeroSim;
use weft_server::{Config, Role, Store};

const ADMIN_PW: &str = "correct horse battery";
const MEMBER_PW: &str = "member password 42";
const FLOW: &str = "kantata-xero";

struct Res {
    status: StatusCode,
    location: Option<String>,
    cookies: Vec<String>,
    body: String,
}

struct Browser {
    cookie: String,
    csrf: String,
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// Both simulators on the wall clock (the console runs flows on it), a workspace with the
/// shipped template and its two connections, and the console over it.
struct World {
    kantata: KantataSim,
    xero: XeroSim,
    tenant: String,
    dir: PathBuf,
    app: axum::Router,
    bodies: std::cell::RefCell<Vec<String>>,
    /// The tokens sealed for the connections, which no page may show.
    secrets: Vec<String>,
}

impl World {
    /// `currencies`: what the Xero organisation accepts besides its base currency (none: every
    /// Kantata invoice, in USD, is refused with Xero's message).
    async fn new(name: &str, invoices: usize, currencies: Vec<String>) -> Self {
        Self::with_latency(name, invoices, currencies, None).await
    }

    /// The same, each Xero call taking `latency` (so a run lasts a while).
    async fn with_latency(
        name: &str,
        invoices: usize,
        currencies: Vec<String>,
        latency: Option<Duration>,
    ) -> Self {
        let common::Sims {
            kantata,
            xero,
            tenant,
            dir,
            secrets,
        } = common::sims(&format!("flows-{name}"), invoices, currencies, latency).await;
        let users = Store::open(&dir.join(".weft")).unwrap();
        users.add_user("alice", ADMIN_PW, Role::Member).unwrap();
        users.add_user("bob", MEMBER_PW, Role::Member).unwrap();
        drop(users);
        let app = weft_server::router(Config {
            workspace: dir.clone(),
            listen: "127.0.0.1:8080".parse().unwrap(),
            tls: None,
            insecure_http: false,
            specs: common::specs(),
        })
        .unwrap();
        Self {
            kantata,
            xero,
            tenant,
            dir,
            app,
            bodies: Default::default(),
            secrets,
        }
    }

    async fn send(&self, req: Request<Body>) -> Res {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let location = headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        let cookies = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let bytes = axum::body::to_bytes(res.into_body(), 4 << 20)
            .await
            .unwrap();
        let body = String::from_utf8(bytes.to_vec()).unwrap();
        self.bodies.borrow_mut().push(body.clone());
        Res {
            status,
            location,
            cookies,
            body,
        }
    }

    async fn get(&self, path: &str, b: &Browser) -> Res {
        self.send(
            Request::get(path)
                .header(header::COOKIE, &b.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn post(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Res {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    /// A POST of a signed-in browser's form, with its CSRF token.
    async fn submit(&self, path: &str, b: &Browser, form: &[(&str, &str)]) -> Res {
        let mut all = vec![("csrf", b.csrf.as_str())];
        all.extend_from_slice(form);
        self.post(path, Some(&b.cookie), &all).await
    }

    async fn login(&self, name: &str, password: &str) -> Browser {
        let page = self
            .send(Request::get("/login").body(Body::empty()).unwrap())
            .await;
        let cookie = page.cookies[0].split(';').next().unwrap().to_owned();
        let csrf = csrf_of(&page.body);
        let res = self
            .post(
                "/login",
                Some(&cookie),
                &[
                    ("csrf", &csrf),
                    ("name", name),
                    ("password", password),
                    ("next", "/flows"),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        let cookie = res
            .cookies
            .iter()
            .find(|c| c.starts_with("weft_session="))
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let mut b = Browser {
            cookie,
            csrf: String::new(),
        };
        let page = self.get("/flows", &b).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        b.csrf = csrf_of(&page.body);
        b
    }

    /// Follows run `path` (`/runs/N`) until it is no longer running; returns its page.
    async fn until_ended(&self, path: &str, b: &Browser) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let page = self.get(path, b).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            if !page.body.contains("role=\"status\">running<") {
                return page.body;
            }
            assert!(
                Instant::now() < deadline,
                "the run did not end: {}",
                page.body
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn audit(&self) -> Vec<(String, String, String)> {
        Store::open(&self.dir.join(".weft"))
            .unwrap()
            .audit_log(1000)
            .unwrap()
            .into_iter()
            .map(|e| (e.actor, e.action, e.target))
            .collect()
    }

    fn assert_secrets_absent(&self) {
        for body in self.bodies.borrow().iter() {
            for s in &self.secrets {
                assert!(!body.contains(s.as_str()), "a page shows a secret: {body}");
            }
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The number in a `/runs/N` location.
fn run_path(res: &Res) -> String {
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let at = res.location.clone().unwrap();
    assert!(at.starts_with("/runs/"), "{at}");
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_lists_creates_then_sync_now_runs_once_and_the_run_shows_its_counts() {
    let w = World::new("sync", 6, vec!["USD".into()]).await;
    let eligible = w
        .kantata
        .invoices()
        .into_iter()
        .filter(|i| !i.draft && i.status != "cancelled")
        .count();
    assert!(eligible > 0);
    let alice = w.login("alice", ADMIN_PW).await;
    let bob = w.login("bob", MEMBER_PW).await;

    // The flow is listed and shown with its streams, options and mapping tables.
    let list = w.get("/flows", &alice).await;
    assert!(
        list.body.contains("kantata-xero") && list.body.contains("never run"),
        "{}",
        list.body
    );
    let page = w.get("/flows/kantata-xero", &bob).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for text in [
        "invoices",
        "payments",
        "default-account-code",
        "tax-types",
        "expense-accounts",
    ] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
    let missing = w.get("/flows/no-such-flow", &alice).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing.body.contains("the flows are: kantata-xero"),
        "{}",
        missing.body
    );

    // The dry-run preview lists the creates and changes nothing.
    let preview = w.submit("/flows/kantata-xero/preview", &bob, &[]).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert!(
        preview.body.contains("Nothing was changed"),
        "{}",
        preview.body
    );
    assert!(
        preview.body.matches("<code>create</code>").count() >= eligible,
        "{}",
        preview.body
    );
    assert_eq!(w.xero.creates(&w.tenant), 0);

    // While a run holds the flow (here another process's), Sync now and the preview are
    // refused, saying so, and nothing starts.
    let state_path = w.dir.join(".weft/state.db");
    let held = weft_engine::runlock::FlowLock::acquire(&state_path, FLOW, None)
        .await
        .unwrap();
    let refused = w.submit("/flows/kantata-xero/sync", &alice, &[]).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(refused.body.contains("already running"), "{}", refused.body);
    let refused = w.submit("/flows/kantata-xero/preview", &alice, &[]).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    let flows = w.get("/flows", &alice).await;
    assert!(flows.body.contains(">running<"), "{}", flows.body);
    drop(held);
    assert_eq!(w.xero.creates(&w.tenant), 0);

    // Without the form's token nothing runs.
    let forged = w
        .post("/flows/kantata-xero/sync", Some(&bob.cookie), &[])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let forged = w
        .post(
            "/flows/kantata-xero/sync",
            Some(&bob.cookie),
            &[("csrf", &alice.csrf)],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // A member's Sync now runs the flow; the run's page follows it to its end, with counts.
    let started = w.submit("/flows/kantata-xero/sync", &bob, &[]).await;
    let at = run_path(&started);
    let page = w.until_ended(&at, &bob).await;
    assert!(page.contains("role=\"status\">completed<"), "{page}");
    assert!(
        page.contains(&format!("<td data-count=\"created\">{eligible}</td>")),
        "{page}"
    );
    assert_eq!(w.xero.creates_of(&w.tenant, "Invoices") as usize, eligible);

    // The history lists it, the flow shows it as its last run, and the progress stream of an
    // ended run says so at once and closes.
    let runs = w.get("/runs?flow=kantata-xero", &alice).await;
    let id = at.trim_start_matches("/runs/");
    assert!(
        runs.body
            .contains(&format!("<a href=\"/runs/{id}\">{id}</a>")),
        "{}",
        runs.body
    );
    let flow = w.get("/flows/kantata-xero", &alice).await;
    assert!(
        flow.body.contains(&format!("Run {id}</a>")),
        "{}",
        flow.body
    );
    let events = w.get(&format!("{at}/events"), &alice).await;
    assert_eq!(events.status, StatusCode::OK);
    assert!(events.body.contains("event: end"), "{}", events.body);
    assert!(
        events.body.contains("\"outcome\":\"completed\""),
        "{}",
        events.body
    );
    assert_eq!(
        w.get("/runs/999999", &alice).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        w.get("/runs/abc", &alice).await.status,
        StatusCode::NOT_FOUND
    );

    // A second run finds nothing to create.
    let again = w.submit("/flows/kantata-xero/sync", &alice, &[]).await;
    let page = w.until_ended(&run_path(&again), &alice).await;
    assert!(page.contains("<td data-count=\"created\">0</td>"), "{page}");
    assert_eq!(w.xero.creates_of(&w.tenant, "Invoices") as usize, eligible);

    let audit = w.audit();
    for (who, action) in [
        ("bob", "preview"),
        ("bob", "sync"),
        ("alice", "sync refused"),
        ("alice", "preview refused"),
        ("alice", "sync"),
    ] {
        assert!(
            audit
                .iter()
                .any(|(a, b, t)| a == who && b == action && t == FLOW),
            "{who} {action}: {audit:?}"
        );
    }
    w.assert_secrets_absent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_shows_in_errors_and_is_retried_then_resolved_with_a_note() {
    // The organisation takes only its base currency: Xero refuses every Kantata invoice.
    let w = World::new("errors", 3, Vec::new()).await;
    let alice = w.login("alice", ADMIN_PW).await;
    let bob = w.login("bob", MEMBER_PW).await;
    let started = w.submit("/flows/kantata-xero/sync", &alice, &[]).await;
    let page = w.until_ended(&run_path(&started), &alice).await;
    assert!(page.contains("Errors queued by this run"), "{page}");

    let state = weft_engine::state::State::open(&w.dir.join(".weft/state.db")).unwrap();
    let queued = state.errors(Some(FLOW), false).unwrap();
    assert!(!queued.is_empty(), "{page}");
    let e = &queued[0];
    let list = w.get("/errors", &bob).await;
    assert_eq!(list.status, StatusCode::OK);
    // The provider's message and the record, escaped as HTML.
    let shown = e
        .message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;");
    assert!(
        list.body.contains(&shown) || list.body.contains(&e.message),
        "{}\n{}",
        e.message,
        list.body
    );
    assert!(
        list.body.contains(&format!("<code>{}</code>", e.source_id)),
        "{}",
        list.body
    );
    let detail = w.get(&format!("/errors/{}", e.id), &bob).await;
    assert!(
        detail.body.contains("Resolve") && detail.body.contains("Retry"),
        "{}",
        detail.body
    );

    // Forms without the session's token change nothing.
    let forged = w
        .post(
            &format!("/errors/{}/retry", e.id),
            Some(&bob.cookie),
            &[("csrf", "nope")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(state.error(e.id).unwrap().unwrap().status, "open");

    // A member marks it for retry.
    let retried = w
        .submit(&format!("/errors/{}/retry", e.id), &bob, &[])
        .await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER, "{}", retried.body);
    assert_eq!(state.error(e.id).unwrap().unwrap().status, "retry");
    let again = w
        .submit(&format!("/errors/{}/retry", e.id), &bob, &[])
        .await;
    assert_eq!(
        again.location.as_deref(),
        Some(format!("/errors?already={}", e.id).as_str())
    );

    // The next run reads the record again: Xero refuses it again, and the entry counts it.
    let rerun = w.submit("/flows/kantata-xero/sync", &alice, &[]).await;
    w.until_ended(&run_path(&rerun), &alice).await;
    let after = state.error(e.id).unwrap().unwrap();
    assert_eq!(after.status, "open", "{after:?}");
    assert!(
        after.attempts > e.attempts && after.run > e.run,
        "{after:?}"
    );

    // Resolve needs a note; with one it closes the entry.
    let empty = w
        .submit(
            &format!("/errors/{}/resolve", e.id),
            &bob,
            &[("note", "  ")],
        )
        .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(empty.body.contains("note"), "{}", empty.body);
    let done = w
        .submit(
            &format!("/errors/{}/resolve", e.id),
            &bob,
            &[("note", "entered by hand in <Xero>")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let closed = state.error(e.id).unwrap().unwrap();
    assert_eq!(closed.status, "resolved");
    assert_eq!(closed.note.as_deref(), Some("entered by hand in <Xero>"));
    let shown = w.get("/errors?all=1", &alice).await;
    assert!(
        shown.body.contains("entered by hand in &lt;Xero&gt;"),
        "{}",
        shown.body
    );
    let twice = w
        .submit(&format!("/errors/{}/retry", e.id), &bob, &[])
        .await;
    assert_eq!(twice.status, StatusCode::BAD_REQUEST);
    assert!(twice.body.contains("closed"), "{}", twice.body);
    assert_eq!(
        w.get("/errors/424242", &bob).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        w.get("/errors/x1", &bob).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        w.get("/errors?retried=abc", &bob).await.status,
        StatusCode::OK
    );

    let audit = w.audit();
    let target = format!("error {}", e.id);
    for action in ["error retry", "error resolve"] {
        assert!(
            audit
                .iter()
                .any(|(a, b, t)| a == "bob" && b == action && *t == target),
            "{action}: {audit:?}"
        );
    }
    w.assert_secrets_absent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_edits_a_mapping_table_through_the_import_checks_and_a_member_cannot() {
    let w = World::new("tables", 1, vec!["USD".into()]).await;
    let alice = w.login("alice", ADMIN_PW).await;
    let bob = w.login("bob", MEMBER_PW).await;
    let file = w.dir.join("tables/line-accounts.csv");
    let original = std::fs::read_to_string(&file).unwrap();
    let at = "/flows/kantata-xero/tables/accounts";

    // The flow page shows the rows to everyone, the editor only to administrators.
    let page = w.get("/flows/kantata-xero", &bob).await;
    assert!(
        page.body.contains("<code>fixed_fee</code>"),
        "{}",
        page.body
    );
    assert!(!page.body.contains(at), "{}", page.body);
    assert_eq!(w.get(at, &bob).await.status, StatusCode::FORBIDDEN);
    let refused = w
        .submit(
            at,
            &bob,
            &[("rows", "Mavenlink ID,External ID\ntime,999\n")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.body.contains("Only an administrator"),
        "{}",
        refused.body
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);

    let form = w.get(at, &alice).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert!(form.body.contains(",time,,200"), "{}", form.body);

    // A bad row is located and nothing is written.
    let bad = w
        .submit(
            at,
            &alice,
            &[("rows", "Mavenlink ID,External ID\ntime,210\n,200\n")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(
        bad.body.contains("Line 3") && bad.body.contains("nothing was written"),
        "{}",
        bad.body
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    let empty = w.submit(at, &alice, &[("rows", "  ")]).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);

    // Without the token nothing is written.
    let forged = w
        .post(
            at,
            Some(&alice.cookie),
            &[("rows", "Mavenlink ID,External ID\ntime,999\n")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);

    // An M-Bridge export replaces the file, in M-Bridge's columns.
    let saved = w
        .submit(
            at,
            &alice,
            &[(
                "rows",
                "Mavenlink Display Name,Mavenlink ID,External Display Name,External ID\r\nTime,time,Consulting,210\r\nExpenses,expense,Sales,200\r\n",
            )],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert_eq!(
        saved.location.as_deref(),
        Some("/flows/kantata-xero?saved=accounts")
    );
    let now = std::fs::read_to_string(&file).unwrap();
    assert!(
        now.contains("Mavenlink ID") && now.contains("time,Consulting,210"),
        "{now}"
    );
    let page = w.get("/flows/kantata-xero?saved=accounts", &alice).await;
    assert!(
        page.body.contains("Saved the rows of table accounts.")
            && page.body.contains("<code>210</code>"),
        "{}",
        page.body
    );

    // A table kept inline has no file to write; an unknown table is not found.
    let inline = w
        .submit(
            "/flows/kantata-xero/tables/tax-types",
            &alice,
            &[("rows", "Mavenlink ID,External ID\ntime,NONE\n")],
        )
        .await;
    assert_eq!(inline.status, StatusCode::BAD_REQUEST);
    assert!(inline.body.contains("inline"), "{}", inline.body);
    assert_eq!(
        w.get("/flows/kantata-xero/tables/nope", &alice)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let audit = w.audit();
    assert!(
        audit
            .iter()
            .any(|(a, b, t)| a == "alice" && b == "table import" && t == "kantata-xero/accounts"),
        "{audit:?}"
    );
    w.assert_secrets_absent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_run_refuses_a_second_click_and_streams_its_progress_until_it_ends() {
    // Every Xero call takes 300 ms, so the run lasts long enough to be seen running.
    let w = World::with_latency(
        "live",
        8,
        vec!["USD".into()],
        Some(Duration::from_millis(300)),
    )
    .await;
    let alice = w.login("alice", ADMIN_PW).await;
    let bob = w.login("bob", MEMBER_PW).await;
    let started = w.submit("/flows/kantata-xero/sync", &alice, &[]).await;
    let at = run_path(&started);

    // A second click while it runs is refused, saying so; no second run appears.
    let second = w.submit("/flows/kantata-xero/sync", &bob, &[]).await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.body);
    assert!(second.body.contains("already running"), "{}", second.body);

    // The page of a running run refreshes itself without JavaScript and names its events.
    let page = w.get(&at, &bob).await;
    assert!(
        page.body.contains("role=\"status\">running<"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<noscript><meta http-equiv=\"refresh\" content=\"3\"></noscript>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(&format!("data-events=\"{at}/events\"")),
        "{}",
        page.body
    );

    // The event stream reports progress, then the end, and closes when the run ends.
    let events = tokio::time::timeout(
        Duration::from_secs(90),
        w.get(&format!("{at}/events"), &bob),
    )
    .await
    .expect("the event stream ends with the run");
    assert_eq!(events.status, StatusCode::OK);
    let progress = events
        .body
        .find("event: progress")
        .expect("a progress event");
    let end = events.body.find("event: end").expect("an end event");
    assert!(progress < end, "{}", events.body);
    assert!(
        events.body.contains("\"outcome\":\"completed\""),
        "{}",
        events.body
    );
    let page = w.until_ended(&at, &bob).await;
    assert!(!page.contains("<noscript><meta"), "{page}");
    let state = weft_engine::state::State::open(&w.dir.join(".weft/state.db")).unwrap();
    assert_eq!(
        state
            .runs(Some(FLOW), 10)
            .unwrap()
            .iter()
            .filter(|r| !r.dry_run)
            .count(),
        1
    );
    let audit = w.audit();
    assert!(
        audit
            .iter()
            .any(|(a, b, t)| a == "bob" && b == "sync refused" && t == FLOW),
        "{audit:?}"
    );
    w.assert_secrets_absent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_that_cannot_run_says_why_and_leaves_nothing_running() {
    let w = World::new("cannot", 1, vec!["USD".into()]).await;
    let alice = w.login("alice", ADMIN_PW).await;
    let mut ws = Workspace::find(&w.dir).unwrap();
    ws.file.connections.shift_remove("xero");
    ws.save().unwrap();
    for _ in 0..2 {
        let res = w.submit("/flows/kantata-xero/sync", &alice, &[]).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.body);
        assert!(
            res.body.contains("uses connection `xero`")
                && res.body.contains("create it on the Connections page"),
            "{}",
            res.body
        );
    }
    let res = w.submit("/flows/kantata-xero/preview", &alice, &[]).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.body);
    let flows = w.get("/flows", &alice).await;
    assert!(!flows.body.contains(">running<"), "{}", flows.body);
    let missing = w.submit("/flows/nope/sync", &alice, &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        w.audit()
            .iter()
            .any(|(a, b, t)| a == "alice" && b == "sync failed" && t == FLOW)
    );
    w.assert_secrets_absent();
}

/// The address of the pager's link `rel` (`next`, `prev`) on a page, unescaped.
fn pager_link(body: &str, rel: &str) -> Option<String> {
    let end = body.find(&format!("\" rel=\"{rel}\""))?;
    let start = body[..end].rfind("href=\"")? + 6;
    Some(body[start..end].replace("&amp;", "&"))
}

/// The ids a list page links to as its rows (`<tr><td><a href="/PREFIX/ID">`).
fn row_ids(body: &str, prefix: &str) -> Vec<i64> {
    let marker = format!("<tr><td><a href=\"/{prefix}/");
    body.split(&marker)
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_histories_and_queues_are_shown_a_page_at_a_time_with_links_between_pages() {
    let w = World::new("pages", 1, vec!["USD".into()]).await;
    let alice = w.login("alice", ADMIN_PW).await;
    // 230 runs; the first queued 150 errors and each of the last 100 one more.
    let state = weft_engine::state::State::open(&w.dir.join(".weft/state.db")).unwrap();
    let mut runs = Vec::new();
    for n in 0..230u64 {
        let id = state.start_run(FLOW, false, 1_000 + n).unwrap();
        state
            .finish_run(
                id,
                &weft_engine::state::RunSummary::default(),
                &weft_engine::state::RunOutcome::Completed,
                2_000 + n,
            )
            .unwrap();
        runs.push(id);
    }
    let mut errors = Vec::new();
    for n in 0..250usize {
        let run = if n < 150 { runs[0] } else { runs[n - 20] };
        errors.push(
            state
                .queue_error(
                    FLOW,
                    "invoice",
                    &format!("K{n}"),
                    "write",
                    "Account code is not valid",
                    Some(run),
                    3_000,
                )
                .unwrap(),
        );
    }

    // The queue: 100 to a page, oldest first, each page linking to its neighbours.
    let first = w.get("/errors", &alice).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(first.body.contains("250 open error(s)"), "{}", first.body);
    assert_eq!(row_ids(&first.body, "errors"), errors[..100]);
    assert_eq!(pager_link(&first.body, "prev"), None);
    let next = pager_link(&first.body, "next").expect("a link to the next page");
    assert_eq!(next, format!("/errors?after={}", errors[99]));
    let second = w.get(&next, &alice).await;
    assert_eq!(row_ids(&second.body, "errors"), errors[100..200]);
    let back = w
        .get(&pager_link(&second.body, "prev").unwrap(), &alice)
        .await;
    assert_eq!(row_ids(&back.body, "errors"), errors[..100]);
    let third = w
        .get(&pager_link(&second.body, "next").unwrap(), &alice)
        .await;
    assert_eq!(row_ids(&third.body, "errors"), errors[200..]);
    assert_eq!(pager_link(&third.body, "next"), None);
    assert!(
        third.body.contains("href=\"/errors\">Oldest errors<"),
        "{}",
        third.body
    );
    // Filters are kept from page to page; a page past the end says so.
    let of_flow = w.get("/errors?flow=kantata-xero&all=1", &alice).await;
    assert_eq!(
        pager_link(&of_flow.body, "next").unwrap(),
        format!("/errors?flow=kantata-xero&all=1&after={}", errors[99])
    );
    let past = w.get("/errors?after=99999999", &alice).await;
    assert_eq!(past.status, StatusCode::OK);
    assert!(
        past.body.contains("No errors on this page."),
        "{}",
        past.body
    );
    assert!(
        past.body.contains("href=\"/errors\">Oldest errors<"),
        "{}",
        past.body
    );

    // The run history: 100 to a page, newest first.
    let newest: Vec<i64> = runs.iter().rev().copied().collect();
    let page = w.get("/runs", &alice).await;
    assert!(page.body.contains("230 run(s)"), "{}", page.body);
    assert_eq!(row_ids(&page.body, "runs"), newest[..100]);
    let older = pager_link(&page.body, "next").unwrap();
    assert_eq!(older, format!("/runs?before={}", newest[99]));
    let page = w.get(&older, &alice).await;
    assert_eq!(row_ids(&page.body, "runs"), newest[100..200]);
    let page = w
        .get(&pager_link(&page.body, "next").unwrap(), &alice)
        .await;
    assert_eq!(row_ids(&page.body, "runs"), newest[200..]);
    assert_eq!(pager_link(&page.body, "next"), None);
    let newer = pager_link(&page.body, "prev").unwrap();
    assert_eq!(newer, format!("/runs?after={}", newest[200]));
    assert_eq!(
        row_ids(&w.get(&newer, &alice).await.body, "runs"),
        newest[100..200]
    );

    // A run that queued 150 errors lists the first 100 and links to all of them.
    let run = w.get(&format!("/runs/{}", runs[0]), &alice).await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.body);
    assert_eq!(row_ids(&run.body, "errors"), errors[..100]);
    let all = format!("/errors?flow=kantata-xero&amp;all=1&amp;run={}", runs[0]);
    assert!(
        run.body
            .contains(&format!("The first 100 of 150; <a href=\"{all}\">")),
        "{}",
        run.body
    );
    let of_run = w.get(&all.replace("&amp;", "&"), &alice).await;
    assert!(of_run.body.contains("150 error(s)"), "{}", of_run.body);
    let of_run_next = w
        .get(&pager_link(&of_run.body, "next").unwrap(), &alice)
        .await;
    assert_eq!(row_ids(&of_run_next.body, "errors"), errors[100..150]);
    // A run with one error shows it alone.
    let one = w.get(&format!("/runs/{}", runs[229]), &alice).await;
    assert_eq!(row_ids(&one.body, "errors"), [errors[249]]);
    assert!(!one.body.contains("The first"), "{}", one.body);

    // The flows list and the flow's page count the open errors.
    let flows = w.get("/flows", &alice).await;
    assert!(
        flows
            .body
            .contains("<a href=\"/errors?flow=kantata-xero\">250</a>"),
        "{}",
        flows.body
    );
    let flow = w.get("/flows/kantata-xero", &alice).await;
    assert!(
        flow.body
            .contains("<a href=\"/errors?flow=kantata-xero\">250</a>"),
        "{}",
        flow.body
    );
    w.assert_secrets_absent();
}

/// With the state on PostgreSQL, a run of the flow held by another machine of the fleet shows
/// as running and refuses Sync now; a job the fleet's queue gave up after its last attempt is
/// on the Errors page with the job named, and its Retry queues the flow again for the workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_state_on_postgres_the_fleet_s_runs_and_given_up_jobs_show() {
    use weft_engine::queue::{AfterFailure, JobStatus, Queue, QueueRules, given_up_job};
    let Some(db) = weft_harness::postgres::database("console-fleet") else {
        return;
    };
    let w = World::new("fleet", 3, vec!["USD".into()]).await;
    let toml = w.dir.join("weft.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str(&format!("\n[state]\nurl = \"{}\"\n", db.url()));
    std::fs::write(&toml, text).unwrap();
    let alice = w.login("alice", ADMIN_PW).await;

    // Another machine: its own folder (so its own lock files), the same database.
    let elsewhere = w.dir.join("other-machine");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let other =
        weft_engine::state::State::open_postgres(db.url(), &elsewhere.join("state.db")).unwrap();
    let held = weft_engine::runlock::FlowLock::acquire_in(&other, FLOW, None)
        .await
        .unwrap();
    let flows = w.get("/flows", &alice).await;
    assert_eq!(flows.status, StatusCode::OK, "{}", flows.body);
    assert!(flows.body.contains(">running<"), "{}", flows.body);
    let page = w.get("/flows/kantata-xero", &alice).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("held by a run of the fleet"),
        "{}",
        page.body
    );
    let refused = w.submit("/flows/kantata-xero/sync", &alice, &[]).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(
        refused.body.contains("held by a run of the fleet"),
        "{}",
        refused.body
    );
    drop(held);
    let flows = w.get("/flows", &alice).await;
    assert!(!flows.body.contains(">running<"), "{}", flows.body);
    assert_eq!(w.xero.creates(&w.tenant), 0);

    // A job given up after its one attempt.
    let state = Workspace::find(&w.dir).unwrap().open_state().unwrap();
    let queue = Queue::open(
        &state,
        QueueRules {
            max_attempts: 1,
            ..QueueRules::default()
        },
    )
    .unwrap();
    let now = weft_engine::state::now_ms();
    let job = queue.enqueue(FLOW, None, None, "by hand", now).unwrap().id;
    queue.take("worker-a", now).unwrap().unwrap();
    assert_eq!(
        queue
            .fail(job, "worker-a", "Xero answered 503 three times", now)
            .unwrap(),
        AfterFailure::GaveUp
    );
    let entry = state
        .errors(Some(FLOW), false)
        .unwrap()
        .into_iter()
        .find(|e| given_up_job(e) == Some(job))
        .expect("the job in the error queue");
    let list = w.get("/errors", &alice).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert!(
        list.body.contains("Xero answered 503 three times"),
        "{}",
        list.body
    );
    let shown = w.get(&format!("/errors/{}", entry.id), &alice).await;
    assert!(
        shown.body.contains(&format!("weft queue show {job}")),
        "{}",
        shown.body
    );
    let retried = w
        .submit(&format!("/errors/{}/retry", entry.id), &alice, &[])
        .await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER, "{}", retried.body);
    let back = w.get(retried.location.as_deref().unwrap(), &alice).await;
    assert!(back.body.contains("queued again"), "{}", back.body);
    let queued: Vec<_> = queue
        .list(false, 10)
        .unwrap()
        .into_iter()
        .filter(|j| j.flow == FLOW && j.status == JobStatus::Queued)
        .collect();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(state.error(entry.id).unwrap().unwrap().status, "retry");
    assert!(
        w.audit()
            .iter()
            .any(|(_, action, target)| action == "error retry"
                && target == &format!("error {}", entry.id))
    );

    // The Queue page, in the menu now: a worker's heartbeat, the jobs with their stream and
    // tenant, and Cancel on those not ended.
    let flows = w.get("/flows", &alice).await;
    assert!(flows.body.contains("href=\"/queue\""), "{}", flows.body);
    let presence = weft_engine::fleet::Presence::of(state.postgres().unwrap()).unwrap();
    let now = weft_engine::state::now_ms();
    let running = queue.take(presence.id(), now).unwrap().unwrap().id;
    let narrow = queue
        .enqueue("other", Some(&w.tenant), Some("payments"), "webhook", now)
        .unwrap()
        .id;
    let page = w.get("/queue", &alice).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // `/` is escaped in the page: the id's random part.
    for shown in [
        presence.id().rsplit('/').next().unwrap(),
        "alive",
        "payments",
        w.tenant.as_str(),
        ">running<",
        ">queued<",
    ] {
        assert!(page.body.contains(shown), "{shown}: {}", page.body);
    }
    let cancelled = w
        .submit(&format!("/queue/{narrow}/cancel"), &alice, &[])
        .await;
    assert_eq!(
        cancelled.status,
        StatusCode::SEE_OTHER,
        "{}",
        cancelled.body
    );
    let back = w.get(cancelled.location.as_deref().unwrap(), &alice).await;
    assert!(
        back.body
            .contains(&format!("Job {narrow} is cancelled; it will not run.")),
        "{}",
        back.body
    );
    let stopping = w
        .submit(&format!("/queue/{running}/cancel"), &alice, &[])
        .await;
    let back = w.get(stopping.location.as_deref().unwrap(), &alice).await;
    assert!(
        back.body
            .contains("its worker stops the run at its next heartbeat"),
        "{}",
        back.body
    );
    assert_eq!(
        queue.job(running).unwrap().unwrap().status,
        JobStatus::Cancelled
    );
    let again = w
        .submit(&format!("/queue/{running}/cancel"), &alice, &[])
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
    assert!(
        again.body.contains("had already ended (cancelled)"),
        "{}",
        again.body
    );
    let bad = w.submit("/queue/nine/cancel", &alice, &[]).await;
    assert_eq!(bad.status, StatusCode::NOT_FOUND, "{}", bad.body);
    assert_eq!(
        w.audit()
            .iter()
            .filter(|(_, action, _)| action == "job cancel")
            .count(),
        2
    );
    w.assert_secrets_absent();
}

/// With the SQLite state the Queue page is not in the menu, and says how to move to a fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sqlite_state_the_queue_page_says_how_to_move() {
    let w = World::new("no-fleet", 1, vec!["USD".into()]).await;
    let alice = w.login("alice", ADMIN_PW).await;
    let flows = w.get("/flows", &alice).await;
    assert!(!flows.body.contains("href=\"/queue\""), "{}", flows.body);
    let page = w.get("/queue", &alice).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body
            .contains("weft state migrate --to postgres://USER@HOST/DATABASE"),
        "{}",
        page.body
    );
    let refused = w.submit("/queue/1/cancel", &alice, &[]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
}
