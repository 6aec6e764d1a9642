//! A connection at work: every call a spec resource needs, made the one way — rendered from the
//! spec, under the connection's limiter (concurrency and budgets, per tenant), with a current
//! access token (refreshed ahead of expiry, or once after the provider rejects it), through the
//! executor's retries and error rules, and counted.
//!
//! Reads stream: [`Session::list`] hands records to the caller page by page, so memory holds one
//! page however long the list is.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use weft_core::Spec;
use weft_core::model::{ErrorClass, Pagination};

use crate::EngineError;
use crate::extract::{ExtractError, take_records};
use crate::http::{Answer, CallError, send};
use crate::limits::{Clock, LimitError, Limiter};
use crate::lock;
use crate::paginate::{PageError, Pager};
use crate::request::{Hosts, OpKind, RequestContext, build_named};
use crate::tokens::{TokenError, TokenKeeper};

/// Why a call or a read stopped.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The request could not be rendered.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// No usable token.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The provider refused, or could not be reached.
    #[error(transparent)]
    Call(#[from] CallError),
    /// A daily cap is spent (a resumable stop).
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// A page that is not what the spec describes.
    #[error("page {page} of `{resource}`: {source}")]
    Extract {
        /// Resource name.
        resource: String,
        /// Page number, from 1.
        page: u64,
        /// The problem.
        #[source]
        source: ExtractError,
    },
    /// A plugin hook the spec names failed.
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    /// Paging that cannot go on (a repeated cursor).
    #[error("paging `{resource}`: {source}")]
    Page {
        /// Resource name.
        resource: String,
        /// The problem.
        #[source]
        source: PageError,
    },
}

/// Counters of a session, for progress and run summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Requests sent (each attempt counted, retries included).
    pub calls: u64,
    /// Answers with status 429.
    pub rate_limited: u64,
    /// Time spent waiting for the limiter, backoff and `Retry-After`.
    pub waited: Duration,
}

