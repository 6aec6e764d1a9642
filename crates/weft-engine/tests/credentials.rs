//! The credential store on each backend, the file and PostgreSQL: round trips with nothing in
//! plain text, writers with their own handles, a retired key, a wrong key, the state's password
//! kept in the local file, the all-or-nothing key rotation, and the copy `weft state migrate`
//! makes.

use std::path::PathBuf;

use weft_engine::secrets::{Keyring, MasterKey, Secret, SecretError, SecretStore, replace_all};
use weft_engine::state::{PgPool, PgTarget, State};
use weft_engine::workspace::STATE_PASSWORD_ID;

fn key() -> MasterKey {
    MasterKey::from_base64("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=").unwrap()
}

/// A fresh folder for one test.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weft-creds-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("credentials.json")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a store is: a file, or a fresh PostgreSQL database (with the local file beside).
enum Backend {
    File(Dir),
    Postgres(Dir, weft_harness::postgres::TestDb),
}

impl Backend {
    fn postgres(name: &str) -> Option<Self> {
        let pg = weft_harness::postgres::database(name)?;
        let dir = Dir::new(&format!("pg-{name}"));
        // As a workspace would: the state is made first, the credentials beside it.
        State::open_postgres(pg.url(), &dir.0.join("state.db")).unwrap();
        Some(Self::Postgres(dir, pg))
    }

    /// A new, independent handle (on PostgreSQL a pool of its own, as another machine has).
    fn open(&self, keys: impl Into<Keyring>) -> Result<SecretStore, SecretError> {
        match self {
            Self::File(dir) => SecretStore::open(&dir.file(), keys),
            Self::Postgres(dir, pg) => {
                let pool = PgPool::new(&PgTarget::parse(pg.url()).unwrap()).unwrap();
                SecretStore::open_postgres(&pool, SecretStore::open(&dir.file(), keys)?)
            }
        }
    }

    /// Everything the backend holds, as text: the file, or the table's rows.
    fn raw(&self) -> String {
        match self {
            Self::File(dir) => std::fs::read_to_string(dir.file()).unwrap_or_default(),
            Self::Postgres(_, pg) => format!(
                "{:?}",
                pg.query(
                    "SELECT id, sealed FROM weft_credentials UNION ALL SELECT 'check', sealed FROM weft_credential_check"
                )
                .unwrap()
            ),
        }
    }

    /// Runs SQL behind the store's back, or rewrites the file.
    fn replace_sealed(&self, from: &str, to: &str) {
        match self {
            Self::File(dir) => {
                let mut file: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(dir.file()).unwrap()).unwrap();
                file["records"][to] = file["records"][from].clone();
                std::fs::write(dir.file(), file.to_string()).unwrap();
            }
            Self::Postgres(_, pg) => pg
                .execute(&format!(
                    "UPDATE weft_credentials SET sealed = (SELECT sealed FROM weft_credentials WHERE id = '{from}') WHERE id = '{to}'"
                ))
                .unwrap(),
        }
    }
}

/// A behaviour test run on each backend: `NAME::file` and `NAME::postgres`.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn file() {
                super::$name(&super::Backend::File(super::Dir::new(stringify!($name))));
            }

            #[test]
            fn postgres() {
                if let Some(b) = super::Backend::postgres(stringify!($name)) {
                    super::$name(&b);
                }
            }
        }
    };
}

fn round_trip_nothing_in_plain_text_and_tampering_found(b: &Backend) {
    let mut store = b.open(key()).unwrap();
    store
        .put("client:acme", &Secret::new("very-secret-value".into()))
        .unwrap();
    store
        .put("connection:x:tokens", &Secret::new("token-value".into()))
        .unwrap();
    let raw = b.raw();
    assert!(raw.contains("client:acme"), "{raw}");
    assert!(
        !raw.contains("very-secret-value") && !raw.contains("token-value"),
        "{raw}"
    );
    let again = b.open(key()).unwrap();
    let secret = again.get("client:acme").unwrap().unwrap();
    assert_eq!(secret.expose(), "very-secret-value");
    assert!(!format!("{again:?}{secret:?}").contains("very-secret-value"));
    assert_eq!(again.ids().count(), 2);
    // A record moved into another record's place does not open.
    b.replace_sealed("client:acme", "connection:x:tokens");
    let moved = b.open(key()).unwrap();
    let err = moved.get("connection:x:tokens").unwrap_err();
    assert!(matches!(err, SecretError::Tampered { .. }), "{err}");
    assert!(!err.to_string().contains("very-secret-value"));
    // Removed for good.
    let mut store = b.open(key()).unwrap();
    assert!(store.remove("client:acme").unwrap());
    assert!(b.open(key()).unwrap().get("client:acme").unwrap().is_none());
}
both!(round_trip_nothing_in_plain_text_and_tampering_found);

