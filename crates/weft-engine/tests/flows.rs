//! Flow files: loading, located problems, and checks against the connectors' specs.

use std::path::Path;

use weft_core::Spec;
use weft_engine::flow::{Flow, FlowError};

const MINIMAL: &str = r#"
[connections.src]
connector = "kantata"

[connections.dst]
connector = "xero"

[options]
default-account = "200"

[streams.orders]
source = { connection = "src", resource = "invoices" }

[streams.orders.write]
connection = "dst"
resource = "invoices"
fields = { Type = "'ACCREC'", Reference = "record.id ~ options.default_account" }
"#;

fn shipped(id: &str) -> Option<Spec> {
    weft_core::builtin::load_all()
        .into_iter()
        .filter_map(|r| r.spec)
        .find(|s| s.file().id == id)
}

#[test]
fn a_minimal_flow_loads_and_checks_clean() {
    let flow = Flow::parse("k2x", Path::new("flows/k2x.toml"), MINIMAL).unwrap();
    assert_eq!(flow.connection_name("src"), "src");
    assert!(flow.check_against(&shipped).is_empty());
}

#[test]
fn every_problem_is_located() {
    let bad = MINIMAL
        .replace("record.id ~", "record.id ~ +")
        .replace("options.default_account\"", "options.default_acount\"");
    let err = Flow::parse("k2x", Path::new("flows/k2x.toml"), &bad).unwrap_err();
    let FlowError::Invalid { problems, .. } = err else {
        panic!("expected problems");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems.iter().all(|p| p.line > 0));
    let typo = MINIMAL.replace("options.default_account\"", "options.default_acount\"");
    let err = Flow::parse("k2x", Path::new("f.toml"), &typo).unwrap_err();
    assert!(
        err.to_string().contains("did you mean `default_account`"),
        "{err}"
    );
    assert!(err.to_string().contains("f.toml:17:"), "{err}");
    let unknown = MINIMAL.replace("[options]", "[options]\n[streams.orders.sourc]");
    assert!(Flow::parse("k2x", Path::new("f.toml"), &unknown).is_err());
}

#[test]
fn a_written_field_the_destination_does_not_have_is_a_located_error() {
    let typo = MINIMAL.replace("Reference =", "Refrence =");
    let flow = Flow::parse("k2x", Path::new("f.toml"), &typo).unwrap();
    let problems = flow.check_against(&shipped);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].message.contains("did you mean `Reference`"),
        "{problems:?}"
    );
    assert_eq!(problems[0].line, 17);
    let resource = MINIMAL.replace("resource = \"invoices\" }", "resource = \"invoice\" }");
    let flow = Flow::parse("k2x", Path::new("f.toml"), &resource).unwrap();
    let problems = flow.check_against(&shipped);
    assert!(
        problems[0].message.contains("did you mean `invoices`"),
        "{problems:?}"
    );
}

#[test]
fn csv_tables_report_each_bad_row() {
    let dir = std::env::temp_dir().join(format!("weft-flow-csv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("accounts.csv"),
        "key,value\ntime,200\nexpense,\ntime,201\n",
    )
    .unwrap();
    let text = format!("{MINIMAL}\n[tables.accounts]\nfile = \"accounts.csv\"\n");
    let err = Flow::parse("k2x", &dir.join("k2x.toml"), &text).unwrap_err();
    let FlowError::Invalid { problems, .. } = err else {
        panic!("expected problems");
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].line, 3);
    assert_eq!(problems[1].line, 4);
    std::fs::write(dir.join("accounts.csv"), "key,value\ntime,210\n").unwrap();
    let flow = Flow::parse("k2x", &dir.join("k2x.toml"), &text).unwrap();
    assert_eq!(flow.tables["accounts"]["time"], "210");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_lookup_by_keys_needs_its_param_and_only_it_takes_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../templates/kantata-xero/flows/kantata-xero.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("load = \"keys\"\nparam = \"only\"\nbatch = 200\n"));
    let cases = [
        ("param = \"only\"\n", "", "`param`"),
        ("load = \"keys\"\n", "load = \"list\"\n", "`param`"),
        ("batch = 200\n", "batch = 0\n", "`batch`"),
    ];
    for (from, to, said) in cases {
        let bad = text.replacen(from, to, 1);
        let err = Flow::parse("kantata-xero", Path::new("f.toml"), &bad).unwrap_err();
        let FlowError::Invalid { problems, .. } = &err else {
            panic!("expected problems: {err}");
        };
        assert!(
            problems
                .iter()
                .any(|p| p.line > 0 && p.message.contains(said)),
            "{from:?} -> {to:?}: {problems:?}"
        );
    }
}

