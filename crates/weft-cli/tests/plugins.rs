//! The real `weft` binary with the files plugin built as a real cdylib: `plugins list`,
//! `doctor`, and `read` / `write` of CSV and JSON Lines files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use weft_harness::cdylib::{Targets, build, pick};

/// The directory of the freshly built files plugin.
fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let built = build("weft-connector-files", Targets::Lib).expect("the files plugin builds");
        pick(&built, "weft_plugin_files")
            .parent()
            .unwrap()
            .to_owned()
    })
}

/// A spec of contacts kept in files, with field rules, for `WEFT_SPEC_PATH`.
const CONTACTS: &str = r#"
id = "contacts"
name = "Contacts"
version = "1.0.0"

[test]
resource = "people"

[resources.people]
primary-key = "id"
plugin = "files"

[resources.people.fields]
id = { type = "integer", required = true }
name = { type = "string", required = true, max-length = 20 }
email = { type = "string" }
"#;

struct Case {
    dir: PathBuf,
}

impl Case {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("weft-cli-plugins-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("specs")).unwrap();
        std::fs::write(dir.join("specs/contacts.toml"), CONTACTS).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    fn weft(&self, args: &[&str], stdin: &str) -> Output {
        self.weft_with(args, stdin, &[])
    }

    fn weft_with(&self, args: &[&str], stdin: &str, plugin_path: &[&Path]) -> Output {
        let mut dirs = vec![plugin_dir()];
        dirs.extend(plugin_path);
        let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(args)
            .current_dir(&self.dir)
            .env("WEFT_SPEC_PATH", self.dir.join("specs"))
            .env("WEFT_PLUGIN_PATH", std::env::join_paths(dirs).unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the weft binary runs");
        // The command may exit before it reads everything; a closed pipe is not a failure here.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn plugins_list_shows_the_files_plugin() {
    let case = Case::new("list");
    let out = case.weft(&["plugins", "list", "--json"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "files")
        .expect("files is listed");
    assert_eq!(files["abi"], weft_plugin_abi::ABI_VERSION);
    assert_eq!(files["operations"], serde_json::json!(["list", "create"]));
}

#[test]
fn doctor_passes_when_everything_resolves_and_names_what_does_not() {
    let case = Case::new("doctor");
    let out = case.weft(&["doctor"], "");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("✓ specs/files.toml loads"), "{stdout}");
    assert!(stdout.contains("contacts.toml loads"), "{stdout}");
    assert!(stdout.contains("✓ files 0.0.0: ABI 1 in range"), "{stdout}");
    assert!(
        stdout.contains("✓ contacts resources.people.plugin → plugin `files`"),
        "{stdout}"
    );
    assert!(!stdout.contains('✘'), "{stdout}");

    // A spec naming a plugin that is not there, and a library that is not one.
    std::fs::write(
        case.dir.join("specs/ledger.toml"),
        CONTACTS
            .replace("\"contacts\"", "\"ledger\"")
            .replace("plugin = \"files\"", "plugin = \"ledger-sync\""),
    )
    .unwrap();
    let junk = case.dir.join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    let junk_file = format!(
        "{}weft_plugin_broken{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    std::fs::write(junk.join(junk_file), b"not a library").unwrap();
    let out = case.weft_with(&["doctor"], "", &[&junk]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("✘ broken: plugin library"), "{stdout}");
    assert!(
        stdout.contains("✘ ledger resources.people.plugin: plugin `ledger-sync` not found"),
        "{stdout}"
    );
    assert!(stdout.contains("cargo xtask plugins build"), "{stdout}");
    assert!(text(&out.stderr).contains("2 problems found"));
}

#[test]
fn read_streams_records_and_locates_each_bad_row() {
    let case = Case::new("read");
    let csv = case.path("people.csv");
    std::fs::write(
        &csv,
        "id,name,email\n1,Ada Lovelace,ada@example.com\ntwo,Bob,\n3,Grace Hopper,\n4,A name far longer than twenty,\n",
    )
    .unwrap();
    let out = case.weft(&["read", &format!("contacts:{csv}"), "people"], "");
    assert_eq!(out.status.code(), Some(1), "bad rows make the exit code 1");
    assert_eq!(
        text(&out.stdout),
        "{\"email\":\"ada@example.com\",\"id\":1,\"name\":\"Ada Lovelace\"}\n{\"id\":3,\"name\":\"Grace Hopper\"}\n"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "error: {csv}:3: field `id`: `two` is not a whole number"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("error: {csv}:5: field `name`: 29 characters")),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 records read, 2 rows refused"),
        "{stderr}"
    );

    let out = case.weft(
        &["read", &format!("contacts:{csv}"), "people", "--limit", "1"],
        "",
    );
    assert_eq!(text(&out.stdout).lines().count(), 1);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = case.weft(&["read", "contacts:missing.csv", "people"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot open `missing.csv`"),
        "{}",
        text(&out.stderr)
    );
    let out = case.weft(&["read", "contacts", "people"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("write `contacts:LOCATION`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn write_places_each_record_and_reads_back_the_same() {
    let case = Case::new("write");
    let out_csv = case.path("out.csv");
    let input = "{\"id\": 1, \"name\": \"Ada\", \"email\": \"ada@example.com\"}\n\
                 {\"id\": 2}\n\
                 not json\n\
                 {\"id\": 3, \"name\": \"Grace\"}\n";
    let out = case.weft(&["write", &format!("contacts:{out_csv}"), "people"], input);
    assert_eq!(
        out.status.code(),
        Some(1),
        "refused records make the exit code 1"
    );
    let results: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0]["at"], format!("{out_csv}:2"));
    assert_eq!(results[1]["errors"][0], "required field `name` is missing");
    assert!(
        results[2]["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("line 3: not JSON")
    );
    assert_eq!(results[3]["status"], "ok");
    assert!(text(&out.stderr).contains("2 written, 2 failed"));
    assert_eq!(
        std::fs::read_to_string(&out_csv).unwrap(),
        "id,name,email\n1,Ada,ada@example.com\n3,Grace,\n"
    );

    // CSV to JSON Lines and back through the binary gives the same file.
    let read = case.weft(&["read", &format!("contacts:{out_csv}"), "people"], "");
    assert!(read.status.success(), "{}", text(&read.stderr));
    let jsonl = case.path("copy.jsonl");
    let wrote = case.weft(
        &["write", &format!("contacts:{jsonl}"), "people"],
        &text(&read.stdout),
    );
    assert!(wrote.status.success(), "{}", text(&wrote.stderr));
    let read = case.weft(&["read", &format!("contacts:{jsonl}"), "people"], "");
    let again = case.path("again.csv");
    let wrote = case.weft(
        &["write", &format!("contacts:{again}"), "people"],
        &text(&read.stdout),
    );
    assert!(wrote.status.success(), "{}", text(&wrote.stderr));
    assert_eq!(
        std::fs::read_to_string(&again).unwrap(),
        std::fs::read_to_string(&out_csv).unwrap()
    );

    let out = case.weft(&["write", "contacts:out.txt", "people"], "{}\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("name the file `.csv` or `.jsonl`"),
        "{}",
        text(&out.stderr)
    );
    let out = case.weft(
        &[
            "write",
            "--update",
            &format!("contacts:{out_csv}"),
            "people",
        ],
        "{}\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not provide the `update` operation"),
        "{}",
        text(&out.stderr)
    );
}
