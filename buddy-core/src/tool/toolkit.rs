use std::sync::Arc;

use super::{IntoTools, Tool};

/// A named group of tools given to an agent together.
///
/// ```
/// # extern crate buddy_core as buddy;
/// use buddy::tool::{FunctionTool, Toolkit};
/// use serde_json::json;
///
/// let echo = FunctionTool::new("echo", "Echoes.", json!({"type": "object"}), |a| async move { Ok(a) });
/// let kit = Toolkit::new("utilities").tool(echo);
/// assert_eq!(kit.len(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Toolkit {
    name: String,
    tools: Vec<Arc<dyn Tool>>,
}

impl Toolkit {
    /// An empty toolkit named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Toolkit {
            name: name.into(),
            tools: Vec::new(),
        }
    }

    /// Adds one tool (or several, from another toolkit or a `Vec`).
    pub fn tool(mut self, tool: impl IntoTools) -> Self {
        self.tools.extend(tool.into_tools());
        self
    }

    /// The toolkit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tools, in the order they were added.
    pub fn tools(&self) -> &[Arc<dyn Tool>] {
        &self.tools
    }

    /// How many tools the toolkit has.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether the toolkit has no tools.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// The tools, by value.
    pub fn into_vec(self) -> Vec<Arc<dyn Tool>> {
        self.tools
    }
}
