//! `weft tables list|show|import|suggest` through the real binary: M-Bridge CSV files imported
//! all or nothing, inline tables refused with a hint, and rows suggested by reading Kantata users
//! and Xero contacts from the simulators.

mod common;

use common::{Sandbox, err, flow_sims, flow_workspace, free_port, out};

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}\n{}", out(o), err(o));
}

const USERS: &str = r#"
# Kantata users → Xero contacts (M-Bridge's "Vendor Contacts"), one-to-one.
[tables.users]
file = "../tables/users.csv"
one-to-one = true
"#;

#[test]
fn tables_are_listed_shown_and_imported_all_or_nothing() {
    let s = Sandbox::new("tables-import");
    ok(&s.run(&["init", "--template", "kantata-xero"], None));
    let list = s.run(&["tables", "list", "kantata-xero"], None);
    ok(&list);
    let text = out(&list);
    assert!(text.starts_with("TABLE"), "{text}");
    assert!(text.contains("tax-types"), "{text}");
    assert!(text.contains("(inline)"), "{text}");
    assert!(text.contains("line-accounts.csv"), "{text}");
    let json = s.run(&["tables", "list", "kantata-xero", "--json"], None);
    ok(&json);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json[0]["table"], "accounts");
    assert_eq!(json[0]["rows"], 4);
    assert_eq!(json[0]["one_to_one"], false);
    let show = s.run(&["tables", "show", "kantata-xero", "accounts"], None);
    ok(&show);
    assert!(out(&show).contains("additional"), "{}", out(&show));
    assert!(out(&show).contains("line-accounts.csv:5"), "{}", out(&show));

    // An inline-only table has no file to import into: refused, nothing written anywhere.
    let input = s.project().join("users.csv");
    std::fs::write(&input, "Mavenlink ID,External ID\ntime,OUTPUT\n").unwrap();
    let flow_path = s.project().join("flows/kantata-xero.toml");
    let flow_before = std::fs::read(&flow_path).unwrap();
    let inline = s.run(
        &["tables", "import", "kantata-xero", "tax-types", "users.csv"],
        None,
    );
    assert_eq!(inline.status.code(), Some(1));
    assert!(
        err(&inline).contains("Add `file = \"../tables/tax-types.csv\"` under [tables.tax-types]"),
        "{}",
        err(&inline)
    );
    assert!(
        err(&inline).contains("nothing was written"),
        "{}",
        err(&inline)
    );
    assert!(!s.project().join("tables/tax-types.csv").exists());
    assert_eq!(std::fs::read(&flow_path).unwrap(), flow_before);

    // A table whose file does not exist yet: the import creates it.
    let mut text = String::from_utf8(flow_before).unwrap();
    text.push_str(USERS);
    std::fs::write(&flow_path, &text).unwrap();
    let target = s.project().join("tables/users.csv");
    // Every bad row is reported with its line, and nothing is written.
    std::fs::write(
        &input,
        "Mavenlink Display Name,Mavenlink ID,External Display Name,External ID\n\
         Ann Lee,101,Ann Lee Ltd,c-1\n\
         Bo Ray,,Bo Ray,c-2\n\
         Cy,103,Cy\n\
         Ann Lee,101,Ann Lee Ltd,c-1\n",
    )
    .unwrap();
    let bad = s.run(
        &["tables", "import", "kantata-xero", "users", "users.csv"],
        None,
    );
    assert_eq!(bad.status.code(), Some(1));
    let e = err(&bad);
    assert!(e.contains("users.csv:3:1"), "{e}");
    assert!(e.contains("`Mavenlink ID` is empty"), "{e}");
    assert!(e.contains("users.csv:4:1"), "{e}");
    assert!(e.contains("users.csv:5:1"), "{e}");
    assert!(e.contains("3 problem(s)"), "{e}");
    assert!(e.contains("nothing was written"), "{e}");
    assert!(!target.exists());

    // A good file: header names in any case, display names optional.
    std::fs::write(
        &input,
        " mavenlink display name , mavenlink id ,EXTERNAL DISPLAY NAME,External Id\n\
         Ann Lee,101,\"Lee, Ann\",c-1\n\
         ,102,,c-2\n",
    )
    .unwrap();
    let good = s.run(
        &["tables", "import", "kantata-xero", "users", "users.csv"],
        None,
    );
    ok(&good);
    assert!(
        out(&good)
            .contains("imported 2 row(s) into table `users` of flow `kantata-xero` (a new file)"),
        "{}",
        out(&good)
    );
    let written = std::fs::read_to_string(&target).unwrap();
    assert_eq!(
        written,
        "Mavenlink Display Name,Mavenlink ID,External Display Name,External ID\nAnn Lee,101,\"Lee, Ann\",c-1\n,102,,c-2\n"
    );
    let show = s.run(&["tables", "show", "kantata-xero", "users", "--json"], None);
    ok(&show);
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["one_to_one"], true);
    assert_eq!(shown["rows"][0]["key"], "101");
    assert_eq!(shown["rows"][0]["value_name"], "Lee, Ann");
    assert_eq!(shown["rows"][1]["key_name"], "");

    // Two keys on one value in a one-to-one table: refused naming both rows; the file is kept.
    std::fs::write(
        &input,
        "Mavenlink ID,External ID\n101,c-1\n102,c-2\n103,c-1\n",
    )
    .unwrap();
    let twice = s.run(
        &["tables", "import", "kantata-xero", "users", "users.csv"],
        None,
    );
    assert_eq!(twice.status.code(), Some(1));
    assert!(
        err(&twice).contains("`c-1` is mapped from both `101`"),
        "{}",
        err(&twice)
    );
    assert!(err(&twice).contains("users.csv:4:1"), "{}", err(&twice));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), written);
    let leftovers: Vec<_> = std::fs::read_dir(s.project().join("tables"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 3, "no temporary file left: {leftovers:?}");

    // A key/value file of the template becomes M-Bridge's columns, and the flow still checks.
    std::fs::write(
        &input,
        "Mavenlink Display Name,Mavenlink ID,External Display Name,External ID\nTravel,Travel,Travel costs,420\nFood,Food,Meals,425\n",
    )
    .unwrap();
    let expenses = s.run(
        &[
            "tables",
            "import",
            "kantata-xero",
            "expense-accounts",
            "users.csv",
        ],
        None,
    );
    ok(&expenses);
    assert!(
        out(&expenses).contains("(0 added, 2 changed, 4 removed)"),
        "{}",
        out(&expenses)
    );
    ok(&s.run(&["flow", "check", "kantata-xero"], None));

    // A table that is not there, a missing file, and a table without suggestion sides.
    let missing = s.run(&["tables", "show", "kantata-xero", "user"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        err(&missing).contains("its tables are: accounts, expense-accounts, tax-types, users"),
        "{}",
        err(&missing)
    );
    let nofile = s.run(
        &["tables", "import", "kantata-xero", "users", "nope.csv"],
        None,
    );
    assert_eq!(nofile.status.code(), Some(1));
    assert!(err(&nofile).contains("does not exist"), "{}", err(&nofile));
    let nosides = s.run(&["tables", "suggest", "kantata-xero", "users"], None);
    assert_eq!(nosides.status.code(), Some(1));
    assert!(
        err(&nosides).contains("add [tables.users.suggest] with `left` and `right`"),
        "{}",
        err(&nosides)
    );
    s.assert_no_plain_secret();
}

#[test]
fn suggestions_match_kantata_users_to_xero_contacts_by_email_then_name() {
    let port = free_port();
    let (k, x) = flow_sims(port, 20);
    let s = Sandbox::new("tables-suggest");
    flow_workspace(&s, &k, &x, port);
    let tenant = x.tenants()[0].0.clone();

    // The Kantata users, as Weft reads them.
    let users = s.run(&["read", "kantata", "users"], None);
    ok(&users);
    let users: Vec<serde_json::Value> = out(&users)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(users.len() >= 6, "{}", users.len());
    let field = |i: usize, f: &str| users[i][f].as_str().unwrap().to_owned();
    // Contacts someone keeps in Xero: one named like a user in another case, spacing and
    // punctuation; one under another name with a user's email; two that both fit a user's name;
    // one already in the table.
    let by_name = x
        .add_contact(
            &tenant,
            &format!(
                "  {}. ",
                field(0, "full_name").to_uppercase().replace(' ', "   ")
            ),
            None,
        )
        .unwrap();
    let by_email = x
        .add_contact(
            &tenant,
            "Accounts Payable (billing)",
            Some(&field(1, "email_address")),
        )
        .unwrap();
    let twin_a = x
        .add_contact(&tenant, &field(2, "full_name"), None)
        .unwrap();
    let twin_b = x
        .add_contact(&tenant, &format!("{}.", field(2, "full_name")), None)
        .unwrap();
    let kept = x.add_contact(&tenant, "Somebody Else", None).unwrap();

    let flow_path = s.project().join("flows/kantata-xero.toml");
    let mut text = std::fs::read_to_string(&flow_path).unwrap();
    text.push_str(USERS);
    text.push_str(
        "\n[tables.users.suggest]\n\
         left = { connection = \"kantata\", resource = \"users\", key = \"found.id\", name = \"found.full_name\", email = \"found.email_address\" }\n\
         right = { connection = \"xero\", resource = \"contacts\", params = { where = 'ContactStatus==\"ACTIVE\"' }, key = \"found.ContactID\", name = \"found.Name\", email = \"found.EmailAddress or ''\" }\n",
    );
    std::fs::write(&flow_path, &text).unwrap();
    let table = s.project().join("tables/users.csv");
    let existing = format!(
        "Mavenlink Display Name,Mavenlink ID,External Display Name,External ID\n{},{},Somebody Else,{kept}\n",
        field(3, "full_name"),
        field(3, "id")
    );
    std::fs::write(&table, &existing).unwrap();
    let list = s.run(&["tables", "list", "kantata-xero"], None);
    ok(&list);
    assert!(
        out(&list).contains("kantata.users → xero.contacts"),
        "{}",
        out(&list)
    );

    let json = s.run(
        &["tables", "suggest", "kantata-xero", "users", "--json"],
        None,
    );
    ok(&json);
    let proposals: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    let of = |i: usize| {
        proposals
            .iter()
            .find(|p| p["left"]["key"] == users[i]["id"])
            .unwrap_or_else(|| panic!("no proposal for user {i}: {proposals:?}"))
    };
    assert_eq!(of(0)["status"], "name", "{:?}", of(0));
    assert_eq!(of(0)["right"]["key"], by_name.as_str());
    assert_eq!(of(1)["status"], "email", "{:?}", of(1));
    assert_eq!(of(1)["right"]["key"], by_email.as_str());
    assert_eq!(of(2)["status"], "ambiguous", "{:?}", of(2));
    let candidates: Vec<&str> = of(2)["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert!(candidates.contains(&twin_a.as_str()) && candidates.contains(&twin_b.as_str()));
    assert_eq!(of(3)["status"], "kept");
    assert_eq!(of(3)["right"]["key"], kept.as_str());
    assert_eq!(of(4)["status"], "unmatched", "{:?}", of(4));
    assert_eq!(proposals.len(), users.len());

    // The readable proposal; the table is unchanged.
    let shown = s.run(&["tables", "suggest", "kantata-xero", "users"], None);
    ok(&shown);
    let text = out(&shown);
    assert!(text.starts_with("STATUS"), "{text}");
    assert!(text.contains("1 kept, 2 matched, 1 ambiguous"), "{text}");
    assert!(
        text.contains("`weft tables import kantata-xero users FILE`"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&table).unwrap(), existing);

    // The table's own file is not a place for a proposal.
    let onto = s.run(
        &[
            "tables",
            "suggest",
            "kantata-xero",
            "users",
            "--out",
            "tables/users.csv",
        ],
        None,
    );
    assert_eq!(onto.status.code(), Some(1));
    assert!(
        err(&onto).contains("never changes the table"),
        "{}",
        err(&onto)
    );
    assert_eq!(std::fs::read_to_string(&table).unwrap(), existing);

    // Written as M-Bridge CSV, then imported.
    let saved = s.run(
        &[
            "tables",
            "suggest",
            "kantata-xero",
            "users",
            "--out",
            "proposal.csv",
        ],
        None,
    );
    ok(&saved);
    assert!(
        out(&saved).contains("wrote 3 row(s) to proposal.csv; table `users` is unchanged"),
        "{}",
        out(&saved)
    );
    assert!(out(&saved).contains("ambiguous"), "{}", out(&saved));
    assert_eq!(std::fs::read_to_string(&table).unwrap(), existing);
    let csv = std::fs::read_to_string(s.project().join("proposal.csv")).unwrap();
    assert!(
        csv.starts_with("Mavenlink Display Name,Mavenlink ID,External Display Name,External ID\n"),
        "{csv}"
    );
    assert!(
        csv.contains(&format!(
            ",{},Accounts Payable (billing),{by_email}\n",
            field(1, "id")
        )),
        "{csv}"
    );
    let imported = s.run(
        &["tables", "import", "kantata-xero", "users", "proposal.csv"],
        None,
    );
    ok(&imported);
    assert!(
        out(&imported).contains("imported 3 row(s)")
            && out(&imported).contains("2 added, 0 changed, 0 removed"),
        "{}",
        out(&imported)
    );
    let show = s.run(&["tables", "show", "kantata-xero", "users"], None);
    ok(&show);
    assert!(out(&show).contains(&by_name), "{}", out(&show));

    s.assert_none_of(
        x.issued_tokens()
            .into_iter()
            .chain(k.issued_tokens())
            .collect(),
    );
}
