//! clawbus against the REAL OpenClaw gateway (npm `openclaw`, the version
//! pinned in `scripts/versions`), whose model is a stand-in inside the test
//! that hands every prompt to the test and answers what the test scripts.
//!
//! ```text
//! nats-server <- adapter hostA (alice, never woken)
//!             <- adapter hostB (bob) --wake or channel--> OpenClaw gateway --> stand-in model
//! ```
//!
//! Reached by wake plus skill: alice's send wakes bob, and bob's next prompt
//! holds clawbus's wake line and the clawbus skill, never the content.
//! Reached by the channel plugin: alice's message is bob's inbound message,
//! his answer (a reply, or a send with OpenClaw's `message` tool) reaches
//! alice with `reply_to` set, and a gateway killed mid-turn hands the message
//! over again, once, when it is back.
//!
//! Messages are told apart by a token in their content, never by order or
//! time. Skipped, saying why, where OpenClaw cannot be installed, unless
//! `CLAWBUS_REQUIRE_OPENCLAW=1` (as in CI).

use std::collections::BTreeSet;
use std::time::Duration;

use clawbus_testkit::model::NO_REPLY;
use clawbus_testkit::{
    Adapter, AdapterConfig, AgentSpec, Answer, Api, Model, NatsServer, OpenClaw, Prompt, Prompts, eventually,
};
use serde_json::Value;

/// For every awaited event: a turn of the gateway on a busy two-core
/// machine can take a minute.
const WAIT: Duration = Duration::from_secs(240);

/// What a test runs on: the bus, both hosts, the gateway and its model.
struct Fleet {
    /// alice's host.
    a: Adapter,
    /// bob's host.
    b: Adapter,
    gateway: OpenClaw,
    model: Model,
    prompts: Prompts,
    _nats: NatsServer,
}

/// How bob's gateway learns of his mail.
#[derive(Clone, Copy, PartialEq)]
enum Reached {
    /// Woken through its hooks, with the clawbus skill.
    ByWake,
    /// Through the clawbus channel plugin.
    ByChannel,
}

impl Fleet {
    async fn start(test: &str, reached: Reached) -> Option<Fleet> {
        let (model, prompts) = Model::start(NO_REPLY).await;
        let mut gateway = OpenClaw::configure_or_skip(test, &model, "bob")?;
        let nats = NatsServer::start();
        let a = Adapter::start(AdapterConfig::new("hostA", nats.url()).agent(AgentSpec::silent("alice"))).await;
        let bob = match reached {
            Reached::ByWake => AgentSpec::woken_at("bob", &gateway.url(), gateway.hook_token()).openclaw_agent("bob"),
            Reached::ByChannel => AgentSpec::silent("bob").wake("channel"),
        };
        let b = Adapter::start(AdapterConfig::new("hostB", nats.url()).agent(bob)).await;
        match reached {
            Reached::ByWake => gateway.hooks_and_skill(&b.base()),
            Reached::ByChannel => gateway.plugin(&b.base()).await,
        }
        gateway.start().await;
        if reached == Reached::ByChannel {
            gateway.wait_log("following bob").await;
        }
        Some(Fleet { a, b, gateway, model, prompts, _nats: nats })
    }

    /// alice sends `content` to bob through her host; the id.
    async fn send(&self, content: &str) -> u64 {
        self.a.api().send("alice", "bob", content).await
    }

    /// Waits until a prompt's current turn holds `token`.
    async fn prompt_with(&mut self, token: &str) -> Prompt {
        self.prompts.wait_for(&format!("a prompt holding {token}"), WAIT, |p| p.turn_holds(token)).await
    }

    /// Waits until alice's inbox on her host holds a message from bob
    /// answering message `id`; returns it.
    async fn answer_to(&self, id: u64) -> Value {
        let api = self.a.api();
        eventually(&format!("bob's answer to message {id} in alice's inbox"), WAIT, || async {
            from_bob(&api).await.into_iter().find(|m| m["reply_to"] == id)
        })
        .await
    }

    /// Waits until message `id` is acknowledged on bob's host.
    async fn acknowledged(&self, id: u64) {
        let api = self.b.api();
        eventually(&format!("message {id} acknowledged"), WAIT, || async {
            api.all_messages("bob").await.iter().any(|m| m["id"] == id && m["read"] == true).then_some(())
        })
        .await;
    }

