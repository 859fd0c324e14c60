//! The bodies of `POST /api/send` and `POST /api/ack`, and what each
//! becomes once checked.

use serde::Deserialize;

use super::decode::{Invalid, agent_name};
use super::field::Field;
use crate::mailbox::{Ack, NewMessage};
use crate::message::{BROADCAST, Priority};
use crate::names::AgentName;

/// Most ids one ack may name.
const MAX_ACK_IDS: usize = 10_000;

/// `POST /api/send`. The old bus's names of `content` (`message`, `text`,
/// `body`) are fields of their own: the first of them given with a value
/// is the content, which serde's aliases cannot say.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendBody {
    #[serde(default)]
    pub from: Option<Field<String>>,
    #[serde(default)]
    pub to: Option<Field<String>>,
    #[serde(default)]
    pub content: Option<Field<String>>,
    // Compatibility: see docs/architecture.md#compatibility
    #[serde(default)]
    pub message: Option<Field<String>>,
    #[serde(default)]
    pub text: Option<Field<String>>,
    #[serde(default)]
    pub body: Option<Field<String>>,
    #[serde(default)]
    pub priority: Option<Field<Priority>>,
    #[serde(default)]
    pub reply_to: Option<Field<u64>>,
}

/// `POST /api/ack`: the agent and exactly one of `ids`, `all`, `up_to`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    #[serde(default)]
    pub agent: Option<Field<String>>,
    #[serde(default)]
    pub ids: Option<Field<Vec<Field<u64>>>>,
    #[serde(default)]
    pub all: Option<Field<bool>>,
    #[serde(default)]
    pub up_to: Option<Field<u64>>,
}

/// A message as sent, checked field by field in the order the API always
/// has. The content's size and the `Idempotency-Key` header are the
/// endpoint's to check: they depend on the adapter and on the headers.
impl TryFrom<SendBody> for NewMessage {
    type Error = Invalid;

    fn try_from(body: SendBody) -> Result<Self, Invalid> {
        let from = required_agent("from", body.from)?;
        let to = match body.to {
            None => None,
            Some(to) => {
                let raw = to.or(|| Invalid::request("to must be an agent name, \"*\" or null"))?;
                (raw != BROADCAST).then(|| agent_name("to", &raw)).transpose()?
            }
        };
        let (field, content) =
            [("content", body.content), ("message", body.message), ("text", body.text), ("body", body.body)]
                .into_iter()
                .find_map(|(field, value)| Some((field, value?)))
                .ok_or_else(|| Invalid::request("content is required"))?;
        let content = content.or(|| Invalid::request(format!("{field} must be a string")))?;
        if content.trim().is_empty() {
            return Err(Invalid::request(format!("{field} is empty")));
        }
        let priority = body.priority.map_or(Ok(Priority::Normal), |p| p.or(bad_priority))?;
        let reply_to = body.reply_to.map(|id| message_id("reply_to", id)).transpose()?;
        Ok(NewMessage { from, to, content, priority, reply_to, idempotency_key: None })
    }
}

impl TryFrom<AckBody> for (AgentName, Ack) {
    type Error = Invalid;

    fn try_from(body: AckBody) -> Result<Self, Invalid> {
        let agent = required_agent("agent", body.agent)?;
        let ack = match (body.ids, body.all, body.up_to) {
            (Some(ids), None, None) => {
                let ids = ids.or(|| Invalid::request("ids must be an array of message ids"))?;
                if ids.len() > MAX_ACK_IDS {
                    return Err(Invalid::request(format!("at most {MAX_ACK_IDS} ids per ack")));
                }
                Ack::Ids(ids.into_iter().map(|id| message_id("ids", id)).collect::<Result<_, _>>()?)
            }
            (None, Some(all), None) => match all {
                Field::Valid(true) => Ack::All,
                _ => return Err(Invalid::request("all must be true")),
            },
            (None, None, Some(up_to)) => Ack::UpTo(message_id("up_to", up_to)?),
            _ => return Err(Invalid::request("give exactly one of ids, all (true) or up_to")),
        };
        Ok((agent, ack))
    }
}

/// The answer to a priority that is not one.
pub(crate) fn bad_priority() -> Invalid {
    Invalid::request("priority must be normal, high or urgent")
}

