//! Session state: how state given in code meets stored state, and how a run's changes are
//! written without reverting anyone else's.
//!
//! # Loading: stored values win
//!
//! The state given in code (`session_state` on the builder) is the *initial* state of a new
//! session. When a run continues an existing session, the stored values win and only keys
//! missing from the store are added from the initial state, recursively through nested
//! objects ([`merge_missing`]). [`StateMerge::CodeWins`] restores the original Python
//! behaviour, where values given in code overwrite stored ones ([`merge_overwrite`]).
//!
//! # Writing: only changed keys
//!
//! A run does not write its whole state back. The wrapper remembers the state as loaded and,
//! at the end of the run, computes a [`StatePatch`]: the keys (paths through nested objects)
//! the run set or removed. The storage backend applies that patch to the *current* stored
//! state inside its write transaction. Two concurrent runs of one session that write
//! different keys therefore both keep their keys; when both write the same key, the later
//! commit wins.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How state given in code combines with the state stored for an existing session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StateMerge {
    /// Stored values win; keys missing from the store are added from code (the default).
    #[default]
    StoredWins,
    /// Values given in code overwrite stored values (the Python reference behaviour).
    CodeWins,
}

impl StateMerge {
    /// Combines `initial` (from code) into `stored` according to the policy.
    pub fn combine(self, stored: &mut Map<String, Value>, initial: &Map<String, Value>) {
        match self {
            StateMerge::StoredWins => merge_missing(stored, initial),
            StateMerge::CodeWins => merge_overwrite(stored, initial),
        }
    }
}

/// Adds to `target` every key of `source` it lacks, recursing where both hold objects.
pub fn merge_missing(target: &mut Map<String, Value>, source: &Map<String, Value>) {
    for (key, value) in source {
        match (target.get_mut(key), value) {
            (Some(Value::Object(target)), Value::Object(source)) => merge_missing(target, source),
            (Some(_), _) => {}
            (None, value) => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Writes every key of `source` into `target`, recursing where both hold objects.
pub fn merge_overwrite(target: &mut Map<String, Value>, source: &Map<String, Value>) {
    for (key, value) in source {
        match (target.get_mut(key), value) {
            (Some(Value::Object(target)), Value::Object(source)) => merge_overwrite(target, source),
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The changes one writer made to a session state: values set or removed at key paths.
///
/// ```
/// # extern crate buddy_core as buddy;
/// use buddy::session::StatePatch;
/// use serde_json::json;
///
/// let before = json!({"a": 1, "nested": {"x": 1, "y": 2}, "gone": true});
/// let after = json!({"a": 1, "nested": {"x": 5, "y": 2}, "new": "k"});
/// let patch = StatePatch::diff(before.as_object().unwrap(), after.as_object().unwrap());
///
/// // Another writer added `other` in the meantime: applying the patch keeps it.
/// let mut stored = json!({"a": 1, "nested": {"x": 1, "y": 2}, "gone": true, "other": 9});
/// patch.apply(stored.as_object_mut().unwrap());
/// assert_eq!(stored, json!({"a": 1, "nested": {"x": 5, "y": 2}, "new": "k", "other": 9}));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StatePatch {
    ops: Vec<PatchOp>,
}

/// One change: set `value` at `path`, or remove the key when `value` is `None`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatchOp {
    /// Keys from the root object down to the changed key.
    pub path: Vec<String>,
    /// The new value, or `None` to remove the key.
    #[serde(default)]
    pub value: Option<Value>,
}

impl StatePatch {
    /// A patch that replaces every key of `state` (for a state written from scratch).
    pub fn set_all(state: &Map<String, Value>) -> Self {
        StatePatch::diff(&Map::new(), state)
    }

    /// The changes that turn `before` into `after`.
    pub fn diff(before: &Map<String, Value>, after: &Map<String, Value>) -> Self {
        let mut patch = StatePatch::default();
        diff_into(&mut Vec::new(), before, after, &mut patch.ops);
        patch
    }

    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The changes, in order.
    pub fn ops(&self) -> &[PatchOp] {
        &self.ops
    }

    /// Applies the changes to `state`, creating intermediate objects where a path needs them.
    pub fn apply(&self, state: &mut Map<String, Value>) {
        for op in &self.ops {
            let Some((last, parents)) = op.path.split_last() else {
                continue;
            };
            let mut target = &mut *state;
            for key in parents {
                let entry = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                let Value::Object(next) = entry else {
                    unreachable!("entry was just made an object")
                };
                target = next;
            }
            match &op.value {
                Some(value) => {
                    target.insert(last.clone(), value.clone());
                }
                None => {
                    target.remove(last);
                }
            }
        }
    }
}

fn diff_into(
    path: &mut Vec<String>,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    ops: &mut Vec<PatchOp>,
) {
    for (key, old) in before {
        if !after.contains_key(key) {
            path.push(key.clone());
            ops.push(PatchOp {
                path: path.clone(),
                value: None,
            });
            path.pop();
        } else if let (Value::Object(old), Some(Value::Object(new))) = (old, after.get(key)) {
            path.push(key.clone());
            diff_into(path, old, new, ops);
            path.pop();
        }
    }
    for (key, new) in after {
        let changed = match (before.get(key), new) {
            (Some(Value::Object(_)), Value::Object(_)) => false, // handled recursively above
            (Some(old), new) => old != new,
            (None, _) => true,
        };
        if changed {
            path.push(key.clone());
            ops.push(PatchOp {
                path: path.clone(),
                value: Some(new.clone()),
            });
            path.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn merge_missing_keeps_stored_and_adds_nested() {
        let mut stored = obj(json!({"a": 1, "n": {"x": 1}}));
        merge_missing(
            &mut stored,
            &obj(json!({"a": 2, "b": 3, "n": {"x": 9, "y": 2}})),
        );
        assert_eq!(
            Value::Object(stored),
            json!({"a": 1, "b": 3, "n": {"x": 1, "y": 2}})
        );
    }

    #[test]
    fn merge_overwrite_prefers_code() {
        let mut stored = obj(json!({"a": 1, "n": {"x": 1, "z": 0}}));
        merge_overwrite(&mut stored, &obj(json!({"a": 2, "n": {"x": 9}})));
        assert_eq!(
            Value::Object(stored),
            json!({"a": 2, "n": {"x": 9, "z": 0}})
        );
    }

    #[test]
    fn diff_of_equal_states_is_empty() {
        let state = obj(json!({"a": [1, 2], "n": {"x": null}}));
        assert!(StatePatch::diff(&state, &state).is_empty());
    }

    #[test]
    fn object_replaced_by_scalar_and_back() {
        let before = obj(json!({"a": {"x": 1}, "b": 1}));
        let after = obj(json!({"a": 1, "b": {"y": 2}}));
        let patch = StatePatch::diff(&before, &after);
        let mut target = before.clone();
        patch.apply(&mut target);
        assert_eq!(target, after);
    }

    #[test]
    fn null_values_are_kept_not_removed() {
        let patch = StatePatch::diff(&Map::new(), &obj(json!({"k": null})));
        let mut target = Map::new();
        patch.apply(&mut target);
        assert_eq!(Value::Object(target), json!({"k": null}));
    }

    #[test]
    fn patch_round_trips_through_json() {
        let patch = StatePatch::diff(&obj(json!({"a": 1})), &obj(json!({"b": 2})));
        let text = serde_json::to_string(&patch).unwrap_or_default();
        let back: StatePatch = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, patch);
    }
}
