//! Bad input gets the documented status and error code, and stores nothing.

use clawbus_testkit::{Api, OneHost};
use serde_json::{Value, json};

/// Asserts the status and error code of an answer.
fn expect(answer: &clawbus_testkit::api::Answer, status: u16, code: &str, what: &str) {
    assert_eq!(answer.status, status, "{what}: {:?}", answer.body);
    assert_eq!(answer.body["ok"], false, "{what}");
    assert_eq!(answer.body["error"], code, "{what}: {:?}", answer.body);
    assert!(answer.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: no message");
}

async fn stored(api: &Api) -> u64 {
    api.ok("/api/stats").await["messages"].as_u64().unwrap()
}

#[tokio::test]
async fn bad_sends_are_refused_and_store_nothing() {
    let host = OneHost::start_with(&["alice", "bob"], |c, _| c.http("max_message_bytes = 1024")).await;
    let api = host.api();
    let json_type = Some("application/json");
    let raw = |body: &str| body.as_bytes().to_vec();

    for body in ["{", "not json", "{\"from\": \"alice\",}", ""] {
        let answer = api.post_raw("/api/send", json_type, raw(body), &[]).await;
        expect(&answer, 400, "invalid_json", body);
    }
    let requests: Vec<(Value, &str, &str)> = vec![
        (json!([1, 2]), "invalid_request", "not an object"),
        (json!({"to": "bob", "content": "x"}), "invalid_request", "missing from"),
        (json!({"from": "alice", "to": "bob"}), "invalid_request", "missing content"),
        (json!({"from": "alice", "to": "bob", "content": ""}), "invalid_request", "empty content"),
        (json!({"from": "alice", "to": "bob", "content": 7}), "invalid_request", "content not a string"),
        (json!({"from": 7, "to": "bob", "content": "x"}), "invalid_request", "from not a string"),
        (json!({"from": "alice", "to": ["bob"], "content": "x"}), "invalid_request", "to not a string"),
        (json!({"from": "alice", "to": "bob", "content": "x", "priority": "critical"}), "invalid_request", "priority"),
        (json!({"from": "alice", "to": "bob", "content": "x", "priority": 1}), "invalid_request", "priority type"),
        (json!({"from": "alice", "to": "bob", "content": "x", "reply_to": "12"}), "invalid_request", "reply_to type"),
        (json!({"from": "alice", "to": "bob", "content": "x", "reply_to": 0}), "invalid_request", "reply_to zero"),
    ];
    for (body, code, what) in requests {
        expect(&api.post("/api/send", &body).await, 400, code, what);
    }
    let long = "x".repeat(65);
    for bad in ["a.b", "*.x", "a*", ">", "a>", "a b", "", long.as_str(), "bob\t", "ü"] {
        let as_sender = api.post("/api/send", &json!({"from": bad, "to": "bob", "content": "x"})).await;
        expect(&as_sender, 400, "invalid_agent", &format!("from {bad:?}"));
        let as_recipient = api.post("/api/send", &json!({"from": "alice", "to": bad, "content": "x"})).await;
        if bad == "*" {
            continue;
        }
        expect(&as_recipient, 400, "invalid_agent", &format!("to {bad:?}"));
    }
    let unknown = api.post("/api/send", &json!({"from": "alice", "to": "nobody", "content": "x"})).await;
    expect(&unknown, 404, "unknown_agent", "unknown recipient");

    let big = json!({"from": "alice", "to": "bob", "content": "x".repeat(1025)});
    expect(&api.post("/api/send", &big).await, 413, "too_large", "content over max_message_bytes");
    let huge = format!("{{\"from\": \"alice\", \"to\": \"bob\", \"content\": \"{}\"}}", "x".repeat(900_000));
    expect(&api.post_raw("/api/send", json_type, raw(&huge), &[]).await, 413, "too_large", "body over the limit");

    let body = json!({"from": "alice", "to": "bob", "content": "x"}).to_string();
    for content_type in
        [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data")]
    {
        let answer = api.post_raw("/api/send", content_type, raw(&body), &[]).await;
        expect(&answer, 415, "unsupported_media_type", &format!("{content_type:?}"));
    }
    let with_charset = api.post_raw("/api/send", Some("application/json; charset=utf-8"), raw(&body), &[]).await;
    assert_eq!(with_charset.status, 200, "a charset parameter is fine");
    let key = "k".repeat(129);
    let long_key = api.post_raw("/api/send", json_type, raw(&body), &[("Idempotency-Key", &key)]).await;
    expect(&long_key, 400, "invalid_request", "Idempotency-Key over 128 characters");

    assert_eq!(stored(&api).await, 1, "only the one good send was stored");
}

#[tokio::test]
async fn bad_reads_and_acks_are_refused_and_change_nothing() {
    let host = OneHost::start(&["alice", "bob"]).await;
    let api = host.api();
    let id = api.send("alice", "bob", "keep me unread").await;
    let reads = [
        ("/api/inbox", "invalid_request"),
        ("/api/inbox?agent=a.b", "invalid_agent"),
        ("/api/inbox?agent=bob&limit=0", "invalid_request"),
        ("/api/inbox?agent=bob&limit=ten", "invalid_request"),
        ("/api/inbox?agent=bob&after=-1", "invalid_request"),
        ("/api/inbox?agent=bob&unread=maybe", "invalid_request"),
        ("/api/inbox?agent=bob&priority=low", "invalid_request"),
        ("/api/history?agent=bob&since=yesterday", "invalid_request"),
        ("/api/history?agent=bob&with=*", "invalid_agent"),
        ("/api/stream?agent=a%20b", "invalid_agent"),
    ];
    for (path, code) in reads {
        expect(&api.get(path).await, 400, code, path);
    }
    expect(&api.get("/api/inbox?agent=nobody").await, 404, "unknown_agent", "unknown inbox");
    expect(&api.get("/api/history?agent=nobody").await, 404, "unknown_agent", "unknown history");
    let limit = api.ok("/api/inbox?agent=bob&limit=5000").await;
    assert_eq!(Api::ids(&limit), [id], "limits above 1000 are capped, not refused");

    let acks = [
        (json!({"ids": [id]}), "invalid_request"),
        (json!({"agent": "bob"}), "invalid_request"),
        (json!({"agent": "bob", "ids": [id], "all": true}), "invalid_request"),
        (json!({"agent": "bob", "ids": ["1"]}), "invalid_request"),
        (json!({"agent": "bob", "ids": [-1]}), "invalid_request"),
        (json!({"agent": "bob", "all": "yes"}), "invalid_request"),
        (json!({"agent": "bob", "up_to": "all"}), "invalid_request"),
        (json!({"agent": "b.b", "all": true}), "invalid_agent"),
    ];
    for (body, code) in acks {
        expect(&api.post("/api/ack", &body).await, 400, code, &body.to_string());
    }
    expect(&api.post("/api/ack", &json!({"agent": "nobody", "all": true})).await, 404, "unknown_agent", "unknown ack");
    let plain = api.post_raw("/api/ack", Some("text/plain"), b"{\"agent\":\"bob\",\"all\":true}".to_vec(), &[]).await;
    expect(&plain, 415, "unsupported_media_type", "ack without JSON content type");
    assert_eq!(api.inbox("bob").await["unread"], 1, "nothing was acknowledged");
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let host = OneHost::start(&["alice"]).await;
    let http = clawbus_testkit::http_client(std::time::Duration::from_secs(10));
    let url = format!("{}/healthz", host.adapter.base());
    let big = http.get(&url).header("X-Padding", "a".repeat(17 * 1024)).send().await.unwrap();
    assert_eq!(big.status(), 431);
    let fine = http.get(&url).header("X-Padding", "a".repeat(8 * 1024)).send().await.unwrap();
    assert_eq!(fine.status(), 200);
}

#[tokio::test]
async fn clients_that_do_not_finish_their_request_in_10s_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = OneHost::start(&["alice", "bob"]).await;
    let address = host.adapter.base().trim_start_matches("http://").to_owned();
    let slow_body = async {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = "POST /api/send HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
        socket.write_all(format!("{head}{{\"from\": \"alice\"").as_bytes()).await.unwrap();
        let mut answer = String::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(20), socket.read_to_string(&mut answer)).await;
        assert!(read.is_ok(), "still connected after 20s");
        answer
    };
    let slow_head = async {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(20), socket.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "still connected after 20s");
    };
    let (answer, ()) = tokio::join!(slow_body, slow_head);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert_eq!(stored(&host.api()).await, 0);
}

/// A body over the limit is answered 413 even while the client is still
/// sending it: the adapter reads the rest before answering, so the answer
/// is not lost to a reset connection.
#[tokio::test]
async fn a_client_still_sending_a_too_large_body_hears_the_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = OneHost::start_with(&["alice", "bob"], |c, _| c.http("max_message_bytes = 1024")).await;
    let address = host.adapter.base().trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let length = 12 * chunk.len();
    let head = format!(
        "POST /api/send HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..12 {
        // Pauses give an adapter that answered early time to close first.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        socket.write_all(&chunk).await.expect("the adapter reads the whole body");
    }
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.expect("the answer arrives");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"too_large\""), "{answer}");
    assert_eq!(stored(&host.api()).await, 0);
}
