//! `clawbus import`: the old bus's SQLite database, stored once with its
//! read state and reply links, checked through an adapter's HTTP API.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clawbus_testkit::{AdapterConfig, Api, NatsServer, OneHost, free_port, program};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params};
use serde_json::Value;
use tempfile::TempDir;

use crate::command::run;

/// The old bus's schema.
const SCHEMA: &str = "CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sender TEXT NOT NULL,
    recipient TEXT,
    content TEXT,
    priority TEXT DEFAULT 'normal',
    reply_to INTEGER,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    read INTEGER DEFAULT 0
)";

/// sender, recipient, content, priority, reply_to, created_at, read.
type OldRow = (&'static str, Option<&'static str>, &'static str, Option<&'static str>, Option<i64>, SqlValue, i64);

/// A config for the importer (no agents), in `dir`.
fn importer_config(dir: &Path, nats_url: &str, extra_nats: &[&str]) -> PathBuf {
    let config = extra_nats.iter().fold(AdapterConfig::new("importer", nats_url), |config, line| config.nats(line));
    let path = dir.join("importer.toml");
    std::fs::write(&path, config.toml(0)).expect("write the importer's config");
    path
}

/// The number after `key: ` in the import's summary.
fn figure(summary: &str, key: &str) -> u64 {
    let line = summary
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key:?} in the summary:\n{summary}"));
    line.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

fn import(config: &Path, db: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["import", "--config", config.to_str().unwrap(), "--sqlite", db.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args)
}

/// Messages by content; each content must appear once.
fn by_content(messages: &[Value]) -> HashMap<String, Value> {
    let mut seen = HashMap::new();
    for message in messages {
        let content = message["content"].as_str().unwrap().to_owned();
        assert!(seen.insert(content.clone(), message.clone()).is_none(), "{content:?} is stored twice");
    }
    seen
}

async fn history(api: &Api, agent: &str) -> Vec<Value> {
    api.ok(&format!("/api/history?agent={agent}&limit=1000")).await["messages"].as_array().unwrap().clone()
}

async fn message_count(api: &Api) -> u64 {
    api.ok("/api/stats").await["messages"].as_u64().unwrap()
}

