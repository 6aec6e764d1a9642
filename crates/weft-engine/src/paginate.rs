//! Walking the pages of a list, as a spec's `pagination` says: which query parameters the next
//! request carries, and when the list has ended.

use serde_json::Value;
use weft_core::model::{PageStop, Pagination};

use crate::extract::at_path;

/// Pages one list may have before Weft suspects the provider of looping.
pub const MAX_PAGES: u64 = 10_000_000;

/// A provider answer that breaks the spec's paging rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// The page count is missing or not a number.
    #[error(
        "the response has no page count at `{path}`; the spec's `stop` does not fit this provider"
    )]
    NoPageCount {
        /// The dotted path.
        path: String,
    },
    /// The same cursor came back twice.
    #[error(
        "the provider returned the cursor `{cursor}` twice; stopping rather than reading the same page again"
    )]
    RepeatedCursor {
        /// The cursor.
        cursor: String,
    },
    /// Too many pages.
    #[error("more than {MAX_PAGES} pages: the provider seems to page forever")]
    TooManyPages,
}

/// The paging values of the page asked for, as templates see them (`page.number`,
/// `page.offset`, `page.start`, `page.size`, `page.cursor`): paging that lives inside a query
/// language, or in a request body, reads them instead of a query parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PageVars {
    /// The page's number, from 1 (or the spec's `first-page`).
    pub number: u64,
    /// How many records come before the page, from 0.
    pub offset: u64,
    /// The position of the page's first record, from 1 (`offset + 1`).
    pub start: u64,
    /// Records per page, when the spec says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// The cursor the previous page returned; absent on the first page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// What the next request of a list carries: its paging query parameters, the paging values for
/// its templates, and, for `next-url` paging after the first page, the full URL to request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageAsk {
    /// Query parameters to append.
    pub query: Vec<(String, String)>,
    /// Values for `page` in templates.
    pub vars: PageVars,
    /// The URL the provider gave for this page, requested as it is.
    pub url: Option<String>,
}

impl PageAsk {
    /// Puts the paging values (and the next page's URL) into a request context.
    pub fn apply(&self, ctx: &mut crate::request::RequestContext) {
        ctx.page = Some(self.vars.clone());
        ctx.next_url = self.url.clone();
    }
}

/// The paging state of one list read.
#[derive(Debug, Clone)]
pub struct Pager {
    style: Pagination,
    page: u64,
    offset: u64,
    cursor: Option<String>,
    requests: u64,
    done: bool,
    /// The number of pages, once the provider has said it (a `page-count` stop).
    count: Option<u64>,
}

impl Pager {
    /// A pager at the first page.
    pub fn new(style: &Pagination) -> Self {
        let page = match style {
            Pagination::Page { first_page, .. } => u64::from(*first_page),
            _ => 1,
        };
        Self {
            style: style.clone(),
            page,
            offset: 0,
            cursor: None,
            requests: 0,
            done: false,
            count: None,
        }
    }

    /// Whether the list has ended.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The query parameters of the next request; `None` once the list has ended.
    pub fn next_query(&self) -> Option<Vec<(String, String)>> {
        self.next().map(|ask| ask.query)
    }

    /// Everything the next request carries; `None` once the list has ended.
    pub fn next(&self) -> Option<PageAsk> {
        if self.done {
            return None;
        }
        let mut q = Vec::new();
        let mut url = None;
        let size = match &self.style {
            Pagination::None => None,
            Pagination::Page {
                page_param,
                size_param,
                size,
                ..
            } => {
                if let Some(p) = page_param {
                    q.push((p.clone(), self.page.to_string()));
                }
                if let Some(s) = size_param {
                    q.push((s.clone(), size.to_string()));
                }
                Some(*size)
            }
            Pagination::Offset {
                offset_param,
                limit_param,
                size,
                ..
            } => {
                if let Some(p) = offset_param {
                    q.push((p.clone(), self.offset.to_string()));
                }
                if let Some(p) = limit_param {
                    q.push((p.clone(), size.to_string()));
                }
                Some(*size)
            }
            Pagination::Cursor {
                cursor_param,
                size_param,
                size,
                ..
            } => {
                if let (Some(c), Some(p)) = (&self.cursor, cursor_param) {
                    q.push((p.clone(), c.clone()));
                }
                if let (Some(p), Some(n)) = (size_param, size) {
                    q.push((p.clone(), n.to_string()));
                }
                *size
            }
            Pagination::NextUrl {
                size_param, size, ..
            } => {
                match &self.cursor {
                    // The provider's URL carries everything, page size included.
                    Some(next) => url = Some(next.clone()),
                    None => {
                        if let (Some(p), Some(n)) = (size_param, size) {
                            q.push((p.clone(), n.to_string()));
                        }
                    }
                }
                *size
            }
        };
        let (number, offset) = match &self.style {
            Pagination::Page { first_page, .. } => {
                let before = self.page.saturating_sub(u64::from(*first_page));
                (
                    self.page,
                    before.saturating_mul(u64::from(size.unwrap_or(0))),
                )
            }
            Pagination::Offset { .. } => (self.requests + 1, self.offset),
            _ => (self.requests + 1, self.offset),
        };
        Some(PageAsk {
            query: q,
            vars: PageVars {
                number,
                offset,
                start: offset.saturating_add(1),
                size,
                cursor: self.cursor.clone(),
            },
            url,
        })
    }

