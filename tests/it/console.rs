//! The operator console (`/console`) in a real headless Chromium, driven
//! through chromedriver: two hosts on one NATS, the token entered in the
//! page, then what an operator watches: the fleet, the live feed from both
//! hosts, unread counts, a failing gateway, a reply chain as a conversation,
//! hostile content shown as text, a message's path, and the feed surviving
//! a dropped stream. Ends with a screenshot, written to a temporary folder;
//! `CLAWBUS_SCREENSHOT=docs/console.png` writes the one the README shows.
//!
//! Needs Chromium and chromedriver: `scripts/ensure-chromium.sh`.

use clawbus_testkit::browser::Browser;
use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Api, Gateway, OneHost, Reply};
use serde_json::{Value, json};

const TOKEN: &str = "op";
const XSS: &str = "<script>window.pwned=1</script><b>bold</b>";

async fn send(api: &Api, from: &str, to: &str, content: &str, reply_to: Option<u64>) -> u64 {
    let mut body = json!({"from": from, "to": to, "content": content});
    if let Some(id) = reply_to {
        body["reply_to"] = json!(id);
    }
    let answer = api.post("/api/send", &body).await;
    assert_eq!(answer.status, 200, "send failed: {:?}", answer.body);
    answer.body["id"].as_u64().expect("id")
}

/// Waits for the feed row of message `id`; returns what it shows.
async fn feed_row(browser: &Browser, id: u64) -> Value {
    browser
        .wait_for(
            &format!("message {id} in the live feed"),
            r#"const row = document.querySelector(`#feed .message[data-id="${arguments[0]}"]`);
               return row && {from: row.dataset.from, to: row.dataset.to, replyTo: row.dataset.replyTo ?? null,
                              content: row.querySelector('.content').textContent,
                              rows: document.querySelectorAll(`#feed .message[data-id="${arguments[0]}"]`).length};"#,
            &[json!(id)],
        )
        .await
}

