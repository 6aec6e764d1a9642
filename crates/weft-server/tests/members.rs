//! Members and the connections they own: a member creates, authorizes, edits and deletes only
//! their own connections; the workspace's and other people's are read-only to them (Test
//! aside); an administrator chooses and changes who a connection belongs to, and a user who
//! owns connections is not removed. The router is driven request by request, as in
//! `console.rs`, against the simulators where a provider is needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt as _;
use weft_engine::workspace::{Workspace, connection_tokens_id};
use weft_server::{Config, Role, Store};

const SECRET: &str = "Ms3cr3t-members-never-shown-41c2";
const ADMIN_PW: &str = "correct horse battery";
const MEMBER_PW: &str = "member password 42";
const OTHER_PW: &str = "another member pass 7";
/// The console's callback URL in these tests (the router is driven without binding).
const CALLBACK: &str = "http://localhost:8080/oauth/callback";

/// One master key and configuration folder for the whole test binary, set before any test
/// reads the environment.
fn env() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let config =
            std::env::temp_dir().join(format!("weft-members-config-{}", std::process::id()));
        std::fs::create_dir_all(&config).unwrap();
        // SAFETY: runs once, inside the OnceLock, before any test of this binary goes on to
        // read the environment (every test calls `env()` first).
        unsafe {
            std::env::set_var("WEFT_CONFIG_DIR", &config);
            std::env::set_var(
                "WEFT_MASTER_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            );
            std::env::remove_var("WEFT_MASTER_KEY_COMMAND");
        }
    });
}

/// A workspace with its console: alice (administrator), bob and carol (members).
struct Console {
    dir: PathBuf,
    app: axum::Router,
    /// Every response body, for the final scan for secrets.
    bodies: std::cell::RefCell<Vec<String>>,
}

struct Res {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

/// A signed-in browser: its cookie and the CSRF token of its pages.
struct Browser {
    cookie: String,
    csrf: String,
}

fn csrf_of(html: &str) -> String {
    value_of(html, "csrf")
}

fn value_of(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[at..].split('"').next().unwrap().to_owned()
}

/// Text as the templates write it (MiniJinja's HTML escaping).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('/', "&#x2f;")
}

impl Console {
    fn new(name: &str) -> Self {
        env();
        let dir = std::env::temp_dir().join(format!("weft-members-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        weft_engine::workspace::init(&dir).unwrap();
        let store = Store::open(&dir.join(".weft")).unwrap();
        store.add_user("alice", ADMIN_PW, Role::Admin).unwrap();
        store.add_user("bob", MEMBER_PW, Role::Member).unwrap();
        store.add_user("carol", OTHER_PW, Role::Member).unwrap();
        drop(store);
        let specs = weft_core::builtin::load_all()
            .into_iter()
            .filter_map(|r| r.spec)
            .collect();
        let app = weft_server::router(Config {
            workspace: dir.clone(),
            listen: "127.0.0.1:8080".parse().unwrap(),
            tls: None,
            insecure_http: false,
            specs,
        })
        .unwrap();
        Self {
            dir,
            app,
            bodies: Default::default(),
        }
    }

    async fn send(&self, req: Request<Body>) -> Res {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let location = res
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = String::from_utf8(bytes.to_vec()).unwrap();
        self.bodies.borrow_mut().push(body.clone());
        Res {
            status,
            location,
            body,
        }
    }

    async fn get(&self, path: &str, who: &Browser) -> Res {
        let req = Request::get(path).header(header::COOKIE, &who.cookie);
        self.send(req.body(Body::empty()).unwrap()).await
    }

    /// Posts `form` as `who`, with their CSRF token first.
    async fn post(&self, path: &str, who: &Browser, form: &[(&str, &str)]) -> Res {
        let mut pairs = vec![("csrf", who.csrf.as_str())];
        pairs.extend_from_slice(form);
        self.post_raw(path, Some(&who.cookie), &pairs).await
    }

    async fn post_raw(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Res {
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

    async fn login(&self, name: &str, password: &str) -> Browser {
        let res = self
            .app
            .clone()
            .oneshot(Request::get("/login").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let login_cookie = res.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let csrf = csrf_of(std::str::from_utf8(&bytes).unwrap());
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("csrf", csrf.as_str()),
                ("name", name),
                ("password", password),
                ("next", "/connections"),
            ])
            .finish();
        let res = self
            .app
            .clone()
            .oneshot(
                Request::post("/login")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(header::COOKIE, &login_cookie)
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{name} signs in");
        let cookie = res
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .find(|c| c.starts_with("weft_session="))
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let mut who = Browser {
            cookie,
            csrf: String::new(),
        };
        let page = self.get("/connections", &who).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        who.csrf = csrf_of(&page.body);
        who
    }

    fn workspace(&self) -> Workspace {
        Workspace::find(&self.dir).unwrap()
    }

    /// The audit log, oldest first: (actor, action, target, detail).
    fn audit(&self) -> Vec<(String, String, String, String)> {
        let mut entries: Vec<_> = Store::open(&self.dir.join(".weft"))
            .unwrap()
            .audit_log(1000)
            .unwrap()
            .into_iter()
            .map(|e| (e.actor, e.action, e.target, e.detail))
            .collect();
        entries.reverse();
        entries
    }

    /// No response body and no file of the workspace holds any of `secrets` in plain text.
    fn assert_absent(&self, secrets: &[String]) {
        for body in self.bodies.borrow().iter() {
            for secret in secrets {
                assert!(
                    !body.contains(secret.as_str()),
                    "a response body holds a secret or token"
                );
            }
        }
        for file in files(&self.dir) {
            let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
            for secret in secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "{} holds a secret or token",
                    file.display()
                );
            }
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            std::fs::remove_dir_all(&self.dir).ok();
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p))
        } else {
            out.push(p)
        }
    }
    out
}

