//! What the leader is told: its members, its mode's rules, and the delegation tool.

use serde_json::{Value, json};

use super::{Team, TeamMember, TeamMode};
use crate::model::{Message, ToolDefinition};
use crate::run::RunResponse;

/// The tool a route-mode leader forwards the request with.
pub(crate) const FORWARD_TOOL: &str = "forward_task_to_member";
/// The tool a coordinate-mode leader delegates sub-tasks with.
pub(crate) const TRANSFER_TOOL: &str = "transfer_task_to_member";

pub(crate) fn system_message(team: &Team, members: &[TeamMember]) -> Message {
    let config = &*team.config;
    let mut text = String::from(
        "You are the leader of a team of AI agents.\nYour task is to coordinate the team to complete the user's request.\n",
    );
    if let Some(description) = &config.description {
        text.push_str(&format!("\nThe team: {description}\n"));
    }
    text.push_str("\nHere are the members of your team:\n<team_members>\n");
    for member in members {
        text.push_str(&format!(" - member_id: {}\n", member.member_id()));
        if let Some(description) = member.description() {
            text.push_str(&format!("   description: {description}\n"));
        }
    }
    text.push_str("</team_members>\n\n<how_to_respond>\n");
    text.push_str(match config.mode {
        TeamMode::Route => {
            "- Forward the request to the one member most likely to complete it, with the `forward_task_to_member` tool; that member's answer goes to the user as it is.\n\
             - Give the member_id exactly as listed, and the expected output.\n\
             - If the member fails, you may forward to another member or answer yourself.\n\
             - For simple greetings, thanks, or questions about the team itself, answer directly.\n"
        }
        TeamMode::Coordinate => {
            "- Transfer tasks to the members most likely to complete them, with the `transfer_task_to_member` tool.\n\
             - Each transfer names the member_id exactly as listed, a clear task_description and the expected_output.\n\
             - You can transfer tasks to several members at once.\n\
             - Analyse the members' results before you answer; if they are not good enough, transfer again.\n\
             - When the task is complete, answer the user yourself, using the members' results.\n"
        }
        TeamMode::Collaborate => {
            "- Every member has already worked on the user's request; their answers follow.\n\
             - Synthesise one answer for the user from them: combine what agrees, resolve what conflicts.\n"
        }
    });
    text.push_str("</how_to_respond>\n");
    if !config.instructions.is_empty() {
        text.push_str("\n<instructions>\n");
        for instruction in &config.instructions {
            text.push_str(&format!("- {instruction}\n"));
        }
        text.push_str("</instructions>\n");
    }
    if let Some(expected) = &config.expected_output {
        text.push_str(&format!(
            "\n<expected_output>\n{expected}\n</expected_output>\n"
        ));
    }
    Message::system(text)
}

pub(crate) fn delegation_tool(mode: TeamMode, members: &[TeamMember]) -> Option<ToolDefinition> {
    let ids: Vec<Value> = members.iter().map(|m| json!(m.member_id())).collect();
    match mode {
        TeamMode::Route => Some(ToolDefinition {
            name: FORWARD_TOOL.into(),
            description: "Forward the user's request to the selected team member; their answer is the team's answer.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "member_id": {"type": "string", "enum": ids, "description": "The id of the member."},
                    "expected_output": {"type": "string", "description": "What the answer should look like."}
                },
                "required": ["member_id"],
                "additionalProperties": false
            }),
            strict: None,
        }),
        TeamMode::Coordinate => Some(ToolDefinition {
            name: TRANSFER_TOOL.into(),
            description: "Transfer a task to the selected team member and get their result.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "member_id": {"type": "string", "enum": ids, "description": "The id of the member."},
                    "task_description": {"type": "string", "description": "A clear description of the task."},
                    "expected_output": {"type": "string", "description": "What the result should look like."}
                },
                "required": ["member_id", "task_description"],
                "additionalProperties": false
            }),
            strict: None,
        }),
        TeamMode::Collaborate => None,
    }
}

/// The message a member receives for a delegated task.
pub(crate) fn member_task(task: &str, expected_output: Option<&str>) -> Message {
    match expected_output.filter(|text| !text.is_empty()) {
        Some(expected) => Message::user(format!(
            "{task}\n\n<expected_output>\n{expected}\n</expected_output>"
        )),
        None => Message::user(task),
    }
}

/// The leader's synthesis request in collaborate mode.
pub(crate) fn collaboration_results(results: &[(String, Result<RunResponse, String>)]) -> Message {
    let mut text = String::from("Here are the answers of the members of your team:\n");
    for (member, result) in results {
        match result {
            Ok(response) => text.push_str(&format!(
                "\n<member id=\"{member}\">\n{}\n</member>\n",
                response.text()
            )),
            Err(error) => text.push_str(&format!(
                "\n<member id=\"{member}\">\nfailed: {error}\n</member>\n"
            )),
        }
    }
    text.push_str("\nWrite the team's answer to the user's request.");
    Message::user(text)
}
