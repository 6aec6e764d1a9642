//! The connector spec language: the serde model of one `specs/<id>.toml` file.
//!
//! Every struct rejects unknown keys and spells keys in kebab-case. Strings documented as
//! *templates* are MiniJinja templates; the variables each may use are listed in
//! [`crate::template::Scope`]. The loader ([`crate::load`]) deserializes each section on its own
//! so that one bad section does not hide the problems of the others, then [`crate::validate`]
//! cross-checks the whole.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::SpecDuration;

/// One connector: who the provider is, how to authenticate, what the person fills in,
/// how fast we may go, and which resources can be read and written.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SpecFile {
    /// Stable identifier, lowercase letters, digits and `-`; must equal the file stem.
    pub id: String,
    /// Name shown to people, e.g. "Kantata OX".
    pub name: String,
    /// Earlier names of the product, so people find it by the name they know (Kantata was Mavenlink).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub former_names: Vec<String>,
    /// Version of this spec (semantic versioning, `MAJOR.MINOR.PATCH`).
    pub version: String,
    /// One-paragraph description of the connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Links to the provider's documentation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docs: Vec<DocLink>,
    /// Base URLs by host name (Xero has `login`, `identity` and `api`). Each can be overridden at
    /// run time, so a simulator or a proxy can stand in. Templates refer to them as `hosts.<name>`.
    /// A host may also be chosen by an enum form field, one base URL per choice (a sandbox or
    /// production, a regional data centre): `api = { field = "environment", choices = {
    /// production = "https://quickbooks.api.intuit.com", sandbox =
    /// "https://sandbox-quickbooks.api.intuit.com" } }`.
    /// Required unless every resource is run by a plugin.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub hosts: IndexMap<String, Host>,
    /// How Weft authenticates against the provider. At least one method is required unless
    /// every resource is run by a plugin.
    #[serde(default)]
    pub auth: Auth,
    /// The organisations (tenants) one grant can reach, when the provider has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Tenants>,
    /// The connection form: what a person fills in, with its rules, in display order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
    /// Ordered human instructions for registering the app at the provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<SetupStep>,
    /// Concurrency and rate budgets.
    #[serde(default)]
    pub limits: Limits,
    /// Defaults applied to every request of every operation.
    #[serde(default)]
    pub requests: RequestDefaults,
    /// How to tell errors apart; checked in order, first match wins. Operations can add their own rules in front.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorRule>,
    /// The connection test: one request whose success proves the connection works.
    pub test: ConnectionTest,
    /// Resources by name, each with its operations and record fields.
    #[serde(default)]
    pub resources: IndexMap<String, Resource>,
}

/// A documentation link.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DocLink {
    /// What the page covers.
    pub title: String,
    /// Absolute https URL.
    pub url: String,
}

/// Authentication methods. A connection uses one of those declared.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Auth {
    /// OAuth 2.0 authorization-code grant (a person consents in the browser).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2>,
    /// OAuth 2.0 client-credentials grant (machine to machine, no person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_credentials: Option<ClientCredentials>,
    /// A static bearer or personal token pasted by the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<StaticToken>,
    /// How the access token rides on API requests. Defaults to `Authorization: Bearer <token>`.
    #[serde(default)]
    pub apply: ApplyToken,
}

/// OAuth 2.0 authorization code grant.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OAuth2 {
    /// Authorize endpoint (template; may use `hosts`).
    pub authorize_url: String,
    /// Token endpoint (template; may use `hosts`).
    pub token_url: String,
    /// Revocation endpoint (template), called when a connection is deleted. It may use
    /// `token` (the token revoked, escaped for a URL) when the provider wants it in the path,
    /// as HubSpot does: `"{{ hosts.api }}/oauth/v1/refresh-tokens/{{ token }}"` with
    /// `revoke-request = { method = "DELETE", body = "none" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_url: Option<String>,
    /// Client ID (template, normally `{{ fields.client_id }}`).
    pub client_id: String,
    /// Client secret (template, normally `{{ fields.client_secret }}`); omit for public PKCE clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Scopes to request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Separator between scopes in the `scope` parameter.
    #[serde(default = "default_scope_separator")]
    pub scope_separator: String,
    /// Proof Key for Code Exchange.
    #[serde(default)]
    pub pkce: Pkce,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Extra query parameters on the authorize URL (templates).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub authorize_params: IndexMap<String, String>,
    /// Access-token lifetime to assume when the token response has no `expires_in`.
    /// Omit when tokens do not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_lifetime: Option<SpecDuration>,
    /// Refresh-token behaviour; omit when the provider issues no refresh tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Refresh>,

    // ---- Read/auth side of spec language v2 (issue 15: revocation that is not RFC 7009) ----
    /// How the revocation request is made, when it is not RFC 7009's form POST of `token`
    /// (the default): another method, a JSON body, or no body with the token in `revoke-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_request: Option<RevokeRequest>,
    // ---- end of the read/auth-side block ----
}

/// The shape of a revocation request (`revoke-request`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RevokeRequest {
    /// HTTP method; `POST` unless the provider says otherwise (HubSpot: `DELETE`).
    #[serde(default = "post")]
    pub method: Method,
    /// What carries the token: `form` (RFC 7009: `token` and `token_type_hint`), `json` (the
    /// same names in a JSON object), or `none` (the token is in `revoke-url`). Client
    /// credentials go as `client-auth` says: a Basic header, or in the form or JSON body.
    #[serde(default)]
    pub body: RevokeBody,
}

fn post() -> Method {
    Method::Post
}

/// What carries the token of a revocation request.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RevokeBody {
    /// A form body (RFC 7009).
    #[default]
    Form,
    /// A JSON object.
    Json,
    /// No body: the token is in the URL.
    None,
}

fn default_scope_separator() -> String {
    " ".to_owned()
}

/// PKCE method.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum Pkce {
    /// No PKCE.
    #[default]
    #[serde(rename = "none")]
    None,
    /// SHA-256 code challenge.
    S256,
}

