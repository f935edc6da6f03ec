/// One parameter of a workflow's `run`, as `#[workflow]` saw it at compile time.
///
/// Together with the JSON Schema of the generated input struct
/// ([`RunWorkflow::input_schema`](super::RunWorkflow::input_schema)) this lets a server or
/// a CLI run any workflow from JSON without knowing its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Parameter {
    /// The argument's name.
    pub name: &'static str,
    /// The argument's Rust type, as written.
    pub rust_type: &'static str,
    /// The default, as the Rust expression written in `#[arg(default = ...)]`, or `None`
    /// for `Option` arguments (which default to `None`) and required arguments.
    pub default: Option<&'static str>,
    /// Whether the input must name this argument.
    pub required: bool,
}

impl Parameter {
    /// A parameter the input must name.
    pub const fn required(name: &'static str, rust_type: &'static str) -> Self {
        Parameter {
            name,
            rust_type,
            default: None,
            required: true,
        }
    }

    /// An `Option` parameter, or one with `#[arg(default)]`: it may be left out.
    pub const fn optional(name: &'static str, rust_type: &'static str) -> Self {
        Parameter {
            name,
            rust_type,
            default: None,
            required: false,
        }
    }

    /// A parameter with `#[arg(default = expr)]`; `default` is `expr` as written.
    pub const fn with_default(
        name: &'static str,
        rust_type: &'static str,
        default: &'static str,
    ) -> Self {
        Parameter {
            name,
            rust_type,
            default: Some(default),
            required: false,
        }
    }
}