/// What a person's browser does at the provider: open the consent URL, let the simulator
/// decide, and return the path and query the provider sends the browser back to.
async fn play_browser(consent_url: &str) -> String {
    let http = weft_engine::http::client().unwrap();
    let consent = http.get(consent_url).send().await.unwrap();
    assert!(
        consent.status().is_redirection(),
        "the consent page answered {}",
        consent.status()
    );
    let back = consent.headers()["location"].to_str().unwrap().to_owned();
    back.strip_prefix("http://localhost:8080")
        .unwrap_or_else(|| panic!("sent back to {back}"))
        .to_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Consents as `who` to connection `name` from `consent_url` and picks organisation `tenant`.
async fn consent_and_choose(
    c: &Console,
    who: &Browser,
    name: &str,
    consent_url: &str,
    tenant: &str,
) {
    let back = play_browser(consent_url).await;
    let page = c.get(&back, who).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let choice = value_of(&page.body, "choice");
    let res = c
        .post(
            &format!("/connections/{name}/organisations"),
            who,
            &[("choice", &choice), ("tenant", tenant)],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
}

#[test]
fn a_member_authorizes_their_own_connection_and_cannot_change_the_workspaces() {
    use weft_harness::xero::{XeroConfig, XeroSim};
    let sim = XeroSim::start(XeroConfig {
        organisations: 2,
        size: 4,
        redirect_uris: vec![CALLBACK.to_owned()],
        ..XeroConfig::default()
    })
    .unwrap();
    let tenants = sim.tenants();
    let c = Console::new("own");
    runtime().block_on(async {
        // alice: the OAuth client and the workspace's connection, authorized for the first
        // organisation.
        let alice = c.login("alice", ADMIN_PW).await;
        let res = c
            .post(
                "/clients",
                &alice,
                &[
                    ("connector", "xero"),
                    ("name", "xapp"),
                    ("client_id", sim.client_id()),
                    ("client_secret", sim.client_secret()),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        let (login, identity, api) = (sim.login_url(), sim.identity_url(), sim.api_url());
        let res = c
            .post(
                "/connections",
                &alice,
                &[
                    ("connector", "xero"),
                    ("name", "books"),
                    ("owner", ""),
                    ("client", "xapp"),
                    ("concurrency", "5"),
                    ("borrow", ""),
                    ("host_login", &login),
                    ("host_identity", &identity),
                    ("host_api", &api),
                    ("action", "authorize"),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        consent_and_choose(&c, &alice, "books", &res.location.unwrap(), &tenants[0].0).await;
        assert_eq!(c.workspace().file.connections["books"].owner, None);

        // bob's form: no owner to choose, no base URL to type, only the sets in use.
        let bob = c.login("bob", MEMBER_PW).await;
        let form = c.get("/connections/new?connector=xero", &bob).await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        assert!(
            !form.body.contains("name=\"owner\"") && !form.body.contains("name=\"host_identity\""),
            "{}",
            form.body
        );
        assert!(
            form.body.contains("name=\"hosts_from\"")
                && form.body.contains("<option value=\"books\">As books: ")
                && form.body.contains("This connection will be yours (bob)"),
            "{}",
            form.body
        );
        let mine = |name: &'static str, hosts_from: &'static str, action: &'static str| {
            vec![
                ("connector", "xero"),
                ("name", name),
                ("client", "xapp"),
                ("concurrency", "4"),
                ("borrow", ""),
                ("hosts_from", hosts_from),
                ("action", action),
            ]
        };
        // A base URL typed into a forged form is not used; an unknown set is refused.
        let mut forged = mine("stray", "nowhere", "save");
        forged.push(("host_identity", "http://127.0.0.1:9/steal"));
        forged.push(("owner", "alice"));
        let res = c.post("/connections", &bob, &forged).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
        assert!(
            res.body.contains("id=\"hosts_from-error\""),
            "the error beside its field: {}",
            res.body
        );
        let mut forged = mine("mine", "books", "authorize");
        forged.push(("host_identity", "http://127.0.0.1:9/steal"));
        forged.push(("owner", "alice"));
        let res = c.post("/connections", &bob, &forged).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        let consent = res.location.unwrap();
        assert!(consent.starts_with(&login), "{consent}");
        let saved = c.workspace().file.connections["mine"].clone();
        assert_eq!(saved.owner.as_deref(), Some("bob"), "a member's is theirs");
        assert_eq!(
            saved.hosts,
            c.workspace().file.connections["books"].hosts,
            "the base URLs of books, not the forged one"
        );
        // The consent's answer belongs to bob: carol cannot take it.
        let back = play_browser(&consent).await;
        let carol = c.login("carol", OTHER_PW).await;
        assert_eq!(c.get(&back, &carol).await.status, StatusCode::BAD_REQUEST);
        let page = c.get(&back, &bob).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let choice = value_of(&page.body, "choice");
        let res = c
            .post(
                "/connections/mine/organisations",
                &bob,
                &[("choice", &choice), ("tenant", &tenants[1].0)],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        let ws = c.workspace();
        assert_eq!(ws.file.connections["mine"].tenants[0].id, tenants[1].0);
        assert!(
            ws.secrets()
                .unwrap()
                .get(&connection_tokens_id("mine"))
                .unwrap()
                .is_some(),
            "sealed in the workspace's store"
        );
        // bob tests his own, and the workspace's (Test changes nothing).
        for name in ["mine", "books"] {
            let res = c
                .post(&format!("/connections/{name}/test"), &bob, &[])
                .await;
            assert_eq!(res.status, StatusCode::OK, "{}", res.body);
            assert!(res.body.contains("works."), "{name}: {}", res.body);
        }
        // The list: who each belongs to; bob's buttons only on his.
        let list = c.get("/connections", &bob).await;
        assert!(
            list.body.contains("Scope / owner")
                && list.body.contains("<td>workspace</td>")
                && list.body.contains(&escape("bob's")),
            "{}",
            list.body
        );
        assert!(
            list.body.contains("href=\"/connections/mine/edit\"")
                && !list.body.contains("href=\"/connections/books/edit\"")
                && !list.body.contains("/connections/books/delete")
                && !list.body.contains("/connections/books/authorize"),
            "{}",
            list.body
        );

        // Everything that would change books is refused, naming who can; nothing changes.
        let before = std::fs::read_to_string(c.dir.join("weft.toml")).unwrap();
        let audit_before = c.audit().len();
        for path in ["/connections/books/edit", "/connections/books/delete"] {
            let res = c.get(path, &bob).await;
            assert_eq!(res.status, StatusCode::FORBIDDEN, "{path}");
            assert!(
                res.body
                    .contains("Connection books belongs to the workspace")
                    && res.body.contains("only an administrator (alice)"),
                "{path}: {}",
                res.body
            );
        }
        let edit = [
            ("client", "xapp"),
            ("concurrency", "1"),
            ("borrow", ""),
            ("hosts_from", ""),
        ];
        for (path, form) in [
            ("/connections/books/edit", &edit[..]),
            ("/connections/books/delete", &[][..]),
            ("/connections/books/authorize", &[][..]),
        ] {
            let res = c.post(path, &bob, form).await;
            assert_eq!(res.status, StatusCode::FORBIDDEN, "{path}: {}", res.body);
            assert!(res.body.contains("alice"), "{path}: {}", res.body);
        }
        assert_eq!(
            std::fs::read_to_string(c.dir.join("weft.toml")).unwrap(),
            before
        );
        assert_eq!(
            c.audit().len(),
            audit_before,
            "nothing was done, nothing recorded"
        );
        // …and so is carol, on bob's connection: it is his, not every member's.
        let res = c.post("/connections/mine/delete", &carol, &[]).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN);
        assert!(
            res.body
                .contains("belongs to bob: only bob or an administrator (alice)"),
            "{}",
            res.body
        );
        // A member borrows only from their own connections.
        let res = c
            .post(
                "/connections/mine/edit",
                &bob,
                &[
                    ("client", "xapp"),
                    ("concurrency", "4"),
                    ("borrow", "books"),
                    ("hosts_from", "books"),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(res.body.contains("id=\"borrow-error\""), "{}", res.body);
        // bob edits his own; a forged owner field does not give it away.
        let res = c
            .post(
                "/connections/mine/edit",
                &bob,
                &[
                    ("client", "xapp"),
                    ("concurrency", "3"),
                    ("borrow", ""),
                    ("hosts_from", "books"),
                    ("owner", ""),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        let saved = &c.workspace().file.connections["mine"];
        assert_eq!(
            (saved.concurrency, saved.owner.as_deref()),
            (3, Some("bob"))
        );
        assert!(!saved.hosts.is_empty());
        // CSRF still holds: no token, or another session's, changes nothing.
        let res = c
            .post_raw("/connections/mine/delete", Some(&bob.cookie), &[])
            .await;
        assert_eq!(res.status, StatusCode::FORBIDDEN);
        let res = c
            .post_raw(
                "/connections/mine/delete",
                Some(&bob.cookie),
                &[("csrf", &carol.csrf)],
            )
            .await;
        assert_eq!(res.status, StatusCode::FORBIDDEN);
        assert!(res.body.contains("security token"), "{}", res.body);
        assert!(c.workspace().file.connections.contains_key("mine"));

        // alice sees bob's connection as his, with every button, and cannot remove bob
        // while he owns it.
        let list = c.get("/connections", &alice).await;
        assert!(
            list.body.contains("href=\"/connections/mine/edit\"")
                && list.body.contains(&escape("bob's")),
            "{}",
            list.body
        );
        let users = c.get("/users", &alice).await;
        assert!(users.body.contains("<td>mine</td>"), "{}", users.body);
        let res = c.post("/users/bob/remove", &alice, &[]).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST);
        assert!(
            res.body.contains("User bob was not removed")
                && res.body.contains("owns connection mine")
                && res.body.contains("weft connection edit NAME --no-owner"),
            "{}",
            res.body
        );
        assert!(
            Store::open(&c.dir.join(".weft"))
                .unwrap()
                .user("bob")
                .unwrap()
                .is_some()
        );
        // alice deletes it: its own grant is revoked (books reaches another organisation).
        let confirm = c.get("/connections/mine/delete", &alice).await;
        assert!(
            confirm.body.contains("revokes the connection"),
            "{}",
            confirm.body
        );
        let res = c.post("/connections/mine/delete", &alice, &[]).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        assert!(res.location.unwrap().contains("revoked=1"));
        let res = c.post("/users/bob/remove", &alice, &[]).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        // books and its sealed tokens are untouched here (the simulator, one Xero user for
        // every consent, ends all of that user's connections on any revocation, as Xero
        // does for one person).
        let ws = c.workspace();
        assert!(!ws.file.connections.contains_key("mine"));
        assert!(
            ws.secrets()
                .unwrap()
                .get(&connection_tokens_id("books"))
                .unwrap()
                .is_some()
        );
    });
    let audit = c.audit();
    let on_mine: Vec<(&str, &str)> = audit
        .iter()
        .filter(|e| e.2 == "mine")
        .map(|e| (e.0.as_str(), e.1.as_str()))
        .collect();
    assert_eq!(
        on_mine,
        [
            ("bob", "connection.create"),
            ("bob", "connection.authorize-start"),
            ("bob", "connection.authorize"),
            ("bob", "connection.organisations"),
            ("bob", "connection.test"),
            ("bob", "connection.edit"),
            ("alice", "connection.delete"),
        ]
    );
    assert!(
        audit
            .iter()
            .any(|e| e.2 == "mine" && e.1 == "connection.create" && e.3.ends_with("bob's")),
        "{audit:?}"
    );
    let bob_on_books: Vec<&str> = audit
        .iter()
        .filter(|e| e.0 == "bob" && e.2 == "books")
        .map(|e| e.1.as_str())
        .collect();
    assert_eq!(bob_on_books, ["connection.test"]);
    let mut guarded = sim.issued_tokens();
    guarded.push(sim.client_secret().to_owned());
    c.assert_absent(&guarded);
}

#[tokio::test]
async fn an_administrator_chooses_and_changes_who_a_connection_belongs_to() {
    let c = Console::new("owners");
    let alice = c.login("alice", ADMIN_PW).await;
    let bob = c.login("bob", MEMBER_PW).await;
    // Without an OAuth client, a member is sent to an administrator.
    let res = c.get("/connections/new?connector=xero", &bob).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(
        res.body.contains("ask an administrator (alice) to add one"),
        "{}",
        res.body
    );
    let res = c
        .post(
            "/clients",
            &alice,
            &[
                ("connector", "xero"),
                ("name", "xapp"),
                ("client_id", "ABC123"),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let form = c.get("/connections/new?connector=xero", &alice).await;
    assert!(
        form.body.contains("name=\"owner\"")
            && form
                .body
                .contains("<option value=\"\" selected>The workspace")
            && form
                .body
                .contains("<option value=\"bob\">bob (member)</option>"),
        "{}",
        form.body
    );
    let create = |name: &'static str, owner: &'static str| {
        vec![
            ("connector", "xero"),
            ("name", name),
            ("owner", owner),
            ("client", "xapp"),
            ("concurrency", "2"),
            ("borrow", ""),
            ("action", "save"),
        ]
    };
    let res = c
        .post("/connections", &alice, &create("ghostly", "mallory"))
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.body.contains("id=\"owner-error\""), "{}", res.body);
    for (name, owner) in [("shared", ""), ("bobs", "bob")] {
        let res = c.post("/connections", &alice, &create(name, owner)).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    }
    let ws = c.workspace();
    assert_eq!(ws.file.connections["shared"].owner, None);
    assert_eq!(ws.file.connections["bobs"].owner.as_deref(), Some("bob"));
    // What bob may do follows: his, yes; the workspace's, no.
    let form = c.get("/connections/bobs/edit", &bob).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert!(!form.body.contains("name=\"owner\""), "{}", form.body);
    assert_eq!(
        c.get("/connections/shared/edit", &bob).await.status,
        StatusCode::FORBIDDEN
    );
    // A member cannot take a name an administrator's flow uses.
    std::fs::create_dir_all(c.dir.join("flows")).unwrap();
    std::fs::write(
        c.dir.join("flows/nightly.toml"),
        "[connections.books]\nconnector = \"xero\"\nconnection = \"ledger\"\n",
    )
    .unwrap();
    let mut taken = create("ledger", "");
    taken.retain(|(k, _)| *k != "owner");
    taken.push(("hosts_from", ""));
    let res = c.post("/connections", &bob, &taken).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.body
            .contains("Flow nightly uses a connection named ledger; only an administrator (alice) can create it"),
        "{}",
        res.body
    );
    assert!(!c.workspace().file.connections.contains_key("ledger"));
    // alice may, and gives bob's connection to the workspace: bob can no longer edit it, and
    // he can be removed.
    let res = c.post("/connections", &alice, &create("ledger", "")).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let refused = c.post("/users/bob/remove", &alice, &[]).await;
    assert!(
        refused.body.contains("owns connection bobs"),
        "{}",
        refused.body
    );
    let form = c.get("/connections/bobs/edit", &alice).await;
    assert!(
        form.body
            .contains("<option value=\"bob\" selected>bob (member)</option>"),
        "{}",
        form.body
    );
    let res = c
        .post(
            "/connections/bobs/edit",
            &alice,
            &[
                ("owner", ""),
                ("client", "xapp"),
                ("concurrency", "2"),
                ("borrow", ""),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(c.workspace().file.connections["bobs"].owner, None);
    assert!(
        c.audit().iter().any(|e| e.1 == "connection.edit"
            && e.2 == "bobs"
            && e.3.ends_with("owner changed from bob to the workspace")),
        "{:?}",
        c.audit()
    );
    let res = c.get("/connections/bobs/edit", &bob).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    // An owner who is no console user (a hand-edited weft.toml): only administrators manage
    // it, and an administrator's save keeps it.
    let mut ws = c.workspace();
    ws.file.connections.get_mut("shared").unwrap().owner = Some("ghost".into());
    ws.save().unwrap();
    let list = c.get("/connections", &alice).await;
    assert!(
        list.body.contains(&escape("ghost's"))
            && list
                .body
                .contains("not a console user: administrators manage it"),
        "{}",
        list.body
    );
    let form = c.get("/connections/shared/edit", &alice).await;
    assert!(
        form.body
            .contains("<option value=\"ghost\" selected>ghost (no longer a console user)"),
        "{}",
        form.body
    );
    let res = c.post("/users/bob/remove", &alice, &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    c.assert_absent(&[SECRET.to_owned()]);
}