/// Client authentication at the token endpoint.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// `Authorization: Basic base64(id:secret)`.
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

/// Refresh-token behaviour.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Refresh {
    /// Whether each refresh returns a new refresh token that replaces the old one.
    pub rotates: bool,
    /// How long the previous refresh token stays valid after a rotation (for retrying a lost response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<SpecDuration>,
    /// Refresh this long before the access token expires.
    #[serde(default = "default_refresh_ahead")]
    pub ahead: SpecDuration,
    /// How long an unused refresh token lives, when the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_lifetime: Option<SpecDuration>,
    /// How long a grant's refresh tokens can be used at most, counted from the consent however
    /// often they are refreshed (QuickBooks: `absolute-lifetime = "1826d"`, five years, next to
    /// its `idle-lifetime = "100d"`). Omit when they do not expire (HubSpot). `weft connection
    /// list` shows the earlier of the two dates as the use-by date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_lifetime: Option<SpecDuration>,
}

fn default_refresh_ahead() -> SpecDuration {
    SpecDuration::from_secs(300)
}

/// OAuth 2.0 client-credentials grant.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClientCredentials {
    /// Token endpoint (template).
    pub token_url: String,
    /// Client ID (template).
    pub client_id: String,
    /// Client secret (template).
    pub client_secret: String,
    /// Scopes to request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// A static token the person pastes (e.g. Kantata's "Your OAuth Token").
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StaticToken {
    /// The token (template, normally `{{ fields.token }}` naming a secret field).
    pub value: String,
}

/// How the access token is attached to API requests.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ApplyToken {
    /// Header name.
    #[serde(default = "default_auth_header")]
    pub header: String,
    /// Header value (template; `token` is the access token).
    #[serde(default = "default_auth_value")]
    pub value: String,
}

impl Default for ApplyToken {
    fn default() -> Self {
        Self {
            header: default_auth_header(),
            value: default_auth_value(),
        }
    }
}

fn default_auth_header() -> String {
    "Authorization".to_owned()
}

fn default_auth_value() -> String {
    "Bearer {{ token }}".to_owned()
}

/// Tenants (organisations) reachable through one grant.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Tenants {
    /// The resource whose `list` operation lists the tenants of a grant (e.g. Xero
    /// `connections`); its list's `keep-if` drops tenants the spec does not serve. Required
    /// unless the tenant comes from the callback (`select = { by = "callback-param" }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Field of a tenant record holding its id (with `resource`); a dotted path, such as
    /// `organisation.id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_field: Option<String>,
    /// Field of a tenant record holding its display name (with `resource`); a dotted path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_field: Option<String>,
    /// How the tenant is chosen after consent.
    pub select: TenantSelect,
    /// How a request carries the tenant: a header whose value is a template (`tenant.id`).
    /// Omit it when every tenanted operation places `{{ tenant.id }}` itself, as QuickBooks'
    /// paths do: `path = "/v3/company/{{ tenant.id }}/query"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderTemplate>,
}

/// How the tenant a person just authorized is chosen.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields,
    tag = "by"
)]
pub enum TenantSelect {
    /// Match a claim of the access token (a JWT) to a field of the tenant records; when
    /// several still match, the person picks.
    TokenClaim {
        /// Claim in the access token, e.g. `authentication_event_id`.
        claim: String,
        /// Field of the tenant record it must equal, e.g. `authEventId` (a dotted path).
        field: String,
    },
    /// The person picks from the list.
    Choose,
    /// A query parameter the provider adds to the OAuth callback beside `code` names the
    /// tenant just authorized (QuickBooks' `realmId`): `select = { by = "callback-param",
    /// param = "realmId" }`. No tenant list is needed; the tenant's name is its id.
    CallbackParam {
        /// The callback's query parameter holding the tenant id.
        param: String,
    },
}

/// A header whose value is a template.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HeaderTemplate {
    /// Header name.
    pub name: String,
    /// Header value (template).
    pub value: String,
}

/// One field of the connection form.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Field {
    /// Identifier, snake_case; templates use it as `fields.<id>`.
    pub id: String,
    /// Label shown to the person.
    pub label: String,
    /// Help text shown under the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Value type.
    #[serde(rename = "type", default)]
    pub ty: FieldKind,
    /// Value used when the person gives none; its type must match `type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Scalar>,
    /// Smallest accepted value (integer fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    /// Largest accepted value (integer fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// Accepted values (enum fields).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// Longest accepted text, in characters (text fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Whether a value must be given.
    #[serde(default)]
    pub required: bool,
    /// Write-only: stored encrypted, never shown again, entered again on edit.
    #[serde(default)]
    pub secret: bool,
    /// What to do with leading or trailing whitespace.
    #[serde(default)]
    pub whitespace: Whitespace,
    /// A regular expression the whole value must match (text fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Message shown when the pattern does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern_message: Option<String>,
    /// Whether the value may only be set when the connection is created.
    #[serde(default)]
    pub read_only_after_create: bool,
    /// The sign-in methods this field belongs to, for a spec declaring more than one under
    /// `[auth]` (`["oauth2"]` for an OAuth client's ID and secret, `["token"]` for a pasted
    /// token). Each connection signs in with one method: `required` applies only to a
    /// connection of a listed method, a connection of another method is refused a value for
    /// the field and never shown it, and only templates of a listed method may read it. Left
    /// out: the field belongs to every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<AuthMethod>,
}

impl Field {
    /// Whether the field belongs to connections signing in with `method`.
    pub fn applies_to(&self, method: AuthMethod) -> bool {
        self.methods.is_empty() || self.methods.contains(&method)
    }
}

/// A sign-in method: one of the sections of `[auth]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// `[auth.oauth2]`: a person consents in the browser, through an OAuth client.
    #[serde(rename = "oauth2")]
    OAuth2,
    /// `[auth.client-credentials]`: the client-credentials grant, through an OAuth client.
    #[serde(rename = "client-credentials")]
    ClientCredentials,
    /// `[auth.token]`: a token the person pastes.
    #[serde(rename = "token")]
    Token,
}