#[tokio::test]
async fn the_old_bus_is_imported_once_with_read_state_replies_and_times() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    let live = api.send("alice", "bob", "live before the import").await;

    let dir = TempDir::new().unwrap();
    let db = dir.path().join("bus.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute(SCHEMA, []).unwrap();
    let rows: &[OldRow] = &[
        ("alice", Some("bob"), "deploy done", Some("high"), None, "2025-03-01 10:00:00".to_owned().into(), 1),
        ("bob", Some("alice"), "running tests", Some("normal"), Some(1), 1_740_823_260i64.into(), 0),
        ("alice", Some("*"), "standup in 5", Some("urgent"), None, "2025-03-01T10:05:00Z".to_owned().into(), 1),
        ("carol", Some("bob"), "hi from carol", None, None, "2025-03-01T10:06:00.250+00:00".to_owned().into(), 0),
        ("bob", Some("carol"), "hello carol", Some("normal"), Some(4), "2025-03-01 10:07:00".to_owned().into(), 1),
        ("alice", Some("bob"), "   ", Some("normal"), None, "2025-03-01 10:07:30".to_owned().into(), 0),
        ("bad name!", Some("bob"), "from nobody", Some("normal"), None, "2025-03-01 10:07:40".to_owned().into(), 0),
        ("alice", Some("bob"), "low priority note", Some("low"), Some(6), "2025-03-01 10:08:00".to_owned().into(), 0),
        ("bob", None, "broadcast from bob", Some("normal"), None, 1_740_823_740.5f64.into(), 0),
        ("alice", Some(""), "second broadcast", Some("normal"), Some(3), "2025-03-01 10:10:00".to_owned().into(), 1),
    ];
    for (sender, recipient, content, priority, reply_to, created_at, read) in rows {
        conn.execute(
            "INSERT INTO messages (sender, recipient, content, priority, reply_to, created_at, read)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![sender, recipient, content, priority, reply_to, created_at, read],
        )
        .unwrap();
    }
    drop(conn);
    let config = importer_config(dir.path(), &host.nats.url(), &[]);

    let (code, out, err) = import(&config, &db, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        [figure(&out, "rows read"), figure(&out, "stored"), figure(&out, "already imported"), figure(&out, "skipped")],
        [10, 8, 0, 2],
        "{out}"
    );
    assert!(out.contains("empty content: 1 (rows 6)") && out.contains("sender is not a valid agent name: 1 (rows 7)"));
    assert_eq!(figure(&out, "unknown priority, stored as normal"), 1, "{out}");
    assert_eq!(figure(&out, "reply_to not imported, stored as null"), 1, "{out}");
    assert_eq!(figure(&out, "read marks applied"), 3, "{out}");
    assert_eq!(figure(&out, "read marks not applied"), 1, "{out}");
    assert!(out.contains("carol ×1"), "the unregistered recipient is named: {out}");
    assert_eq!(message_count(&api).await, 9);

    // Each message once, as the old bus had it.
    let everything = by_content(&history(&api, "bob").await);
    assert_eq!(everything.len(), 9, "{everything:#?}");
    let id = |content: &str| everything[content]["id"].as_u64().unwrap();
    let ids: Vec<u64> = ["deploy done", "running tests", "standup in 5", "hi from carol", "hello carol"]
        .into_iter()
        .chain(["low priority note", "broadcast from bob", "second broadcast"])
        .map(id)
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]) && ids[0] > live, "stored in the old order, after {live}: {ids:?}");
    let times = [
        ("deploy done", "2025-03-01T10:00:00.000Z"),
        ("running tests", "2025-03-01T10:01:00.000Z"),
        ("standup in 5", "2025-03-01T10:05:00.000Z"),
        ("hi from carol", "2025-03-01T10:06:00.250Z"),
        ("broadcast from bob", "2025-03-01T10:09:00.500Z"),
    ];
    for (content, timestamp) in times {
        assert_eq!(everything[content]["timestamp"], timestamp, "{content}");
    }
    let hello = &everything["hello carol"];
    assert_eq!(
        (&hello["from"], &hello["to"], &hello["reply_to"]),
        (&"bob".into(), &"carol".into(), &id("hi from carol").into())
    );
    assert_eq!(everything["deploy done"]["priority"], "high");
    assert_eq!(everything["low priority note"]["priority"], "normal");
    assert_eq!(everything["low priority note"]["reply_to"], Value::Null, "row 6 was skipped");
    assert_eq!(everything["broadcast from bob"]["to"], "*");
    let second = &everything["second broadcast"];
    assert_eq!((&second["to"], &second["reply_to"]), (&"*".into(), &id("standup in 5").into()));
    assert_eq!((second["thread"].as_u64(), second["hops"].as_u64()), (Some(id("standup in 5")), Some(1)));

    // Inboxes and read state.
    let bob = by_content(&api.all_messages("bob").await);
    let read: HashMap<&str, bool> = bob.iter().map(|(c, m)| (c.as_str(), m["read"] == true)).collect();
    let expected: HashMap<&str, bool> = [
        ("live before the import", false),
        ("deploy done", true),
        ("standup in 5", true),
        ("hi from carol", false),
        ("low priority note", false),
        ("second broadcast", true),
    ]
    .into();
    assert_eq!(read, expected);
    assert_eq!(api.inbox("bob").await["unread"], 3);
    let alice = by_content(&api.all_messages("alice").await);
    assert_eq!(alice.len(), 2, "{alice:#?}");
    let reply = &alice["running tests"];
    assert_eq!((&reply["read"], &reply["reply_to"]), (&false.into(), &id("deploy done").into()));
    assert_eq!((reply["thread"].as_u64(), reply["hops"].as_u64()), (Some(id("deploy done")), Some(1)));
    assert_eq!(alice["broadcast from bob"]["read"], false);

    // Again: nothing new.
    let (code, again, err) = import(&config, &db, &[]);
    assert_eq!(code, 0, "{again}\n{err}");
    assert_eq!(
        [figure(&again, "stored"), figure(&again, "already imported"), figure(&again, "skipped")],
        [0, 8, 2],
        "{again}"
    );
    assert_eq!(figure(&again, "read marks applied"), 0, "{again}");
    assert!(again.contains("already read: 3"), "{again}");
    assert_eq!(message_count(&api).await, 9, "the second run stored nothing");
    assert_eq!(by_content(&history(&api, "bob").await).len(), 9);
    assert_eq!(api.inbox("bob").await["unread"], 3);

    // The old bus goes on; a later run brings only the new row along,
    // replying into an imported thread.
    let conn = Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO messages (sender, recipient, content, reply_to, created_at, read)
         VALUES ('alice', 'bob', 'tests passed', 2, '2025-03-01 10:11:00', 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let (code, later, err) = import(&config, &db, &[]);
    assert_eq!(code, 0, "{later}\n{err}");
    assert_eq!([figure(&later, "stored"), figure(&later, "already imported")], [1, 8], "{later}");
    let passed = by_content(&api.all_messages("bob").await)["tests passed"].clone();
    assert_eq!(passed["reply_to"].as_u64(), Some(id("running tests")));
    assert_eq!((passed["thread"].as_u64(), passed["hops"].as_u64()), (Some(id("deploy done")), Some(2)));
    assert_eq!(message_count(&api).await, 10);
}