/// A whole-list lookup takes no key; a list filter names only parameters the list passes on;
/// a skip may read computed items; a change feed must be a list with a cursor.
#[test]
fn whole_list_lookups_filters_late_skips_and_change_feeds_are_checked() {
    let good = format!(
        "{MINIMAL}{}",
        r#"
[[streams.orders.lookup]]
name = "projects"
connection = "src"
resource = "workspaces"
load = "all"
when = "options.default_account"
filter = "'only=' ~ options.default_account"

[[streams.orders.items]]
into = "lines"
each = "lookup.projects"
fields = { id = "item.id" }

[[streams.orders.items]]
into = "again"
each = "items.lines"
fields = { id = "item.id" }

[[streams.orders.skip]]
when = "items.lines | length == 0"
reason = "no project"
"#
    );
    let flow = Flow::parse("k2x", Path::new("f.toml"), &good).unwrap();
    assert!(
        flow.check_against(&shipped).is_empty(),
        "{:?}",
        flow.check_against(&shipped)
    );
    assert_eq!(
        flow.filter_params("'only=' ~ options.default_account")
            .unwrap(),
        vec![("only".to_owned(), "200".to_owned())]
    );

    // A key on a whole-list lookup, and a filter naming a parameter the list does not take.
    let keyed = good.replace("load = \"all\"", "load = \"all\"\nkey = \"record.id\"");
    let err = Flow::parse("k2x", Path::new("f.toml"), &keyed).unwrap_err();
    assert!(err.to_string().contains("takes no `key`"), "{err}");
    let unknown = good.replace("'only='", "'onyl='");
    let flow = Flow::parse("k2x", Path::new("f.toml"), &unknown).unwrap();
    let problems = flow.check_against(&shipped);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].message.contains("`onyl`")
            && problems[0].message.contains("did you mean `only`"),
        "{problems:?}"
    );
    assert!(problems[0].line > 0);
    let broken = good.replace("'only=' ~", "'only' ~");
    let flow = Flow::parse("k2x", Path::new("f.toml"), &broken).unwrap();
    let problems = flow.check_against(&shipped);
    assert!(
        problems[0].message.contains("not a `name=value`"),
        "{problems:?}"
    );
    // An items block reads only the lists of the blocks before it.
    let early = good.replace("each = \"lookup.projects\"", "each = \"items.again\"");
    assert!(Flow::parse("k2x", Path::new("f.toml"), &early).is_err());

    // Source parameters are checked the same way.
    let param = MINIMAL.replace(
        "resource = \"invoices\" }",
        "resource = \"invoices\", params = { workspace_idd = \"1\" } }",
    );
    let flow = Flow::parse("k2x", Path::new("f.toml"), &param).unwrap();
    let problems = flow.check_against(&shipped);
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("did you mean `workspace_id`")),
        "{problems:?}"
    );

    // A change feed needs a list with a cursor.
    let feed = MINIMAL.replace(
        "source = { connection = \"src\", resource = \"invoices\" }",
        "source = { connection = \"src\", resource = \"invoices\", changes = { resource = \"me\", subject = \"found.id\", event = \"found.id\", keep = \"9d\" } }",
    );
    let flow = Flow::parse("k2x", Path::new("f.toml"), &feed).unwrap();
    let problems = flow.check_against(&shipped);
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("cannot be a change feed")),
        "{problems:?}"
    );
}

/// A scratch folder for one test's flow and table files.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-flow-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn problems_of(err: FlowError) -> Vec<weft_engine::flow::FlowProblem> {
    match err {
        FlowError::Invalid { problems, .. } => problems,
        other => panic!("expected problems: {other}"),
    }
}