impl AuthMethod {
    /// Every method, in the order `[auth]` lists them.
    pub const ALL: [Self; 3] = [Self::OAuth2, Self::ClientCredentials, Self::Token];

    /// The name a spec, `weft.toml` and `--method` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OAuth2 => "oauth2",
            Self::ClientCredentials => "client-credentials",
            Self::Token => "token",
        }
    }

    /// What it means to a person.
    pub fn describe(self) -> &'static str {
        match self {
            Self::OAuth2 => "OAuth 2.0: an OAuth client, then consent in the browser",
            Self::ClientCredentials => "OAuth 2.0 client credentials: an OAuth client, no browser",
            Self::Token => "a pasted token",
        }
    }

    /// Whether a connection of this method authorizes through an OAuth client.
    pub fn uses_client(self) -> bool {
        matches!(self, Self::OAuth2 | Self::ClientCredentials)
    }

    /// The method named `name` (`oauth2`, `client-credentials` or `token`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

impl std::fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Auth {
    /// The sign-in methods the spec declares, in the order of [`AuthMethod::ALL`].
    pub fn methods(&self) -> Vec<AuthMethod> {
        AuthMethod::ALL
            .into_iter()
            .filter(|m| match m {
                AuthMethod::OAuth2 => self.oauth2.is_some(),
                AuthMethod::ClientCredentials => self.client_credentials.is_some(),
                AuthMethod::Token => self.token.is_some(),
            })
            .collect()
    }
}

/// The type of a form field.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FieldKind {
    /// Free text.
    #[default]
    Text,
    /// A whole number within `min..=max`.
    Integer,
    /// Yes or no.
    Boolean,
    /// One of `choices`.
    Enum,
    /// An absolute URL.
    Url,
}

/// A default value of a form field.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(untagged, expecting = "a boolean, an integer or a string")]
pub enum Scalar {
    /// Yes or no.
    Boolean(bool),
    /// A whole number.
    Integer(i64),
    /// Text.
    Text(String),
}

/// Handling of leading or trailing whitespace in a text value.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Whitespace {
    /// Refuse the value with a message saying where the spaces are.
    #[default]
    Reject,
    /// Remove it silently.
    Trim,
    /// Keep the value as typed.
    Keep,
}

/// One human setup instruction.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SetupStep {
    /// Short title of the step.
    pub title: String,
    /// What to do (template; may use `callback_url`, `hosts` and `connector`).
    pub text: String,
    /// The form field this step produces a value for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fills: Option<String>,
    /// A check Weft can run once the step is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<SetupCheck>,
    /// A page at the provider where the step is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Checks Weft can run after a setup step.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SetupCheck {
    /// The field named by `fills` holds a value that passes its rules.
    FieldValid,
    /// The token endpoint accepts the client ID and secret.
    ClientAccepted,
    /// The authorization flow completes and tokens are stored.
    Authorized,
    /// At least one tenant is listed for the grant.
    TenantsListed,
    /// The connection test succeeds.
    ConnectionTest,
}

/// Concurrency and rate budgets.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Limits {
    /// Calls in flight per connection: the default and the most a person may set.
    #[serde(default)]
    pub concurrency: Concurrency,
    /// Named budgets the provider enforces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budget: Vec<Budget>,
    /// Response headers that report the rate-limit state.
    #[serde(default)]
    pub headers: LimitHeaders,
    /// Retries of failed calls.
    #[serde(default)]
    pub retry: Retry,
    /// Time limit of one request.
    #[serde(default = "default_timeout")]
    pub timeout: SpecDuration,
    /// Dotted path, in a 429's JSON body, of the name of the limit that was hit, compared with
    /// each budget's `problem` (HubSpot's `policyName`: `DAILY` names a `checkpoint` budget, so
    /// the run stops cleanly and resumes later; `TEN_SECONDLY_ROLLING` a budget waited out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_body: Option<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            problem_body: None,
            concurrency: Concurrency::default(),
            budget: Vec::new(),
            headers: LimitHeaders::default(),
            retry: Retry::default(),
            timeout: default_timeout(),
        }
    }
}

fn default_timeout() -> SpecDuration {
    SpecDuration::from_secs(60)
}

/// Concurrency level of a connection.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Concurrency {
    /// Calls in flight when the person sets nothing.
    pub default: u32,
    /// The most calls in flight a person may set.
    pub max: u32,
}

impl Default for Concurrency {
    fn default() -> Self {
        Self {
            default: 1,
            max: 25,
        }
    }
}

/// A rate budget the provider enforces.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Budget {
    /// Name, unique within the spec, e.g. `minute`.
    pub name: String,
    /// What the budget is counted for.
    pub scope: BudgetScope,
    /// Calls allowed per `window` (a rate budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<u32>,
    /// Length of the window of a rate budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<SpecDuration>,
    /// Calls allowed in flight at once (a concurrency budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<u32>,
    /// Response header reporting what is left of this budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_header: Option<String>,
    /// The name a 429 gives this budget: the value of the problem header
    /// (`limits.headers.problem`) or of the body's `limits.problem-body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// What to do when the budget runs out.
    #[serde(default)]
    pub on_exhausted: OnExhausted,
    /// The operations this budget counts, each `RESOURCE.OPERATION` (an action by its name):
    /// a batch or search endpoint's own limit, such as `operations = ["deals.create",
    /// "deals.update"]`. Without it the budget counts every call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<String>,
    /// An integer form field whose value is the calls allowed per `window`, for limits that
    /// depend on the account (a plan's tier: 100 or 190 calls per 10 s); `calls` applies while
    /// the field has no value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls_field: Option<String>,
}

/// What a budget is counted for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetScope {
    /// Each tenant (organisation) of each connection.
    Tenant,
    /// Each connection (grant).
    Connection,
    /// The whole OAuth app, across all its connections.
    App,
}

