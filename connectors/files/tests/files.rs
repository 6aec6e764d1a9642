//! The files connector as the host sees it: rows checked by the spec's field rules, each bad
//! row located by file and line, CSV and JSON Lines both ways, and clear refusals.

mod common;

use serde_json::{Value, json};
use weft_engine::hooks::Session;
use weft_plugin_abi::{ResourceOperation, RowError};

const FIELDS: &str = "id = { type = \"integer\", required = true }\n\
                      name = { type = \"string\", max-length = 8 }\n\
                      status = { type = \"string\", enum = [\"open\", \"paid\"] }\n";

fn read_all(location: &str) -> Result<(Vec<Value>, Vec<RowError>), String> {
    let plugins = common::plugins();
    let spec = common::spec(FIELDS);
    let rows = &spec.file().resources["rows"];
    let mut session = Session::open(
        &plugins,
        spec.file(),
        "rows",
        rows,
        ResourceOperation::List,
        location,
    )
    .map_err(|e| e.to_string())?;
    let (mut records, mut errors) = (Vec::new(), Vec::new());
    loop {
        let batch = session.next(2).map_err(|e| e.to_string())?;
        records.extend(batch.records);
        errors.extend(batch.errors);
        if batch.done {
            break;
        }
    }
    session.close().map_err(|e| e.to_string())?;
    Ok((records, errors))
}

#[test]
fn each_bad_csv_row_is_located_and_the_others_read() {
    let dir = common::temp_dir("bad-rows");
    let path = dir.join("in.csv");
    std::fs::write(
        &path,
        "id,name,status\n1,Ada,open\nx,Bob,open\n3,Christopher,paid\n4,Dee,late\n5,Eve\n,Fay,open\n7,\"Gus\",paid\n",
    )
    .unwrap();
    let location = path.to_str().unwrap();
    let (records, errors) = read_all(location).unwrap();
    assert_eq!(
        records,
        [
            json!({"id": 1, "name": "Ada", "status": "open"}),
            json!({"id": 7, "name": "Gus", "status": "paid"}),
        ]
    );
    let got: Vec<(String, &str)> = errors
        .iter()
        .map(|e| (e.at.clone(), e.message.as_str()))
        .collect();
    let at = |line: u32| format!("{location}:{line}");
    assert_eq!(
        got,
        [
            (at(3), "field `id`: `x` is not a whole number"),
            (
                at(4),
                "field `name`: 11 characters, more than the 8 allowed"
            ),
            (at(5), "field `status`: `late` is not one of open, paid"),
            (at(6), "2 columns where the header has 3"),
            (at(7), "required field `id` is missing"),
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_lines_are_checked_and_located_too() {
    let dir = common::temp_dir("jsonl");
    let path = dir.join("in.jsonl");
    std::fs::write(
        &path,
        "{\"id\": 1, \"name\": \"Ada\"}\n\n{\"id\": \"2\"}\nnot json\n{\"id\": 4, \"colour\": \"red\"}\n",
    )
    .unwrap();
    let location = path.to_str().unwrap();
    let (records, errors) = read_all(location).unwrap();
    assert_eq!(records, [json!({"id": 1, "name": "Ada"})]);
    let lines: Vec<&str> = errors
        .iter()
        .map(|e| e.at.rsplit(':').next().unwrap())
        .collect();
    assert_eq!(lines, ["3", "4", "5"]);
    assert!(
        errors[0].message.contains("expected a whole number"),
        "{errors:?}"
    );
    assert!(
        errors[1].message.starts_with("not a JSON object"),
        "{errors:?}"
    );
    assert!(
        errors[2].message.contains("`colour` is not a field"),
        "{errors:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writes_refuse_bad_records_and_place_the_good_ones() {
    let plugins = common::plugins();
    let spec = common::spec(FIELDS);
    let rows = &spec.file().resources["rows"];
    let dir = common::temp_dir("write");
    for name in ["out.csv", "out.jsonl"] {
        let path = dir.join(name);
        let location = path.to_str().unwrap();
        let mut session = Session::open(
            &plugins,
            spec.file(),
            "rows",
            rows,
            ResourceOperation::Create,
            location,
        )
        .unwrap();
        let results = session
            .write(vec![
                json!({"id": 1, "name": "Ada", "status": "open"}),
                json!({"name": "Nobody"}),
                json!({"id": 2, "status": "paid"}),
                json!("not a record"),
            ])
            .unwrap();
        assert!(
            !path.exists(),
            "nothing is under the destination's name before close"
        );
        let outcome: Vec<(Option<String>, Option<String>)> =
            results.into_iter().map(|r| (r.at, r.error)).collect();
        assert_eq!(
            outcome[0],
            (
                Some(format!(
                    "{location}:{}",
                    if name.ends_with("csv") { 2 } else { 1 }
                )),
                None
            )
        );
        assert_eq!(
            outcome[1].1.as_deref(),
            Some("required field `id` is missing")
        );
        assert!(outcome[2].0.is_some());
        assert_eq!(
            outcome[3].1.as_deref(),
            Some("expected an object, found text")
        );
        assert_eq!(session.close().unwrap(), 2);
        let written = std::fs::read_to_string(&path).unwrap();
        if name.ends_with("csv") {
            assert_eq!(written, "id,name,status\n1,Ada,open\n2,,paid\n");
        } else {
            assert_eq!(
                written,
                "{\"id\":1,\"name\":\"Ada\",\"status\":\"open\"}\n{\"id\":2,\"status\":\"paid\"}\n"
            );
        }
        // What was written reads back as it went in.
        let (records, errors) = read_all(location).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(records.len(), 2);
        assert_eq!(records[1], json!({"id": 2, "status": "paid"}));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unreadable_sources_and_destinations_are_clear_errors() {
    let dir = common::temp_dir("refusals");
    let missing = dir.join("missing.csv");
    let err = read_all(missing.to_str().unwrap()).unwrap_err();
    assert!(
        err.contains("cannot open") && err.contains("check the path"),
        "{err}"
    );
    let header = dir.join("header.csv");
    std::fs::write(&header, "id,colour\n1,red\n").unwrap();
    let err = read_all(header.to_str().unwrap()).unwrap_err();
    assert!(
        err.contains("header.csv:1: column `colour` is not a field"),
        "{err}"
    );
    let plugins = common::plugins();
    let spec = common::spec(FIELDS);
    let rows = &spec.file().resources["rows"];
    let nowhere = dir.join("no-such-dir").join("out.csv");
    let err = Session::open(
        &plugins,
        spec.file(),
        "rows",
        rows,
        ResourceOperation::Create,
        nowhere.to_str().unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("check that the directory exists"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