fn writers_with_their_own_handles_lose_nothing(b: &Backend) {
    b.open(key())
        .unwrap()
        .put("seed", &Secret::new("s".into()))
        .unwrap();
    std::thread::scope(|s| {
        for w in 0..4 {
            s.spawn(move || {
                // Each opened the store before the others wrote.
                let mut store = b.open(key()).unwrap();
                for i in 0..8 {
                    store
                        .put(&format!("w{w}-{i}"), &Secret::new(format!("v{w}{i}")))
                        .unwrap();
                }
            });
        }
    });
    let store = b.open(key()).unwrap();
    assert_eq!(store.ids().count(), 33);
    assert_eq!(store.get("w3-7").unwrap().unwrap().expose(), "v37");
}
both!(writers_with_their_own_handles_lose_nothing);

fn a_retired_key_opens_and_the_next_write_moves_all_to_the_current_key(b: &Backend) {
    b.open(key())
        .unwrap()
        .put("a", &Secret::new("alpha".into()))
        .unwrap();
    let other = MasterKey::from_base64("CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=").unwrap();
    let err = b.open(other).unwrap_err();
    assert!(
        matches!(&err, SecretError::WrongKey { key_id: Some(k), .. } if k == key().id()),
        "{err}"
    );
    let new_key = MasterKey::generate().unwrap();
    let mut store = b.open(Keyring::new(new_key.clone(), vec![key()])).unwrap();
    assert_eq!(store.key_id(), Some(key().id()));
    store.put("b", &Secret::new("bravo".into())).unwrap();
    assert_eq!(store.key_id(), Some(new_key.id()));
    let only_new = b.open(new_key).unwrap();
    assert_eq!(only_new.get("a").unwrap().unwrap().expose(), "alpha");
    assert_eq!(only_new.get("b").unwrap().unwrap().expose(), "bravo");
}
both!(a_retired_key_opens_and_the_next_write_moves_all_to_the_current_key);

fn a_rotation_is_all_or_nothing(b: &Backend) {
    let mut store = b.open(key()).unwrap();
    store.put("a", &Secret::new("alpha".into())).unwrap();
    store.put("b", &Secret::new("bravo".into())).unwrap();
    let before = b.raw();
    let new_key = MasterKey::generate().unwrap();
    let lock = store.lock().unwrap();
    store.reload().unwrap();
    let resealed = vec![store.resealed(&new_key).unwrap()];
    let failed = replace_all(&resealed, || {
        Err(SecretError::Random("the key file cannot be written".into()))
    });
    assert!(failed.is_err());
    assert_eq!(b.raw(), before, "nothing changed");
    replace_all(&resealed, || Ok(())).unwrap();
    drop(lock);
    assert_ne!(b.raw(), before);
    let under_new = b.open(new_key).unwrap();
    assert_eq!(under_new.get("a").unwrap().unwrap().expose(), "alpha");
    assert!(matches!(b.open(key()), Err(SecretError::WrongKey { .. })));
}
both!(a_rotation_is_all_or_nothing);

#[test]
fn on_postgres_the_state_password_stays_in_the_local_file() {
    let Some(b) = Backend::postgres("local_only") else {
        return;
    };
    let Backend::Postgres(dir, _) = &b else {
        unreachable!()
    };
    let mut store = b.open(key()).unwrap();
    store
        .put(STATE_PASSWORD_ID, &Secret::new("db-password".into()))
        .unwrap();
    store
        .put("client:acme", &Secret::new("shared".into()))
        .unwrap();
    assert!(!b.raw().contains(STATE_PASSWORD_ID), "{}", b.raw());
    let file = SecretStore::open(&dir.file(), key()).unwrap();
    assert_eq!(
        file.get(STATE_PASSWORD_ID).unwrap().unwrap().expose(),
        "db-password"
    );
    assert!(file.get("client:acme").unwrap().is_none());
    let again = b.open(key()).unwrap();
    assert_eq!(
        again.get(STATE_PASSWORD_ID).unwrap().unwrap().expose(),
        "db-password"
    );
    assert_eq!(again.ids().count(), 2);
}

