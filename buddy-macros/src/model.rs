//! What was parsed: the workflow struct and the workflow `impl` block, with the original
//! syntax kept for spans.

use syn::{Attribute, Expr, FnArg, Ident, ImplItemFn, ItemImpl, ItemStruct, LitStr, Type};

use crate::args::{DefaultArg, ImplArgs, StructArgs, parse_default};
use crate::errors::Errors;
use crate::paths::Runtime;

/// A field of the workflow struct.
pub(crate) struct Field {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    pub(crate) default: Option<DefaultArg>,
    pub(crate) member: bool,
}

impl Field {
    /// Whether the field's name is one the macro generates (an error reported by `validate`).
    pub(crate) fn reserved(&self) -> bool {
        let name = syn::ext::IdentExt::unraw(&self.ident).to_string();
        crate::validate::RESERVED_FIELDS.contains(&name.as_str()) || name.starts_with("__buddy")
    }
}

/// `#[workflow]` on a struct.
pub(crate) struct WorkflowStruct {
    /// The struct as the user wrote it, minus the field attributes the macro consumes.
    pub(crate) item: ItemStruct,
    pub(crate) fields: Vec<Field>,
    pub(crate) name: Option<LitStr>,
    pub(crate) description: Option<LitStr>,
    pub(crate) state: Option<Type>,
    pub(crate) derive_clone: bool,
    pub(crate) runtime: Runtime,
}

/// Type names registered as members without `#[member]`.
const MEMBER_TYPES: &[&str] = &["Agent", "Team"];
/// Wrappers through which a member type is still a member.
const MEMBER_WRAPPERS: &[&str] = &["Option", "Vec", "Box", "Arc"];

fn is_member_type(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    let name = last.ident.to_string();
    if MEMBER_TYPES.contains(&name.as_str()) {
        return true;
    }
    if MEMBER_WRAPPERS.contains(&name.as_str())
        && let syn::PathArguments::AngleBracketed(args) = &last.arguments
    {
        return args.args.iter().any(|arg| match arg {
            syn::GenericArgument::Type(inner) => is_member_type(inner),
            _ => false,
        });
    }
    false
}

impl WorkflowStruct {
    pub(crate) fn parse(args: StructArgs, mut item: ItemStruct, errors: &mut Errors) -> Self {
        let mut fields = Vec::new();
        for field in item.fields.iter_mut() {
            let mut default = None;
            let mut member = false;
            field.attrs.retain(|attr: &Attribute| {
                let name = if attr.path().is_ident("member") {
                    member = true;
                    "member"
                } else if attr.path().is_ident("field") {
                    "field"
                } else {
                    return true;
                };
                if let Some(value) = parse_default(attr, name, errors) {
                    default = Some(value);
                }
                false
            });
            if let Some(ident) = &field.ident {
                member |= is_member_type(&field.ty);
                fields.push(Field {
                    ident: ident.clone(),
                    ty: field.ty.clone(),
                    default,
                    member,
                });
            }
        }
        WorkflowStruct {
            item,
            fields,
            name: args.name,
            description: args.description,
            state: args.state,
            derive_clone: args.clone.unwrap_or(true),
            runtime: Runtime::new(args.krate.as_ref()),
        }
    }

    /// Whether every field can be filled without the builder.
    pub(crate) fn all_defaults(&self) -> bool {
        self.fields.iter().all(|field| field.default.is_some())
    }
}

/// How `run` hands back its result.
pub(crate) enum ReturnKind {
    /// `RunResponse` or `Result<RunResponse, E>`.
    Response,
    /// `impl Stream<Item = Result<RunEvent>>` (or a `BoxStream`).
    Stream,
}

/// An argument of `run`.
pub(crate) struct RunArg {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    pub(crate) default: Option<DefaultArg>,
    pub(crate) optional: bool,
}

impl RunArg {
    pub(crate) fn default_expr(&self) -> Option<Expr> {
        match &self.default {
            Some(DefaultArg::Expr(expr)) => Some((**expr).clone()),
            _ => None,
        }
    }
}

/// `#[workflow]` on an `impl` block.
pub(crate) struct WorkflowImpl {
    /// The block as written, with `run` renamed to the hidden body.
    pub(crate) item: ItemImpl,
    pub(crate) self_ident: Ident,
    pub(crate) run: ImplItemFn,
    pub(crate) args: Vec<RunArg>,
    pub(crate) kind: ReturnKind,
    pub(crate) runtime: Runtime,
    /// `#[workflow(durable)]`.
    pub(crate) durable: bool,
    /// `#[workflow(version = N)]`.
    pub(crate) version: Option<syn::LitInt>,
}

/// The parts of an impl block before validation.
pub(crate) struct ImplParts {
    pub(crate) args: ImplArgs,
    pub(crate) item: ItemImpl,
}

impl WorkflowImpl {
    /// Models a validated block. Errors in `#[arg(...)]` go to `attr_errors` (the block still
    /// expands fully next to them); a `run` argument the macro cannot model goes to
    /// `shape_errors`.
    pub(crate) fn from_validated(
        parts: ImplParts,
        self_ident: Ident,
        run_index: usize,
        kind: ReturnKind,
        attr_errors: &mut Errors,
        shape_errors: &mut Errors,
    ) -> Option<Self> {
        let ImplParts { args, mut item } = parts;
        let syn::ImplItem::Fn(run) = &mut item.items[run_index] else {
            return None;
        };
        let mut run_args = Vec::new();
        for input in run.sig.inputs.iter_mut() {
            let FnArg::Typed(arg) = input else { continue };
            let mut default = None;
            arg.attrs.retain(|attr| {
                if attr.path().is_ident("arg") {
                    default = parse_default(attr, "arg", attr_errors);
                    false
                } else {
                    true
                }
            });
            let syn::Pat::Ident(pat) = &*arg.pat else {
                shape_errors.push(syn::Error::new_spanned(
                    &arg.pat,
                    "`#[workflow]` needs a plain name for each `run` argument, such as `topic: String`",
                ));
                continue;
            };
            let optional = matches!(&*arg.ty, Type::Path(path)
                if path.path.segments.last().is_some_and(|last| last.ident == "Option"));
            run_args.push(RunArg {
                ident: pat.ident.clone(),
                ty: (*arg.ty).clone(),
                default,
                optional,
            });
        }
        let run = run.clone();
        item.items.remove(run_index);
        Some(WorkflowImpl {
            item,
            self_ident,
            run,
            args: run_args,
            kind,
            runtime: Runtime::new(args.krate.as_ref()),
            durable: args.durable.unwrap_or(false),
            version: args.version,
        })
    }
}
