//! `weft demo` on a fresh machine: the whole job on the sandbox, reported as one JSON object,
//! with zero duplicates found by reading both sandboxes back.

mod common;

use std::io::{BufRead as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::Stdio;

use common::{Sandbox, err, free_port};

#[test]
fn demo_runs_the_whole_job_and_finds_no_duplicate() {
    let s = Sandbox::new("demo");
    let o = s.run(&["demo", "--json", "--invoices", "40"], None);
    assert!(o.status.success(), "{}", err(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["duplicates"], 0);
    assert_eq!(report["payments_written_back"], 1);
    assert_eq!(report["second_run_created"], 0);
    assert!(report["created_in_xero"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(report["created_in_xero"], report["references_written"]);
}

#[test]
fn demo_runs_a_named_flow_with_per_stream_counts_and_refuses_an_unknown_one() {
    let s = Sandbox::new("demo-flow");
    let o = s.run(
        &[
            "demo",
            "--flow",
            "kantata-xero",
            "--json",
            "--invoices",
            "20",
        ],
        None,
    );
    assert!(o.status.success(), "{}", err(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["flow"], "kantata-xero");
    assert_eq!(report["duplicates"], 0);
    let first = &report["streams"]["first_run"]["invoices"];
    assert_eq!(first["created"], report["created_in_xero"], "{report}");
    assert_eq!(report["streams"]["second_run"]["payments"]["created"], 1);
    let o = s.run(&["demo", "--flow", "nope"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("no template `nope`; the templates are: kantata-xero"),
        "{}",
        err(&o)
    );
}

/// Every other scenario runs on the sandbox too, with nothing written twice and a second run
/// that changes nothing; the legacy expense claims first meet Xero's refusal, then fill the
/// Xero Users table with `weft tables suggest` and `weft tables import`.
#[test]
fn every_scenario_template_runs_on_the_sandbox_without_duplicates() {
    let s = Sandbox::new("demo-scenarios");
    for flow in [
        "kantata-xero-bills",
        "kantata-xero-journals",
        "xero-lists-kantata",
        "kantata-xero-expense-claims",
        "kantata-quickbooks",
    ] {
        let o = s.run(
            &["demo", "--flow", flow, "--json", "--invoices", "30"],
            None,
        );
        assert!(o.status.success(), "{flow}: {}", err(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(report["flow"], flow);
        assert_eq!(report["duplicates"], 0, "{flow}: {report}");
        assert!(
            report["created"].as_u64().unwrap() > 0 || flow == "xero-lists-kantata",
            "{flow}: {report}"
        );
        assert_eq!(report["second_run"]["created"], 0, "{flow}: {report}");
        assert_eq!(report["second_run"]["updated"], 0, "{flow}: {report}");
        if flow == "kantata-quickbooks" {
            assert_eq!(
                report["created_in_quickbooks"],
                report["streams"]["first_run"]["invoices"]["created"],
                "{report}"
            );
            assert_eq!(report["payments_written_back"], 1, "{report}");
        }
    }
}

/// HubSpot → Kantata on the sandbox: each won deal becomes one Kantata project (its company's
/// client group made once), every project's id is written back on its deal, nothing is written
/// twice, and a second run changes nothing.
#[test]
fn hubspot_won_deals_become_kantata_projects_on_the_sandbox_without_duplicates() {
    let s = Sandbox::new("demo-hubspot");
    let o = s.run(
        &[
            "demo",
            "--flow",
            "hubspot-kantata",
            "--json",
            "--invoices",
            "40",
        ],
        None,
    );
    assert!(o.status.success(), "{}", err(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["flow"], "hubspot-kantata");
    assert_eq!(report["duplicates"], 0, "{report}");
    let created = report["created"].as_u64().unwrap();
    assert!(created > 0, "{report}");
    assert_eq!(report["references_written"], created, "{report}");
    assert!(
        report["contacts_created"].as_u64().unwrap() > 0,
        "client groups made: {report}"
    );
    assert_eq!(report["second_run"]["created"], 0, "{report}");
    assert_eq!(report["second_run"]["updated"], 0, "{report}");
}

/// A folder an earlier demo left in the temporary directory (killed before it could remove it),
/// under the very name this demo's process id would once have given it, is neither reused nor
/// removed: each demo makes a new folder of its own and removes only that.
#[test]
fn a_folder_left_by_a_killed_demo_is_neither_reused_nor_removed() {
    let s = Sandbox::new("demo-leftover");
    let tmp = s.project().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let kept = tmp.join("kept");
    let o = s.run(
        &[
            "demo",
            "--json",
            "--invoices",
            "5",
            "--dir",
            kept.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", err(&o));
    // The shell copies that workspace to `weft-demo-` and its own process id, then becomes
    // `weft demo` under the same id.
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"cp -R "$TMPDIR/kept" "$TMPDIR/weft-demo-$$" && exec "$0" demo --json --invoices 5"#)
        .arg(env!("CARGO_BIN_EXE_weft"))
        .current_dir(s.project())
        .env("TMPDIR", &tmp)
        .env("WEFT_CONFIG_DIR", s.config())
        .env_remove("WEFT_MASTER_KEY")
        .env_remove("WEFT_STATE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let leftover = tmp.join(format!("weft-demo-{}", child.id()));
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["duplicates"], 0, "{report}");
    assert!(
        leftover.join("workspace/weft.toml").is_file(),
        "the leftover was removed"
    );
    let mut left: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "kept".to_owned(),
            leftover.file_name().unwrap().to_string_lossy().into_owned()
        ],
        "the demo removes its own folder and nothing else"
    );
}

/// Kills a process group when dropped: `weft demo --serve` and the `weft serve` it started.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        // The kill(2) call itself: a `kill` command's parsing of a negative id is not to be
        // trusted with a whole process group.
        if let Some(group) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.0.wait();
    }
}

#[test]
fn demo_serve_leaves_the_console_running_over_the_demo_with_its_runs() {
    let s = Sandbox::new("demo-serve");
    let tmp = s.project().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    s.guard("demo serve password 9");
    let mut child = s.command(&[
        "demo",
        "--invoices",
        "20",
        "--serve",
        "--listen",
        &listen,
        "--password-stdin",
    ]);
    let mut group = Group(
        child
            .env("TMPDIR", &tmp)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    group
        .0
        .stdin
        .take()
        .unwrap()
        .write_all(b"demo serve password 9\n")
        .unwrap();
    let mut lines = std::io::BufReader::new(group.0.stdout.take().unwrap()).lines();
    let mut said = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.contains("the Weft console serves") {
            break;
        }
    }
    assert!(
        said.contains("Duplicates found by reading both sandboxes back: 0"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "The console: http://localhost:{port}/ (sign in as `demo`)"
        )),
        "{said}"
    );
    // The console answers, and signing in as `demo` shows the demo's two runs.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let page = runtime.block_on(async {
        let http = weft_engine::http::client().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let cookie = |res: &reqwest::Response, name: &str| {
            res.headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find(|c| c.starts_with(name))
                .map(|c| c.split(';').next().unwrap().to_owned())
                .unwrap()
        };
        let login = http.get(format!("{base}/login")).send().await.unwrap();
        let pre = cookie(&login, "weft_login=");
        let login = login.text().await.unwrap();
        let at = login.find("name=\"csrf\" value=\"").unwrap() + 19;
        let csrf = login[at..].split('"').next().unwrap().to_owned();
        let signed = http
            .post(format!("{base}/login"))
            .header("cookie", pre)
            .form(&[
                ("csrf", csrf.as_str()),
                ("name", "demo"),
                ("password", "demo serve password 9"),
                ("next", "/runs"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(signed.status().as_u16(), 303);
        let session = cookie(&signed, "weft_session=");
        http.get(format!("{base}/runs"))
            .header("cookie", session)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(page.contains("kantata-xero"), "{page}");
    assert!(
        page.contains("/runs/2"),
        "the demo's second run is listed: {page}"
    );
    // Ctrl-C, as a terminal sends it to the whole group: the console stops, the demo ends well
    // and its temporary folder is gone.
    let pid = rustix::process::Pid::from_raw(group.0.id() as i32).unwrap();
    rustix::process::kill_process_group(pid, rustix::process::Signal::INT).unwrap();
    let mut status = None;
    for _ in 0..600 {
        status = group.0.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = status.expect("the demo ends within a minute of Ctrl-C");
    assert!(status.success(), "{status}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "left in the temporary folder: {left:?}");
    drop(group);
}
