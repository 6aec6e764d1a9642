//! A small local HTTP server (127.0.0.1) for tests of what the engine sends: it keeps every
//! request and answers each with the next canned answer (200 `{}` once they run out).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// One request the server received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Value,
}

/// A canned answer: status, JSON body (`null` for none) and headers.
type Canned = (u16, Value, Vec<(String, String)>);

/// The server and what it has seen.
pub(crate) struct Server {
    seen: Arc<Mutex<Vec<Seen>>>,
    answers: Arc<Mutex<VecDeque<Canned>>>,
    running: weft_harness::server::Running,
}

impl Server {
    /// Starts a server on a free port of 127.0.0.1.
    pub(crate) fn start() -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let answers: Arc<Mutex<VecDeque<Canned>>> = Arc::default();
        let (s, a) = (seen.clone(), answers.clone());
        let router = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let (s, a) = (s.clone(), a.clone());
                async move {
                    s.lock().unwrap().push(Seen {
                        method: method.to_string(),
                        uri: uri.to_string(),
                        headers: headers
                            .iter()
                            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                            .collect(),
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    let (status, answer, extra) =
                        a.lock()
                            .unwrap()
                            .pop_front()
                            .unwrap_or((200, json!({}), Vec::new()));
                    let mut response = axum::http::Response::builder().status(status);
                    for (name, value) in extra {
                        response = response.header(name, value);
                    }
                    let text = if answer.is_null() {
                        String::new()
                    } else {
                        answer.to_string()
                    };
                    response.body(axum::body::Body::from(text)).unwrap()
                }
            },
        );
        let running = weft_harness::server::Running::start(
            router,
            0,
            weft_harness::server::Observed::new(weft_harness::clock::SimClock::manual(0), 1, None),
        )
        .unwrap();
        Self {
            seen,
            answers,
            running,
        }
    }

    /// The server's base URL.
    pub(crate) fn url(&self) -> String {
        self.running.url()
    }

    /// Answers the next request with `status` and `body` (`null` for none).
    pub(crate) fn answer(&self, status: u16, body: Value) {
        self.answer_with(status, body, &[]);
    }

    /// Answers the next request with `status`, `body` and these headers.
    pub(crate) fn answer_with(&self, status: u16, body: Value, headers: &[(&str, &str)]) {
        self.answers.lock().unwrap().push_back((
            status,
            body,
            headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        ));
    }

    /// The last request.
    pub(crate) fn last(&self) -> Seen {
        self.seen().pop().expect("a request")
    }

    /// Every request so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The value of header `name` of `seen`.
    pub(crate) fn header(seen: &Seen, name: &str) -> Option<String> {
        seen.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}
