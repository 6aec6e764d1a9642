//! Declared means working: every key of the spec language (read from the generated JSON schema,
//! `specs/weft-spec.schema.json`) is listed here with the tests that exercise it through the code
//! that acts on it. The test fails when the schema gains a key nobody listed (a new key must come
//! with the code that reads it and a test), when a listed test no longer exists, or when a key is
//! both listed as covered and as not yet read.
//!
//! Keys are named by the schema type that holds them (`Operation.path` covers `path` in `list`,
//! `get`, `create` and `update`). A test is `file::function`, the file relative to the repository.

use std::collections::BTreeSet;
use std::path::Path;

const SPECS_XERO: &str =
    "crates/weft-engine/tests/specs_against_sims.rs::every_xero_list_reads_to_its_end";
const SPECS_KANTATA: &str =
    "crates/weft-engine/tests/specs_against_sims.rs::every_kantata_list_reads_to_its_end";
const WRITE: &str = "crates/weft-engine/tests/write.rs::contacts_batch_reports_each_record_and_replays_without_duplicates";
const SHOW: &str =
    "crates/weft-cli/tests/cli.rs::connectors_show_xero_has_setup_with_callback_and_field_rules";
const AUTHORIZE_XERO: &str =
    "crates/weft-cli/tests/authorize.rs::xero_two_organisations_each_read_from_the_right_one";
const AUTHORIZE_KANTATA: &str =
    "crates/weft-cli/tests/authorize.rs::kantata_add_client_create_authorize_test_and_read";
const CLIENT_CREDENTIALS: &str = "crates/weft-cli/tests/authorize.rs::a_client_credentials_connector_connects_refreshes_and_is_tested";
const REFRESH: &str =
    "crates/weft-engine/tests/tokens.rs::refreshes_ahead_of_expiry_and_persists_the_rotation_first";
const FORM: &str = "crates/weft-core/src/form.rs::ranges_defaults_choices_and_patterns";
const REQUEST: &str =
    "crates/weft-engine/tests/request.rs::list_with_prefix_query_pagination_and_tenant";
const HTTP_XERO: &str =
    "crates/weft-engine/tests/http.rs::xero_tenant_and_expiry_failures_carry_the_specs_messages";
const HTTP_KANTATA: &str = "crates/weft-engine/tests/http.rs::kantata_429_without_retry_after_backs_off_and_401_is_classified";
const RETRY: &str =
    "crates/weft-engine/tests/http.rs::transient_failures_and_resets_are_retried_with_backoff";
const MINUTE: &str =
    "crates/weft-engine/tests/http.rs::xero_minute_limit_waits_retry_after_and_day_cap_stops";
const PLUGIN: &str = "crates/weft-engine/tests/plugins.rs::a_session_signs_requests_and_extracts_and_transforms_through_the_plugin";
const PAGES: &str = "crates/weft-engine/src/paginate.rs::offsets_and_cursors";
const EXTRACT: &str = "crates/weft-engine/src/extract.rs::each_style";
const CURSOR: &str = "crates/weft-engine/src/cursor.rs::formats_with_overlap_and_precision";
const ENVELOPE: &str = "crates/weft-engine/tests/write_shapes.rs::an_envelope_batch_is_answered_by_item_key_with_faults_and_a_query_key";
const UNORDERED: &str =
    "crates/weft-engine/tests/write_shapes.rs::unordered_results_are_matched_by_a_property_we_sent";
const UPDATE_IN_BODY: &str = "crates/weft-engine/tests/write_shapes.rs::an_update_names_its_record_in_the_body_with_constants_merged";
const ACTIONS: &str = "crates/weft-engine/tests/write_shapes.rs::deletes_actions_and_sub_resources";
const TIERS: &str =
    "crates/weft-engine/tests/limits.rs::budgets_per_operation_and_sized_by_a_form_field";
const POLICY: &str =
    "crates/weft-engine/tests/limits.rs::a_429_naming_its_policy_in_the_body_waits_or_stops";
