//! The console without a browser: the router driven request by request (`tower::ServiceExt`),
//! cookies carried by hand, every page checked for the secrets it must never show.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt as _;
use weft_server::{Config, Role, Store};

const SECRET: &str = "Xs3cr3t-console-never-shown-9a7e";
const ADMIN_PW: &str = "correct horse battery";
const MEMBER_PW: &str = "member password 42";

/// One master key and configuration folder for the whole test binary, set before any test
/// reads the environment.
fn env() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let config =
            std::env::temp_dir().join(format!("weft-console-config-{}", std::process::id()));
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

struct Console {
    dir: PathBuf,
    app: axum::Router,
    /// Every response body, for the final scan for secrets.
    bodies: std::cell::RefCell<Vec<String>>,
}

struct Res {
    status: StatusCode,
    location: Option<String>,
    cookies: Vec<String>,
    headers: axum::http::HeaderMap,
    body: String,
}

/// A signed-in browser: its cookie and the CSRF token of its pages.
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

impl Console {
    fn new(name: &str) -> Self {
        env();
        let dir = std::env::temp_dir().join(format!("weft-console-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        weft_engine::workspace::init(&dir).unwrap();
        let store = Store::open(&dir.join(".weft")).unwrap();
        assert_eq!(
            store.add_user("alice", ADMIN_PW, Role::Member).unwrap(),
            Role::Admin,
            "the first user is an administrator"
        );
        assert_eq!(
            store.add_user("bob", MEMBER_PW, Role::Member).unwrap(),
            Role::Member
        );
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
        let headers = res.headers().clone();
        let location = headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        let cookies = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = String::from_utf8(bytes.to_vec()).unwrap();
        self.bodies.borrow_mut().push(body.clone());
        Res {
            status,
            location,
            cookies,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Res {
        let mut req = Request::get(path);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::empty()).unwrap()).await
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

    /// Opens the login page and submits it; returns the response and the login cookie used.
    async fn try_login(&self, name: &str, password: &str) -> Res {
        let page = self.get("/login", None).await;
        let cookie = page.cookies[0].split(';').next().unwrap().to_owned();
        let csrf = csrf_of(&page.body);
        self.post(
            "/login",
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("name", name),
                ("password", password),
                ("next", "/clients"),
            ],
        )
        .await
    }

    async fn login(&self, name: &str, password: &str) -> Browser {
        let res = self.try_login(name, password).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        assert_eq!(res.location.as_deref(), Some("/clients"));
        let session = res
            .cookies
            .iter()
            .find(|c| c.starts_with("weft_session="))
            .unwrap();
        assert!(
            session.contains("HttpOnly") && session.contains("SameSite=Lax"),
            "{session}"
        );
        let cookie = session.split(';').next().unwrap().to_owned();
        let page = self.get("/connectors", Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        Browser {
            csrf: csrf_of(&page.body),
            cookie,
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

    /// No response and no file of the workspace holds the secret in plain text.
    fn assert_secret_absent(&self) {
        for body in self.bodies.borrow().iter() {
            assert!(!body.contains(SECRET), "a response body holds the secret");
        }
        for file in files(&self.dir) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(SECRET),
                "{} holds the secret",
                file.display()
            );
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

#[tokio::test]
async fn pages_require_a_login() {
    let c = Console::new("login-required");
    for path in [
        "/connectors",
        "/clients",
        "/connections",
        "/users",
        "/audit",
        "/connectors/xero",
    ] {
        let res = c.get(path, None).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            res.location.unwrap().starts_with("/login?next=%2F"),
            "{path}"
        );
    }
    // A forged or unsigned cookie is no session.
    let res = c.get("/clients", Some("weft_session=abc.def")).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let login = c.get("/login", None).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(
        login
            .body
            .contains("<label for=\"password\">Password</label>")
    );
    // Security headers on every answer.
    let csp = login.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(login.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    // An open redirect through `next` is refused.
    let page = c.get("/login", None).await;
    let cookie = page.cookies[0].split(';').next().unwrap().to_owned();
    let res = c
        .post(
            "/login",
            Some(&cookie),
            &[
                ("csrf", &csrf_of(&page.body)),
                ("name", "alice"),
                ("password", ADMIN_PW),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(res.location.as_deref(), Some("/connectors"));
}

#[tokio::test]
async fn wrong_passwords_are_refused_then_rate_limited() {
    let c = Console::new("rate-limit");
    for _ in 0..5 {
        let res = c.try_login("alice", "not the password").await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        assert!(res.body.contains("The user name or password is wrong"));
        assert!(res.cookies.iter().all(|c| !c.starts_with("weft_session=")));
    }
    // Now even the right password waits.
    let res = c.try_login("alice", ADMIN_PW).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        res.body.contains("Too many failed sign-ins"),
        "{}",
        res.body
    );
    // Another user is not locked out by alice's attempts.
    c.login("bob", MEMBER_PW).await;
    let failed = c
        .audit()
        .iter()
        .filter(|(_, a, _)| a == "user.login-failed")
        .count();
    assert_eq!(failed, 5);
}

#[tokio::test]
async fn forms_without_the_right_csrf_token_are_refused() {
    let c = Console::new("csrf");
    let alice = c.login("alice", ADMIN_PW).await;
    let bob = c.login("bob", MEMBER_PW).await;
    let form = |csrf: &'static str| {
        vec![
            ("csrf", csrf),
            ("connector", "xero"),
            ("name", "books"),
            ("client_id", "ABC"),
            ("client_secret", SECRET),
        ]
    };
    for csrf in ["", "wrong"] {
        let res = c.post("/clients", Some(&alice.cookie), &form(csrf)).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{csrf:?}");
        assert!(
            res.body
                .contains("security token is missing or does not match")
        );
    }
    // Without the field at all, and with another session's token.
    let res = c
        .post("/clients", Some(&alice.cookie), &[("connector", "xero")])
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let mut with_bobs = form("");
    with_bobs[0].1 = Box::leak(bob.csrf.clone().into_boxed_str());
    let res = c.post("/clients", Some(&alice.cookie), &with_bobs).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    // The login form has its own token.
    let res = c
        .post("/login", None, &[("name", "alice"), ("password", ADMIN_PW)])
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let ws = std::fs::read_to_string(c.dir.join("weft.toml")).unwrap();
    assert!(!ws.contains("books"), "nothing was saved");
    c.assert_secret_absent();
}

#[tokio::test]
async fn a_member_is_refused_an_administrators_action() {
    let c = Console::new("member");
    let bob = c.login("bob", MEMBER_PW).await;
    let res = c
        .post(
            "/clients",
            Some(&bob.cookie),
            &[
                ("csrf", &bob.csrf),
                ("connector", "xero"),
                ("name", "books"),
                ("client_id", "ABC"),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(
        res.body
            .contains("Only an administrator can add OAuth clients"),
        "{}",
        res.body
    );
    assert!(res.body.contains("alice"), "names who can");
    for (path, what) in [
        ("/audit", "read the audit log"),
        ("/clients/new?connector=xero", "add OAuth clients"),
    ] {
        let res = c.get(path, Some(&bob.cookie)).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{path}");
        assert!(res.body.contains(what), "{path}");
    }
    let res = c
        .post(
            "/users",
            Some(&bob.cookie),
            &[
                ("csrf", &bob.csrf),
                ("name", "eve"),
                ("password", "0123456789ab"),
                ("role", "admin"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let res = c
        .post(
            "/users/alice/remove",
            Some(&bob.cookie),
            &[("csrf", &bob.csrf)],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    // Members still read the connectors and the lists, without the administrators' buttons.
    let res = c.get("/clients", Some(&bob.cookie)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(!res.body.contains("Add an OAuth client"));
    assert_eq!(
        Store::open(&c.dir.join(".weft"))
            .unwrap()
            .users()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_client_is_added_sealed_edited_and_never_shown() {
    let c = Console::new("client");
    let alice = c.login("alice", ADMIN_PW).await;
    let cookie = Some(alice.cookie.as_str());
    let form = c.get("/clients/new?connector=xero", cookie).await;
    assert_eq!(form.status, StatusCode::OK);
    // The spec's rules as HTML constraints, the secret a write-only password input.
    assert!(
        form.body
            .contains(r#"id="client_id" name="client_id" value="" required pattern="\S+""#),
        "{}",
        form.body
    );
    assert!(
        form.body
            .contains(r#"<input type="password" id="client_secret" name="client_secret" required"#)
    );
    // (MiniJinja escapes `/` too; a browser reads it back as the URL.)
    assert!(
        form.body
            .contains("http:&#x2f;&#x2f;localhost:8080&#x2f;oauth&#x2f;callback"),
        "{}",
        form.body
    );

    // Spaces around and inside the client ID: refused beside the field, values kept, the
    // secret not echoed.
    let res = c
        .post(
            "/clients",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("connector", "xero"),
                ("name", "books"),
                ("client_id", "AB CD"),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.body
            .contains(r#"<p class="field-error" id="client_id-error">"#),
        "{}",
        res.body
    );
    assert!(res.body.contains("no spaces inside"), "{}", res.body);
    assert!(res.body.contains(r#"value="AB CD""#));
    // Kantata's application ID too (its spec once refused only spaces around it).
    let kantata = c
        .post(
            "/clients",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("connector", "kantata"),
                ("name", "projects"),
                ("client_id", "70b0 ce38"),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!(kantata.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        kantata.body.contains("no spaces inside"),
        "{}",
        kantata.body
    );
    assert!(
        res.body
            .contains(r#"aria-describedby="client_id-error client_id-help""#)
    );
    let res = c
        .post(
            "/clients",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("connector", "xero"),
                ("name", " books"),
                ("client_id", "ABC"),
                ("client_secret", ""),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.body.contains(r#"id="name-error""#) && res.body.contains(r#"id="client_secret-error""#),
        "{}",
        res.body
    );

    let res = c
        .post(
            "/clients",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("connector", "xero"),
                ("name", "books"),
                ("client_id", "ABC123"),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let list = c.get(res.location.as_deref().unwrap(), cookie).await;
    assert!(list.body.contains("Added OAuth client books"));
    assert!(list.body.contains("ABC123") && list.body.contains(">sealed<"));
    // Sealed: the workspace can read it back, but no file holds it in plain text.
    let ws = weft_engine::workspace::Workspace::find(&c.dir).unwrap();
    let stored = ws
        .secrets()
        .unwrap()
        .get(&weft_engine::workspace::client_secret_id("books"))
        .unwrap()
        .unwrap();
    assert_eq!(stored.expose(), SECRET);

    // Edit: the secret must be entered again, and the form never carries it.
    let edit = c.get("/clients/books/edit", cookie).await;
    assert!(edit.body.contains("Enter the secret again"));
    let res = c
        .post(
            "/clients/books/edit",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("client_id", "XYZ789"),
                ("client_secret", ""),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    let res = c
        .post(
            "/clients/books/edit",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("client_id", "XYZ789"),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert!(
        std::fs::read_to_string(c.dir.join("weft.toml"))
            .unwrap()
            .contains("XYZ789")
    );

    for path in [
        "/clients",
        "/clients/books/edit",
        "/clients/books/remove",
        "/connectors",
        "/connectors/xero",
        "/connections",
        "/users",
        "/audit",
    ] {
        let res = c.get(path, cookie).await;
        assert_eq!(res.status, StatusCode::OK, "{path}");
    }
    let actions: Vec<String> = c
        .audit()
        .into_iter()
        .filter(|(who, _, t)| who == "alice" && t == "books")
        .map(|(_, a, _)| a)
        .collect();
    assert_eq!(actions, ["client.edit", "client.add"]);
    c.assert_secret_absent();
}

#[tokio::test]
async fn connections_are_created_with_checked_fields_and_deleted_after_confirmation() {
    let c = Console::new("connection");
    let alice = c.login("alice", ADMIN_PW).await;
    let cookie = Some(alice.cookie.as_str());
    let res = c.get("/connections/new?connector=xero", cookie).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "no client yet");
    assert!(res.body.contains("There is no OAuth client for Xero yet"));
    let res = c
        .post(
            "/clients",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("connector", "xero"),
                ("name", "books"),
                ("client_id", "ABC123"),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);

    let form = c.get("/connections/new?connector=xero", cookie).await;
    assert!(
        form.body.contains(
            r#"type="number" id="concurrency" name="concurrency" value="5" min="1" max="25""#
        ),
        "{}",
        form.body
    );
    let res = c
        .post(
            "/connections",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("connector", "xero"),
                ("name", "xero"),
                ("client", "books"),
                ("concurrency", "26"),
                ("borrow", ""),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.body.contains(r#"id="concurrency-error""#),
        "{}",
        res.body
    );
    assert!(res.body.contains("25"), "says the range");
    assert!(res.body.contains(r#"value="26""#), "keeps the value");
    let res = c
        .post(
            "/connections",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("connector", "xero"),
                ("name", "xero"),
                ("client", "nobody"),
                ("concurrency", "3"),
                ("borrow", "elsewhere"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.body.contains(r#"id="client-error""#) && res.body.contains(r#"id="borrow-error""#),
        "{}",
        res.body
    );

    let res = c
        .post(
            "/connections",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("connector", "xero"),
                ("name", "xero"),
                ("client", "books"),
                ("concurrency", "3"),
                ("borrow", ""),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let res = c
        .post(
            "/connections",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("connector", "xero"),
                ("name", "xero-2"),
                ("client", "books"),
                ("concurrency", "5"),
                ("borrow", "xero"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let list = c.get("/connections", cookie).await;
    assert!(
        list.body.contains("not authorized") && list.body.contains("borrows from xero"),
        "{}",
        list.body
    );
    let toml = std::fs::read_to_string(c.dir.join("weft.toml")).unwrap();
    assert!(
        toml.contains("concurrency = 3") && toml.contains("borrow-concurrency-from = \"xero\""),
        "{toml}"
    );

    // Edit: the same rules; the lender cannot be made to borrow from its borrower.
    let edit = c.get("/connections/xero/edit", cookie).await;
    assert!(
        edit.body.contains(r#"value="3""#) && !edit.body.contains(r#"id="name""#),
        "{}",
        edit.body
    );
    let res = c
        .post(
            "/connections/xero/edit",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("client", "books"),
                ("concurrency", "0"),
                ("borrow", ""),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.body.contains(r#"id="concurrency-error""#),
        "{}",
        res.body
    );
    let res = c
        .post(
            "/connections/xero/edit",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("client", "books"),
                ("concurrency", "7"),
                ("borrow", ""),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert!(
        std::fs::read_to_string(c.dir.join("weft.toml"))
            .unwrap()
            .contains("concurrency = 7")
    );

    // The client is in use: removing it is refused, naming the connections.
    let confirm = c.get("/clients/books/remove", cookie).await;
    assert!(
        confirm
            .body
            .contains("Connections xero, xero-2 use this client"),
        "{}",
        confirm.body
    );
    let res = c
        .post("/clients/books/remove", cookie, &[("csrf", &alice.csrf)])
        .await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    // A lender is not deleted under its borrower.
    let res = c
        .post("/connections/xero/delete", cookie, &[("csrf", &alice.csrf)])
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(res.body.contains("borrow concurrency from xero"));
    let confirm = c.get("/connections/xero-2/delete", cookie).await;
    assert!(
        confirm.body.contains("It cannot be undone"),
        "{}",
        confirm.body
    );
    for name in ["xero-2", "xero"] {
        let res = c
            .post(
                &format!("/connections/{name}/delete"),
                cookie,
                &[("csrf", &alice.csrf)],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    }
    let res = c
        .post("/clients/books/remove", cookie, &[("csrf", &alice.csrf)])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let toml = std::fs::read_to_string(c.dir.join("weft.toml")).unwrap();
    assert!(
        !toml.contains("books") && !toml.contains("xero-2"),
        "{toml}"
    );

    let actions: Vec<(String, String)> = c
        .audit()
        .into_iter()
        .filter(|(who, _, _)| who == "alice")
        .map(|(_, a, t)| (a, t))
        .collect();
    for expected in [
        ("connection.create", "xero"),
        ("connection.create", "xero-2"),
        ("connection.delete", "xero-2"),
        ("connection.delete", "xero"),
        ("client.remove", "books"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, t)| a == expected.0 && t == expected.1),
            "{expected:?} in {actions:?}"
        );
    }
    let page = c.get("/audit", cookie).await;
    assert!(page.body.contains("connection.delete"));
    c.assert_secret_absent();
}

#[tokio::test]
async fn an_administrator_adds_and_removes_users() {
    let c = Console::new("users");
    let alice = c.login("alice", ADMIN_PW).await;
    let cookie = Some(alice.cookie.as_str());
    let res = c
        .post(
            "/users",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("name", "carol"),
                ("password", "short"),
                ("role", "member"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.body.contains(r#"id="password-error""#) && !res.body.contains("value=\"short\""));
    let res = c
        .post(
            "/users",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("name", "carol"),
                ("password", "long enough password"),
                ("role", "member"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    c.login("carol", "long enough password").await;
    let res = c
        .post("/users/carol/remove", cookie, &[("csrf", &alice.csrf)])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let res = c
        .post("/users/alice/remove", cookie, &[("csrf", &alice.csrf)])
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(res.body.contains("last administrator"));
    // The console's database is its owner's alone, and holds hashes, not passwords.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(c.dir.join(".weft/console.db")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let db = std::fs::read(c.dir.join(".weft/console.db")).unwrap();
    for pw in [ADMIN_PW, MEMBER_PW, "long enough password"] {
        assert!(!String::from_utf8_lossy(&db).contains(pw));
    }
    // Signing out ends the session.
    let res = c.post("/logout", cookie, &[("csrf", &alice.csrf)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(c.get("/users", cookie).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn oversized_bodies_and_unknown_pages_are_refused() {
    let c = Console::new("limits");
    let alice = c.login("alice", ADMIN_PW).await;
    let big = "x".repeat(100 * 1024);
    let res = c
        .post(
            "/users",
            Some(&alice.cookie),
            &[("csrf", &alice.csrf), ("name", &big)],
        )
        .await;
    assert!(
        matches!(
            res.status,
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE
        ),
        "{}",
        res.status
    );
    let res = c.get("/nowhere", Some(&alice.cookie)).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    let res = c.get("/connectors/nope", Some(&alice.cookie)).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
}

#[test]
fn only_loopback_is_served_without_the_explicit_choice_of_plain_http() {
    let any: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
    assert_eq!(
        weft_server::check_bind(any, true, false).unwrap(),
        None,
        "TLS allows any address"
    );
    let err = weft_server::check_bind(any, false, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--insecure-http") && err.contains("not a loopback address"),
        "{err}"
    );
    assert!(
        weft_server::check_bind(any, false, true)
            .unwrap()
            .unwrap()
            .contains("warning")
    );
    assert_eq!(
        weft_server::check_bind("127.0.0.1:0".parse().unwrap(), false, false).unwrap(),
        None
    );
    assert_eq!(
        weft_server::check_bind("[::1]:0".parse().unwrap(), false, false).unwrap(),
        None
    );
}

#[tokio::test]
async fn serve_answers_on_a_real_loopback_listener() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let c = Console::new("listener");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = Config {
        workspace: c.dir.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        insecure_http: false,
        specs: Vec::new(),
    };
    let server = tokio::spawn(weft_server::serve(
        config,
        move |addr| {
            let _ = tx.send(addr);
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let addr = tokio::time::timeout(std::time::Duration::from_secs(10), rx)
        .await
        .unwrap()
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_string(&mut answer),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// The console's callback URL in these tests (the router is driven without binding).
const CALLBACK: &str = "http://localhost:8080/oauth/callback";

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
    let rest = back
        .strip_prefix("http://localhost:8080")
        .unwrap_or_else(|| panic!("sent back to {back}"));
    rest.to_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn xero_save_and_authorize_choose_an_organisation_test_and_delete_with_revocation() {
    use weft_harness::xero::{Consent, XeroConfig, XeroSim};
    let sim = XeroSim::start(XeroConfig {
        organisations: 2,
        size: 4,
        redirect_uris: vec![CALLBACK.to_owned()],
        ..XeroConfig::default()
    })
    .unwrap();
    let tenants = sim.tenants();
    let c = Console::new("xero-authorize");
    runtime().block_on(async {
        let alice = c.login("alice", ADMIN_PW).await;
        let cookie = Some(alice.cookie.as_str());
        let res = c
            .post(
                "/clients",
                cookie,
                &[
                    ("csrf", &alice.csrf),
                    ("connector", "xero"),
                    ("name", "xapp"),
                    ("client_id", sim.client_id()),
                    ("client_secret", sim.client_secret()),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        let form = c.get("/connections/new?connector=xero", cookie).await;
        assert!(form.body.contains("Save &amp; authorize"), "{}", form.body);

        // The person declines first: nothing changes, and the page says so.
        sim.set_consent(Consent::Deny);
        let (login, identity, api) = (sim.login_url(), sim.identity_url(), sim.api_url());
        let fields = |action: &'static str| {
            vec![
                ("csrf", alice.csrf.clone()),
                ("connector", "xero".into()),
                ("name", "books".into()),
                ("client", "xapp".into()),
                ("concurrency", "5".into()),
                ("borrow", String::new()),
                ("host_login", login.clone()),
                ("host_identity", identity.clone()),
                ("host_api", api.clone()),
                ("action", action.into()),
            ]
        };
        let pairs = fields("authorize");
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = c.post("/connections", cookie, &pairs).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        let consent = res.location.unwrap();
        assert!(
            consent.starts_with(&login) && consent.contains("code_challenge="),
            "PKCE: {consent}"
        );
        let back = play_browser(&consent).await;
        let res = c.get(&back, cookie).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST);
        assert!(
            res.body.contains("did not grant access") && res.body.contains("access_denied"),
            "{}",
            res.body
        );

        // Authorize again from the list; the consent connects both organisations.
        sim.set_consent(Consent::Grant { tenants: vec![] });
        let res = c
            .post(
                "/connections/books/authorize",
                cookie,
                &[("csrf", &alice.csrf)],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        let back = play_browser(&res.location.unwrap()).await;
        // The answer is single-use and bound to the person who started it.
        let bob = c.login("bob", MEMBER_PW).await;
        let res = c.get(&back, Some(&bob.cookie)).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST);
        let res = c.get(&back, cookie).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
        for (id, name) in &tenants {
            assert!(
                res.body.contains(id.as_str()) && res.body.contains(&escape(name)),
                "{name} offered: {}",
                res.body
            );
        }
        let replay = c.get(&back, cookie).await;
        assert_eq!(
            replay.status,
            StatusCode::BAD_REQUEST,
            "a replayed answer is refused"
        );
        let choice = value_of(&res.body, "choice");
        let res = c
            .post(
                "/connections/books/organisations",
                cookie,
                &[
                    ("csrf", &alice.csrf),
                    ("choice", &choice),
                    ("tenant", &tenants[1].0),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        let toml = std::fs::read_to_string(c.dir.join("weft.toml")).unwrap();
        assert!(
            toml.contains(&tenants[1].0) && !toml.contains(&tenants[0].0),
            "only the chosen one: {toml}"
        );
        let list = c.get("/connections", cookie).await;
        assert!(
            list.body.contains(">authorized<") && list.body.contains(&escape(&tenants[1].1)),
            "{}",
            list.body
        );

        // Test: the spec's call against the chosen organisation.
        let res = c
            .post("/connections/books/test", cookie, &[("csrf", &alice.csrf)])
            .await;
        assert_eq!(res.status, StatusCode::OK);
        assert!(res.body.contains("works."), "{}", res.body);

        // Delete: the confirmation says it cannot be undone and what it revokes.
        let confirm = c.get("/connections/books/delete", cookie).await;
        assert!(
            confirm.body.contains("It cannot be undone")
                && confirm.body.contains("revokes the connection"),
            "{}",
            confirm.body
        );
        let res = c
            .post(
                "/connections/books/delete",
                cookie,
                &[("csrf", &alice.csrf)],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        assert!(res.location.unwrap().contains("revoked=1"));
        let ws = weft_engine::workspace::Workspace::find(&c.dir).unwrap();
        assert!(!ws.file.connections.contains_key("books"));
        assert!(
            ws.secrets()
                .unwrap()
                .get(&weft_engine::workspace::connection_tokens_id("books"))
                .unwrap()
                .is_none()
        );
    });
    let actions: Vec<String> = c
        .audit()
        .into_iter()
        .filter(|(_, _, t)| t == "books")
        .map(|(_, a, _)| a)
        .collect();
    for expected in [
        "connection.create",
        "connection.authorize-start",
        "connection.authorize",
        "connection.organisations",
        "connection.test",
        "connection.delete",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
    let mut guarded = sim.issued_tokens();
    guarded.push(sim.client_secret().to_owned());
    for body in c.bodies.borrow().iter() {
        for secret in &guarded {
            assert!(
                !body.contains(secret.as_str()),
                "a response holds a secret or token"
            );
        }
    }
}

#[test]
fn kantata_save_and_authorize_then_test_success_and_a_classified_failure() {
    use weft_harness::kantata::{KantataConfig, KantataSim};
    // (also: a connection given a pasted personal token instead of an OAuth client)
    let sim = KantataSim::start(KantataConfig {
        redirect_uris: vec![CALLBACK.to_owned()],
        ..KantataConfig::default()
    })
    .unwrap();
    let c = Console::new("kantata-authorize");
    let personal = sim.personal_token().to_owned();
    runtime().block_on(async {
        let alice = c.login("alice", ADMIN_PW).await;
        let cookie = Some(alice.cookie.as_str());
        let res = c
            .post(
                "/clients",
                cookie,
                &[
                    ("csrf", &alice.csrf),
                    ("connector", "kantata"),
                    ("name", "kapp"),
                    ("client_id", sim.client_id()),
                    ("client_secret", sim.client_secret()),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        let (app, api) = (sim.app_url(), sim.api_url());
        let create = |name: &'static str, action: &'static str| {
            vec![
                ("csrf", alice.csrf.clone()),
                ("connector", "kantata".to_owned()),
                ("method", "oauth2".to_owned()),
                ("name", name.to_owned()),
                ("client", "kapp".to_owned()),
                ("concurrency", "3".to_owned()),
                ("borrow", String::new()),
                ("host_app", app.clone()),
                ("host_api", api.clone()),
                ("action", action.to_owned()),
            ]
        };
        // Saved without authorizing: Test says what is missing and what to do.
        let pairs = create("later", "save");
        let res = c
            .post(
                "/connections",
                cookie,
                &pairs
                    .iter()
                    .map(|(k, v)| (*k, v.as_str()))
                    .collect::<Vec<_>>(),
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        let res = c
            .post("/connections/later/test", cookie, &[("csrf", &alice.csrf)])
            .await;
        assert!(
            res.body.contains("failed.") && res.body.contains("no credentials yet. Use Authorize"),
            "{}",
            res.body
        );

        let pairs = create("k", "authorize");
        let res = c
            .post(
                "/connections",
                cookie,
                &pairs
                    .iter()
                    .map(|(k, v)| (*k, v.as_str()))
                    .collect::<Vec<_>>(),
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        let back = play_browser(&res.location.unwrap()).await;
        let res = c.get(&back, cookie).await;
        assert_eq!(
            res.status,
            StatusCode::SEE_OTHER,
            "no organisations to choose: {}",
            res.body
        );
        assert_eq!(res.location.as_deref(), Some("/connections?authorized=k"));
        let res = c
            .post("/connections/k/test", cookie, &[("csrf", &alice.csrf)])
            .await;
        assert!(res.body.contains("works."), "{}", res.body);
        // Kantata signs in two ways: the form first asks which, then shows only that way's
        // inputs (no JavaScript), each a link.
        let res = c.get("/connections/new?connector=kantata", cookie).await;
        assert_eq!(res.status, StatusCode::OK);
        assert!(
            res.body
                .contains(r#"new?connector=kantata&amp;method=oauth2""#)
                && res
                    .body
                    .contains(r#"new?connector=kantata&amp;method=token""#)
                && res.body.contains("Asks for the Personal OAuth token."),
            "{}",
            res.body
        );
        assert!(!res.body.contains(r#"name="client""#), "{}", res.body);
        let res = c
            .get("/connections/new?connector=kantata&method=token", cookie)
            .await;
        assert_eq!(res.status, StatusCode::OK);
        assert!(
            res.body.contains(r#"name="method" value="token""#)
                && res.body.contains(r#"name="token""#)
                && !res.body.contains(r#"name="client""#)
                && res.body.contains("Sign in with OAuth 2.0"),
            "{}",
            res.body
        );
        let res = c
            .get("/connections/new?connector=kantata&method=oauth2", cookie)
            .await;
        assert!(
            res.body.contains(r#"name="method" value="oauth2""#)
                && res.body.contains(r#"name="client""#)
                && !res.body.contains(r#"name="token""#),
            "{}",
            res.body
        );
        let res = c
            .get("/connections/new?connector=kantata&method=saml", cookie)
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST);
        assert!(
            res.body
                .contains("does not sign in with `saml`; it signs in with `oauth2` or `token`"),
            "{}",
            res.body
        );

        // A pasted personal token: the token checked by its field's rules, sealed, never
        // shown; what belongs to OAuth refused, and the token refused to an OAuth connection.
        let token = sim.personal_token().to_owned();
        let base = |method: &str, client: &str, token: &str| {
            vec![
                ("csrf", alice.csrf.clone()),
                ("connector", "kantata".to_owned()),
                ("method", method.to_owned()),
                ("name", "personal".to_owned()),
                ("client", client.to_owned()),
                ("token", token.to_owned()),
                ("concurrency", "2".to_owned()),
                ("borrow", String::new()),
                ("host_app", app.clone()),
                ("host_api", api.clone()),
                ("action", "authorize".to_owned()),
            ]
        };
        for (method, client, pasted, says) in [
            (
                "token",
                "kapp",
                token.as_str(),
                "An OAuth client was given, but this connection signs in with a pasted token, which uses none",
            ),
            (
                "oauth2",
                "kapp",
                token.as_str(),
                "Personal OAuth token: it belongs to connections signing in with `token`, and this one signs in with oauth2",
            ),
            ("token", "", "", "Paste the Personal OAuth token."),
            ("token", "", " spaced", "space"),
        ] {
            let pairs = base(method, client, pasted);
            let res = c
                .post(
                    "/connections",
                    cookie,
                    &pairs
                        .iter()
                        .map(|(k, v)| (*k, v.as_str()))
                        .collect::<Vec<_>>(),
                )
                .await;
            assert_eq!(
                res.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {client:?}"
            );
            assert!(res.body.contains(says), "{says}: {}", res.body);
        }
        // A form that names no method, for a connector with two, is refused.
        let mut pairs = base("", "", &token);
        pairs.retain(|(k, _)| *k != "method");
        let res = c
            .post(
                "/connections",
                cookie,
                &pairs
                    .iter()
                    .map(|(k, v)| (*k, v.as_str()))
                    .collect::<Vec<_>>(),
            )
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST);
        assert!(
            res.body
                .contains("choose how this connection signs in first"),
            "{}",
            res.body
        );
        let pairs = base("token", "", &token);
        let res = c
            .post(
                "/connections",
                cookie,
                &pairs
                    .iter()
                    .map(|(k, v)| (*k, v.as_str()))
                    .collect::<Vec<_>>(),
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        assert_eq!(
            res.location.as_deref(),
            Some("/connections?created=personal"),
            "no consent for a pasted token"
        );
        let res = c
            .post(
                "/connections/personal/test",
                cookie,
                &[("csrf", &alice.csrf)],
            )
            .await;
        assert!(res.body.contains("works."), "{}", res.body);
        // A token connection offers no Authorize, and refuses one asked anyway.
        let list = c.get("/connections", cookie).await;
        assert!(
            list.body.contains(r#"action="/connections/k/authorize""#)
                && !list.body.contains(r#"action="/connections/personal/authorize""#),
            "{}",
            list.body
        );
        let res = c
            .post(
                "/connections/personal/authorize",
                cookie,
                &[("csrf", &alice.csrf)],
            )
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST);
        assert!(
            res.body
                .contains("Connection personal signs in with a pasted token, so there is nothing to authorize."),
            "{}",
            res.body
        );
        let edit = c.get("/connections/personal/edit", cookie).await;
        assert_eq!(edit.status, StatusCode::OK);
        assert!(
            edit.body.contains(r#"name="method" value="token""#)
                && !edit.body.contains(r#"name="client""#)
                && edit
                    .body
                    .contains(r#"personal&#x2f;edit?method=oauth2""#),
            "{}",
            edit.body
        );
        let res = c
            .post(
                "/connections/personal/edit",
                cookie,
                &[
                    ("csrf", &alice.csrf),
                    ("method", "token"),
                    ("token", ""),
                    ("concurrency", "4"),
                    ("borrow", ""),
                    ("host_app", &app),
                    ("host_api", &api),
                ],
            )
            .await;
        assert_eq!(
            res.status,
            StatusCode::SEE_OTHER,
            "an empty token keeps the sealed one: {}",
            res.body
        );
        let res = c
            .post(
                "/connections/personal/test",
                cookie,
                &[("csrf", &alice.csrf)],
            )
            .await;
        assert!(res.body.contains("works."), "{}", res.body);
        // Switched to OAuth on Edit: the client is required, the pasted token is not used
        // again, and the connection waits for its consent.
        let switch = c
            .get("/connections/personal/edit?method=oauth2", cookie)
            .await;
        assert!(
            switch.body.contains(r#"name="method" value="oauth2""#)
                && switch.body.contains(r#"name="client""#)
                && !switch.body.contains(r#"name="token""#),
            "{}",
            switch.body
        );
        let res = c
            .post(
                "/connections/personal/edit",
                cookie,
                &[
                    ("csrf", &alice.csrf),
                    ("method", "oauth2"),
                    ("client", "kapp"),
                    ("concurrency", "4"),
                    ("borrow", ""),
                    ("host_app", &app),
                    ("host_api", &api),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        assert_eq!(
            res.location.as_deref(),
            Some("/connections?changed=personal&reauthorize=1")
        );
        let res = c
            .post(
                "/connections/personal/test",
                cookie,
                &[("csrf", &alice.csrf)],
            )
            .await;
        assert!(
            res.body.contains("no credentials yet. Use Authorize"),
            "{}",
            res.body
        );

        // A member may test, but not authorize or delete.
        let bob = c.login("bob", MEMBER_PW).await;
        let res = c
            .post(
                "/connections/k/test",
                Some(&bob.cookie),
                &[("csrf", &bob.csrf)],
            )
            .await;
        assert!(res.body.contains("works."), "{}", res.body);
        let res = c
            .post(
                "/connections/k/authorize",
                Some(&bob.cookie),
                &[("csrf", &bob.csrf)],
            )
            .await;
        assert_eq!(res.status, StatusCode::FORBIDDEN);
        let res = c
            .post(
                "/connections/k/delete",
                Some(&bob.cookie),
                &[("csrf", &bob.csrf)],
            )
            .await;
        assert_eq!(res.status, StatusCode::FORBIDDEN);
    });
    let mut guarded = sim.issued_tokens();
    guarded.push(sim.client_secret().to_owned());
    guarded.push(personal);
    for body in c.bodies.borrow().iter() {
        for secret in &guarded {
            assert!(
                !body.contains(secret.as_str()),
                "a response holds a secret or token"
            );
        }
    }
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

fn value_of(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[at..].split('"').next().unwrap().to_owned()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test]
async fn tls_serves_https_with_secure_cookies_and_names_a_bad_key_file() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let bad = weft_server::tls::acceptor(&weft_server::TlsFiles {
        cert: fixture("test-cert.pem"),
        key: fixture("test-cert.pem"),
    })
    .err()
    .unwrap()
    .to_string();
    assert!(
        bad.contains("--tls-key") && bad.contains("no private key"),
        "{bad}"
    );
    let missing = weft_server::tls::acceptor(&weft_server::TlsFiles {
        cert: fixture("absent.pem"),
        key: fixture("test-key.pem"),
    })
    .err()
    .unwrap()
    .to_string();
    assert!(missing.contains("--tls-cert"), "{missing}");

    let c = Console::new("tls");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = Config {
        workspace: c.dir.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(weft_server::TlsFiles {
            cert: fixture("test-cert.pem"),
            key: fixture("test-key.pem"),
        }),
        insecure_http: false,
        specs: Vec::new(),
    };
    let server = tokio::spawn(weft_server::serve(
        config,
        move |addr| {
            let _ = tx.send(addr);
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let addr = tokio::time::timeout(std::time::Duration::from_secs(10), rx)
        .await
        .unwrap()
        .unwrap();

    // A client that does not finish its handshake holds up nobody.
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();

    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(fixture("test-cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        connector.connect(name, tcp),
    )
    .await
    .unwrap()
    .unwrap();
    tls.write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut answer),
    )
    .await
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("set-cookie: weft_login=")
            && answer.contains("; Secure"),
        "{answer}"
    );
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// QuickBooks' Environment is on the connection form as a choice, checked, kept in weft.toml and
/// shown selected on Edit; it picks among the connector's own base URLs, so a member sets it too.
#[tokio::test]
async fn connection_fields_are_on_the_form_checked_and_saved() {
    let c = Console::new("connection-field");
    let alice = c.login("alice", ADMIN_PW).await;
    let cookie = Some(alice.cookie.as_str());
    let res = c
        .post(
            "/clients",
            cookie,
            &[
                ("csrf", &alice.csrf),
                ("connector", "quickbooks"),
                ("name", "intuit"),
                ("client_id", "ABC123"),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let form = c.get("/connections/new?connector=quickbooks", cookie).await;
    assert!(
        form.body
            .contains(r#"<select id="field_environment" name="field_environment""#)
            && form
                .body
                .contains(r#"<option value="production" selected>"#)
            && form.body.contains(r#"<option value="sandbox">"#),
        "{}",
        form.body
    );
    // Every connection field is on the form, with its rules; the client's ID is not.
    assert!(
        form.body.contains(r#"id="field_minor_version""#)
            && form.body.contains(r#"min="75""#)
            && !form.body.contains(r#"id="field_client_id""#),
        "{}",
        form.body
    );
    let post = |environment: &'static str, minor: &'static str| {
        let csrf = alice.csrf.clone();
        let c = &c;
        async move {
            c.post(
                "/connections",
                cookie,
                &[
                    ("csrf", csrf.as_str()),
                    ("connector", "quickbooks"),
                    ("name", "qbo"),
                    ("client", "intuit"),
                    ("concurrency", "4"),
                    ("borrow", ""),
                    ("field_environment", environment),
                    ("field_minor_version", minor),
                ],
            )
            .await
        }
    };
    let res = post("staging", "").await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.body.contains(r#"id="field_environment-error""#),
        "{}",
        res.body
    );
    let res = post("sandbox", "74").await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.body.contains(r#"id="field_minor_version-error""#),
        "{}",
        res.body
    );
    assert!(
        !std::fs::read_to_string(c.dir.join("weft.toml"))
            .unwrap_or_default()
            .contains("qbo")
    );
    let res = post("sandbox", "76").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let toml = std::fs::read_to_string(c.dir.join("weft.toml")).unwrap();
    assert!(toml.contains("environment = \"sandbox\""), "{toml}");
    assert!(toml.contains("minor_version = \"76\""), "{toml}");
    let edit = c.get("/connections/qbo/edit", cookie).await;
    assert!(
        edit.body.contains(r#"<option value="sandbox" selected>"#)
            && edit.body.contains(r#"value="76""#),
        "{}",
        edit.body
    );
}
