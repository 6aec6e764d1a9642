//! Serving a simulator: a real HTTP server on 127.0.0.1, on a runtime of its own (so sync and
//! async tests alike can use it), wrapped in the request log and the fault plan.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use axum::middleware::Next;
use tokio::sync::oneshot;

use crate::clock::SimClock;
use crate::faults::{Fault, FaultPlan, replacement};
use crate::log::RequestLog;

/// What every simulator shares with the tests: its clock, its log, its fault plan.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Simulated time.
    pub clock: SimClock,
    /// Every request received.
    pub log: Arc<RequestLog>,
    /// Faults to inject.
    pub faults: Arc<FaultPlan>,
    /// Header naming the tenant of a request, for the log's per-tenant counts.
    pub tenant_header: Option<&'static str>,
}

impl Observed {
    /// A fresh log and an empty fault plan seeded with `seed`, on `clock`.
    pub fn new(clock: SimClock, seed: u64, tenant_header: Option<&'static str>) -> Self {
        Self {
            clock,
            log: Arc::default(),
            faults: Arc::new(FaultPlan::new(seed)),
            tenant_header,
        }
    }
}

/// A running server; dropping it (or [`Running::stop`]) shuts it down.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Serves `router` on 127.0.0.1:`port` (0 picks a free port), logging and injecting faults per `observed`.
    pub fn start(router: Router, port: u16, observed: Observed) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        // On an event-driven clock, time waits for this server: its requests in transit (the
        // port's sockets) and its work (its runtime's one thread).
        let clock = observed.clock.clone();
        clock.watch_port(addr.port());
        let app = router.layer(axum::middleware::from_fn_with_state(observed, observe));
        let (tx, rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let thread = std::thread::Builder::new()
            .name(format!("sim-{port}"))
            .spawn(move || {
                let mut builder = if clock.is_event_driven() {
                    let mut b = tokio::runtime::Builder::new_current_thread();
                    clock.track_runtime(&mut b);
                    b
                } else {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(2);
                    b
                };
                let runtime = match builder.enable_all().build() {
                    Ok(rt) => rt,
                    Err(err) => {
                        clock.untrack_runtime();
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                });
                // Connections still held by a hanging fault must not keep the thread alive.
                runtime.shutdown_background();
                clock.untrack_runtime();
            })?;
        ready_rx.recv().map_err(|_| {
            std::io::Error::other("the simulator thread stopped before it was ready")
        })??;
        Ok(Self {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for the server thread.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

/// Logs the request, applies the fault plan, and logs the outcome.
async fn observe(State(obs): State<Observed>, request: Request, next: Next) -> Response<Body> {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let tenant = obs
        .tenant_header
        .and_then(|h| request.headers().get(h))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let pending = obs
        .log
        .start(&method, &path, &query, tenant, obs.clock.now_ms());
    let fault = obs.faults.decide(&method, &path);
    let response = match fault {
        None => next.run(request).await,
        Some(fault) => {
            if let Some(response) = replacement(&fault) {
                response
            } else {
                match fault {
                    Fault::Latency(d) => {
                        tokio::time::sleep(d).await;
                        next.run(request).await
                    }
                    Fault::Hang(d) => {
                        tokio::time::sleep(d).await;
                        obs.log.finish(pending, 0);
                        drop_connection()
                    }
                    Fault::Reset => {
                        obs.log.finish(pending, 0);
                        drop_connection()
                    }
                    Fault::LoseResponse => {
                        let _ = next.run(request).await;
                        obs.log.finish(pending, 0);
                        drop_connection()
                    }
                    Fault::HoldResponse(d) => {
                        let _ = next.run(request).await;
                        tokio::time::sleep(d).await;
                        obs.log.finish(pending, 0);
                        drop_connection()
                    }
                    Fault::Truncate => {
                        let response = next.run(request).await;
                        obs.log.finish(pending, 0);
                        return truncated(response).await;
                    }
                    Fault::Malformed => {
                        let _ = next.run(request).await;
                        let mut r = Response::new(Body::from(
                            "{\"Status\": \"OK\", \"Items\": [ {\"Id\": ",
                        ));
                        r.headers_mut().insert(
                            "content-type",
                            axum::http::HeaderValue::from_static("application/json"),
                        );
                        r
                    }
                    Fault::Status { .. } | Fault::Maintenance | Fault::RateLimited { .. } => {
                        next.run(request).await
                    }
                }
            }
        }
    };
    obs.log.finish(pending, response.status().as_u16());
    response
}

/// Ends the connection without an answer: unwinding out of the connection's task makes hyper
/// drop the socket, which the client sees as a reset. `resume_unwind` skips the panic hook, so
/// nothing is printed.
fn drop_connection() -> ! {
    std::panic::resume_unwind(Box::new("simulated connection reset"))
}

/// Sends the status, headers and first half of the body, then drops the connection.
async fn truncated(response: Response<Body>) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    let full_len = bytes.len();
    // The pause lets hyper flush the head and the first half before the body fails.
    let stream = futures_util::stream::unfold(Some(half), |state| async move {
        match state {
            Some(half) => Some((Ok::<_, std::io::Error>(half), None)),
            None => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Some((Err(std::io::Error::other("simulated truncated body")), None))
            }
        }
    });
    let mut response = Response::from_parts(parts, Body::from_stream(stream));
    // Promise the whole length so the client knows the body stopped short.
    response
        .headers_mut()
        .insert("content-length", axum::http::HeaderValue::from(full_len));
    response
}

/// A free port on 127.0.0.1 for an OAuth callback server that starts later, chosen below the
/// kernel's ephemeral range (32768 and up on Linux), so servers started meanwhile on port 0 can
/// never be handed the same port.
pub fn callback_port() -> std::io::Result<u16> {
    let mut rng = fastrand::Rng::new();
    for _ in 0..200 {
        let port = rng.u16(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free port between 20000 and 32000 on 127.0.0.1",
    ))
}

/// A 302 to `to`, as the simulators' consent pages answer (no body).
pub(crate) fn redirect(to: String) -> axum::response::Response {
    let mut r = axum::response::Response::new(axum::body::Body::empty());
    *r.status_mut() = axum::http::StatusCode::FOUND;
    if let Ok(v) = axum::http::HeaderValue::from_str(&to) {
        r.headers_mut().insert("location", v);
    }
    r
}

/// An HTML page with `status` (400 when it is not a status).
pub(crate) fn html_response(status: u16, html: String) -> axum::response::Response {
    let mut r = axum::response::Response::new(axum::body::Body::from(html));
    *r.status_mut() =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}