/// Reaction to an exhausted budget.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnExhausted {
    /// Wait until the window frees up, then go on.
    #[default]
    Wait,
    /// Save a checkpoint and stop cleanly; the next run resumes (for daily caps).
    Checkpoint,
}

/// Headers that report the rate-limit state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LimitHeaders {
    /// Header holding the seconds to wait after a 429, e.g. `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// Header naming the budget that was exceeded, e.g. `X-Rate-Limit-Problem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Retry policy for failed calls classified as transient or rate-limited.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// First backoff; doubled on each attempt, with jitter.
    pub initial_backoff: SpecDuration,
    /// Longest backoff.
    pub max_backoff: SpecDuration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: SpecDuration::from_millis(500),
            max_backoff: SpecDuration::from_secs(60),
        }
    }
}

/// Defaults for every request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RequestDefaults {
    /// Host used when an operation names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Prefix put before every operation path, e.g. `/api.xro/2.0`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path_prefix: String,
    /// Headers sent on every request (templates).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, String>,
    /// Query parameters sent on every request (templates), before the operation's own; an
    /// operation's parameter of the same name replaces it, and one that renders empty is left
    /// out (QuickBooks' `minorversion`).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub query: IndexMap<String, String>,
    /// A native plugin that signs every request once it is rendered and authorized (its
    /// manifest must list the `sign` hook); the headers it returns are set on the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign: Option<String>,
}

/// One operation of a resource: an HTTP request rendered from templates, and how to read its
/// response. Which keys apply depends on the operation (`list`, `get`, `create`, `update`,
/// `delete`, an action); the validator says when one does not.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Operation {
    /// HTTP method; defaults to GET for `list` and `get`, POST for `create` and actions, PUT for
    /// `update`, DELETE for `delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Host name from `hosts`; defaults to `requests.host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path (template), appended to the host and `requests.path-prefix`.
    pub path: String,
    /// Whether `requests.path-prefix` applies.
    #[serde(default = "yes")]
    pub prefixed: bool,
    /// Query parameters (templates). A parameter whose value renders empty is left out.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub query: IndexMap<String, String>,
    /// Headers (templates).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, String>,
    /// Where the records are in the response body.
    pub records: Extract,
    /// Paging (`list` only; required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
    /// Incremental cursor (`list` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Incremental>,
    /// How records are wrapped in the request body (`create` and `update`, where it is required;
    /// `delete` and actions send one only when it is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<WriteBody>,
    /// Records per call (`create` and `update`); 1 sends one record per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Header carrying an idempotency key (`create` and `update`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,
    /// How to read per-item results of a batch (`create` and `update`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_errors: Option<ItemErrors>,
    /// Constant fields set on every written record, after its checks and before it is wrapped
    /// (writes and actions), replacing a field of the same name: `merge = { sparse = true }`
    /// makes every update a sparse one.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub merge: serde_json::Map<String, serde_json::Value>,
    /// The record is named by its primary key inside the body, not by `id` in the path or query
    /// (`update`, `delete` and actions): an update sent as `POST /sale` with `Id` and
    /// `SyncToken` in the record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub id_in_body: bool,
    /// Error rules checked before the spec-wide ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorRule>,
    /// Components of this operation run by native plugins instead of the spec.
    #[serde(default, skip_serializing_if = "OperationHooks::is_empty")]
    pub hooks: OperationHooks,

    // ---- Read side of spec language v2 (issue 15: list bodies, record filters) ----
    /// The JSON body of a read (`list` only, with a method that carries a body, such as
    /// `POST`): a table whose strings are templates over the list's variables (`cursor`,
    /// `page`, `params`, `tenant`, `hosts`, `fields`); a string that renders empty is left
    /// out, like a query parameter. The request stays a read: it is retried like a GET.
    /// HubSpot's search: `read-body = { filterGroups = [{ filters = [{ propertyName =
    /// "hs_lastmodifieddate", operator = "GTE", value = "{{ cursor }}" }] }], after = "{{
    /// page.cursor | default('') }}", limit = 100 }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub read_body: Option<serde_json::Value>,
    /// Which records a list keeps (`list` only): an expression over `record` (MiniJinja
    /// syntax); a record for which it is false is dropped, as if the provider had not listed
    /// it. The tenants of a spec are the records of its tenant resource's list, so the same key
    /// drops tenants. A field a record lacks is undefined, which counts as false; `default`
    /// says otherwise (an attribute of a missing object fails the read). Examples: `keep-if = "not
    /// record.archived"` (HubSpot), `keep-if = "record.Active | default(true)"` (QuickBooks),
    /// `keep-if = "record.tenantType != 'PRACTICEMANAGER'"` (Xero connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_if: Option<String>,
    // ---- end of the read-side block ----
}

/// Components of an operation delegated to native plugins, each by plugin name. A plugin
/// named here must list the hook in its manifest (`weft doctor` checks it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OperationHooks {
    /// Plugin that finds the records in each response body (`list` and `get`); it receives the
    /// whole body, so `records` must be `{ style = "root" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<String>,
    /// Plugin that rewrites each record: after extraction on reads, before the field checks on
    /// writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
}

impl OperationHooks {
    /// Whether no hook is set.
    pub fn is_empty(&self) -> bool {
        self.extract.is_none() && self.transform.is_none()
    }
}

fn yes() -> bool {
    true
}