const CLI_ACTIONS: &str = "crates/weft-cli/tests/client.rs::write_deletes_and_runs_actions_by_name";
const READ_SEARCH: &str = "crates/weft-engine/tests/read_language.rs::a_search_body_carries_the_cursor_and_the_paging_state_and_is_retried_as_a_read";
const READ_QUERY: &str = "crates/weft-engine/tests/read_language.rs::paging_inside_a_query_text_and_records_at_optional_and_single_object_paths";
const READ_NEXT_URL: &str =
    "crates/weft-engine/tests/read_language.rs::next_page_urls_are_followed_on_the_same_host_only";
const REVOKE: &str = "crates/weft-engine/tests/oauth_edges.rs::revocation_by_delete_with_the_token_in_the_path_or_by_a_json_body";
const TEST_CMD: &str = "crates/weft-cli/tests/client.rs::token_connections_test_and_read_against_the_kantata_simulator";

/// Every key with the tests that exercise it.
const COVERED: &[(&str, &[&str])] = &[
    ("SpecFile.id", &[SPECS_XERO]),
    ("SpecFile.name", &[SHOW]),
    ("SpecFile.version", &[SHOW]),
    ("SpecFile.description", &[SHOW]),
    (
        "SpecFile.former-names",
        &["crates/weft-cli/tests/cli.rs::connectors_show_finds_former_names_and_json"],
    ),
    ("SpecFile.docs", &[SHOW]),
    ("SpecFile.hosts", &[REQUEST]),
    ("SpecFile.auth", &[AUTHORIZE_XERO]),
    ("SpecFile.tenants", &[AUTHORIZE_XERO]),
    ("SpecFile.fields", &[FORM]),
    ("SpecFile.setup", &[SHOW]),
    ("SpecFile.limits", &[MINUTE]),
    ("SpecFile.requests", &[REQUEST]),
    ("SpecFile.errors", &[HTTP_XERO]),
    ("SpecFile.test", &[TEST_CMD]),
    ("SpecFile.resources", &[SPECS_XERO]),
    ("DocLink.title", &[SHOW]),
    ("DocLink.url", &[SHOW]),
    ("Auth.oauth2", &[AUTHORIZE_XERO]),
    ("Auth.client-credentials", &[CLIENT_CREDENTIALS]),
    ("Auth.token", &[TEST_CMD]),
    ("Auth.apply", &[SPECS_XERO]),
    ("ApplyToken.header", &[SPECS_XERO]),
    ("ApplyToken.value", &[SPECS_XERO]),
    ("StaticToken.value", &[TEST_CMD]),
    ("OAuth2.authorize-url", &[AUTHORIZE_XERO]),
    ("OAuth2.token-url", &[AUTHORIZE_XERO]),
    (
        "OAuth2.revoke-url",
        &[
            "crates/weft-cli/tests/authorize.rs::deleting_one_of_two_connections_on_one_organisation_leaves_the_other_working",
        ],
    ),
    ("OAuth2.client-id", &[AUTHORIZE_XERO]),
    ("OAuth2.client-secret", &[AUTHORIZE_XERO]),
    ("OAuth2.scopes", &[AUTHORIZE_XERO]),
    (
        "OAuth2.scope-separator",
        &[
            "crates/weft-engine/tests/oauth_edges.rs::authorize_params_and_the_scope_separator_shape_the_authorize_url",
        ],
    ),
    (
        "OAuth2.authorize-params",
        &[
            "crates/weft-engine/tests/oauth_edges.rs::authorize_params_and_the_scope_separator_shape_the_authorize_url",
        ],
    ),
    (
        "OAuth2.pkce",
        &[
            "crates/weft-engine/tests/tokens.rs::refreshes_ahead_of_expiry_and_persists_the_rotation_first",
        ],
    ),
    (
        "OAuth2.client-auth",
        &[
            "crates/weft-engine/tests/oauth_edges.rs::revocation_form_encodes_basic_credentials_like_the_token_request",
        ],
    ),
    ("OAuth2.access-token-lifetime", &[AUTHORIZE_KANTATA]),
    ("OAuth2.refresh", &[REFRESH]),
    ("OAuth2.revoke-request", &[REVOKE]),
    ("RevokeRequest.method", &[REVOKE]),
    ("RevokeRequest.body", &[REVOKE]),
    (
        "Refresh.absolute-lifetime",
        &[
            "crates/weft-engine/tests/tokens.rs::an_absolute_refresh_lifetime_counts_from_the_consent_through_refreshes",
        ],
    ),
    ("Refresh.ahead", &[REFRESH]),
    (
        "Refresh.rotates",
        &[
            "crates/weft-engine/tests/tokens.rs::without_a_grace_period_a_lost_refresh_answer_is_not_resent",
        ],
    ),
    (
        "Refresh.grace",
        &[
            "crates/weft-engine/tests/tokens.rs::a_lost_refresh_answer_is_recovered_within_the_grace_period",
            "crates/weft-engine/tests/tokens.rs::without_a_grace_period_a_lost_refresh_answer_is_not_resent",
        ],
    ),
    (
        "Refresh.idle-lifetime",
        &[
            "crates/weft-engine/tests/tokens.rs::an_idle_refresh_token_has_a_use_by_date_from_the_spec",
        ],
    ),
    ("ClientCredentials.token-url", &[CLIENT_CREDENTIALS]),
    ("ClientCredentials.client-id", &[CLIENT_CREDENTIALS]),
    ("ClientCredentials.client-secret", &[CLIENT_CREDENTIALS]),
    ("ClientCredentials.scopes", &[CLIENT_CREDENTIALS]),
    ("ClientCredentials.client-auth", &[CLIENT_CREDENTIALS]),
    ("Tenants.resource", &[AUTHORIZE_XERO]),
    ("Tenants.id-field", &[AUTHORIZE_XERO]),
    ("Tenants.name-field", &[AUTHORIZE_XERO]),
    ("Tenants.select", &[AUTHORIZE_XERO, CLIENT_CREDENTIALS]),
    (
        "Tenants.header",
        &[
            AUTHORIZE_XERO,
            "crates/weft-engine/tests/request.rs::a_tenant_in_the_path_needs_no_header",
        ],
    ),
    ("TenantSelect.by", &[AUTHORIZE_XERO, CLIENT_CREDENTIALS]),
    ("TenantSelect.claim", &[AUTHORIZE_XERO]),
    ("TenantSelect.field", &[AUTHORIZE_XERO]),
    (
        "TenantSelect.param",
        &[
            "crates/weft-cli/tests/authorize.rs::a_tenant_named_in_the_callback_is_kept_and_carried_in_the_path",
            "crates/weft-engine/tests/oauth_edges.rs::the_callback_hands_back_the_parameters_beside_the_code",
        ],
    ),
    ("HeaderTemplate.name", &[AUTHORIZE_XERO]),
    ("HeaderTemplate.value", &[AUTHORIZE_XERO]),
    ("Field.id", &[FORM]),
    ("Field.label", &[FORM]),
    ("Field.help", &[SHOW]),
    ("Field.type", &[FORM]),
    ("Field.default", &[FORM]),
    ("Field.min", &[FORM]),
    ("Field.max", &[FORM]),
    ("Field.choices", &[FORM]),
    ("Field.max-length", &[FORM]),
    ("Field.required", &[FORM]),
    (
        "Field.methods",
        &[
            "crates/weft-core/src/form.rs::a_field_of_another_method_is_neither_required_nor_accepted",
            "crates/weft-core/src/form.rs::the_method_is_chosen_inferred_or_refused",
            "crates/weft-cli/tests/signin.rs::kantata_connections_sign_in_one_way_each_and_refuse_the_other_ways_fields",
            "crates/weft-server/tests/console.rs::kantata_save_and_authorize_then_test_success_and_a_classified_failure",
        ],
    ),
    (
        "Field.secret",
        &["crates/weft-core/src/form.rs::debug_never_shows_text"],
    ),
    (
        "Field.whitespace",
        &["crates/weft-core/src/form.rs::whitespace_is_refused_with_where_it_is"],
    ),
    ("Field.pattern", &[FORM]),
    ("Field.pattern-message", &[FORM]),
    (
        "Field.read-only-after-create",
        &[
            "crates/weft-cli/tests/client.rs::a_field_the_spec_makes_read_only_after_create_cannot_be_edited",
        ],
    ),
    ("SetupStep.title", &[SHOW]),
    ("SetupStep.text", &[SHOW]),
    ("SetupStep.fills", &[SHOW]),
    ("SetupStep.check", &[SHOW]),
    ("SetupStep.url", &[SHOW]),
    (
        "Limits.concurrency",
        &[
            "crates/weft-engine/tests/limits.rs::many_tasks_never_exceed_five_in_flight_for_an_organisation",
        ],
    ),
    ("Limits.budget", &[MINUTE]),
    ("Limits.headers", &[MINUTE]),
    ("Limits.retry", &[RETRY]),
    (
        "Limits.timeout",
        &[
            "crates/weft-cli/tests/authorize.rs::a_token_endpoint_that_never_answers_fails_authorize_test_and_delete_naming_its_host",
        ],
    ),
    (
        "Concurrency.default",
        &[
            "crates/weft-cli/tests/client.rs::connections_check_their_client_concurrency_and_borrowing",
        ],
    ),
    (
        "Concurrency.max",
        &[
            "crates/weft-cli/tests/client.rs::connections_check_their_client_concurrency_and_borrowing",
        ],
    ),
    (
        "Budget.name",
        &["crates/weft-engine/tests/limits.rs::a_spent_daily_budget_stops_instead_of_waiting"],
    ),
    (
        "Budget.scope",
        &[
            "crates/weft-engine/tests/limits.rs::many_tasks_never_exceed_five_in_flight_for_an_organisation",
        ],
    ),
    (
        "Budget.calls",
        &[
            "crates/weft-engine/tests/limits.rs::a_long_read_stays_under_the_minute_budget_without_a_429",
        ],
    ),
    (
        "Budget.window",
        &[
            "crates/weft-engine/tests/limits.rs::a_long_read_stays_under_the_minute_budget_without_a_429",
        ],
    ),
    (
        "Budget.concurrent",
        &[
            "crates/weft-engine/tests/limits.rs::many_tasks_never_exceed_five_in_flight_for_an_organisation",
        ],
    ),
    ("Budget.remaining-header", &[MINUTE]),
    ("Budget.problem", &[MINUTE]),
    (
        "Budget.on-exhausted",
        &["crates/weft-engine/tests/limits.rs::a_spent_daily_budget_stops_instead_of_waiting"],
    ),
    ("LimitHeaders.retry-after", &[MINUTE]),
    ("LimitHeaders.problem", &[MINUTE]),
    ("Retry.max-attempts", &[RETRY]),
    ("Retry.initial-backoff", &[RETRY]),
    ("Retry.max-backoff", &[RETRY]),
    ("RequestDefaults.host", &[REQUEST]),
    ("RequestDefaults.path-prefix", &[REQUEST]),
    ("RequestDefaults.headers", &[REQUEST]),
    (
        "RequestDefaults.query",
        &["crates/weft-engine/tests/request.rs::request_wide_query_parameters_go_on_every_request"],
    ),
    ("RequestDefaults.sign", &[PLUGIN]),
    ("ErrorRule.status", &[HTTP_XERO, HTTP_KANTATA]),
    ("ErrorRule.body-contains", &[HTTP_XERO]),
    ("ErrorRule.class", &[HTTP_XERO, HTTP_KANTATA]),
    ("ErrorRule.message", &[HTTP_XERO]),
    ("ConnectionTest.resource", &[TEST_CMD]),
    // Its one allowed value is `list` (the validator refuses `get`: a test cannot know an id),
    // which is what `weft connection test` calls.
    (
        "ConnectionTest.operation",
        &[
            TEST_CMD,
            "crates/weft-core/tests/model_keys.rs::a_connection_test_can_only_list",
        ],
    ),
    ("ConnectionTest.success-status", &[TEST_CMD]),
    ("ConnectionTest.needs-record", &[TEST_CMD]),
    ("ConnectionTest.describe", &[TEST_CMD]),
    ("Resource.description", &[SHOW]),
    ("Resource.primary-key", &[WRITE]),
    ("Resource.tenanted", &[AUTHORIZE_XERO]),
    (
        "Resource.plugin",
        &["crates/weft-engine/tests/plugins.rs::the_files_connector_loads_through_libloading"],
    ),
    ("Resource.fields", &[WRITE]),
    ("Resource.list", &[SPECS_XERO, SPECS_KANTATA]),
    (
        "Resource.get",
        &[
            "crates/weft-engine/tests/sync.rs::every_invoice_once_with_totals_to_the_cent_then_payments_back_once",
        ],
    ),
    ("Resource.create", &[WRITE]),
    (
        "Resource.update",
        &[
            "crates/weft-engine/tests/sync.rs::changes_update_xero_while_it_allows_and_say_why_not_otherwise",
        ],
    ),
    ("RecordField.type", &[WRITE]),
    ("RecordField.description", &[SHOW]),
    ("RecordField.required", &[WRITE]),
    ("RecordField.read-only", &[WRITE]),
    ("RecordField.max-length", &[WRITE]),
    ("RecordField.enum", &[WRITE]),
    ("RecordField.format", &[CURSOR]),
    ("RecordField.unit", &[WRITE]),
    (
        "RecordField.references",
        &[
            "crates/weft-engine/tests/sync.rs::every_invoice_once_with_totals_to_the_cent_then_payments_back_once",
        ],
    ),
    ("Operation.method", &[REQUEST, WRITE]),
    (
        "Operation.host",
        &[
            "crates/weft-engine/tests/request.rs::overrides_replace_hosts_and_unprefixed_paths_stay_bare",
        ],
    ),
    ("Operation.path", &[REQUEST]),
    (
        "Operation.prefixed",
        &[
            "crates/weft-engine/tests/request.rs::overrides_replace_hosts_and_unprefixed_paths_stay_bare",
        ],
    ),
    ("Operation.query", &[REQUEST]),
    ("Operation.headers", &[SPECS_XERO]),
    ("Operation.records", &[SPECS_XERO, SPECS_KANTATA]),
    ("Operation.pagination", &[SPECS_XERO, SPECS_KANTATA]),
    (
        "Operation.incremental",
        &[
            "crates/weft-engine/tests/sync.rs::two_thousand_invoices_each_exactly_once_then_nothing_changes",
        ],
    ),
    ("Operation.body", &[WRITE]),
    ("Operation.batch-size", &[WRITE]),
    ("Operation.idempotency", &[WRITE]),
    ("Operation.item-errors", &[WRITE]),
    ("Operation.errors", &[HTTP_KANTATA]),
    ("Operation.hooks", &[PLUGIN]),
    ("Operation.read-body", &[READ_SEARCH]),
    (
        "Operation.keep-if",
        &[
            READ_SEARCH,
            "crates/weft-engine/tests/read_language.rs::tenants_a_spec_does_not_serve_are_dropped_by_their_lists_keep_if",
        ],
    ),
    ("OperationHooks.extract", &[PLUGIN]),
    ("OperationHooks.transform", &[PLUGIN]),
    ("Extract.style", &[EXTRACT]),
    ("Extract.path", &[EXTRACT, READ_QUERY]),
    ("Extract.optional", &[EXTRACT, READ_QUERY]),
    ("Extract.key", &[EXTRACT]),
    ("Extract.index", &[EXTRACT]),
    ("Extract.id-field", &[EXTRACT]),
    (
        "Extract.key-field",
        &["crates/weft-engine/src/extract.rs::embedding_follows_ids_into_the_side_loaded_maps"],
    ),
    (
        "Extract.embed",
        &["crates/weft-engine/src/extract.rs::embedding_follows_ids_into_the_side_loaded_maps"],
    ),
    ("Pagination.style", &[PAGES]),
    (
        "Pagination.page-param",
        &[
            "crates/weft-engine/src/paginate.rs::page_count_short_page_and_empty_page",
            SPECS_XERO,
        ],
    ),
    (
        "Pagination.first-page",
        &["crates/weft-engine/src/paginate.rs::page_count_short_page_and_empty_page"],
    ),
    (
        "Pagination.size",
        &["crates/weft-engine/src/paginate.rs::page_count_short_page_and_empty_page"],
    ),
    ("Pagination.size-param", &[SPECS_KANTATA]),
    (
        "Pagination.stop",
        &["crates/weft-engine/src/paginate.rs::page_count_short_page_and_empty_page"],
    ),
    ("Pagination.offset-param", &[PAGES, READ_QUERY]),
    ("Pagination.limit-param", &[PAGES, READ_QUERY]),
    ("Pagination.cursor-param", &[PAGES, READ_SEARCH]),
    ("Pagination.next", &[PAGES, READ_SEARCH, READ_NEXT_URL]),
    (
        "PageStop.when",
        &["crates/weft-engine/src/paginate.rs::page_count_short_page_and_empty_page"],
    ),
    (
        "PageStop.path",
        &["crates/weft-engine/src/paginate.rs::page_count_short_page_and_empty_page"],
    ),
    (
        "Incremental.field",
        &[
            "crates/weft-engine/tests/sync.rs::two_thousand_invoices_each_exactly_once_then_nothing_changes",
        ],
    ),
    ("Incremental.field-format", &[CURSOR]),
    ("Incremental.format", &[CURSOR]),
    ("Incremental.overlap", &[CURSOR]),
    ("Incremental.precision", &[CURSOR]),
    ("Incremental.param", &[REQUEST]),
    (
        "Incremental.header",
        &[
            "crates/weft-engine/tests/sync.rs::two_thousand_invoices_each_exactly_once_then_nothing_changes",
        ],
    ),
    ("WriteBody.shape", &[WRITE]),
    ("WriteBody.key", &[WRITE, ENVELOPE]),
    (
        "Idempotency.header",
        &[
            "crates/weft-harness/tests/xero.rs::a_lost_response_is_recovered_by_the_idempotency_key",
            WRITE,
        ],
    ),
    ("Idempotency.max-length", &[WRITE]),
    (
        "Idempotency.window",
        &[
            "crates/weft-engine/tests/flow_guarantees.rs::unknown_outcomes_are_replayed_inside_the_window_and_looked_up_after_it",
        ],
    ),
    (
        "Incremental.keyset",
        &[
            "crates/weft-engine/tests/flow_guarantees.rs::edits_during_a_read_are_all_read_by_the_next_runs",
        ],
    ),
    (
        "RecordField.fields",
        &[
            "crates/weft-engine/tests/write.rs::list_elements_are_checked_by_their_nested_rules",
            "crates/weft-engine/tests/flow_guarantees.rs::a_mapping_typo_is_a_located_error_at_load",
        ],
    ),
    ("ItemErrors.errors-field", &[WRITE, ENVELOPE]),
    ("ItemErrors.status-field", &[WRITE]),
    ("ItemErrors.separate-errors", &[UNORDERED]),
    ("SeparateErrors.path", &[UNORDERED]),
    ("SeparateErrors.keys", &[UNORDERED]),
    ("ItemErrors.fault-field", &[ENVELOPE]),
    ("ItemErrors.id-field", &[ENVELOPE]),
    ("ItemErrors.match", &[ENVELOPE, UNORDERED]),
    ("ItemMatch.sent", &[ENVELOPE, UNORDERED]),
    ("ItemMatch.returned", &[ENVELOPE, UNORDERED]),
    ("Resource.delete", &[ACTIONS, CLI_ACTIONS]),
    ("Budget.operations", &[TIERS]),
    ("Budget.calls-field", &[TIERS]),
    ("Limits.problem-body", &[POLICY]),
    ("Resource.actions", &[ACTIONS, CLI_ACTIONS]),
    ("Operation.merge", &[UPDATE_IN_BODY]),
    ("Operation.id-in-body", &[UPDATE_IN_BODY, ACTIONS]),
    ("RecordField.required-on-update", &[UPDATE_IN_BODY]),
    ("RecordField.update-only", &[UPDATE_IN_BODY]),
    ("Idempotency.query", &[ENVELOPE, UPDATE_IN_BODY]),
    ("WriteBody.item", &[ENVELOPE]),
    ("ItemErrors.error-values", &[WRITE]),
    ("ItemErrors.message-field", &[WRITE]),
    (
        "ItemErrors.warnings-field",
        &[
            "crates/weft-engine/src/write.rs::warnings_fail_an_item_that_was_stored_anyway",
            "crates/weft-engine/tests/write.rs::an_invoice_whose_account_code_was_removed_is_a_failed_item",
            "crates/weft-engine/tests/sync.rs::invoices_stored_with_warnings_are_failures_then_updated_not_duplicated",
        ],
    ),
];