#[test]
fn mbridge_csv_tables_are_read_by_their_id_columns_with_display_names_kept() {
    let dir = scratch("mbridge");
    // Header names in another case and with spaces around them; a byte-order mark as Excel
    // writes it; display names optional per row; a quoted name holding a comma.
    std::fs::write(
        dir.join("users.csv"),
        "\u{feff} mavenlink display name ,MAVENLINK ID, External Display Name,external id\n\"Lee, Ann\",101,Ann Lee,c-1\n,102,,c-2\n",
    )
    .unwrap();
    let text = format!("{MINIMAL}\n[tables.users]\nfile = \"users.csv\"\none-to-one = true\n");
    let flow = Flow::parse("k2x", &dir.join("k2x.toml"), &text).unwrap();
    assert_eq!(flow.tables["users"]["101"], "c-1");
    assert_eq!(flow.tables["users"]["102"], "c-2");
    let rows = &flow.rows["users"];
    assert_eq!(rows[0].key_name, "Lee, Ann");
    assert_eq!(rows[0].value_name, "Ann Lee");
    assert_eq!(rows[0].line, 2);
    assert_eq!(rows[1].key_name, "");
    // Only the two id columns are required.
    std::fs::write(dir.join("users.csv"), "External ID,Mavenlink ID\nc-9,109\n").unwrap();
    let flow = Flow::parse("k2x", &dir.join("k2x.toml"), &text).unwrap();
    assert_eq!(flow.tables["users"]["109"], "c-9");
    // key/value files still load.
    std::fs::write(dir.join("users.csv"), "key,value\n1,a\n").unwrap();
    let flow = Flow::parse("k2x", &dir.join("k2x.toml"), &text).unwrap();
    assert_eq!(flow.tables["users"]["1"], "a");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_bad_row_of_an_mbridge_file_is_located_with_what_to_do() {
    let dir = scratch("mbridge-bad");
    std::fs::write(
        dir.join("users.csv"),
        "Mavenlink Display Name,Mavenlink ID,External Display Name,External ID\n\
         Ann,101,Ann Lee,c-1\n\
         Bo,,Bo Ray,c-2\n\
         Cy,103,Cy Twin,\n\
         Ann again,101,Ann Lee,c-3\n\
         Di,104,Di Sun\n\
         \n\
         Ed,105,Ed Wu,c-5,extra\n\
         Fay,106,Fay Oh,c-6\n",
    )
    .unwrap();
    let text = format!("{MINIMAL}\n[tables.users]\nfile = \"users.csv\"\n");
    let problems = problems_of(Flow::parse("k2x", &dir.join("k2x.toml"), &text).unwrap_err());
    let lines: Vec<(usize, &str)> = problems
        .iter()
        .map(|p| (p.line, p.message.as_str()))
        .collect();
    assert_eq!(lines.len(), 5, "{problems:#?}");
    assert!(problems.iter().all(|p| p.file.ends_with("users.csv")));
    assert_eq!(lines[0].0, 3);
    assert!(
        lines[0]
            .1
            .contains("`Mavenlink ID` is empty; fill it in or delete the row")
    );
    assert_eq!(lines[1].0, 4);
    assert!(lines[1].1.contains("`External ID` is empty"));
    assert_eq!(lines[2].0, 5);
    assert!(
        lines[2].1.contains("`101` appears twice (first on line 2)"),
        "{}",
        lines[2].1
    );
    assert_eq!(lines[3].0, 6);
    assert!(
        lines[3].1.contains("has 3 cell(s) but the header has 4"),
        "{}",
        lines[3].1
    );
    assert_eq!(lines[4].0, 8);
    assert!(lines[4].1.contains("double quotes"));
    // A header without the id columns says which columns it needs.
    std::fs::write(dir.join("users.csv"), "Mavenlink ID,External\n1,2\n").unwrap();
    let problems = problems_of(Flow::parse("k2x", &dir.join("k2x.toml"), &text).unwrap_err());
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, 1);
    assert!(
        problems[0].message.contains("`External ID`"),
        "{problems:?}"
    );
    assert!(
        problems[0]
            .message
            .contains("it has: Mavenlink ID, External")
    );
    // A missing file says how to make one.
    std::fs::remove_file(dir.join("users.csv")).unwrap();
    let problems = problems_of(Flow::parse("k2x", &dir.join("k2x.toml"), &text).unwrap_err());
    assert!(
        problems[0].message.contains("does not exist"),
        "{problems:?}"
    );
    // Text that is not UTF-8.
    std::fs::write(
        dir.join("users.csv"),
        b"Mavenlink ID,External ID\n1,caf\xe9\n",
    )
    .unwrap();
    let problems = problems_of(Flow::parse("k2x", &dir.join("k2x.toml"), &text).unwrap_err());
    assert_eq!(problems[0].line, 2, "{problems:?}");
    assert!(problems[0].message.contains("UTF-8"), "{problems:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_one_to_one_table_refuses_two_keys_mapped_to_one_value_naming_both_rows() {
    let dir = scratch("one-to-one");
    std::fs::write(
        dir.join("users.csv"),
        "Mavenlink ID,External ID\n101,c-1\n102,c-2\n103,c-1\n",
    )
    .unwrap();
    let many = format!("{MINIMAL}\n[tables.users]\nfile = \"users.csv\"\n");
    // Many-to-one is the default.
    let flow = Flow::parse("k2x", &dir.join("k2x.toml"), &many).unwrap();
    assert_eq!(flow.tables["users"].len(), 3);
    let one = many.replace(
        "file = \"users.csv\"\n",
        "file = \"users.csv\"\none-to-one = true\n",
    );
    let problems = problems_of(Flow::parse("k2x", &dir.join("k2x.toml"), &one).unwrap_err());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].line, 4);
    let m = &problems[0].message;
    assert!(m.contains("`c-1` is mapped from both `101`"), "{m}");
    assert!(m.contains("users.csv:2"), "{m}");
    assert!(m.contains("`103` (here)"), "{m}");
    // Inline rows too, located in the flow file; a file row replaces the inline row of its key.
    let inline = format!(
        "{MINIMAL}\n[tables.users]\none-to-one = true\nrows = {{ a = \"v\", b = \"v\" }}\n"
    );
    let problems = problems_of(Flow::parse("k2x", Path::new("f.toml"), &inline).unwrap_err());
    assert_eq!(problems.len(), 1, "{problems:?}");
    let rows_line = inline
        .lines()
        .position(|l| l.starts_with("rows ="))
        .unwrap()
        + 1;
    assert!(
        problems[0]
            .to_string()
            .starts_with(&format!("f.toml:{rows_line}:")),
        "{}",
        problems[0]
    );
    std::fs::write(dir.join("users.csv"), "Mavenlink ID,External ID\nb,w\n").unwrap();
    let both = inline.replace(
        "one-to-one = true\n",
        "one-to-one = true\nfile = \"users.csv\"\n",
    );
    let flow = Flow::parse("k2x", &dir.join("k2x.toml"), &both).unwrap();
    assert_eq!(flow.tables["users"]["b"], "w");
    std::fs::remove_dir_all(&dir).ok();
}

