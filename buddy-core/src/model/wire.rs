//! Decoding helpers shared by the wire formats.

use serde::{Deserialize, Deserializer};

/// Decodes an explicit `null` as the type's default, like an absent field: servers send
/// `"tool_calls": null`, `"usage": null`, `"content": null` where the format allows absence.
pub(crate) fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}
