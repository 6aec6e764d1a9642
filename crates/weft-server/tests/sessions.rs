//! Sessions in the console's database: marked used at most once a minute (the mark is a synced
//! write a page view should not wait for each time), and ended once idle.

use weft_server::store::{SESSION_IDLE, SESSION_MARK_EVERY, now_ms};
use weft_server::{Role, Store};

struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sets every session's last use to `ms` and reads it back, straight in the file.
fn seen(db: &std::path::Path, set: Option<i64>) -> Option<i64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    if let Some(ms) = set {
        conn.execute("UPDATE sessions SET seen_ms = ?1", [ms])
            .unwrap();
    }
    conn.query_row("SELECT seen_ms FROM sessions", [], |r| r.get(0))
        .ok()
}

#[test]
fn a_session_is_marked_used_at_most_once_a_minute_and_ends_when_idle() {
    let dir = Dir(std::env::temp_dir().join(format!("weft-sessions-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let store = Store::open(&dir.0).unwrap();
    store
        .add_user("alice", "a long enough password", Role::Admin)
        .unwrap();
    let token = store.create_session("alice").unwrap();
    let db = store.path().to_path_buf();
    let minute = i64::try_from(SESSION_MARK_EVERY.as_millis()).unwrap();

    // Used a moment ago: the request is served and nothing is written.
    let recent = now_ms() - minute / 6;
    seen(&db, Some(recent));
    assert_eq!(
        store.session_user(&token).unwrap().map(|u| u.name),
        Some("alice".to_owned())
    );
    assert_eq!(seen(&db, None), Some(recent));

    // Last marked over a minute ago: marked again.
    let before = now_ms();
    seen(&db, Some(before - 2 * minute));
    assert!(store.session_user(&token).unwrap().is_some());
    assert!(seen(&db, None).unwrap() >= before);

    // Idle for longer than the limit: ended.
    let idle = i64::try_from(SESSION_IDLE.as_millis()).unwrap();
    seen(&db, Some(now_ms() - idle - minute));
    assert!(store.session_user(&token).unwrap().is_none());
    assert_eq!(seen(&db, None), None);
}