const SIDES: &str = r#"
[tables.users]
rows = { "1" = "c-1" }
one-to-one = true

[tables.users.suggest]
left = { connection = "src", resource = "users", key = "found.id", name = "found.full_name", email = "found.email_address" }
right = { connection = "dst", resource = "contacts", params = { where = "ContactStatus==\"ACTIVE\"" }, key = "found.ContactID", name = "found.Name" }
"#;

#[test]
fn suggestion_sides_are_checked_at_load_and_against_the_specs() {
    let text = format!("{MINIMAL}{SIDES}");
    let flow = Flow::parse("k2x", Path::new("f.toml"), &text).unwrap();
    assert!(flow.check_against(&shipped).is_empty());
    let sides = flow.file.tables["users"].suggest.as_ref().unwrap();
    assert_eq!(sides.right.params["where"], "ContactStatus==\"ACTIVE\"");
    // A misspelt alias and an expression reading what it may not, each located.
    let bad = text
        .replace(
            "connection = \"dst\", resource = \"contacts\"",
            "connection = \"dts\", resource = \"contacts\"",
        )
        .replace("name = \"found.full_name\"", "name = \"record.full_name\"");
    let problems = problems_of(Flow::parse("k2x", Path::new("f.toml"), &bad).unwrap_err());
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().all(|p| p.line > 20), "{problems:?}");
    assert!(
        problems.iter().any(|p| p
            .message
            .contains("`dts` is not one of the flow's connections")
            && p.message.contains("did you mean `dst`")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p
            .message
            .contains("reads `record`, which is not available here")),
        "{problems:?}"
    );
    // A resource the connector does not have.
    let typo = text.replace("resource = \"contacts\"", "resource = \"contact\"");
    let flow = Flow::parse("k2x", Path::new("f.toml"), &typo).unwrap();
    let problems = flow.check_against(&shipped);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].message.contains("did you mean `contacts`"),
        "{problems:?}"
    );
    let right_line = typo.lines().position(|l| l.starts_with("right =")).unwrap() + 1;
    assert_eq!(problems[0].line, right_line, "{problems:?}");
}

