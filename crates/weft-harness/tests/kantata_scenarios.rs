//! The Kantata simulator's side of the other M-Bridge Xero scenarios, over real HTTP on
//! 127.0.0.1, one test per point of the fidelity checklist (`kantata-scenarios-api.md` §13):
//! submissions and their transitions, bulk timesheet approval, expense filters and bulk delete,
//! soft-deleted categories, custom-field choice replacement, external references by
//! `Submission`, and Subscribed Events.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use weft_harness::kantata::{KantataConfig, KantataSim, Resolve, SubmissionKind};

fn sim() -> KantataSim {
    KantataSim::start(KantataConfig::default()).expect("the simulator starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A request under /api/v1 with `token`; returns status and JSON body (null when none).
async fn call(
    sim: &KantataSim,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = client()
        .request(method, format!("{}/api/v1{path}", sim.api_url()))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("request");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(sim: &KantataSim, path: &str) -> (StatusCode, Value) {
    call(sim, sim.personal_token(), Method::GET, path, None).await
}

async fn put(sim: &KantataSim, path: &str, body: Value) -> (StatusCode, Value) {
    call(sim, sim.personal_token(), Method::PUT, path, Some(body)).await
}

async fn post(sim: &KantataSim, path: &str, body: Value) -> (StatusCode, Value) {
    call(sim, sim.personal_token(), Method::POST, path, Some(body)).await
}

/// The records of an index answer, in `results` order.
fn records(body: &Value, key: &str) -> Vec<Value> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            assert_eq!(r["key"], key);
            body[key][r["id"].as_str().expect("string id")].clone()
        })
        .collect()
}

fn ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A pending expense report of the demo user with two fresh expenses, and its id.
async fn pending_report(sim: &KantataSim) -> (String, Vec<String>) {
    let state = sim.state();
    let me = state.demo_user_id();
    let (_, cats) = get(sim, "/expense_categories").await;
    let cat = ids(&records(&cats, "expense_categories"))[0].clone();
    // A project that requires expense approval.
    let (_, ws) = get(sim, "/workspaces?per_page=200").await;
    let ws = records(&ws, "workspaces")
        .into_iter()
        .find(|w| w["require_expense_approvals"] == true)
        .expect("a project that requires expense approval");
    let ws = ws["id"].as_str().unwrap();
    let a = state
        .add_expense(ws, &me, "2025-12-20", &cat, 12_345)
        .unwrap();
    let b = state.add_expense(ws, &me, "2025-12-21", &cat, 655).unwrap();
    let report = state
        .create_submission(
            SubmissionKind::ExpenseReport,
            ws,
            &me,
            "December",
            &[&a, &b],
        )
        .unwrap();
    (report, vec![a, b])
}