#[tokio::test]
async fn a_renamed_schema_is_read_through_the_column_flags() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("renamed.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE mail (msg_id INTEGER PRIMARY KEY, from_agent TEXT, to_agent TEXT, body TEXT,
                            parent INTEGER, ts REAL, seen TEXT);
         INSERT INTO mail VALUES (10, 'bob', 'alice', 'question', NULL, 1740823200, 'true');
         INSERT INTO mail VALUES (20, 'alice', 'bob', 'answer', 10, 1740823260.125, '0');
         INSERT INTO mail VALUES (30, 'alice', '*', 'to all', NULL, 1740823320, '1');",
    )
    .unwrap();
    drop(conn);
    let config = importer_config(dir.path(), &host.nats.url(), &[]);
    let flags = [
        "--table",
        "mail",
        "--id-column",
        "msg_id",
        "--sender-column",
        "from_agent",
        "--recipient-column",
        "to_agent",
        "--content-column",
        "body",
        "--priority-column",
        "",
        "--reply-to-column",
        "parent",
        "--created-at-column",
        "ts",
        "--read-column",
        "seen",
    ];
    let (code, out, err) = import(&config, &db, &flags);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!([figure(&out, "stored"), figure(&out, "read marks applied")], [3, 2], "{out}");

    let alice = by_content(&api.all_messages("alice").await);
    assert_eq!((alice.len(), &alice["question"]["read"]), (1, &true.into()));
    assert_eq!(alice["question"]["timestamp"], "2025-03-01T10:00:00.000Z");
    let bob = by_content(&api.all_messages("bob").await);
    assert_eq!(bob.len(), 2);
    let answer = &bob["answer"];
    assert_eq!((&answer["read"], &answer["reply_to"]), (&false.into(), &alice["question"]["id"]));
    assert_eq!(answer["timestamp"], "2025-03-01T10:01:00.125Z");
    assert_eq!((&bob["to all"]["read"], &bob["to all"]["priority"]), (&true.into(), &"normal".into()));

    let (code, again, _) = import(&config, &db, &flags);
    assert_eq!((code, figure(&again, "stored"), figure(&again, "already imported")), (0, 0, 3), "{again}");
    assert_eq!(message_count(&api).await, 3);
}