#[test]
fn a_table_file_can_be_left_out_to_be_written_anew() {
    let dir = scratch("leave-out");
    let text =
        format!("{MINIMAL}\n[tables.users]\nfile = \"missing.csv\"\nrows = {{ a = \"1\" }}\n");
    std::fs::write(dir.join("k2x.toml"), &text).unwrap();
    assert!(Flow::load(&dir.join("k2x.toml")).is_err());
    let flow = Flow::load_leaving_out(&dir.join("k2x.toml"), "users").unwrap();
    assert_eq!(flow.tables["users"]["a"], "1");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_suggestion_side_needs_a_resource_that_lists() {
    // The Kantata spec with its users resource unable to list.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs/kantata.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("[resources.users.list]").unwrap();
    let end = start + text[start..].find("[resources.users.get]").unwrap();
    let edited = format!("{}{}", &text[..start], &text[end..]);
    let report = weft_core::load::load_str("kantata.toml", &edited);
    let kantata = report.spec.expect("the edited spec loads");
    let specs = |id: &str| {
        if id == "kantata" {
            Some(kantata.clone())
        } else {
            shipped(id)
        }
    };
    let flow = Flow::parse("k2x", Path::new("f.toml"), &format!("{MINIMAL}{SIDES}")).unwrap();
    let problems = flow.check_against(&specs);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]
            .message
            .contains("resource `users` of `src` has no `list` operation"),
        "{problems:?}"
    );
    let left_line = format!("{MINIMAL}{SIDES}")
        .lines()
        .position(|l| l.starts_with("left ="))
        .unwrap()
        + 1;
    assert_eq!(problems[0].line, left_line);
}

#[test]
fn a_schedule_is_read_and_a_bad_one_located() {
    for good in [
        "every 15m",
        "every 1h",
        "*/15 * * * *",
        "0 30 6 * * MON-FRI",
    ] {
        let text = format!("schedule = \"{good}\"\n{MINIMAL}");
        let flow = Flow::parse("k2x", Path::new("f.toml"), &text).unwrap();
        assert_eq!(flow.file.schedule.as_deref(), Some(good));
    }
    for (bad, said) in [
        ("every 10s", "too often"),
        ("every fortnight", "not an interval"),
        ("at noon", "neither `every DURATION` nor a cron expression"),
        ("61 * * * *", "cron expression"),
    ] {
        let text = format!("description = \"d\"\nschedule = \"{bad}\"\n{MINIMAL}");
        let err = Flow::parse("k2x", Path::new("f.toml"), &text).unwrap_err();
        let FlowError::Invalid { problems, .. } = err else {
            panic!("expected problems");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            (problems[0].line, problems[0].column),
            (2, 1),
            "{problems:?}"
        );
        assert!(problems[0].message.contains(said), "{problems:?}");
    }
}

#[test]
fn a_carried_field_the_destination_does_not_have_is_a_located_error() {
    let text = |carry: &str| {
        MINIMAL.replace("[connections.dst]\nconnector = \"xero\"", "[connections.dst]\nconnector = \"quickbooks\"")
            .replace(
                "fields = { Type = \"'ACCREC'\", Reference = \"record.id ~ options.default_account\" }",
                &format!("fields = {{ DocNumber = \"record.id ~ options.default_account\" }}\nupdate = {{ carry = [{carry}] }}"),
            )
    };
    let ok = Flow::parse("k2q", Path::new("f.toml"), &text("\"SyncToken\"")).unwrap();
    assert!(
        ok.check_against(&shipped).is_empty(),
        "{:?}",
        ok.check_against(&shipped)
    );
    let typo = Flow::parse(
        "k2q",
        Path::new("f.toml"),
        &text("\"SyncToken\", \"SynToken\""),
    )
    .unwrap();
    let problems = typo.check_against(&shipped);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].message.contains("has no field `SynToken`")
            && problems[0].message.contains("did you mean `SyncToken`"),
        "{problems:?}"
    );
    assert_eq!(problems[0].line, 18, "{problems:?}");
}