/// A connection ready to call.
pub struct Session {
    spec: Spec,
    hosts: Hosts,
    limiter: Limiter,
    http: reqwest::Client,
    tokens: TokenKeeper,
    clock: Arc<dyn Clock>,
    env: minijinja::Environment<'static>,
    seed: Mutex<fastrand::Rng>,
    stats: Mutex<CallStats>,
    plugins: Arc<crate::plugin::Plugins>,
    fields: BTreeMap<String, Value>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("connector", &self.spec.id())
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session over `spec` with these hosts, limiter (shared with the connections that borrow
    /// its concurrency), HTTP client, tokens and clock.
    pub fn new(
        spec: Spec,
        hosts: Hosts,
        limiter: Limiter,
        http: reqwest::Client,
        tokens: TokenKeeper,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let fields = RequestContext::with_field_defaults(spec.file()).fields;
        Self {
            fields,
            spec,
            hosts,
            limiter,
            http,
            tokens,
            clock,
            env: weft_core::template::environment(),
            seed: Mutex::new(fastrand::Rng::new()),
            stats: Mutex::new(CallStats::default()),
            // Found in the standard plugin directories; a library is loaded only when the spec
            // names a hook it provides.
            plugins: Arc::new(crate::plugin::Plugins::from_env()),
        }
    }

    /// The same session with a connection's form field values (by field id, as templates read
    /// them: [`RequestContext::with_connection_fields`]) in every context it makes.
    pub fn with_fields(mut self, fields: BTreeMap<String, Value>) -> Self {
        self.fields = fields;
        self
    }

    /// The form field values of the connection (its own over the spec's defaults) that
    /// templates read as `fields`.
    pub fn fields(&self) -> &BTreeMap<String, Value> {
        &self.fields
    }

    /// The same session, looking for plugins in `plugins` instead of the standard directories.
    pub fn with_plugins(mut self, plugins: Arc<crate::plugin::Plugins>) -> Self {
        self.plugins = plugins;
        self
    }

    /// `records` for operation `kind` of `resource` through the spec's `hooks.transform`
    /// plugin, or unchanged when it names none.
    pub fn transform(
        &self,
        resource: &str,
        kind: OpKind,
        records: Vec<Value>,
    ) -> Result<Vec<Value>, SessionError> {
        let file = self.spec.file();
        let Some(op) = file
            .resources
            .get(resource)
            .and_then(|r| r.operation(kind.as_str()))
        else {
            return Ok(records);
        };
        Ok(crate::hooks::transform(
            &self.plugins,
            file,
            resource,
            kind.as_str(),
            op,
            records,
        )?)
    }

    /// The connector's spec.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The token keeper.
    pub fn tokens(&self) -> &TokenKeeper {
        &self.tokens
    }

    /// Calls, 429s and waiting so far.
    pub fn stats(&self) -> CallStats {
        *lock(&self.stats)
    }

    /// Makes operation `kind` of `resource`: rendered, limited, authorized, sent. `extra_query`
    /// is paging; `extra_headers` (an idempotency key) are added after the spec's.
    pub async fn call(
        &self,
        resource: &str,
        kind: OpKind,
        ctx: &RequestContext,
        extra_query: &[(String, String)],
        extra_headers: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Answer, SessionError> {
        self.call_named(
            resource,
            kind.as_str(),
            ctx,
            extra_query,
            extra_headers,
            body,
        )
        .await
    }

    /// Writes `records` through operation `name` of `resource` (`create`, `update`, `delete`
    /// or an action), the one way every writer does: the operation's `merge` constants set on
    /// each record, the body shaped as the spec says (an envelope's items rendered per record),
    /// the idempotency `key` in the header, query parameter or templates the spec names, and
    /// the answer read record by record (by key or by position). `ctx.id` names the record of a
    /// one-record write. A refused call is an error: nothing was written.
    pub async fn write(
        &self,
        resource: &str,
        name: &str,
        ctx: &RequestContext,
        records: &[Value],
        key: Option<&str>,
    ) -> Result<Vec<crate::write::ItemResult>, SessionError> {
        let file = self.spec.file();
        let op = crate::request::operation(file, resource, name)?;
        let primary = &file.resources[resource].primary_key;
        let mut ctx = ctx.clone();
        ctx.idempotency_key = key.map(str::to_owned);
        let sent = crate::write::merged(op, records);
        // A one-record write's templates may read the record (a parent's id in the path of a
        // sub-resource: `/sales/{{ record.sale_id }}/lines`).
        if let ([one], None) = (sent.as_slice(), &ctx.record) {
            ctx.record = Some(one.clone());
        }
        let body = crate::write::shape(&self.env, op, name, &sent, &ctx)?;
        let answer = self
            .call_named(resource, name, &ctx, &[], &[], body.as_ref())
            .await?;
        let returned = crate::extract::records(&answer.body, &op.records).unwrap_or_default();
        Ok(crate::write::results(
            &self.env,
            op,
            name,
            &sent,
            &returned,
            &answer.body,
            primary,
            ctx.id.as_deref(),
        )?)
    }

    /// Runs action `action` of `resource` on the record `id` (void, send, approve…), with
    /// `record` as the body's record when the action sends one; the record's outcome.
    pub async fn action(
        &self,
        resource: &str,
        action: &str,
        ctx: &RequestContext,
        id: &str,
        record: Value,
        key: Option<&str>,
    ) -> Result<crate::write::ItemResult, SessionError> {
        let ctx = RequestContext {
            id: Some(id.to_owned()),
            record: Some(record.clone()),
            ..ctx.clone()
        };
        let mut results = self.write(resource, action, &ctx, &[record], key).await?;
        Ok(results.remove(0))
    }

    /// [`Session::call`] for operation `name` of `resource`: any operation, an action
    /// included.
    pub async fn call_named(
        &self,
        resource: &str,
        name: &str,
        ctx: &RequestContext,
        extra_query: &[(String, String)],
        extra_headers: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Answer, SessionError> {
        let file = self.spec.file();
        let op_rules = file
            .resources
            .get(resource)
            .and_then(|r| r.operation(name))
            .map(|op| op.errors.as_slice())
            .unwrap_or_default();
        // A list that searches with a body (`read-body`) renders it for this page.
        let read_body = match body {
            None if name == OpKind::List.as_str() => {
                crate::request::read_body(&self.env, file, &self.hosts, resource, ctx)?
            }
            _ => None,
        };
        let body = body.or(read_body.as_ref());
        // Credentials first: "not authorized yet" says more than anything that follows from it.
        let mut token = self.tokens.access_token().await?;
        let mut request = build_named(
            &self.env,
            file,
            &self.hosts,
            resource,
            name,
            ctx,
            extra_query,
        )?;
        request.headers.extend(extra_headers.iter().cloned());
        let tenant = ctx.tenant.as_ref().map(|t| t.id.as_str());
        // Budgets of one operation count it by this name.
        let counted = format!("{resource}.{name}");
        let mut rng = fastrand::Rng::with_seed(lock(&self.seed).u64(..));
        let mut renewed = false;
        loop {
            let before = self.clock.now_ms();
            let permit = self
                .limiter
                .acquire_for(tenant, Some(&counted), self.clock.as_ref())
                .await?;
            let limiter_wait = Duration::from_millis(self.clock.now_ms().saturating_sub(before));
            let signed = crate::hooks::sign(
                &self.plugins,
                file,
                request.clone().with_token(file, token.expose())?,
                body,
            )?;
            let outcome = send(
                &self.http,
                file,
                op_rules,
                &signed,
                body,
                self.clock.as_ref(),
                &mut rng,
            )
            .await;
            // The call's end and the provider's counts, in one trip to a fleet's store.
            let headers = outcome.as_ref().map_or(&[][..], |a| a.headers.as_slice());
            self.limiter
                .answered(permit, tenant, headers, self.clock.as_ref());
            {
                let mut stats = lock(&self.stats);
                stats.waited += limiter_wait;
                match &outcome {
                    Ok(answer) => {
                        stats.calls += u64::from(answer.attempts);
                        stats.waited += answer.waited;
                    }
                    Err(CallError::Refused {
                        attempts, status, ..
                    }) => {
                        stats.calls += u64::from(*attempts);
                        stats.rate_limited += u64::from(*status == 429);
                    }
                    Err(CallError::Unreachable { attempts, .. }) => {
                        stats.calls += u64::from(*attempts);
                    }
                    Err(_) => stats.calls += 1,
                }
            }
            match outcome {
                Ok(answer) => return Ok(answer),
                Err(CallError::Refused {
                    class: ErrorClass::TokenExpired | ErrorClass::Unauthorized,
                    ..
                }) if !renewed => {
                    // Expired early, or clocks apart: one new token, one more try.
                    renewed = true;
                    token = self.tokens.rejected(&token).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads every record of `resource` (or until `each` breaks), in the provider's order.
    /// Returns the number of records handed over.
    ///
    /// Pages the provider has said exist (its page count) are asked for while earlier ones are
    /// still on their way, up to the connection's concurrency level, so latency does not keep a
    /// read below its rate limit. Where the provider does not say where the list ends (short or
    /// empty page, offsets, cursors), each page waits for the answer to the one before: a call
    /// past the end would spend the provider's budget for nothing. Records are handed over in
    /// page order, memory holds at most that many pages, and every call sent is answered and
    /// counted before this returns, also when `each` breaks or a page fails.
    pub async fn list(
        &self,
        resource: &str,
        ctx: &RequestContext,
        mut each: impl FnMut(Value) -> ControlFlow<()>,
    ) -> Result<u64, SessionError> {
        use futures_util::StreamExt as _;
        use futures_util::stream::FuturesOrdered;

        let file = self.spec.file();
        let list = file
            .resources
            .get(resource)
            .ok_or_else(|| EngineError::UnknownResource {
                connector: file.id.clone(),
                resource: resource.to_owned(),
            })?
            .list
            .as_ref()
            .ok_or_else(|| EngineError::NoOperation {
                connector: file.id.clone(),
                resource: resource.to_owned(),
                operation: "list".to_owned(),
            })?;
        let mut pager = Pager::new(list.pagination.as_ref().unwrap_or(&Pagination::None));
        let depth = self.limiter.concurrency().max(1) as usize;
        // Pages asked for beyond the one the pager expects next.
        let mut asked: u64 = 0;
        let mut in_flight = FuturesOrdered::new();
        let mut page_no = 0;
        let mut handed = 0;
        let outcome = loop {
            while in_flight.len() < depth {
                let ask = if asked == 0 {
                    pager.next()
                } else {
                    pager.ahead(asked)
                };
                let Some(ask) = ask else { break };
                asked += 1;
                let mut page_ctx = ctx.clone();
                ask.apply(&mut page_ctx);
                in_flight.push_back(async move {
                    self.call(resource, OpKind::List, &page_ctx, &ask.query, &[], None)
                        .await
                });
            }
            let Some(answer) = in_flight.next().await else {
                break Ok(handed);
            };
            let mut answer = match answer {
                Ok(answer) => answer,
                Err(e) => break Err(e),
            };
            asked -= 1;
            page_no += 1;
            let page = self
                .page_records(resource, list, &mut answer.body, page_no)
                .and_then(|page| {
                    pager.advance(&answer.body, page.len()).map_err(|source| {
                        SessionError::Page {
                            resource: resource.to_owned(),
                            source,
                        }
                    })?;
                    Ok(page)
                });
            drop(answer);
            let page = match page {
                Ok(page) => page,
                Err(e) => break Err(e),
            };
            if page.into_iter().any(|record| {
                handed += 1;
                each(record).is_break()
            }) {
                break Ok(handed);
            }
            if pager.is_done() {
                break Ok(handed);
            }
        };
        // Calls already sent are answered (and counted) rather than dropped mid-way: the
        // provider counts them either way, and the summary must match what was sent.
        while in_flight.next().await.is_some() {}
        outcome
    }

    /// The records of one list page (the spec's extraction, or its plugin hooks).
    fn page_records(
        &self,
        resource: &str,
        list: &weft_core::model::Operation,
        body: &mut Value,
        page_no: u64,
    ) -> Result<Vec<Value>, SessionError> {
        let file = self.spec.file();
        let page = match &list.hooks.extract {
            None => take_records(body, &list.records).map_err(|source| SessionError::Extract {
                resource: resource.to_owned(),
                page: page_no,
                source,
            })?,
            Some(_) => crate::hooks::extract(&self.plugins, file, resource, "list", list, body)?,
        };
        let page = crate::hooks::transform(&self.plugins, file, resource, "list", list, page)?;
        Ok(self.keep(resource, list, page)?)
    }

    /// The records of `page` that the list's `keep-if` keeps (all of them without one).
    fn keep(
        &self,
        resource: &str,
        list: &weft_core::model::Operation,
        page: Vec<Value>,
    ) -> Result<Vec<Value>, EngineError> {
        let Some(source) = &list.keep_if else {
            return Ok(page);
        };
        let place = || format!("{}.resources.{resource}.list.keep-if", self.spec.id());
        let expr = self
            .env
            .compile_expression(source)
            .map_err(|e| EngineError::Filter {
                place: place(),
                reason: e.to_string(),
            })?;
        let mut kept = Vec::with_capacity(page.len());
        for record in page {
            let verdict = expr
                .eval(minijinja::context! { record => minijinja::Value::from_serialize(&record) })
                .map_err(|e| EngineError::Filter {
                    place: place(),
                    reason: e.to_string(),
                })?;
            if verdict.is_true() {
                kept.push(record);
            }
        }
        Ok(kept)
    }

    /// One page of `resource`'s list with this paging `query`: its records and the rest of the
    /// answer's body (for the pager). Flows read page by page this way, so a keyset read can
    /// restart from the newest change it saw. `ctx` carries the pager's values for templates
    /// and its next-page URL ([`crate::paginate::PageAsk::apply`]).
    pub async fn page(
        &self,
        resource: &str,
        ctx: &RequestContext,
        query: &[(String, String)],
    ) -> Result<(Vec<Value>, Value), SessionError> {
        let file = self.spec.file();
        let list = file
            .resources
            .get(resource)
            .and_then(|r| r.list.as_ref())
            .ok_or_else(|| EngineError::NoOperation {
                connector: file.id.clone(),
                resource: resource.to_owned(),
                operation: "list".to_owned(),
            })?;
        let mut answer = self
            .call(resource, OpKind::List, ctx, query, &[], None)
            .await?;
        let records = self.page_records(resource, list, &mut answer.body, 1)?;
        Ok((records, answer.body))
    }

    /// The connection's concurrency level (calls in flight at once).
    pub fn concurrency(&self) -> u32 {
        self.limiter.concurrency()
    }

    /// A context with the connection's field values and these parameters.
    pub fn context(&self, params: BTreeMap<String, String>) -> RequestContext {
        RequestContext {
            params,
            fields: self.fields.clone(),
            ..RequestContext::default()
        }
    }
}