/// HTTP methods.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET.
    #[default]
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Method {
    /// The method's name as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// Where records are found in a response body.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields,
    tag = "style"
)]
pub enum Extract {
    /// The body itself: an array of records, or one record when it is an object.
    Root,
    /// The records at a dotted path, e.g. `Invoices` or `QueryResponse.Invoice`: an array of
    /// records, or one record when it is an object (`{"Invoice": {...}}` from a get). A name
    /// holding `.` is quoted: `"odata.value"`.
    Path {
        /// Dotted path to the records.
        path: String,
        /// Whether a path that is missing (or null) means no records, as when a provider leaves
        /// out an empty result (`{"QueryResponse": {}}`), rather than a body the spec does not
        /// describe. Example: `records = { style = "path", path = "QueryResponse.Invoice",
        /// optional = true }`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        optional: bool,
    },
    /// An ordered index of `{key, id}` entries joined with per-type maps keyed by id
    /// (Kantata's envelope: `results` plus `invoices: {"7": {...}}`). Side-loaded records stay
    /// reachable through the same maps.
    Index {
        /// Dotted path of the ordered index.
        index: String,
        /// Field of an index entry naming the top-level map.
        key_field: String,
        /// Field of an index entry holding the record id.
        id_field: String,
        /// Only entries whose key equals this are records of the resource; others are ignored.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Embed side-loaded records in each record: a field `<name>_ids` (or `<name>_id`) whose
        /// ids are found in a top-level map adds that map's records under the map's name (for
        /// `_ids`) or under `<name>` (for `_id`), so a record carries its line items, projects
        /// and references with it. A prefix such as `primary_` is dropped to find the map; failing
        /// that, the only map whose name ends in `_<name>s` is used and its records go under
        /// `<name>s` (`choice_ids` with a `custom_field_choices` map gives `choices`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        embed: bool,
    },
}

/// Pagination of a list operation.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields,
    tag = "style"
)]
pub enum Pagination {
    /// A single response holds everything.
    None,
    /// Numbered pages.
    Page {
        /// Query parameter carrying the page number; omit it when a template places the page
        /// itself (`{{ page.number }}`, see `style = "offset"` for the values).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        page_param: Option<String>,
        /// Query parameter carrying the page size; omit when the size is fixed by the provider.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size_param: Option<String>,
        /// Records per page to ask for (and the provider's maximum).
        size: u32,
        /// Number of the first page.
        #[serde(default = "one")]
        first_page: u32,
        /// When to stop.
        stop: PageStop,
    },
    /// Offset and limit. Every paging style also gives the request's templates the values of
    /// the page asked for, as `page.number` (from 1), `page.offset` (records before it, from 0),
    /// `page.start` (its first record, from 1), `page.size` and `page.cursor` (cursor styles,
    /// absent on the first page), so paging can live inside a query language; the parameters
    /// below are then left out. QuickBooks: `pagination = { style = "offset", size = 1000, stop
    /// = { when = "short-page" } }` with `query = { query = "select * from Invoice STARTPOSITION
    /// {{ page.start }} MAXRESULTS {{ page.size }}" }`.
    Offset {
        /// Query parameter carrying the offset; omit it when a template places `page.offset` or
        /// `page.start`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset_param: Option<String>,
        /// Query parameter carrying the limit; omit it when a template places `page.size`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit_param: Option<String>,
        /// Records per call.
        size: u32,
        /// When to stop: `short-page` or `empty-page`.
        stop: PageStop,
    },
    /// An opaque cursor returned by each response (HubSpot's `paging.next.after`).
    Cursor {
        /// Query parameter carrying the cursor; omit it when a template places `page.cursor`
        /// (in a `read-body`, for instance).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor_param: Option<String>,
        /// Dotted path of the next cursor in the body; absent, null or empty ends the list.
        next: String,
        /// Query parameter carrying the page size.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size_param: Option<String>,
        /// Records per call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u32>,
    },
    /// Each response gives the full URL of the next page (`links.next`, HubSpot's
    /// `paging.next.link`), which is requested as it is, with the operation's headers. A URL on
    /// another scheme, host or port than the operation's is refused, so a response cannot send
    /// the access token elsewhere. Example: `pagination = { style = "next-url", next =
    /// "paging.next.link", size-param = "limit", size = 100 }`.
    NextUrl {
        /// Dotted path of the next page's URL in the body; absent, null or empty ends the list.
        next: String,
        /// Query parameter carrying the page size on the first request (the next URLs carry
        /// their own).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size_param: Option<String>,
        /// Records per call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u32>,
    },
}

fn one() -> u32 {
    1
}

/// When a paged list ends.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields,
    tag = "when"
)]
pub enum PageStop {
    /// A page with fewer records than asked for is the last.
    ShortPage,
    /// A page with no records means the end.
    EmptyPage,
    /// Compare the page number to a page count in the body.
    PageCount {
        /// Dotted path of the page count, e.g. `meta.page_count`.
        path: String,
    },
}

/// Incremental reads: only records changed since the cursor.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Incremental {
    /// Record field holding the change time; the highest value seen becomes the next cursor.
    pub field: String,
    /// Format of that field.
    pub field_format: DateFormat,
    /// Query parameter carrying the cursor (e.g. `updated_after`); or use `header`; or neither,
    /// when a template of the operation places `{{ cursor }}` itself (a query text, a search
    /// body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// Header carrying the cursor (e.g. `If-Modified-Since`); or use `param`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Format of the cursor as sent.
    pub format: DateFormat,
    /// Smallest step the provider distinguishes.
    #[serde(default)]
    pub precision: Precision,
    /// How far back each run starts before the saved cursor, so records at the boundary are
    /// read again (and deduplicated by primary key) rather than lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<SpecDuration>,
    /// Whether the list may be read as a keyset: ordered by `field`, oldest first, so each page
    /// can restart from the newest change already seen. Flows then read every page that way, so
    /// a record changed during a read (which moves to the end of the order) cannot push another
    /// onto a page already read. Without it a flow reads by page number and moves its cursor
    /// only at the end of a read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keyset: bool,
}

/// Precision of a cursor.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Whole seconds.
    #[default]
    Second,
    /// Milliseconds.
    Millisecond,
    /// Whole days.
    Day,
}