    /// The query of the page `ahead` positions after the next one, when the provider has said
    /// that page exists (its page count), so pages known to exist can be asked for at once.
    /// `None` otherwise: before the first answer, for short-page, empty-page, offset and cursor
    /// paging, where only the answer to the previous page tells whether another follows, and
    /// asking anyway would spend calls past the end of the list.
    pub fn lookahead(&self, ahead: u64) -> Option<Vec<(String, String)>> {
        self.ahead(ahead).map(|ask| ask.query)
    }

    /// Everything the request of the page `ahead` positions after the next one carries, under
    /// the same rule as [`Pager::lookahead`].
    pub fn ahead(&self, ahead: u64) -> Option<PageAsk> {
        if self.done || ahead == 0 {
            return None;
        }
        let (Pagination::Page { .. }, Some(count)) = (&self.style, self.count) else {
            return None;
        };
        let mut later = self.clone();
        later.page = self.page.checked_add(ahead).filter(|p| *p <= count)?;
        later.requests += ahead;
        later.next()
    }

    /// Takes in a response: its body and how many records it held.
    pub fn advance(&mut self, body: &Value, records: usize) -> Result<(), PageError> {
        self.requests += 1;
        if self.requests >= MAX_PAGES {
            return Err(PageError::TooManyPages);
        }
        let count = |path: &str| {
            at_path(body, path)
                .and_then(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
                .ok_or_else(|| PageError::NoPageCount {
                    path: path.to_owned(),
                })
        };
        let mut told = None;
        let mut stop = |stop: &PageStop, size: u32, position: u64| -> Result<bool, PageError> {
            Ok(match stop {
                PageStop::ShortPage => records < size as usize,
                PageStop::EmptyPage => records == 0,
                PageStop::PageCount { path } => {
                    let count = count(path)?;
                    told = Some(count);
                    position >= count
                }
            })
        };
        match &self.style {
            Pagination::None => self.done = true,
            Pagination::Page {
                size, stop: rule, ..
            } => {
                // An empty page always ends a list, whatever the rule, so a wrong count cannot loop.
                self.done = records == 0 || stop(rule, *size, self.page)?;
                self.page += 1;
                self.count = told;
            }
            Pagination::Offset {
                size, stop: rule, ..
            } => {
                self.done = records == 0 || stop(rule, *size, 0)?;
                self.offset += records as u64;
            }
            Pagination::Cursor { next, .. } | Pagination::NextUrl { next, .. } => {
                self.offset += records as u64;
                let cursor = match at_path(body, next) {
                    Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                match cursor {
                    None => self.done = true,
                    Some(c) if self.cursor.as_deref() == Some(c.as_str()) => {
                        return Err(PageError::RepeatedCursor { cursor: c });
                    }
                    Some(c) => self.cursor = Some(c),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn page(stop: PageStop) -> Pagination {
        Pagination::Page {
            page_param: Some("page".into()),
            size_param: Some("per_page".into()),
            size: 2,
            first_page: 1,
            stop,
        }
    }

    #[test]
    fn page_count_short_page_and_empty_page() {
        let mut p = Pager::new(&page(PageStop::PageCount {
            path: "meta.page_count".into(),
        }));
        assert_eq!(
            p.next_query().unwrap(),
            vec![("page".into(), "1".into()), ("per_page".into(), "2".into())]
        );
        assert_eq!(
            p.lookahead(1),
            None,
            "no page is known to exist before the count"
        );
        p.advance(&json!({"meta": {"page_count": 2}}), 2).unwrap();
        assert_eq!(p.next_query().unwrap()[0].1, "2");
        assert_eq!(p.lookahead(1), None, "page 3 is past the count");
        p.advance(&json!({"meta": {"page_count": 2}}), 1).unwrap();
        assert!(p.is_done() && p.next_query().is_none());

        let mut p = Pager::new(&page(PageStop::PageCount {
            path: "meta.page_count".into(),
        }));
        p.advance(&json!({"meta": {"page_count": "4"}}), 2).unwrap();
        assert_eq!(p.lookahead(1).unwrap()[0].1, "3");
        assert_eq!(p.lookahead(2).unwrap()[0].1, "4");
        assert_eq!(p.lookahead(3), None);

        let mut p = Pager::new(&page(PageStop::ShortPage));
        p.advance(&json!({}), 2).unwrap();
        assert!(!p.is_done());
        assert_eq!(
            p.lookahead(1),
            None,
            "a short-page provider never says which pages exist"
        );
        p.advance(&json!({}), 1).unwrap();
        assert!(p.is_done());

        let mut p = Pager::new(&page(PageStop::PageCount {
            path: "meta.page_count".into(),
        }));
        assert_eq!(
            p.advance(&json!({}), 2),
            Err(PageError::NoPageCount {
                path: "meta.page_count".into()
            })
        );
        let mut p = Pager::new(&page(PageStop::PageCount {
            path: "meta.page_count".into(),
        }));
        p.advance(&json!({"meta": {"page_count": 99}}), 0).unwrap();
        assert!(
            p.is_done(),
            "an empty page ends the list even when the count says otherwise"
        );
    }

    #[test]
    fn offsets_and_cursors() {
        let style = Pagination::Offset {
            offset_param: Some("offset".into()),
            limit_param: Some("limit".into()),
            size: 3,
            stop: PageStop::ShortPage,
        };
        let mut p = Pager::new(&style);
        p.advance(&json!([]), 3).unwrap();
        assert_eq!(
            p.next_query().unwrap(),
            vec![("offset".into(), "3".into()), ("limit".into(), "3".into())]
        );
        p.advance(&json!([]), 2).unwrap();
        assert!(p.is_done());

        let style = Pagination::Cursor {
            cursor_param: Some("after".into()),
            next: "next".into(),
            size_param: None,
            size: None,
        };
        let mut p = Pager::new(&style);
        assert_eq!(p.next_query().unwrap(), vec![]);
        p.advance(&json!({"next": "abc"}), 5).unwrap();
        assert_eq!(
            p.next_query().unwrap(),
            vec![("after".into(), "abc".into())]
        );
        assert!(matches!(
            p.advance(&json!({"next": "abc"}), 5),
            Err(PageError::RepeatedCursor { .. })
        ));
        let mut p = Pager::new(&style);
        p.advance(&json!({"next": null}), 5).unwrap();
        assert!(p.is_done());
    }

    #[test]
    fn paging_values_for_templates_and_next_urls() {
        // Offsets inside a query language: no parameter, the values go to templates.
        let style = Pagination::Offset {
            offset_param: None,
            limit_param: None,
            size: 3,
            stop: PageStop::ShortPage,
        };
        let mut p = Pager::new(&style);
        let first = p.next().unwrap();
        assert_eq!(first.query, vec![]);
        assert_eq!(
            first.vars,
            PageVars {
                number: 1,
                offset: 0,
                start: 1,
                size: Some(3),
                cursor: None
            }
        );
        p.advance(&json!({}), 3).unwrap();
        let second = p.next().unwrap().vars;
        assert_eq!((second.number, second.offset, second.start), (2, 3, 4));

        // Numbered pages give their offset too.
        let mut p = Pager::new(&page(PageStop::PageCount {
            path: "meta.page_count".into(),
        }));
        p.advance(&json!({"meta": {"page_count": 5}}), 2).unwrap();
        let later = p.ahead(2).unwrap().vars;
        assert_eq!((later.number, later.offset, later.start), (4, 6, 7));

        // A next-page URL is followed as given; the same URL twice is an error.
        let style = Pagination::NextUrl {
            next: "paging.next.link".into(),
            size_param: Some("limit".into()),
            size: Some(2),
        };
        let mut p = Pager::new(&style);
        let first = p.next().unwrap();
        assert_eq!(first.query, vec![("limit".into(), "2".into())]);
        assert_eq!(first.url, None);
        let body = json!({"paging": {"next": {"link": "https://x.example/l?after=2"}}});
        p.advance(&body, 2).unwrap();
        let second = p.next().unwrap();
        assert_eq!(second.url.as_deref(), Some("https://x.example/l?after=2"));
        assert_eq!(second.query, vec![], "the URL carries its own size");
        assert_eq!(second.vars.start, 3);
        assert!(matches!(
            p.advance(&body, 2),
            Err(PageError::RepeatedCursor { .. })
        ));
        let mut p = Pager::new(&style);
        p.advance(&json!({"paging": {}}), 1).unwrap();
        assert!(p.is_done());
    }
}