/// Keys the language declares that no code path reads yet, each with what is missing. A key
/// leaves this list when code reads it and a test is listed for it above.
const NOT_YET_READ: &[(&str, &str)] = &[(
    "RecordField.write-only",
    "shown in the docs; reads do not drop write-only fields from records",
)];

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// `Type.key` for every property of every type in the schema (the root is `SpecFile`).
fn schema_keys() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("specs/weft-spec.schema.json"))
        .expect("the generated schema (cargo xtask schema)");
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    fn props(node: &serde_json::Value, into: &mut BTreeSet<String>) {
        if let Some(map) = node["properties"].as_object() {
            into.extend(map.keys().cloned());
        }
        for k in ["oneOf", "anyOf", "allOf"] {
            for v in node[k].as_array().into_iter().flatten() {
                props(v, into);
            }
        }
    }
    let mut keys = BTreeSet::new();
    let mut names = BTreeSet::new();
    props(&schema, &mut names);
    keys.extend(names.into_iter().map(|k| format!("SpecFile.{k}")));
    for (ty, def) in schema["$defs"].as_object().unwrap() {
        let mut names = BTreeSet::new();
        props(def, &mut names);
        keys.extend(names.into_iter().map(|k| format!("{ty}.{k}")));
    }
    keys
}

/// Whether `file::function` names a test function that exists.
fn test_exists(reference: &str) -> bool {
    let Some((file, function)) = reference.split_once("::") else {
        return false;
    };
    let Ok(text) = std::fs::read_to_string(root().join(file)) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    lines.iter().enumerate().any(|(i, line)| {
        let declared = line.trim_start().starts_with(&format!("fn {function}("))
            || line
                .trim_start()
                .starts_with(&format!("async fn {function}("));
        declared
            && lines[i.saturating_sub(3)..i]
                .iter()
                .any(|l| l.contains("#[test]") || l.contains("#[tokio::test"))
    })
}