/// Date and time formats found in APIs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DateFormat {
    /// RFC 3339 / ISO 8601 with offset, e.g. `2013-04-15T16:48:48-07:00`.
    Rfc3339,
    /// ISO 8601 without offset, taken as UTC, e.g. `2019-12-07T18:46:19.5165400`.
    NaiveUtc,
    /// Calendar date, e.g. `2024-05-31`.
    Date,
    /// Microsoft JSON date, e.g. `/Date(1518685950940+0000)/` (epoch milliseconds, optional offset).
    MsJson,
    /// Seconds since 1970-01-01T00:00:00Z, e.g. `1717156830`: a JSON number or a string of
    /// digits in records, digits when sent.
    EpochSeconds,
    /// Milliseconds since 1970-01-01T00:00:00Z, e.g. `1717156830750` (HubSpot's timestamps).
    EpochMillis,
}

/// One resource and its operations.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Resource {
    /// What the resource is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Record field that identifies a record.
    pub primary_key: String,
    /// Whether requests carry the tenant; defaults to true when the spec declares `[tenants]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenanted: Option<bool>,
    /// A native plugin that runs the whole resource (its manifest lists the operations it runs);
    /// the resource then declares no HTTP operation, and its `fields` rules are handed to the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// List records (`cursor` in templates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Operation>,
    /// Get one record by id (`id` in templates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub get: Option<Operation>,
    /// Create records (`record` in templates, for a single-record write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<Operation>,
    /// Update records (`id` and `record` in templates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Operation>,
    /// Delete (or archive) one record (`id` in templates); DELETE unless `method` says
    /// otherwise, no body unless `body` says one. For example HubSpot's archive,
    /// `delete = { path = "/crm/v3/objects/deals/{{ id }}" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<Operation>,
    /// Named actions on one record (`id`, `record` and `idempotency_key` in templates), POST
    /// unless `method` says otherwise, sent with a body only when `body` says one: void, send,
    /// approve. For example `[resources.expense_reports.actions.approve]` with
    /// `method = "PUT"` and `path = "/expense_report_submissions/{{ id }}/approve"`, or
    /// `[resources.sales.actions.void]` with `path = "/sale"`, `query = { operation = "void" }`
    /// and `body = { shape = "bare" }`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub actions: IndexMap<String, Operation>,
    /// Record fields and their rules.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub fields: IndexMap<String, RecordField>,
}

/// How written records are wrapped.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields,
    tag = "shape"
)]
pub enum WriteBody {
    /// One record under a key: `{"external_payment": {...}}`.
    Singular {
        /// The wrapping key.
        key: String,
    },
    /// An array of records under a key: `{"Invoices": [{...}]}`.
    Plural {
        /// The wrapping key.
        key: String,
    },
    /// The bare record.
    Bare,
    /// Each record wrapped in an item template, the items in a list (under `key`, or the list
    /// itself as the body). Every string of `item` is a template over `record`, `index` (the
    /// record's place in the batch, from 0), `operation` (`create`, `update`, `delete` or the
    /// action's name), `id`, `idempotency_key`, `fields`, `params` and `tenant`; a string that is
    /// one expression alone, such as `"{{ record }}"`, gives that value as it is (an object
    /// stays an object, a number a number; `"{{ index | string }}"` gives text). For example a
    /// batch of items each naming its operation: `body = { shape = "envelope", key =
    /// "BatchItemRequest", item = { bId = "{{ index | string }}", operation =
    /// "{{ operation }}", Sale = "{{ record }}" } }`.
    Envelope {
        /// The key holding the list of items; without it the body is the list.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// The template of one item (a table whose strings are templates).
        #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
        item: serde_json::Map<String, serde_json::Value>,
    },
}

/// The idempotency key of a write: a key derived from the records (the same records written
/// again carry the same key), sent in a header, a query parameter or both, and readable by the
/// operation's templates as `{{ idempotency_key }}` (in a path, query, header or body item).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Idempotency {
    /// Header carrying the key, e.g. `Idempotency-Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Query parameter carrying the key, e.g. `requestid` (`?requestid=weft-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Longest key accepted.
    pub max_length: u32,
    /// How long the provider replays a stored response; past it a retry may duplicate, so
    /// Weft reconciles before writing again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<SpecDuration>,
}

/// Per-item results of a batch write: which returned item answers which record, and which
/// items failed. Every field named here is a dotted path (`Fault.Error`). An item fails when its
/// status is one of `error-values`, when it holds `fault-field`, or (with `warnings-field`) when
/// it carries warnings; a record no item answers has an unknown outcome.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ItemErrors {
    /// Field of each returned item holding its status; with `error-values`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_field: Option<String>,
    /// Status values that mean the item failed; with `status-field`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_values: Vec<String>,
    /// Field whose presence in a returned item means it failed, whatever else it holds, e.g.
    /// `Fault` (`{"bId": "2", "Fault": {"Error": [{"Message": "…"}]}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_field: Option<String>,
    /// Field of each returned item holding its list of errors (or one error object).
    pub errors_field: String,
    /// Field of each error holding the message.
    pub message_field: String,
    /// Field of each returned item holding the record's id at the provider, e.g. `Sale.Id`;
    /// defaults to the resource's primary key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_field: Option<String>,
    /// Match returned items to records by a key instead of by position, for answers that carry
    /// an item id or come back in any order.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "match")]
    pub match_by: Option<ItemMatch>,
    /// Failures listed apart from the items, in an array of the whole answer, each naming the
    /// records it is about by their `match` keys (HubSpot's `errors[]`, each with its
    /// `context`): a record named there failed, with the error's `message-field`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separate_errors: Option<SeparateErrors>,
    /// Field of each returned item holding its list of warnings: an item whose list there is
    /// non-empty failed too, whatever its status (for documents a provider accepts after
    /// changing them, such as a line whose unknown account was removed), its messages read
    /// with `message-field`. Leave it out where warnings are only advice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings_field: Option<String>,
}

