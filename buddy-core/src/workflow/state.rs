use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// How a workflow holds its session state: an untyped JSON map ([`JsonState`]) or a typed
/// struct ([`Typed`], chosen with `#[workflow(state = MyState)]`).
///
/// Storage always sees a JSON object; this trait converts between the two.
pub trait WorkflowState: Clone + Send + Sync + 'static {
    /// What `state()` and `state_mut()` give access to.
    type Value: Send + Sync;

    /// The state's value.
    fn get(&self) -> &Self::Value;
    /// The state's value, mutably.
    fn get_mut(&mut self) -> &mut Self::Value;
    /// The state as a JSON object.
    fn to_map(&self) -> Result<Map<String, Value>>;
    /// Decodes a stored JSON object; a failure names `session_id`.
    fn from_map(map: Map<String, Value>, session_id: &str) -> Result<Self>;
    /// The state of a workflow built without a `session_state`.
    fn initial() -> Self;
}

/// Untyped session state: a JSON object, as in the Python original.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JsonState(pub Map<String, Value>);

impl WorkflowState for JsonState {
    type Value = Map<String, Value>;

    fn get(&self) -> &Self::Value {
        &self.0
    }
    fn get_mut(&mut self) -> &mut Self::Value {
        &mut self.0
    }
    fn to_map(&self) -> Result<Map<String, Value>> {
        Ok(self.0.clone())
    }
    fn from_map(map: Map<String, Value>, _session_id: &str) -> Result<Self> {
        Ok(JsonState(map))
    }
    fn initial() -> Self {
        JsonState::default()
    }
}

/// Typed session state: `T` is decoded from the stored JSON object when a session loads and
/// encoded back when it is written. A stored state that does not decode is
/// [`Error::StateDecode`], naming the session; it is never silently reset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Typed<T>(pub T);

impl<T> WorkflowState for Typed<T>
where
    T: Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn get(&self) -> &T {
        &self.0
    }
    fn get_mut(&mut self) -> &mut T {
        &mut self.0
    }
    fn to_map(&self) -> Result<Map<String, Value>> {
        match serde_json::to_value(&self.0).map_err(Error::StateEncode)? {
            Value::Object(map) => Ok(map),
            other => Err(Error::StateEncode(serde::ser::Error::custom(format!(
                "state type `{}` encodes to {}, not to a JSON object",
                std::any::type_name::<T>(),
                json_kind(&other)
            )))),
        }
    }
    fn from_map(map: Map<String, Value>, session_id: &str) -> Result<Self> {
        serde_json::from_value(Value::Object(map))
            .map(Typed)
            .map_err(|source| Error::StateDecode {
                session_id: session_id.to_owned(),
                type_name: std::any::type_name::<T>(),
                source,
            })
    }
    fn initial() -> Self {
        Typed(T::default())
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
