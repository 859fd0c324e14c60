//! A field of a request body as it was given: the API answers a value of
//! the wrong type with its own text ("from must be a string"), so decoding
//! a field never fails on its type; the check that follows says what is
//! wrong, field by field in the documented order.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A field given with a non-null value; absent or null fields are `None`
/// around it (the API treats the two alike).
#[derive(Clone, Debug, PartialEq)]
pub enum Field<T> {
    Valid(T),
    /// Given, but not a `T`.
    Mistyped,
}

impl<T> Field<T> {
    /// The value, or the error a mistyped one is answered with.
    pub fn or<E>(self, mistyped: impl FnOnce() -> E) -> Result<T, E> {
        match self {
            Field::Valid(value) => Ok(value),
            Field::Mistyped => Err(mistyped()),
        }
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(T::deserialize(value).map_or(Field::Mistyped, Field::Valid))
    }
}
