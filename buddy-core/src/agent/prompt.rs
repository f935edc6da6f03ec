//! The system message an agent sends (the Python reference's layout).

use super::AgentConfig;
use crate::model::Message;

/// The system message for `config`, or `None` when the agent has nothing to say.
pub(crate) fn system_message(config: &AgentConfig) -> Option<Message> {
    if config.description.is_none()
        && config.instructions.is_empty()
        && config.expected_output.is_none()
    {
        return None;
    }
    let mut text = String::new();
    if let Some(description) = &config.description {
        text.push_str(description);
        text.push('\n');
    }
    match config.instructions.as_slice() {
        [] => {}
        [one] => {
            text.push_str("<instructions>\n");
            text.push_str(one);
            text.push_str("\n</instructions>\n\n");
        }
        many => {
            text.push_str("<instructions>");
            for instruction in many {
                text.push_str("\n- ");
                text.push_str(instruction);
            }
            text.push_str("\n</instructions>\n\n");
        }
    }
    if let Some(expected) = &config.expected_output {
        text.push_str("<expected_output>\n");
        text.push_str(expected.trim());
        text.push_str("\n</expected_output>\n\n");
    }
    Some(Message::system(text.trim_end()))
}