#[test]
fn bad_arguments_and_unreadable_databases_exit_2() {
    let dir = TempDir::new().unwrap();
    // NATS is never asked: the database is checked first.
    let config = importer_config(dir.path(), &format!("nats://127.0.0.1:{}", free_port()), &[]);
    let db = dir.path().join("bus.db");
    Connection::open(&db).unwrap().execute(SCHEMA, []).unwrap();

    let (code, _, err) = import(&config, &db, &["--table", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no table \"nope\"") && err.contains("messages"), "names the table and the ones there: {err}");

    let (code, _, err) = import(&config, &db, &["--sender-column", "from_agent"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no column \"from_agent\"") && err.contains("--sender-column"), "{err}");

    let (code, _, err) = import(&config, &dir.path().join("missing.db"), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no such file"), "{err}");

    let not_sqlite = dir.path().join("notes.txt");
    std::fs::write(&not_sqlite, "this is not a database, but it is long enough to have a header").unwrap();
    let (code, _, err) = import(&config, &not_sqlite, &[]);
    assert_eq!(code, 2, "{err}");

    let (code, _, err) = import(&config, &db, &["--source", "a/b"]);
    assert_eq!(code, 2, "{err}");

    let (code, out, err) = import(&config, &db, &[]);
    assert_eq!(code, 0, "an empty table is nothing to import: {err}");
    assert!(out.contains("nothing to import"), "{out}");
}

#[test]
fn unreachable_nats_fails_fast_and_imports_nothing() {
    let dir = TempDir::new().unwrap();
    let config = importer_config(dir.path(), &format!("nats://127.0.0.1:{}", free_port()), &[]);
    let db = dir.path().join("bus.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute(SCHEMA, []).unwrap();
    conn.execute("INSERT INTO messages (sender, recipient, content) VALUES ('alice', 'bob', 'hi')", []).unwrap();
    drop(conn);
    let started = Instant::now();
    let (code, out, err) = import(&config, &db, &[]);
    assert_eq!(code, 5, "{out}\n{err}");
    assert!(err.contains("not reachable") && err.contains("nothing was imported"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}

/// Killed mid-way (after a page was recorded, while the next is being
/// stored), then run again after the duplicate window has passed: only the
/// progress record and the stream itself keep rows from being stored twice.
#[tokio::test]
async fn an_interrupted_import_run_again_stores_every_row_once() {
    const ROWS: usize = 5000;
    let window = "duplicate_window = \"1s\"";
    let host = OneHost::start_with(&["alice", "bob"], |config, _| config.nats(window)).await;
    let api = host.api();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("bus.db");
    let mut conn = Connection::open(&db).unwrap();
    conn.execute(SCHEMA, []).unwrap();
    let tx = conn.transaction().unwrap();
    for i in 0..ROWS {
        tx.execute(
            "INSERT INTO messages (sender, recipient, content, created_at, read) VALUES ('alice', 'bob', ?1, ?2, ?3)",
            params![format!("m{i}"), 1_740_823_200 + i as i64, i64::from(i.is_multiple_of(2))],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    drop(conn);
    let config = importer_config(dir.path(), &host.nats.url(), &[window]);

    let mut child = Command::new(program("CLAWBUS_BIN", "clawbus"))
        .args(["import", "--config", config.to_str().unwrap(), "--sqlite", db.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("clawbus runs");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        let line = line.expect("stderr");
        if line.contains(&format!("1000/{ROWS} rows")) {
            break;
        }
    }
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success(), "killed before it finished");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let first = message_count(&api).await;
    assert!((1000..ROWS as u64).contains(&first), "{first} stored when killed");

    let (code, out, err) = import(&config, &db, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(figure(&out, "stored") + figure(&out, "already imported"), ROWS as u64, "{out}");
    assert_eq!(figure(&out, "already imported"), first, "everything the first run stored is found: {out}");
    assert_eq!(message_count(&api).await, ROWS as u64, "each row once");
    let bob = api.all_messages("bob").await;
    let contents: HashSet<&str> = bob.iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!((bob.len(), contents.len()), (ROWS, ROWS));
    for message in &bob {
        let i: usize = message["content"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(message["read"], i.is_multiple_of(2), "{message}");
    }
    assert_eq!(api.inbox("bob").await["unread"], ROWS as u64 / 2);
}

/// A stand-alone NATS: a database importing into a bus no adapter has
/// started yet (the stream is created by the import).
#[tokio::test]
async fn an_import_before_any_adapter_creates_the_stream_and_applies_no_read_marks() {
    let nats = NatsServer::start();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("bus.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute(SCHEMA, []).unwrap();
    conn.execute("INSERT INTO messages (sender, recipient, content, read) VALUES ('alice', 'bob', 'early', 1)", [])
        .unwrap();
    drop(conn);
    let config = importer_config(dir.path(), &nats.url(), &[]);
    let (code, out, err) = import(&config, &db, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!([figure(&out, "stored"), figure(&out, "read marks not applied")], [1, 1], "{out}");
    assert!(out.contains("bob ×1") && out.contains("run the import again"), "{out}");

    // bob's adapter starts; a second run applies the read mark it missed.
    let host = clawbus_testkit::Adapter::start_in_process(
        AdapterConfig::new("hostB", nats.url()).agent(clawbus_testkit::AgentSpec::silent("bob")),
    )
    .await;
    let api = host.api();
    assert_eq!(api.all_messages("bob").await[0]["read"], false);
    let (code, again, _) = import(&config, &db, &[]);
    assert_eq!((code, figure(&again, "stored"), figure(&again, "read marks applied")), (0, 0, 1), "{again}");
    assert_eq!(api.all_messages("bob").await[0]["read"], true);
}