#[test]
fn every_key_of_the_spec_language_is_read_and_tested() {
    let schema = schema_keys();
    let covered: BTreeSet<String> = COVERED.iter().map(|(k, _)| (*k).to_owned()).collect();
    let unread: BTreeSet<String> = NOT_YET_READ.iter().map(|(k, _)| (*k).to_owned()).collect();
    let mut problems = Vec::new();
    for key in &schema {
        if !covered.contains(key) && !unread.contains(key) {
            problems.push(format!(
                "`{key}` is in the schema but listed nowhere: give it the code that reads it and a test, and list that test in COVERED"
            ));
        }
    }
    for key in covered.union(&unread) {
        if !schema.contains(key) {
            problems.push(format!("`{key}` is listed but the schema has no such key"));
        }
    }
    for key in covered.intersection(&unread) {
        problems.push(format!(
            "`{key}` is listed both as covered and as not yet read"
        ));
    }
    for (key, tests) in COVERED {
        if tests.is_empty() {
            problems.push(format!("`{key}` lists no test"));
        }
        for t in *tests {
            if !test_exists(t) {
                problems.push(format!("`{key}`: the test {t} does not exist"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_connection_test_can_only_list() {
    let kantata = std::fs::read_to_string(root().join("specs/kantata.toml")).unwrap();
    let asked = kantata.replacen(
        "resource = \"me\"\noperation = \"list\"",
        "resource = \"me\"\noperation = \"get\"",
        1,
    );
    assert_ne!(asked, kantata);
    let report = weft_core::load_str("kantata.toml", &asked);
    assert!(
        report
            .diagnostics
            .iter()
            .any(|d| d.key == "test.operation" && d.message.contains("cannot know a record id")),
        "{:?}",
        report.diagnostics
    );
}
