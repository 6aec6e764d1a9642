//! `weft demo` on a fresh machine: the whole job on the sandbox, reported as one JSON object,
//! with zero duplicates found by reading both sandboxes back.

mod common;

use common::{Sandbox, err};

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
    }
}
