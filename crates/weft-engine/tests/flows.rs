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
