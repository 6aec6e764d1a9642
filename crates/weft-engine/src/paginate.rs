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
        if self.done {
            return None;
        }
        let mut q = Vec::new();
        match &self.style {
            Pagination::None => {}
            Pagination::Page {
                page_param,
                size_param,
                size,
                ..
            } => {
                q.push((page_param.clone(), self.page.to_string()));
                if let Some(s) = size_param {
                    q.push((s.clone(), size.to_string()));
                }
            }
            Pagination::Offset {
                offset_param,
                limit_param,
                size,
                ..
            } => {
                q.push((offset_param.clone(), self.offset.to_string()));
                q.push((limit_param.clone(), size.to_string()));
            }
            Pagination::Cursor {
                cursor_param,
                size_param,
                size,
                ..
            } => {
                if let Some(c) = &self.cursor {
                    q.push((cursor_param.clone(), c.clone()));
                }
                if let (Some(p), Some(n)) = (size_param, size) {
                    q.push((p.clone(), n.to_string()));
                }
            }
        }
        Some(q)
    }

    /// The query of the page `ahead` positions after the next one, when the provider has said
    /// that page exists (its page count), so pages known to exist can be asked for at once.
    /// `None` otherwise: before the first answer, for short-page, empty-page, offset and cursor
    /// paging, where only the answer to the previous page tells whether another follows, and
    /// asking anyway would spend calls past the end of the list.
    pub fn lookahead(&self, ahead: u64) -> Option<Vec<(String, String)>> {
        if self.done || ahead == 0 {
            return None;
        }
        let (Pagination::Page { .. }, Some(count)) = (&self.style, self.count) else {
            return None;
        };
        let mut later = self.clone();
        later.page = self.page.checked_add(ahead).filter(|p| *p <= count)?;
        later.next_query()
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
            Pagination::Cursor { next, .. } => {
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
            page_param: "page".into(),
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
            offset_param: "offset".into(),
            limit_param: "limit".into(),
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
            cursor_param: "after".into(),
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
}