/// Waits until the fleet row of `agent` shows `expected` in cell `field`.
async fn fleet_cell(browser: &Browser, agent: &str, field: &str, expected: &str) {
    browser
        .wait_for(
            &format!("{agent}'s {field} to show {expected:?}"),
            r#"const cell = document.querySelector(`#fleet tr[data-agent="${arguments[0]}"] td[data-field="${arguments[1]}"]`);
               return cell && cell.textContent.trim() === arguments[2];"#,
            &[json!(agent), json!(field), json!(expected)],
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn console_shows_the_fleet_live_in_a_browser() {
    let browser = Browser::start().await;
    let host = OneHost::start_with(&["alice", "bob"], |config, _| config.http("operator_token = \"op\"")).await;
    let gateway_b = Gateway::start("hook-secret").await;
    let host_b = Adapter::start_in_process(
        AdapterConfig::new("hostB", host.nats.url())
            .agent(AgentSpec::new("carol", &gateway_b))
            .http("operator_token = \"op\""),
    )
    .await;
    let a = host.api().with_token(TOKEN);
    let b = host_b.api().with_token(TOKEN);

    // The page asks for the token once, and keeps it for the tab.
    browser.goto(&format!("{}/console", host.adapter.base())).await;
    browser.wait_for("the token form", "return !document.querySelector('#login').hidden", &[]).await;
    let input = browser.find("#token").await;
    browser.type_text(&input, TOKEN).await;
    browser.click(&browser.find("#login-form button[type=submit]").await).await;
    browser
        .wait_for(
            "the agents of both hosts",
            r#"return ['alice', 'bob', 'carol'].every(name => document.querySelector(`#fleet tr[data-agent="${name}"]`));"#,
            &[],
        )
        .await;
    let hosts =
        browser.execute("return [...document.querySelectorAll('#hosts .host')].map(h => h.dataset.host);", &[]).await;
    assert_eq!(hosts, json!(["hostA", "hostB"]));
    assert_eq!(browser.execute("return sessionStorage.getItem('clawbus.console.token');", &[]).await, json!(TOKEN));
    assert!(browser.execute("return document.querySelector('#login').hidden;", &[]).await == true);
    browser
        .wait_for("the live feed", "return document.querySelector('#stream-state').dataset.state === 'live';", &[])
        .await;
    fleet_cell(&browser, "bob", "unread", "0").await;

    // Messages stored through either adapter appear live.
    let deploy = send(&a, "alice", "bob", "Deploy finished, please run the smoke tests.", None).await;
    let backup = send(&b, "carol", "alice", "Nightly backup of hostB verified (42 GiB).", None).await;
    let row = feed_row(&browser, deploy).await;
    assert_eq!((&row["from"], &row["to"], &row["replyTo"]), (&json!("alice"), &json!("bob"), &Value::Null));
    assert_eq!(row["content"], "Deploy finished, please run the smoke tests.");
    let row = feed_row(&browser, backup).await;
    assert_eq!((&row["from"], &row["to"]), (&json!("carol"), &json!("alice")));

    // Unread counts follow sends and acks.
    fleet_cell(&browser, "bob", "unread", "1").await;
    let acked = a.post("/api/ack", &json!({"agent": "bob", "ids": [deploy]})).await;
    assert_eq!(acked.body["acked"], 1, "{:?}", acked.body);
    fleet_cell(&browser, "bob", "unread", "0").await;

    // A gateway that fails gets its agent highlighted.
    gateway_b.script(std::iter::repeat_n(Reply::Status(503), 20));
    let rotate = send(&a, "alice", "carol", "Can you rotate the hostB logs?", None).await;
    feed_row(&browser, rotate).await;
    browser
        .wait_for(
            "carol highlighted as failing",
            r#"return document.querySelector('#fleet tr[data-agent="carol"]').classList.contains('failing');"#,
            &[],
        )
        .await;
    let failing = browser
        .execute(
            r#"const cell = name => document.querySelector(`#fleet tr[data-agent="${name}"] td[data-field="failing"]`);
               return {carol: Number(cell('carol').dataset.value),
                       alice: document.querySelector('#fleet tr[data-agent="alice"]').classList.contains('failing'),
                       stat: document.querySelector('#stat-failing').textContent};"#,
            &[],
        )
        .await;
    assert!(failing["carol"].as_u64() >= Some(1), "{failing}");
    assert_eq!(failing["alice"], false, "{failing}");

    // A reply chain, shown as one thread of the alice–bob conversation.
    let ask = send(&a, "alice", "bob", "Can you run the smoke tests on staging?", None).await;
    let running = send(&a, "bob", "alice", "Running them now: 12 of 40 done.", Some(ask)).await;
    let thanks = send(&a, "alice", "bob", "Thanks! Ping me if anything fails.", Some(running)).await;
    assert_eq!(feed_row(&browser, thanks).await["replyTo"], json!(running.to_string()));
    for (field, agent) in [("#conv-a", "alice"), ("#conv-b", "bob")] {
        let input = browser.find(field).await;
        browser.clear(&input).await;
        browser.type_text(&input, agent).await;
    }
    browser.click(&browser.find("#conv-load").await).await;
    let chain = browser
        .wait_for(
            "the reply chain in the conversation",
            r#"const node = id => document.querySelector(`#conversation .message[data-id="${id}"]`);
               if (!arguments[0].every(node)) return null;
               return arguments[0].map(id => ({
                   replyTo: node(id).dataset.replyTo ?? null,
                   thread: node(id).closest('.thread').dataset.thread,
                   depth: node(id).dataset.depth,
                   link: node(id).querySelector('.reply-link')?.textContent ?? null,
               }));"#,
            &[json!([ask, running, thanks])],
        )
        .await;
    let expected: Vec<Value> = [(None, 0), (Some(ask), 1), (Some(running), 2)]
        .into_iter()
        .map(|(reply_to, depth): (Option<u64>, u32)| {
            json!({
                "replyTo": reply_to.map(|id| id.to_string()),
                "thread": ask.to_string(),
                "depth": depth.to_string(),
                "link": reply_to.map(|id| format!("↩ #{id}")),
            })
        })
        .collect();
    assert_eq!(chain, Value::Array(expected));
    let others = browser
        .execute(
            r#"const node = id => document.querySelector(`#conversation .message[data-id="${id}"]`);
               return {deploy: node(arguments[0])?.closest('.thread').dataset.thread ?? null,
                       backup: !!node(arguments[1]), rotate: !!node(arguments[2])};"#,
            &[json!(deploy), json!(backup), json!(rotate)],
        )
        .await;
    assert_eq!(others, json!({"deploy": deploy.to_string(), "backup": false, "rotate": false}));
    // Following a reply link points at the message it answers.
    browser.click(&browser.find(&format!(r#"#conversation .message[data-id="{thanks}"] .reply-link"#)).await).await;
    browser
        .wait_for(
            "the replied-to message to be pointed at",
            r#"return document.querySelector(`#conversation .message[data-id="${arguments[0]}"]`).classList.contains('flash');"#,
            &[json!(running)],
        )
        .await;

    // Content is text, never markup: in the feed, the conversation (which
    // follows new messages by itself) and the message's path.
    let hostile = send(&a, "alice", "bob", XSS, None).await;
    let row = feed_row(&browser, hostile).await;
    assert_eq!(row["content"], XSS);
    let shown = browser
        .wait_for(
            "the hostile message in the conversation",
            r#"const id = arguments[0];
               const feed = document.querySelector(`#feed .message[data-id="${id}"] .content`);
               const conv = document.querySelector(`#conversation .message[data-id="${id}"] .content`);
               return conv && {feed: feed.textContent, conv: conv.textContent,
                               elements: feed.children.length + conv.children.length,
                               bold: document.querySelectorAll('#feed .content b, #conversation .content b').length,
                               scripts: document.querySelectorAll('#feed script, #conversation script').length,
                               pwned: typeof window.pwned};"#,
            &[json!(hostile)],
        )
        .await;
    assert_eq!(shown, json!({"feed": XSS, "conv": XSS, "elements": 0, "bold": 0, "scripts": 0, "pwned": "undefined"}));
    browser.click(&browser.find(&format!(r#"#feed .message[data-id="{hostile}"] .id"#)).await).await;
    let path = browser
        .wait_for(
            "the hostile message's path",
            r#"const box = document.querySelector('#path');
               return box.dataset.id === String(arguments[0]) && box.dataset.state === 'loaded' &&
                   {content: box.querySelector('pre.content').textContent,
                    bold: box.querySelectorAll('b').length, pwned: typeof window.pwned};"#,
            &[json!(hostile)],
        )
        .await;
    assert_eq!(path, json!({"content": XSS, "bold": 0, "pwned": "undefined"}));

    // One message's path: stored, woken, acknowledged (watched as it goes).
    browser.click(&browser.find(&format!(r#"#feed .message[data-id="{ask}"] .id"#)).await).await;
    browser
        .wait_for(
            "the path of the question, stored and woken",
            r#"const box = document.querySelector('#path');
               const done = step => box.querySelector(`.step[data-step="${step}"]`)?.classList.contains('done');
               return box.dataset.id === String(arguments[0]) && done('stored') && done('woken');"#,
            &[json!(ask)],
        )
        .await;
    let woken = browser
        .execute("return document.querySelector('#path .step[data-step=\"woken\"] .label').textContent;", &[])
        .await;
    assert_eq!(woken, "Woken by hostA");
    let acked = a.post("/api/ack", &json!({"agent": "bob", "ids": [ask]})).await;
    assert_eq!(acked.body["acked"], 1, "{:?}", acked.body);
    browser
        .wait_for(
            "the question to show as acknowledged",
            r#"return document.querySelector('#path .step[data-step="acknowledged"]').classList.contains('done');"#,
            &[],
        )
        .await;

    // A dropped stream reconnects with Last-Event-ID: what was stored
    // meanwhile arrives, once.
    browser.execute("window.clawbusConsole.dropStream(1500);", &[]).await;
    let passed = send(&a, "bob", "alice", "Smoke tests passed: 40 of 40.", Some(thanks)).await;
    let urgent = b
        .post(
            "/api/send",
            &json!({"from": "carol", "to": "bob", "content": "Disk at 91% on hostB", "priority": "urgent"}),
        )
        .await;
    assert_eq!(urgent.status, 200, "{:?}", urgent.body);
    let urgent = urgent.body["id"].as_u64().unwrap();
    assert_eq!(feed_row(&browser, passed).await["rows"], 1);
    assert_eq!(feed_row(&browser, urgent).await["rows"], 1);
    let stream = browser
        .wait_for(
            "the stream to be live again",
            r#"const node = document.querySelector('#stream-state');
               return node.dataset.state === 'live' && Number(node.dataset.reconnects);"#,
            &[],
        )
        .await;
    assert!(stream.as_u64() >= Some(1), "{stream}");
    let ids = browser
        .execute("return [...document.querySelectorAll('#feed .message')].map(r => Number(r.dataset.id));", &[])
        .await;
    let ids: Vec<u64> = ids.as_array().unwrap().iter().map(|id| id.as_u64().unwrap()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "no message shows twice: {ids:?}");

    // The page loaded nothing it was not allowed to, and threw nothing.
    let problems: Vec<String> = browser
        .console_log()
        .await
        .into_iter()
        .filter(|line| line.contains("Content Security Policy") || line.contains("Uncaught"))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");

    // The picture for the README: the question's path, the conversation.
    browser.click(&browser.find(&format!(r#"#feed .message[data-id="{ask}"] .id"#)).await).await;
    browser
        .wait_for(
            "the question's path for the screenshot",
            r#"const box = document.querySelector('#path');
               return box.dataset.id === String(arguments[0]) && box.dataset.state === 'loaded' &&
                   document.querySelector(`#conversation .message[data-id="${arguments[1]}"]`);"#,
            &[json!(ask), json!(passed)],
        )
        .await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    // Into a temporary folder: the tracked `docs/console.png` changes only
    // when asked for (`CLAWBUS_SCREENSHOT=docs/console.png`).
    let out = match std::env::var_os("CLAWBUS_SCREENSHOT") {
        Some(path) => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path),
        None => std::env::temp_dir().join(format!("clawbus-console-{}.png", std::process::id())),
    };
    std::fs::write(&out, &png).unwrap_or_else(|err| panic!("writing {}: {err}", out.display()));
    println!("screenshot: {}", out.display());
}
