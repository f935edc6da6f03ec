//! The grammar of `#[tool(...)]`: `name = "..."`, `description = "..."`, `crate = path`.

use syn::{Expr, LitStr, Path};

use crate::args::{Arg, Once, string_value, unknown};
use crate::errors::Errors;

const EXPECTED: &[&str] = &["name", "description", "requires_confirmation", "crate"];

/// What `#[tool(...)]` said.
#[derive(Default)]
pub(crate) struct ToolArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) description: Option<LitStr>,
    pub(crate) krate: Option<Path>,
    /// `requires_confirmation`: every call waits for a person's confirmation.
    pub(crate) requires_confirmation: bool,
}

impl ToolArgs {
    pub(crate) fn from_args(args: Vec<Arg>, errors: &mut Errors) -> Self {
        let mut name = Once::new("name");
        let mut description = Once::new("description");
        let mut krate = Once::new("crate");
        let mut confirm = Once::new("requires_confirmation");
        for arg in args {
            let span = arg.key.span();
            match arg.key.to_string().as_str() {
                "name" => {
                    if let Some(value) = string_value(errors, &arg) {
                        name.set(errors, "#[tool]", span, value);
                    }
                }
                "description" => {
                    if let Some(value) = string_value(errors, &arg) {
                        description.set(errors, "#[tool]", span, value);
                    }
                }
                "crate" => match &arg.value {
                    Some(Expr::Path(path)) if path.qself.is_none() => {
                        krate.set(errors, "#[tool]", span, path.path.clone());
                    }
                    _ => errors.push(syn::Error::new(
                        span,
                        "`crate` takes a path to the runtime crate: `crate = buddy_core`",
                    )),
                },
                "requires_confirmation" => match &arg.value {
                    None => confirm.set(errors, "#[tool]", span, true),
                    Some(_) => errors.push(syn::Error::new(
                        span,
                        "`requires_confirmation` takes no value: `#[tool(requires_confirmation)]`",
                    )),
                },
                _ => unknown(errors, "#[tool]", &arg.key, EXPECTED),
            }
        }
        ToolArgs {
            name: name.get(),
            description: description.get(),
            krate: krate.get(),
            requires_confirmation: confirm.get().unwrap_or(false),
        }
    }
}
