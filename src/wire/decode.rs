//! From a JSON object to a request type, and the errors a body can have.

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::{Map, Value};

use crate::names::{AgentName, NameError};

/// Why a body is refused; the HTTP layer answers it as `invalid_request`
/// or `invalid_agent`.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("{0}")]
    Request(String),
    #[error("{field}: {source}")]
    Agent {
        field: &'static str,
        #[source]
        source: NameError,
    },
}

impl Invalid {
    pub fn request(message: impl Into<String>) -> Self {
        Invalid::Request(message.into())
    }
}

/// An agent name given as `field`.
pub(crate) fn agent_name(field: &'static str, raw: &str) -> Result<AgentName, Invalid> {
    AgentName::parse(raw).map_err(|source| Invalid::Agent { field, source })
}

/// `body` as a `T`. Serde refuses unknown fields; the refusal names the
/// first of them and lists the accepted ones, as the API always has.
pub(crate) fn decode<T: DeserializeOwned>(body: Map<String, Value>) -> Result<T, Invalid> {
    decode_named(body, "field")
}

/// Query string parameters (each name once) as a `T`, refusing unknown
/// ones as [`decode`] refuses unknown fields.
pub(crate) fn decode_params<'a, T: DeserializeOwned>(
    params: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<T, Invalid> {
    let params = params.into_iter().map(|(name, value)| (name.clone(), Value::String(value.clone())));
    decode_named(params.collect(), "parameter")
}

/// `object` as a `T`, whose members are called `what` in a refusal.
fn decode_named<T: DeserializeOwned>(object: Map<String, Value>, what: &str) -> Result<T, Invalid> {
    let object = Value::Object(object);
    T::deserialize(&object).map_err(|err| {
        let names = object.as_object().into_iter().flat_map(Map::keys).map(String::as_str);
        only_known(names, field_names::<T>(), what).err().unwrap_or_else(|| Invalid::request(err.to_string()))
    })
}

/// Refuses names not in `accepted`, naming the first unknown one.
fn only_known<'a>(names: impl IntoIterator<Item = &'a str>, accepted: &[&str], what: &str) -> Result<(), Invalid> {
    match names.into_iter().find(|name| !accepted.contains(name)) {
        None => Ok(()),
        Some(unknown) => {
            Err(Invalid::request(format!("unknown {what} {unknown:?}; accepted: {}", accepted.join(", "))))
        }
    }
}

/// The fields a derived `Deserialize` of a struct accepts, in their order:
/// the derive hands them to `deserialize_struct`, where this takes them.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("fields taken"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}