/// How a returned item names the record it answers: `sent` is a template rendered for each
/// record (`record`, `index`), `returned` the dotted path of the same value in each returned
/// item. For example `match = { sent = "{{ index }}", returned = "bId" }` for items whose
/// envelope carried `bId = "{{ index }}"`, or `match = { sent = "{{ record.properties.email }}",
/// returned = "properties.email" }` for results that come back unordered.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ItemMatch {
    /// The record's key as sent (template over `record` and `index`).
    pub sent: String,
    /// Dotted path of that key in each returned item.
    pub returned: String,
}

/// Errors listed apart from the returned items: for example
/// `separate-errors = { path = "errors", keys = "context.email" }` for an answer
/// `{"results": [...], "errors": [{"message": "…", "context": {"email": ["c@example.com"]}}]}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SeparateErrors {
    /// Dotted path of the array of errors in the answer's body.
    pub path: String,
    /// Dotted path, in each error, of the keys (one, or a list) of the records it is about,
    /// compared with each record's `match.sent` key.
    pub keys: String,
}

/// One error-classification rule.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ErrorRule {
    /// HTTP statuses this rule applies to (any when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<u16>,
    /// A substring the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// The class.
    pub class: ErrorClass,
    /// Message to show (template over `status` and `body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Error classes; each has its own reaction in the engine.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// The access token has expired: refresh and retry once.
    TokenExpired,
    /// The grant or credentials were refused: authorize again.
    Unauthorized,
    /// The grant lacks permission for this call.
    Forbidden,
    /// No tenant, or the wrong one.
    Tenant,
    /// A rate budget was exceeded: wait and retry.
    RateLimited,
    /// The record was refused; not retried, goes to the error queue.
    Validation,
    /// The thing asked for does not exist.
    NotFound,
    /// The record changed at the provider since it was read (a stale version or sync token;
    /// HTTP 409 unless a rule says otherwise): not resent as it was; read again first. A flow
    /// queues the record and its next run reads it again and writes on top of what is there.
    Conflict,
    /// Worth retrying with backoff.
    Transient,
    /// Not worth retrying.
    Fatal,
}

/// The connection test: a resource operation whose success proves the connection works.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConnectionTest {
    /// The resource to call.
    pub resource: String,
    /// Its operation; `list` or `get`.
    #[serde(default = "list_op")]
    pub operation: String,
    /// Statuses that count as success.
    #[serde(default = "ok_statuses")]
    pub success_status: Vec<u16>,
    /// Whether success also needs at least one record.
    #[serde(default = "yes")]
    pub needs_record: bool,
    /// Text shown on success (template over `record`, the first record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub describe: Option<String>,
}

fn list_op() -> String {
    "list".to_owned()
}

fn ok_statuses() -> Vec<u16> {
    vec![200]
}

/// Type and rules of one record field.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RecordField {
    /// Value type.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// Whether a create must carry it (updates may send only what changes).
    #[serde(default)]
    pub required: bool,
    /// Whether the provider sets it and writes must leave it out.
    #[serde(default)]
    pub read_only: bool,
    /// Whether an update must carry it, e.g. a version the provider checks (`SyncToken`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required_on_update: bool,
    /// Whether only updates may carry it: a create carrying it is refused (a version number
    /// that exists only once the record does).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update_only: bool,
    /// Whether it is accepted on writes but never returned by reads (so comparing a read record
    /// with what was written must skip it).
    #[serde(default)]
    pub write_only: bool,
    /// Longest accepted text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Accepted values.
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "enum")]
    pub choices: Vec<String>,
    /// Money unit (type `money` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<MoneyUnit>,
    /// Date format (types `date` and `datetime` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DateFormat>,
    /// For `reference`, and `array` of ids: the resource the values point to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<String>,
    /// What the field means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// For `object`, its fields; for `array`, the fields of each element (an object). Writes
    /// are checked against them like top-level fields, and a flow may write only these.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub fields: IndexMap<String, RecordField>,
}

/// Record field types.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FieldType {
    /// Text.
    String,
    /// Whole number.
    Integer,
    /// Exact decimal (never floating point).
    Decimal,
    /// Money; `unit` says cents or decimal.
    Money,
    /// True or false.
    Boolean,
    /// Calendar date; `format` says how it is written.
    Date,
    /// Instant; `format` says how it is written.
    Datetime,
    /// UUID.
    Uuid,
    /// The id of another record (`references`).
    Reference,
    /// Nested object.
    Object,
    /// List.
    Array,
}

/// Money units.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MoneyUnit {
    /// Integer cents (Kantata's `*_in_cents`).
    Cents,
    /// Decimal amount with 2 (or 4) places (Xero).
    Decimal,
}

/// The base URL of one host: a URL, or one URL per choice of an enum form field.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Host {
    /// One base URL, such as `"https://api.xero.com"`.
    Url(String),
    /// A base URL per choice of an enum form field: the connection's value of the field (its
    /// default when the connection gives none) picks the URL.
    ByField(HostByField),
}

/// A host chosen by an enum form field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HostByField {
    /// The form field (of type `enum`, with a `default`) whose value picks the URL.
    pub field: String,
    /// The base URL for each choice of the field; every choice needs one.
    pub choices: IndexMap<String, String>,
}

impl<'de> Deserialize<'de> for Host {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = Host;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a base URL, or a table choosing one by a form field: `{ field = \"FIELD\", choices = { CHOICE = \"URL\" } }`",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Host, E> {
                Ok(Host::Url(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Host, A::Error> {
                HostByField::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Host::ByField)
            }
        }
        deserializer.deserialize_any(Shape)
    }
}

impl Host {
    /// The base URL for `value` of the choosing field (its default when `None`); `None` when the
    /// value is not a choice. A plain URL is the same whatever the value.
    pub fn url(&self, fields: &[Field], value: Option<&str>) -> Option<&str> {
        match self {
            Self::Url(url) => Some(url),
            Self::ByField(by) => {
                let default =
                    fields
                        .iter()
                        .find(|f| f.id == by.field)
                        .and_then(|f| match &f.default {
                            Some(Scalar::Text(t)) => Some(t.as_str()),
                            _ => None,
                        });
                by.choices.get(value.or(default)?).map(String::as_str)
            }
        }
    }