    /// A message the model answers with a reply holding `token`: sent,
    /// answered and acknowledged; the reply.
    async fn exchange(&mut self, token: &str) -> Value {
        self.model.answer(token, Answer::Text(format!("{token} done, alice")));
        let id = self.send(&format!("{token} please run the smoke tests")).await;
        let answer = self.answer_to(id).await;
        self.acknowledged(id).await;
        answer
    }
}

/// Every message from bob in alice's unread inbox.
async fn from_bob(api: &Api) -> Vec<Value> {
    let inbox = api.inbox("alice").await;
    inbox["messages"].as_array().expect("messages").iter().filter(|m| m["from"] == "bob").cloned().collect()
}

/// The ids of every message from bob in alice's unread inbox.
async fn ids_from_bob(api: &Api) -> BTreeSet<u64> {
    ids(&from_bob(api).await)
}

fn ids<'a>(messages: impl IntoIterator<Item = &'a Value>) -> BTreeSet<u64> {
    messages.into_iter().map(|m| m["id"].as_u64().expect("id")).collect()
}

/// A token for a message's content, unique to this test process.
fn token(what: &str) -> String {
    format!("{what}-{}", std::process::id())
}

/// The wake line for bob from alice in `prompt`, as the model saw it.
/// OpenClaw hands a wake text to the model inside its context block as a
/// JSON-quoted string, so its quotes may arrive escaped.
fn wake_line(prompt: &Prompt) -> Option<String> {
    let start = "clawbus: unread messages for bob from \"alice\"";
    let everything = prompt.everything().replace("\\\"", "\"");
    let at = everything.find(start)?;
    Some(everything[at..].lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_wake_line_reaches_the_prompt_and_the_content_stays_on_the_bus() {
    let Some(mut fleet) =
        Fleet::start("a_wake_line_reaches_the_prompt_and_the_content_stays_on_the_bus", Reached::ByWake).await
    else {
        return;
    };
    let secret = token("WAKE");
    let id = fleet.send(&format!("{secret} please run the smoke tests")).await;

    let prompt = fleet.prompts.wait_for("a prompt with bob's wake line", WAIT, |p| wake_line(p).is_some()).await;
    let line = wake_line(&prompt).expect("the wake line");
    let inbox = format!("GET {}/api/inbox?agent=bob", fleet.b.base());
    assert!(line.contains(&inbox), "the wake line does not name bob's inbox on host B ({inbox}): {line}");
    let stats = fleet.b.api();
    eventually("host B to count the wake as answered by the gateway", WAIT, || async {
        (stats.ok("/api/stats").await["wakes"]["sent"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    // The content travels through the bus, not the wake.
    let leaked: Vec<&Prompt> = fleet.prompts.seen().iter().filter(|p| p.body.to_string().contains(&secret)).collect();
    assert!(leaked.is_empty(), "the content reached the model: {leaked:?}");
    assert_eq!(Api::ids(&fleet.b.api().inbox("bob").await), vec![id], "the message waits in bob's inbox");
}

#[tokio::test]
async fn the_skill_is_listed_in_the_woken_prompt() {
    let Some(mut fleet) = Fleet::start("the_skill_is_listed_in_the_woken_prompt", Reached::ByWake).await else {
        return;
    };
    fleet.send(&format!("{} please run the smoke tests", token("SKILL"))).await;

    let prompt = fleet.prompts.wait_for("a prompt with bob's wake line", WAIT, |p| wake_line(p).is_some()).await;
    let system = prompt.system();
    let skills = system
        .split_once("<available_skills>")
        .and_then(|(_, rest)| rest.split_once("</available_skills>"))
        .map(|(skills, _)| skills)
        .unwrap_or_else(|| panic!("no <available_skills> in the system prompt:\n{system}"));
    let (_, clawbus) =
        skills.split_once("<name>clawbus</name>").unwrap_or_else(|| panic!("clawbus is not listed:\n{skills}"));
    let location =
        clawbus.split_once("<location>").and_then(|(_, rest)| rest.split_once("</location>")).map(|(l, _)| l);
    assert!(
        location.is_some_and(|l| l.ends_with("skills/clawbus/SKILL.md")),
        "the clawbus skill is not the one in bob's workspace: {location:?}"
    );
}

#[tokio::test]
async fn a_channel_message_reaches_the_prompt_from_its_sender() {
    let Some(mut fleet) =
        Fleet::start("a_channel_message_reaches_the_prompt_from_its_sender", Reached::ByChannel).await
    else {
        return;
    };
    let secret = token("CHANNEL");
    fleet.send(&format!("{secret} please run the smoke tests")).await;

    let prompt = fleet.prompt_with(&secret).await;
    let message = prompt.turn().into_iter().find(|text| text.contains(&secret)).expect("the message in the turn");
    let before = &message[..message.find(&secret).expect("the token")];
    assert!(before.contains("from \"alice\""), "the prompt does not say the message is from alice:\n{message}");
    assert!(wake_line(&prompt).is_none(), "a wake line in a channel prompt:\n{}", prompt.everything());
    let agents = fleet.a.api().ok("/api/agents").await;
    let bob = agents["agents"].as_array().expect("agents").iter().find(|r| r["name"] == "bob").cloned();
    assert_eq!(bob.map(|r| r["wake_mode"].clone()), Some("channel".into()), "bob as host A shows him: {agents}");
}

#[tokio::test]
async fn the_reply_reaches_the_sender_with_reply_to() {
    let Some(fleet) = Fleet::start("the_reply_reaches_the_sender_with_reply_to", Reached::ByChannel).await else {
        return;
    };
    let secret = token("REPLY");
    fleet.model.answer(&secret, Answer::Text(format!("{secret} passed, alice")));
    let id = fleet.send(&format!("{secret} please run the smoke tests")).await;

    let reply = fleet.answer_to(id).await;
    assert_eq!(reply["content"], format!("{secret} passed, alice"), "{reply}");
    fleet.acknowledged(id).await;
    assert_eq!(from_bob(&fleet.a.api()).await.len(), 1, "one answer");
}

#[tokio::test]
async fn a_message_tool_send_arrives_with_reply_to() {
    let Some(mut fleet) = Fleet::start("a_message_tool_send_arrives_with_reply_to", Reached::ByChannel).await else {
        return;
    };
    let secret = token("TOOL");
    let text = format!("Sent with the message tool: {secret}");
    fleet.model.answer(&secret, Answer::MessageTool(text.clone()));
    let id = fleet.send(&format!("{secret} please answer with the message tool")).await;

    let sent = fleet.answer_to(id).await;
    assert_eq!(sent["content"], text, "{sent}");
    fleet.acknowledged(id).await;
    // A later exchange in the same session: the tool's turn is over, and it
    // sent nothing more.
    let later = fleet.exchange(&token("LATER")).await;
    assert_eq!(ids_from_bob(&fleet.a.api()).await, ids([&sent, &later]), "bob's messages to alice");
}

#[tokio::test]
async fn a_gateway_killed_mid_turn_hands_the_message_over_once_after_restart() {
    let Some(mut fleet) =
        Fleet::start("a_gateway_killed_mid_turn_hands_the_message_over_once_after_restart", Reached::ByChannel).await
    else {
        return;
    };
    let first = token("FIRST");
    let first_reply = fleet.exchange(&first).await;

    let stall = token("STALL");
    fleet.model.answer(&stall, Answer::StallOnce);
    fleet.model.answer(&stall, Answer::Text(format!("{stall} done after all")));
    let id = fleet.send(&format!("{stall} please run the slow tests")).await;
    fleet.prompt_with(&stall).await;
    // The model is thinking: the turn is under way.
    fleet.gateway.kill();
    let unread = Api::ids(&fleet.b.api().inbox("bob").await);
    assert!(unread.contains(&id), "message {id} was acknowledged although its turn never finished: {unread:?}");
    let restarted = fleet.prompts.seen().len();

    fleet.gateway.start().await;
    fleet.gateway.wait_log("following bob").await;
    let again = fleet.answer_to(id).await;
    assert_eq!(again["content"], format!("{stall} done after all"), "{again}");
    fleet.acknowledged(id).await;
    // A later exchange: whatever the restart would hand over twice comes
    // before it.
    let later = fleet.exchange(&token("LATER")).await;

    let since: &[Prompt] = &fleet.prompts.seen()[restarted..];
    let count = |token: &str| since.iter().filter(|p| p.turn_holds(token)).count();
    assert_eq!(count(&stall), 1, "message {id} handed over again, once");
    assert_eq!(count(&first), 0, "the answered message handed over again");
    assert_eq!(ids_from_bob(&fleet.a.api()).await, ids([&first_reply, &again, &later]), "bob's messages to alice");
}