#[test]
fn migrate_copies_the_sealed_records_checked_and_resumable() {
    let Some(b) = Backend::postgres("copy") else {
        return;
    };
    let Backend::Postgres(dir, _) = &b else {
        unreachable!()
    };
    let mut file = SecretStore::open(&dir.file(), key()).unwrap();
    for (id, v) in [
        ("client:acme", "secret-1"),
        ("connection:x:tokens", "tokens-1"),
        (STATE_PASSWORD_ID, "db-password"),
    ] {
        file.put(id, &Secret::new(v.into())).unwrap();
    }
    let mut target = b.open(key()).unwrap();
    let report = file.copy_into(&mut target).unwrap();
    assert_eq!(
        (
            report.copied,
            report.already,
            report.stay_local,
            report.checked
        ),
        (2, 0, 1, 2)
    );
    assert!(!b.raw().contains("secret-1") && !b.raw().contains(STATE_PASSWORD_ID));
    // Sealed as they were: the very same ciphertext.
    let sealed = std::fs::read_to_string(dir.file()).unwrap();
    let rows = b.raw();
    let value: serde_json::Value = serde_json::from_str(&sealed).unwrap();
    assert!(rows.contains(value["records"]["client:acme"].as_str().unwrap()));
    // Again (as after an interruption): nothing copied twice; a token renewed in the database
    // since is kept.
    target
        .put("connection:x:tokens", &Secret::new("tokens-2".into()))
        .unwrap();
    file.put("notify:ops", &Secret::new("hook".into())).unwrap();
    let mut target = b.open(key()).unwrap();
    let report = file.copy_into(&mut target).unwrap();
    assert_eq!((report.copied, report.already), (1, 1));
    assert_eq!(report.kept, vec!["connection:x:tokens".to_owned()]);
    let there = b.open(key()).unwrap();
    assert_eq!(
        there.get("connection:x:tokens").unwrap().unwrap().expose(),
        "tokens-2"
    );
    assert_eq!(there.get("notify:ops").unwrap().unwrap().expose(), "hook");
}

#[test]
fn a_new_database_adopts_the_local_records_once() {
    let Some(b) = Backend::postgres("adopt") else {
        return;
    };
    let Backend::Postgres(dir, pg) = &b else {
        unreachable!()
    };
    let mut file = SecretStore::open(&dir.file(), key()).unwrap();
    file.put("client:acme", &Secret::new("secret-1".into()))
        .unwrap();
    file.put(STATE_PASSWORD_ID, &Secret::new("db-password".into()))
        .unwrap();
    // Opening alone changes nothing in the database.
    let mut first = b.open(key()).unwrap();
    assert!(first.get("client:acme").unwrap().is_none());
    assert_eq!(first.adopt_local().unwrap(), 1);
    assert_eq!(
        b.open(key())
            .unwrap()
            .get("client:acme")
            .unwrap()
            .unwrap()
            .expose(),
        "secret-1"
    );
    assert!(!b.raw().contains(STATE_PASSWORD_ID) && !b.raw().contains("secret-1"));
    // Another machine's file, opened on a database that already holds a store: not adopted.
    let other = Dir::new("adopt-other");
    let mut theirs = SecretStore::open(&other.file(), key()).unwrap();
    theirs
        .put("client:other", &Secret::new("secret-2".into()))
        .unwrap();
    let pool = PgPool::new(&PgTarget::parse(pg.url()).unwrap()).unwrap();
    let mut second =
        SecretStore::open_postgres(&pool, SecretStore::open(&other.file(), key()).unwrap())
            .unwrap();
    assert_eq!(second.adopt_local().unwrap(), 0);
    assert!(second.get("client:other").unwrap().is_none());
    assert_eq!(second.ids().count(), 1);
}