    /// Every URL it may take, with the choice giving it (`None` for a plain URL).
    pub fn urls(&self) -> Vec<(Option<&str>, &str)> {
        match self {
            Self::Url(url) => vec![(None, url.as_str())],
            Self::ByField(by) => by
                .choices
                .iter()
                .map(|(c, u)| (Some(c.as_str()), u.as_str()))
                .collect(),
        }
    }
}

impl SpecFile {
    /// Each host's base URL for these form field values (a field not given takes its default).
    pub fn host_urls(
        &self,
        values: &std::collections::BTreeMap<String, String>,
    ) -> IndexMap<String, String> {
        self.hosts
            .iter()
            .filter_map(|(name, host)| {
                let value = match host {
                    Host::ByField(by) => values.get(&by.field).map(String::as_str),
                    Host::Url(_) => None,
                };
                Some((name.clone(), host.url(&self.fields, value)?.to_owned()))
            })
            .collect()
    }

    /// The form fields that choose a host.
    pub fn host_fields(&self) -> Vec<&Field> {
        self.fields
            .iter()
            .filter(|f| self.chooses_host(f))
            .collect()
    }

    fn chooses_host(&self, field: &Field) -> bool {
        self.hosts
            .values()
            .any(|h| matches!(h, Host::ByField(by) if by.field == field.id))
    }

    /// The form fields a connection holds values for (in `weft.toml`, a connection's `fields`):
    /// those choosing a host, and every other field that is not secret (sealed credentials),
    /// not the concurrency level (a connection's own setting) and not read by the templates of
    /// an OAuth client (`[auth.oauth2]`, `[auth.client-credentials]`: its ID and secret belong
    /// to the client). A field that belongs to some sign-in methods only takes a value from a
    /// connection of one of them ([`crate::form::check_for`]).
    pub fn connection_fields(&self) -> Vec<&Field> {
        let env = crate::template::environment();
        let mut client_templates: Vec<&str> = Vec::new();
        if let Some(o) = &self.auth.oauth2 {
            client_templates.extend([o.authorize_url.as_str(), &o.token_url, &o.client_id]);
            client_templates.extend(o.revoke_url.as_deref());
            client_templates.extend(o.client_secret.as_deref());
            client_templates.extend(o.authorize_params.values().map(String::as_str));
        }
        if let Some(c) = &self.auth.client_credentials {
            client_templates.extend([c.token_url.as_str(), &c.client_id, &c.client_secret]);
        }
        let read: Vec<std::collections::BTreeSet<String>> = client_templates
            .iter()
            .filter_map(|t| crate::template::variables(&env, t))
            .collect();
        let by_client = |f: &Field| {
            let name = format!("fields.{}", f.id);
            read.iter().any(|vars| crate::template::reads(vars, &name))
        };
        self.fields
            .iter()
            .filter(|f| {
                self.chooses_host(f)
                    || (!f.secret && f.id != well_known::CONCURRENCY && !by_client(f))
            })
            .collect()
    }
}

/// Field ids with a meaning to the engine: they are bound to the connection, not templated.
pub mod well_known {
    /// The connection's concurrency level.
    pub const CONCURRENCY: &str = "concurrency";
}

impl SpecFile {
    /// Whether requests of `resource` carry the tenant.
    pub fn is_tenanted(&self, resource: &Resource) -> bool {
        resource.tenanted.unwrap_or(self.tenants.is_some())
    }
}

impl SpecFile {
    /// Every plugin the spec names, with the key path naming it and the capability it needs:
    /// `extract`, `transform` or `sign` for a hook, `resource` for a whole resource.
    pub fn plugin_refs(&self) -> Vec<PluginRef<'_>> {
        let mut refs = Vec::new();
        if let Some(name) = &self.requests.sign {
            refs.push(PluginRef {
                key: "requests.sign".to_owned(),
                plugin: name,
                needs: "sign",
            });
        }
        for (resource_name, resource) in &self.resources {
            if let Some(name) = &resource.plugin {
                refs.push(PluginRef {
                    key: format!("resources.{resource_name}.plugin"),
                    plugin: name,
                    needs: "resource",
                });
            }
            for (op_name, op) in resource.operations() {
                for (hook, name) in [
                    ("extract", &op.hooks.extract),
                    ("transform", &op.hooks.transform),
                ] {
                    if let Some(name) = name {
                        refs.push(PluginRef {
                            key: format!("resources.{resource_name}.{op_name}.hooks.{hook}"),
                            plugin: name,
                            needs: hook,
                        });
                    }
                }
            }
        }
        refs
    }
}

/// A place in a spec that names a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRef<'a> {
    /// Key path of the reference, e.g. `resources.rows.plugin`.
    pub key: String,
    /// The plugin name.
    pub plugin: &'a str,
    /// What the plugin must provide: `extract`, `transform`, `sign` or `resource`.
    pub needs: &'static str,
}

impl Resource {
    /// The resource's operations that are declared, by name.
    pub fn operations(&self) -> impl Iterator<Item = (&'static str, &Operation)> {
        [
            ("list", &self.list),
            ("get", &self.get),
            ("create", &self.create),
            ("update", &self.update),
            ("delete", &self.delete),
        ]
        .into_iter()
        .filter_map(|(name, op)| op.as_ref().map(|op| (name, op)))
    }

    /// The operation named `name`: `list`, `get`, `create`, `update`, `delete`, or an action.
    pub fn operation(&self, name: &str) -> Option<&Operation> {
        match name {
            "list" => self.list.as_ref(),
            "get" => self.get.as_ref(),
            "create" => self.create.as_ref(),
            "update" => self.update.as_ref(),
            "delete" => self.delete.as_ref(),
            action => self.actions.get(action),
        }
    }
}