#[tokio::test]
async fn expense_reports_default_to_the_callers_own() {
    let sim = sim();
    let state = sim.state();
    let me = state.demo_user_id();
    let all = state.submissions(SubmissionKind::ExpenseReport);
    let mine = all.iter().filter(|s| s.user_id == me).count();
    assert!(mine > 0 && mine < all.len(), "{mine} of {}", all.len());

    let (status, b) = get(&sim, "/expense_report_submissions?per_page=200").await;
    assert_eq!(status, StatusCode::OK);
    let own = records(&b, "expense_report_submissions");
    assert_eq!(own.len(), mine);
    assert!(own.iter().all(|r| r["user_id"] == me.as_str()));

    let (_, b) = get(
        &sim,
        "/expense_report_submissions?all_on_account=true&per_page=200",
    )
    .await;
    let every = records(&b, "expense_report_submissions");
    assert_eq!(every.len(), all.len());
    // Default order: newest creation first.
    let created: Vec<&str> = every
        .iter()
        .map(|r| r["created_at"].as_str().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");
    // Sorting by updated_at is not documented: it falls back to the default.
    let (_, u) = get(
        &sim,
        "/expense_report_submissions?all_on_account=true&per_page=200&order=updated_at:asc",
    )
    .await;
    assert_eq!(ids(&records(&u, "expense_report_submissions")), ids(&every));

    // `statuses=new` selects what the field calls pending.
    let (_, b) = get(
        &sim,
        "/expense_report_submissions?all_on_account=true&statuses=new&per_page=200",
    )
    .await;
    let pending = records(&b, "expense_report_submissions");
    assert!(!pending.is_empty());
    assert!(pending.iter().all(|r| r["status"] == "pending"));
    let (_, b) = get(
        &sim,
        "/expense_report_submissions?all_on_account=true&statuses=pending,approved&per_page=200",
    )
    .await;
    let n = all
        .iter()
        .filter(|s| s.status == "pending" || s.status == "approved")
        .count();
    assert_eq!(records(&b, "expense_report_submissions").len(), n);
    let (status, _) = get(&sim, "/expense_report_submissions?statuses=paid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The show route applies the same default.
    let theirs = all.iter().find(|s| s.user_id != me).unwrap();
    let (status, _) = get(&sim, &format!("/expense_report_submissions/{}", theirs.id)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(
        &sim,
        &format!(
            "/expense_report_submissions/{}?all_on_account=true",
            theirs.id
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn report_fields_and_includes() {
    let sim = sim();
    let (_, b) = get(
        &sim,
        "/expense_report_submissions?all_on_account=true&statuses=approved&include=expenses,user,workspace,resolutions,external_references",
    )
    .await;
    for key in [
        "expenses",
        "users",
        "workspaces",
        "resolutions",
        "external_references",
    ] {
        assert!(b[key].is_object(), "{key} map");
    }
    let reports = records(&b, "expense_report_submissions");
    assert!(!reports.is_empty());
    for r in &reports {
        assert_eq!(r["type"], "ExpenseReportSubmission");
        assert_eq!(r["currency_base_unit"], 100);
        assert!(r["current_resolution_creator_id"].is_u64(), "an int: {r}");
        assert!(r["locked"].is_boolean());
        assert_eq!(r["permissions"]["can_approve_submission"], false);
        let mut total = 0;
        for e in r["expense_ids"].as_array().unwrap() {
            let e = &b["expenses"][e.as_str().unwrap()];
            total += e["amount_in_cents"].as_i64().unwrap();
            assert!(e["expense_category_id"].is_string());
        }
        assert_eq!(r["line_item_total_in_cents"], total);
        assert!(b["users"][r["user_id"].as_str().unwrap()]["full_name"].is_string());
        let res = &b["resolutions"][r["resolution_ids"][0].as_str().unwrap()];
        assert_eq!(res["type"], "approval");
        assert!(res["target_id"].is_u64() && res["user_id"].is_u64());
    }
    // Without includes, no id lists.
    let (_, plain) = get(&sim, "/expense_report_submissions?all_on_account=true").await;
    let first = &records(&plain, "expense_report_submissions")[0];
    assert!(first.get("expense_ids").is_none());
    assert!(first["workspace_id"].is_string());
    // Expenses in reports carry several categories, some reimbursable, some with vendors.
    let state = sim.state();
    let approved: Vec<_> = state
        .submissions(SubmissionKind::ExpenseReport)
        .into_iter()
        .filter(|s| s.status == "approved")
        .collect();
    assert!(approved.len() >= 5);
    for status in ["pending", "rejected", "cancelled"] {
        assert!(
            state
                .submissions(SubmissionKind::ExpenseReport)
                .iter()
                .any(|s| s.status == status),
            "{status}"
        );
    }
}

#[tokio::test]
async fn transitions_need_a_resolution_and_follow_the_state_machine() {
    let sim = sim();
    let (report, expenses) = pending_report(&sim).await;
    let before = sim.state().submission(&report).unwrap();
    assert_eq!(before.status, "pending");
    assert_eq!(before.total_in_cents, 13_000);

    // The body is required.
    let (status, b) = put(
        &sim,
        &format!("/expense_report_submissions/{report}/approve"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(b["errors"][0]["type"], "validation");

    sim.observed().clock.advance(Duration::from_secs(3_600));
    let events_before = sim.state().events().len();
    let (status, b) = put(
        &sim,
        &format!("/expense_report_submissions/{report}/approve?include=resolutions"),
        json!({"resolution": {"description": "Looks right"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let r = &records(&b, "expense_report_submissions")[0];
    assert_eq!(r["status"], "approved");
    assert_eq!(r["current_resolution_description"], "Looks right");
    assert!(r["current_resolution_creator_id"].is_u64());
    assert_eq!(r["permissions"]["can_approve_submission"], false);
    assert_eq!(r["permissions"]["can_cancel_submission"], true);
    let after = sim.state().submission(&report).unwrap();
    assert_eq!(
        after.updated_at,
        before.updated_at + 3_600,
        "approval bumps updated_at"
    );

    // One expense_report:updated and one expense:updated per expense.
    let events = sim.state().events();
    let new: Vec<_> = events[events_before..].to_vec();
    assert_eq!(new.len(), 3, "{new:?}");
    assert_eq!(
        new.iter()
            .filter(|e| e.event_type == "expense_report:updated" && e.subject_id == report)
            .count(),
        1
    );
    let mut touched: Vec<String> = new
        .iter()
        .filter(|e| e.event_type == "expense:updated")
        .map(|e| e.subject_id.clone())
        .collect();
    touched.sort();
    let mut want = expenses.clone();
    want.sort();
    assert_eq!(touched, want);

    // Approving again, or anything on a cancelled report, is a 422.
    let (status, _) = put(
        &sim,
        &format!("/expense_report_submissions/{report}/approve"),
        json!({"resolution": {"description": null}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = put(
        &sim,
        &format!("/expense_report_submissions/{report}/cancel"),
        json!({"resolution": {}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for action in ["approve", "reject", "cancel"] {
        let (status, b) = put(
            &sim,
            &format!("/expense_report_submissions/{report}/{action}"),
            json!({"resolution": {"description": "again"}}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{action}");
        assert_eq!(b["errors"][0]["type"], "validation");
    }
    // The cancelled report's expenses can go on a new report; the hook refuses the same rules.
    let state = sim.state();
    let me = state.demo_user_id();
    let ws = after.workspace_id.clone();
    let again = state
        .create_submission(
            SubmissionKind::ExpenseReport,
            &ws,
            &me,
            "Resubmitted",
            &[&expenses[0]],
        )
        .unwrap();
    assert!(
        state
            .create_submission(
                SubmissionKind::ExpenseReport,
                &ws,
                &me,
                "Twice",
                &[&expenses[0]]
            )
            .is_err(),
        "an expense on a pending report cannot go on another"
    );
    // Expenses on a pending report cannot be deleted.
    let (status, b) = call(
        &sim,
        sim.personal_token(),
        Method::DELETE,
        &format!("/expenses/{}", expenses[0]),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    state
        .resolve_submission(&again, Resolve::Reject, Some("No"))
        .unwrap();
    assert!(
        state
            .resolve_submission(&again, Resolve::Approve, None)
            .is_err()
    );
    // No update or delete routes for submissions.
    let (status, _) = put(
        &sim,
        &format!("/expense_report_submissions/{again}"),
        json!({"expense_report_submission": {"title": "x"}}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_locked_reference_blocks_rejecting_an_approved_report() {
    let sim = sim();
    let (report, _) = pending_report(&sim).await;
    sim.state()
        .resolve_submission(&report, Resolve::Approve, None)
        .unwrap();
    let (status, b) = post(
        &sim,
        "/external_references/create_or_update",
        json!({"external_reference": {"subject_type": "Submission", "subject_id": report, "service_name": "xero", "service_model": "ExpenseClaim", "service_model_ref": "claim-1", "status": "successful", "locked": true}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let (status, _) = put(
        &sim,
        &format!("/expense_report_submissions/{report}/reject"),
        json!({"resolution": {"description": "too late"}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, b) = get(&sim, &format!("/expense_report_submissions/{report}")).await;
    assert_eq!(records(&b, "expense_report_submissions")[0]["locked"], true);
}

#[tokio::test]
async fn create_reports_and_timesheets_over_http() {
    let sim = sim();
    let state = sim.state();
    let me = state.demo_user_id();
    let (_, ws) = get(&sim, "/workspaces?per_page=200").await;
    let ws = records(&ws, "workspaces")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let e = state
        .add_expense(&ws, &me, "2025-12-01", "450000", 999)
        .unwrap();
    let (status, b) = post(
        &sim,
        "/expense_report_submissions",
        json!({"expense_report_submission": {"title": "Trip", "workspace_id": ws, "line_item_ids": [e.parse::<u64>().unwrap()]}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let r = &records(&b, "expense_report_submissions")[0];
    assert_eq!(r["status"], "pending");
    assert_eq!(r["line_item_total_in_cents"], 999);
    // Missing title, unknown expense: 422 naming the field.
    for (body, field) in [
        (
            json!({"expense_report_submission": {"workspace_id": ws, "line_item_ids": [1]}}),
            "title",
        ),
        (
            json!({"expense_report_submission": {"title": "x", "workspace_id": ws, "line_item_ids": [1]}}),
            "line_item_ids",
        ),
    ] {
        let (status, b) = post(&sim, "/expense_report_submissions", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(b["errors"][0]["field"], field);
    }
    // A timesheet covers one week: two entries a fortnight apart are refused.
    let t1 = state
        .add_time_entry(&ws, &me, "2025-12-01", 90, Some(15_000))
        .unwrap();
    let t2 = state
        .add_time_entry(&ws, &me, "2025-12-02", 30, None)
        .unwrap();
    let t3 = state
        .add_time_entry(&ws, &me, "2025-12-16", 60, Some(15_000))
        .unwrap();
    let (status, _) = post(
        &sim,
        "/timesheet_submissions",
        json!({"timesheet_submission": {"title": "Week", "workspace_id": ws, "line_item_ids": [t1, t3]}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, b) = post(
        &sim,
        "/timesheet_submissions?include=time_entries",
        json!({"timesheet_submission": {"title": "Week", "workspace_id": ws, "line_item_ids": [t1, t2]}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let t = &records(&b, "timesheet_submissions")[0];
    assert_eq!(t["start_date"], "2025-11-30");
    assert_eq!(t["end_date"], "2025-12-06");
    // 90 minutes at $150/h; the entry without a rate counts nothing and shows null.
    assert_eq!(t["line_item_total_in_cents"], 22_500);
    assert!(b["time_entries"][&t2]["rate_in_cents"].is_null());
    assert!(t.get("locked").is_none());
}

#[tokio::test]
async fn bulk_timesheet_approval_answers_a_plain_array() {
    let sim = sim();
    let (_, b) = get(
        &sim,
        "/timesheet_submissions?statuses=new&include=time_entries,user,workspace&per_page=200",
    )
    .await;
    let pending = ids(&records(&b, "timesheet_submissions"));
    assert!(!pending.is_empty());
    let ints: Vec<u64> = pending.iter().map(|i| i.parse().unwrap()).collect();
    let (status, b) = post(
        &sim,
        "/timesheet_approvals",
        json!({"resolution": {"submission_ids": ints, "description": "ok"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let list = b["resolutions"].as_array().expect("a plain array");
    assert_eq!(list.len(), pending.len());
    for r in list {
        assert!(r["id"].is_u64() && r["target_id"].is_u64() && r["user_id"].is_u64());
        assert_eq!(r["type"], "approval");
        assert_eq!(r["current"], true);
    }
    for id in &pending {
        assert_eq!(sim.state().submission(id).unwrap().status, "approved");
    }
    // Already approved: the whole request is refused.
    let (status, _) = post(
        &sim,
        "/timesheet_approvals",
        json!({"resolution": {"submission_ids": ints}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Timesheets emit timesheet:updated.
    assert!(
        sim.state()
            .events()
            .iter()
            .any(|e| e.event_type == "timesheet:updated" && e.subject_id == pending[0])
    );
    // Seeded: approved timesheets, some entries without a rate.
    let (_, b) = get(
        &sim,
        "/timesheet_submissions?statuses=approved&include=time_entries&per_page=200",
    )
    .await;
    let entries = b["time_entries"].as_object().unwrap();
    assert!(entries.values().any(|t| t["rate_in_cents"].is_null()));
    assert!(entries.values().any(|t| t["rate_in_cents"].is_i64()));
}

#[tokio::test]
async fn expense_approved_filter_and_bulk_delete() {
    let sim = sim();
    let (_, all) = get(&sim, "/expenses?per_page=200&include=workspace").await;
    let (_, approved) = get(
        &sim,
        "/expenses?per_page=200&approved=true&include=workspace",
    )
    .await;
    let (_, not) = get(&sim, "/expenses?per_page=200&approved=false").await;
    let total = all["count"].as_u64().unwrap();
    let yes = approved["count"].as_u64().unwrap();
    assert_eq!(yes + not["count"].as_u64().unwrap(), total);
    // Projects without expense approval count every expense as approved.
    for e in records(&approved, "expenses") {
        let ws = &approved["workspaces"][e["workspace_id"].as_str().unwrap()];
        if ws["require_expense_approvals"] == false {
            continue;
        }
        let report = sim
            .state()
            .submissions(SubmissionKind::ExpenseReport)
            .into_iter()
            .find(|s| s.line_ids.contains(&e["id"].as_str().unwrap().to_owned()))
            .expect("on a report");
        assert_eq!(report.status, "approved");
    }
    assert!(
        records(&all, "expenses")
            .iter()
            .any(|e| e["vendor_id"].is_string())
    );

    let state = sim.state();
    let me = state.demo_user_id();
    let ws = records(&all, "expenses")[0]["workspace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = state
        .add_expense(&ws, &me, "2025-12-01", "450000", 100)
        .unwrap();
    let b = state
        .add_expense(&ws, &me, "2025-12-01", "450000", 200)
        .unwrap();
    let c = state
        .add_expense(&ws, &me, "2025-12-01", "450000", 300)
        .unwrap();
    // All or nothing: one unknown id deletes nothing.
    let (status, _) = call(
        &sim,
        sim.personal_token(),
        Method::DELETE,
        &format!("/expenses?ids={a},{b},1"),
        None,
    )
    .await;
    assert!(status.is_client_error());
    let (status, body) = call(
        &sim,
        sim.personal_token(),
        Method::DELETE,
        &format!("/expenses?ids={a},{b}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"deleted": [a, b]}));
    let (status, body) = call(
        &sim,
        sim.personal_token(),
        Method::DELETE,
        &format!("/expenses/{c}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_null());
}

#[tokio::test]
async fn expense_categories_delete_softly() {
    let sim = sim();
    let (_, b) = get(&sim, "/expense_categories").await;
    let names: Vec<String> = records(&b, "expense_categories")
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    for builtin in [
        "Travel",
        "Mileage",
        "Lodging",
        "Food",
        "Entertainment",
        "Other",
    ] {
        assert!(names.iter().any(|n| n == builtin), "{builtin}");
    }
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "alphabetical");
    let (_, all) = get(&sim, "/expense_categories?only_active=false").await;
    assert_eq!(
        all["count"].as_u64().unwrap(),
        b["count"].as_u64().unwrap() + 1
    );

    let travel = ids(&records(&b, "expense_categories"))
        .into_iter()
        .zip(&names)
        .find(|(_, n)| *n == "Travel")
        .unwrap()
        .0;
    let (status, _) = call(
        &sim,
        sim.personal_token(),
        Method::DELETE,
        &format!("/expense_categories/{travel}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, after) = get(&sim, &format!("/expense_categories?only={travel}")).await;
    assert_eq!(after["count"], 0);
    let (_, after) = get(
        &sim,
        &format!("/expense_categories?only={travel}&only_active=false"),
    )
    .await;
    assert!(records(&after, "expense_categories")[0]["deleted_at"].is_string());
    // Expenses still name it.
    let (_, e) = get(&sim, "/expenses?per_page=200").await;
    assert!(
        records(&e, "expenses")
            .iter()
            .any(|x| x["expense_category_id"] == travel.as_str())
    );
    // No show route.
    let (status, _) = get(&sim, &format!("/expense_categories/{travel}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Create needs a name.
    let (status, _) = post(&sim, "/expense_categories", json!({"expense_category": {}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Vendors: archived=true lists archived ones only.
    let (_, v) = get(&sim, "/vendors?archived=true").await;
    assert!(records(&v, "vendors").iter().all(|v| v["archived"] == true));
    assert_eq!(v["count"], 1);
}

#[tokio::test]
async fn replacing_choices_overwrites_the_whole_list() {
    let sim = sim();
    let state = sim.state();
    let field = state.custom_field_id("Xero region").unwrap();
    let before = state.custom_field_choices(&field);
    assert_eq!(
        before.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(),
        ["EMEA", "Americas", "APAC"]
    );
    assert!(
        before.iter().any(|c| c.values > 0),
        "a value points at a choice"
    );
    let (_, b) = get(
        &sim,
        &format!("/custom_fields?subject_type=Workspace&only={field}&include=choices"),
    )
    .await;
    let f = &records(&b, "custom_fields")[0];
    assert_eq!(f["value_type"], "single");
    assert_eq!(f["choice_ids"].as_array().unwrap().len(), 3);

    // Keep APAC (renamed) first, drop EMEA and Americas, add "EMEA" again and a new one.
    let apac = &before[2].id;
    let events_before = state.events().len();
    let (status, b) = put(
        &sim,
        &format!("/custom_fields/{field}?include=choices"),
        json!({"custom_field": {"choices": [{"id": apac, "label": "Asia Pacific"}, {"label": "EMEA"}, {"label": "LATAM"}]}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let f = &records(&b, "custom_fields")[0];
    let listed: Vec<&str> = f["choice_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            b["custom_field_choices"][i.as_str().unwrap()]["label"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(listed, ["Asia Pacific", "EMEA", "LATAM"]);
    let after = state.custom_field_choices(&field);
    let active: Vec<_> = after.iter().filter(|c| c.active).collect();
    assert_eq!(active[0].id, *apac);
    assert_eq!(
        active.iter().map(|c| c.position).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    // The new EMEA is a new choice; the old one is inactive and its values still point at it.
    let old_emea = after.iter().find(|c| c.id == before[0].id).unwrap();
    assert!(!old_emea.active);
    assert_eq!(old_emea.values, before[0].values);
    assert_ne!(active[1].id, before[0].id);
    assert!(
        state.events()[events_before..]
            .iter()
            .any(|e| e.event_type == "custom_field:updated" && e.subject_id == field)
    );

    // /custom_field_choices: GET only, position order, `active` hides the inactive ones.
    let (_, c) = get(
        &sim,
        &format!("/custom_field_choices?for_custom_fields={field}"),
    )
    .await;
    assert_eq!(c["count"], 5);
    let (_, c) = get(
        &sim,
        &format!("/custom_field_choices?for_custom_fields={field}&active=true"),
    )
    .await;
    assert_eq!(records(&c, "custom_field_choices").len(), 3);
    let (_, c) = get(
        &sim,
        &format!("/custom_field_choices?for_custom_fields={field}&active=true"),
    )
    .await;
    let positions: Vec<i64> = records(&c, "custom_field_choices")
        .iter()
        .map(|c| c["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [0, 1, 2]);
    let (status, _) = post(
        &sim,
        "/custom_field_choices",
        json!({"custom_field_choice": {"label": "x"}}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // value_type cannot change; an unknown choice id is refused and changes nothing.
    let (status, _) = put(
        &sim,
        &format!("/custom_fields/{field}"),
        json!({"custom_field": {"value_type": "multi"}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = put(
        &sim,
        &format!("/custom_fields/{field}"),
        json!({"custom_field": {"choices": [{"id": 1, "label": "x"}]}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(state.custom_field_choices(&field), after);

    // Values take choice ids and replace the earlier value under a new id.
    let ws = {
        let (_, v) = get(&sim, "/custom_field_values?subject_type=Workspace").await;
        records(&v, "custom_field_values")[0]["subject_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let choice: u64 = active[2].id.parse().unwrap();
    let (status, b) = post(
        &sim,
        "/custom_field_values",
        json!({"custom_field_value": {"subject_type": "Workspace", "subject_id": ws, "custom_field_id": field, "value": format!("[{choice}]")}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let v = &records(&b, "custom_field_values")[0];
    assert_eq!(v["value"], json!([choice]));
    assert_eq!(v["display_value"], "LATAM");
    let (_, v) = get(
        &sim,
        &format!("/custom_field_values?subject_type=Workspace&with_subject_id={ws}&with_custom_field_id={field}"),
    )
    .await;
    assert_eq!(v["count"], 1);
    // Two choices on a single field, or an inactive choice: refused.
    let old: u64 = before[0].id.parse().unwrap();
    for value in [json!([choice, choice - 1]), json!(format!("[{old}]"))] {
        let (status, _) = post(
            &sim,
            "/custom_field_values",
            json!({"custom_field_value": {"subject_type": "Workspace", "subject_id": ws, "custom_field_id": field, "value": value}}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{value}");
    }
    let (status, _) = get(&sim, "/custom_field_values").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "subject_type is required");
}

#[tokio::test]
async fn external_references_upsert_on_submissions() {
    let sim = sim();
    let (status, _) = get(&sim, "/external_references").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "subject_type is required");
    let (status, _) = get(&sim, "/external_references?subject_type=Nonsense").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let ts = sim.state().submissions(SubmissionKind::Timesheet)[0]
        .id
        .clone();
    let (report, _) = pending_report(&sim).await;
    let body = |subject: &str, status: &str, r: &str| json!({"external_reference": {"subject_type": "Submission", "subject_id": subject, "service_name": "xero", "service_model": "ManualJournal", "service_model_ref": r, "status": status}});
    let (s1, b1) = post(
        &sim,
        "/external_references/create_or_update",
        body(&report, "pending", ""),
    )
    .await;
    // service_model_ref is required on the first write.
    assert_eq!(s1, StatusCode::UNPROCESSABLE_ENTITY, "{b1}");
    let (s1, b1) = post(
        &sim,
        "/external_references/create_or_update",
        body(&report, "pending", "tok-1"),
    )
    .await;
    assert_eq!(s1, StatusCode::OK, "{b1}");
    let (s2, b2) = post(
        &sim,
        "/external_references/create_or_update",
        body(&report, "successful", "journal-9"),
    )
    .await;
    assert_eq!(s2, StatusCode::OK);
    let r1 = &records(&b1, "external_references")[0];
    let r2 = &records(&b2, "external_references")[0];
    assert_eq!(r1["id"], r2["id"], "one reference per subject and service");
    assert_eq!(r2["subject_type"], "Submission");
    assert_eq!(r2["status"], "successful");
    let (s3, b3) = post(
        &sim,
        "/external_references/create_or_update",
        body(&ts, "successful", "journal-10"),
    )
    .await;
    assert_eq!(s3, StatusCode::OK);
    assert_ne!(records(&b3, "external_references")[0]["id"], r1["id"]);
    let (_, l) = get(
        &sim,
        "/external_references?subject_type=Submission&service_name=xero",
    )
    .await;
    assert_eq!(l["count"], 2, "both kinds of submission are Submission");
    // The submission index filters on them.
    let (_, w) = get(
        &sim,
        &format!(
            "/expense_report_submissions?only={report}&without_external_reference_service_name=xero"
        ),
    )
    .await;
    assert_eq!(w["count"], 0);
    let (_, w) = get(
        &sim,
        &format!("/expense_report_submissions?only={report}&external_reference_service_name=xero&include=external_references"),
    )
    .await;
    let r = &records(&w, "expense_report_submissions")[0];
    assert_eq!(r["external_reference_ids"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn subscribed_events_are_for_administrators_and_kept_nine_days() {
    let sim = sim();
    let state = sim.state();
    // Someone other than the administrator.
    let other = state
        .submissions(SubmissionKind::ExpenseReport)
        .into_iter()
        .find(|s| s.user_id != state.demo_user_id())
        .unwrap()
        .user_id;
    let token = sim.token_for_user(&other).unwrap();
    let (status, b) = call(&sim, &token, Method::GET, "/subscribed_events", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{b}");
    // The same user sees only their own reports by default.
    let (_, own) = call(
        &sim,
        &token,
        Method::GET,
        "/expense_report_submissions?per_page=200",
        None,
    )
    .await;
    assert!(
        records(&own, "expense_report_submissions")
            .iter()
            .all(|r| r["user_id"] == other.as_str())
    );

    let now = sim.observed().clock.now_ms() as i64 / 1000;
    let log = state.events();
    let kept = log
        .iter()
        .filter(|e| e.created_at >= now - 9 * 86_400)
        .count();
    assert!(kept > 0 && kept < log.len(), "{kept} of {}", log.len());
    let (status, b) = get(&sim, "/subscribed_events?per_page=200").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b["count"].as_u64().unwrap() as usize, kept);
    let events = records(&b, "subscribed_events");
    let created: Vec<&str> = events
        .iter()
        .map(|e| e["created_at"].as_str().unwrap())
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "newest first by default"
    );
    for e in &events {
        assert!(e["subject_id"].is_u64() && e["user_id"].is_u64() && e["account_id"].is_u64());
        assert!(e.get("updated_at").is_none());
    }
    // Ten days later the seeded ones are gone.
    sim.observed()
        .clock
        .advance(Duration::from_secs(10 * 86_400));
    let (_, b) = get(&sim, "/subscribed_events").await;
    assert_eq!(b["count"], 0);

    // Filters, ascending order, subject_ref, created_after.
    let (report, _) = pending_report(&sim).await;
    state
        .resolve_submission(&report, Resolve::Approve, None)
        .unwrap();
    let (_, b) = get(
        &sim,
        "/subscribed_events?event_types=expense_report:updated&order=created_at:asc&include=subject&optional_fields=payload_changes",
    )
    .await;
    let e = &records(&b, "subscribed_events")[0];
    assert_eq!(e["subject_type"], "ExpenseReportSubmission");
    assert_eq!(e["subject_ref"]["key"], "expense_report_submissions");
    assert_eq!(
        e["payload_changes"]["status"],
        json!(["pending", "approved"])
    );
    let (_, b) = get(
        &sim,
        "/subscribed_events?subject_type=Expense&event_types=expense:updated",
    )
    .await;
    assert_eq!(b["count"], 2);
    let (_, b) = get(
        &sim,
        &format!(
            "/subscribed_events?created_after={}",
            state.render_time(now + 10 * 86_400 + 60)
        ),
    )
    .await;
    assert_eq!(b["count"], 0);

    // A deleted subject's ref is null.
    let me = state.demo_user_id();
    let ws = state.submission(&report).unwrap().workspace_id;
    let gone = state
        .add_expense(&ws, &me, "2025-12-03", "450001", 5)
        .unwrap();
    call(
        &sim,
        sim.personal_token(),
        Method::DELETE,
        &format!("/expenses/{gone}"),
        None,
    )
    .await;
    let (_, b) = get(
        &sim,
        &format!("/subscribed_events?subject_type=Expense&subject_id={gone}&include=subject"),
    )
    .await;
    let gone_events = records(&b, "subscribed_events");
    assert!(gone_events.iter().all(|e| e["subject_ref"].is_null()));
    assert!(
        gone_events
            .iter()
            .any(|e| e["event_type"] == "expense:deleted")
    );

    // The catalogue.
    let (status, t) = get(&sim, "/subscribed_events/event_types").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        t["subscribed_event_types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "expense_report:updated")
    );
    assert!(t["subscribed_event_type_schemas"]["timesheet:updated"]["fields"].is_object());
}

#[tokio::test]
async fn event_delivery_faults_duplicate_and_reorder() {
    let sim = sim();
    let state = sim.state();
    state.set_event_delivery(2, 600);
    let start = state.events().len();
    let (report, _) = pending_report(&sim).await;
    sim.observed().clock.advance(Duration::from_secs(60));
    state
        .resolve_submission(&report, Resolve::Approve, None)
        .unwrap();
    let new = state.events()[start..].to_vec();
    // Creating two expenses and a report, then approving (3 events): 6 events, every second
    // one twice.
    assert_eq!(new.len(), 9, "{new:?}");
    let mut keys: Vec<_> = new
        .iter()
        .map(|e| {
            (
                e.event_type.clone(),
                e.subject_id.clone(),
                e.subject_changed_at,
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 6);
    assert!(
        new.windows(2).any(|w| w[0].created_at > w[1].created_at),
        "created_at out of order: {new:?}"
    );
    assert!(new.iter().all(|e| e.created_at <= e.subject_changed_at));
    // The same seed gives the same log.
    let again = sim_with_same_history().await;
    assert_eq!(
        again,
        new.iter()
            .map(|e| (e.event_type.clone(), e.created_at))
            .collect::<Vec<_>>()
    );
}

async fn sim_with_same_history() -> Vec<(String, i64)> {
    let sim = sim();
    let state = sim.state();
    state.set_event_delivery(2, 600);
    let start = state.events().len();
    let (report, _) = pending_report(&sim).await;
    sim.observed().clock.advance(Duration::from_secs(60));
    state
        .resolve_submission(&report, Resolve::Approve, None)
        .unwrap();
    state.events()[start..]
        .iter()
        .map(|e| (e.event_type.clone(), e.created_at))
        .collect()
}

#[tokio::test]
async fn hooks_edit_expenses_and_bump_updated_at() {
    let sim = sim();
    let (report, expenses) = pending_report(&sim).await;
    sim.observed().clock.advance(Duration::from_secs(120));
    sim.state()
        .set_expense_amount(&expenses[0], 20_000)
        .unwrap();
    assert_eq!(
        sim.state().submission(&report).unwrap().total_in_cents,
        20_655
    );
    let (_, b) = get(&sim, &format!("/expenses/{}", expenses[0])).await;
    let e = &records(&b, "expenses")[0];
    assert_eq!(e["amount_in_cents"], 20_000);
    let (_, later) = get(
        &sim,
        &format!(
            "/expenses?only={}&updated_after={}",
            expenses[0],
            e["created_at"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(later["count"], 1);
    assert!(sim.state().set_expense_amount("1", 5).is_err());
}