/// A required agent-name field.
fn required_agent(field: &'static str, given: Option<Field<String>>) -> Result<AgentName, Invalid> {
    let raw = given
        .ok_or_else(|| Invalid::request(format!("{field} is required")))?
        .or(|| Invalid::request(format!("{field} must be a string")))?;
    agent_name(field, &raw)
}

/// A message id field: a whole number from 1 to 2^64-1.
fn message_id(field: &str, given: Field<u64>) -> Result<u64, Invalid> {
    match given {
        Field::Valid(id) if id > 0 => Ok(id),
        _ => Err(Invalid::request(format!("{field} must be a message id (a positive whole number)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::decode;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    fn ack(value: Value) -> Result<(AgentName, Ack), Invalid> {
        decode::<AckBody>(value.as_object().unwrap().clone())?.try_into()
    }

    fn refused(result: Result<(AgentName, Ack), Invalid>) -> bool {
        matches!(result, Err(Invalid::Request(_)))
    }

    #[test]
    fn ack_takes_exactly_one_form() {
        let (agent, form) = ack(json!({"agent": "bob", "ids": [1, 2]})).unwrap();
        assert_eq!(agent.as_str(), "bob");
        assert!(matches!(form, Ack::Ids(ids) if ids == [1, 2]));
        assert!(matches!(ack(json!({"agent": "bob", "all": true})).unwrap().1, Ack::All));
        assert!(matches!(ack(json!({"agent": "bob", "up_to": 9})).unwrap().1, Ack::UpTo(9)));
        for bad in [
            json!({"agent": "bob"}),
            json!({"agent": "bob", "all": false}),
            json!({"agent": "bob", "ids": [1], "all": true}),
            json!({"agent": "bob", "ids": ["1"]}),
            json!({"agent": "bob", "ids": 1}),
            json!({"agent": "bob", "up_to": 0}),
        ] {
            assert!(refused(ack(bad.clone())), "{bad}");
        }
        assert!(matches!(ack(json!({"agent": "b b", "all": true})), Err(Invalid::Agent { field: "agent", .. })));
    }

    #[test]
    fn ack_rejections_keep_their_texts() {
        let text = |value| ack(value).unwrap_err().to_string();
        assert_eq!(text(json!({"all": true})), "agent is required");
        assert_eq!(text(json!({"agent": "bob", "ids": 1})), "ids must be an array of message ids");
        assert_eq!(
            text(json!({"agent": "bob", "ids": [1, "2"]})),
            "ids must be a message id (a positive whole number)"
        );
        assert_eq!(text(json!({"agent": "bob", "all": 1})), "all must be true");
        assert_eq!(text(json!({"agent": "bob", "all": null})), "give exactly one of ids, all (true) or up_to");
        assert_eq!(
            text(json!({"agent": "bob", "upto": 3})),
            "unknown field \"upto\"; accepted: agent, ids, all, up_to"
        );
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        assert!(refused(ack(json!({"agent": "bob", "all": true, "upto": 3}))));
    }

    #[test]
    fn ids_cover_the_whole_u64_range_but_zero() {
        let max = json!({"agent": "bob", "up_to": u64::MAX});
        assert!(matches!(ack(max).unwrap().1, Ack::UpTo(u64::MAX)));
        for bad in [json!(0), json!(-1), json!(1.5), json!(18446744073709551616.0_f64), json!("7")] {
            assert!(refused(ack(json!({"agent": "bob", "up_to": bad}))), "{bad}");
        }
    }

    proptest! {
        /// Any JSON object gives an ack or a refusal with a message, never
        /// a panic; an ack only from a body with known fields.
        #[test]
        fn any_ack_body_is_answered(fields in proptest::collection::vec((prop_oneof![
            Just("agent".to_string()), Just("ids".to_string()), Just("all".to_string()),
            Just("up_to".to_string()), "[a-z_]{1,8}"
        ], crate::wire::tests::json_value()), 0..6)) {
            let body: Map<String, Value> = fields.into_iter().collect();
            let known = body.keys().all(|k| ["agent", "ids", "all", "up_to"].contains(&k.as_str()));
            match decode::<AckBody>(body).and_then(<(AgentName, Ack)>::try_from) {
                Ok(_) => prop_assert!(known),
                Err(err) => prop_assert!(!err.to_string().is_empty()),
            }
        }
    }
}
