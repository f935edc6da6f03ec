//! The grammar of `#[workflow(...)]` and of the field and argument attributes.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Ident, LitStr, Path, Token, Type};

use crate::errors::Errors;

/// One `key` or `key = value` inside an attribute.
pub(crate) struct Arg {
    pub(crate) key: Ident,
    pub(crate) value: Option<Expr>,
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = if input.peek(Token![crate]) {
            let token: Token![crate] = input.parse()?;
            Ident::new("crate", token.span)
        } else {
            input.parse()?
        };
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Ok(Arg { key, value })
    }
}

/// Parses `a, b = c, ...`.
pub(crate) fn parse_args(tokens: proc_macro2::TokenStream) -> syn::Result<Vec<Arg>> {
    let parser = Punctuated::<Arg, Token![,]>::parse_terminated;
    Ok(syn::parse::Parser::parse2(parser, tokens)?
        .into_iter()
        .collect())
}

/// Rejects a second occurrence of a key: one generic check for every option.
pub(crate) struct Once<T> {
    name: &'static str,
    value: Option<(Span, T)>,
}

impl<T> Once<T> {
    pub(crate) fn new(name: &'static str) -> Self {
        Once { name, value: None }
    }

    pub(crate) fn set(&mut self, errors: &mut Errors, attr: &str, span: Span, value: T) {
        if self.value.is_some() {
            errors.push(syn::Error::new(
                span,
                format!("duplicate `{attr}` argument `{}`", self.name),
            ));
        } else {
            self.value = Some((span, value));
        }
    }

    pub(crate) fn get(self) -> Option<T> {
        self.value.map(|(_, value)| value)
    }
}

pub(crate) fn unknown(errors: &mut Errors, attr: &str, key: &Ident, expected: &[&str]) {
    let list = expected
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ");
    errors.push(syn::Error::new(
        key.span(),
        format!("unknown `{attr}` argument `{key}`; expected one of: {list}"),
    ));
}

pub(crate) fn string_value(errors: &mut Errors, arg: &Arg) -> Option<LitStr> {
    match &arg.value {
        Some(Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(text),
            ..
        })) => Some(text.clone()),
        Some(other) => {
            errors.push(syn::Error::new(
                other.span(),
                format!("`{}` takes a string literal", arg.key),
            ));
            None
        }
        None => {
            errors.push(syn::Error::new(
                arg.key.span(),
                format!("`{}` needs a value: `{} = \"...\"`", arg.key, arg.key),
            ));
            None
        }
    }
}

fn path_value(errors: &mut Errors, arg: &Arg, what: &str) -> Option<Path> {
    match &arg.value {
        Some(Expr::Path(path)) if path.qself.is_none() => Some(path.path.clone()),
        Some(other) => {
            errors.push(syn::Error::new(
                other.span(),
                format!("`{}` takes {what}", arg.key),
            ));
            None
        }
        None => {
            errors.push(syn::Error::new(
                arg.key.span(),
                format!("`{}` needs a value: `{} = ...`", arg.key, arg.key),
            ));
            None
        }
    }
}

fn bool_value(errors: &mut Errors, arg: &Arg) -> Option<bool> {
    match &arg.value {
        None => Some(true),
        Some(Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Bool(value),
            ..
        })) => Some(value.value),
        Some(other) => {
            errors.push(syn::Error::new(
                other.span(),
                format!("`{}` takes `true` or `false`", arg.key),
            ));
            None
        }
    }
}

/// `#[workflow(...)]` on a struct.
#[derive(Default)]
pub(crate) struct StructArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) description: Option<LitStr>,
    pub(crate) state: Option<Type>,
    pub(crate) krate: Option<Path>,
    pub(crate) clone: Option<bool>,
}

const STRUCT_KEYS: &[&str] = &["name", "description", "state", "crate", "clone"];
const IMPL_KEYS: &[&str] = &["crate", "durable", "version"];
const ATTR: &str = "#[workflow]";

impl StructArgs {
    pub(crate) fn from_args(args: Vec<Arg>, errors: &mut Errors) -> Self {
        let mut name = Once::new("name");
        let mut description = Once::new("description");
        let mut state = Once::new("state");
        let mut krate = Once::new("crate");
        let mut clone = Once::new("clone");
        for arg in args {
            let span = arg.key.span();
            match arg.key.to_string().as_str() {
                "name" => {
                    if let Some(value) = string_value(errors, &arg) {
                        name.set(errors, ATTR, span, value);
                    }
                }
                "description" => {
                    if let Some(value) = string_value(errors, &arg) {
                        description.set(errors, ATTR, span, value);
                    }
                }
                "state" => {
                    if let Some(path) = path_value(errors, &arg, "a type: `state = MyState`") {
                        let ty = Type::Path(syn::TypePath { qself: None, path });
                        state.set(errors, ATTR, span, ty);
                    }
                }
                "crate" => {
                    if let Some(path) = path_value(errors, &arg, "a path: `crate = ::buddy`") {
                        krate.set(errors, ATTR, span, path);
                    }
                }
                "clone" => {
                    if let Some(value) = bool_value(errors, &arg) {
                        clone.set(errors, ATTR, span, value);
                    }
                }
                _ => unknown(errors, ATTR, &arg.key, STRUCT_KEYS),
            }
        }
        StructArgs {
            name: name.get(),
            description: description.get(),
            state: state.get(),
            krate: krate.get(),
            clone: clone.get(),
        }
    }
}

/// `#[workflow(...)]` on an impl block.
#[derive(Default)]
pub(crate) struct ImplArgs {
    pub(crate) krate: Option<Path>,
    /// `durable`: runs are journaled and resumable.
    pub(crate) durable: Option<bool>,
    /// `version = N`: the workflow's version, checked when a durable run is resumed.
    pub(crate) version: Option<syn::LitInt>,
}

fn int_value(errors: &mut Errors, arg: &Arg) -> Option<syn::LitInt> {
    match &arg.value {
        Some(Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(value),
            ..
        })) if value.base10_parse::<u32>().is_ok() => Some(value.clone()),
        Some(other) => {
            errors.push(syn::Error::new(
                other.span(),
                format!("`{}` takes a whole number from 0 to {}", arg.key, u32::MAX),
            ));
            None
        }
        None => {
            errors.push(syn::Error::new(
                arg.key.span(),
                format!("`{}` needs a value: `{} = 2`", arg.key, arg.key),
            ));
            None
        }
    }
}

impl ImplArgs {
    pub(crate) fn from_args(args: Vec<Arg>, errors: &mut Errors) -> Self {
        let mut krate = Once::new("crate");
        let mut durable = Once::new("durable");
        let mut version = Once::new("version");
        for arg in args {
            let span = arg.key.span();
            match arg.key.to_string().as_str() {
                "crate" => {
                    if let Some(path) = path_value(errors, &arg, "a path: `crate = ::buddy`") {
                        krate.set(errors, ATTR, span, path);
                    }
                }
                "durable" => {
                    if let Some(value) = bool_value(errors, &arg) {
                        durable.set(errors, ATTR, span, value);
                    }
                }
                "version" => {
                    if let Some(value) = int_value(errors, &arg) {
                        version.set(errors, ATTR, span, value);
                    }
                }
                key if STRUCT_KEYS.contains(&key) => errors.push(syn::Error::new(
                    span,
                    format!(
                        "`{key}` belongs on the struct: `#[workflow({key} = ...)]` on the struct definition; on an `impl` block `#[workflow]` accepts `crate`, `durable` and `version`"
                    ),
                )),
                _ => unknown(errors, ATTR, &arg.key, IMPL_KEYS),
            }
        }
        ImplArgs {
            krate: krate.get(),
            durable: durable.get(),
            version: version.get(),
        }
    }
}

/// `#[member(...)]`, `#[field(...)]` on a field, or `#[arg(...)]` on a `run` argument:
/// only `default` or `default = expr`.
pub(crate) enum DefaultArg {
    /// `default`: `Default::default()`.
    Trait,
    /// `default = expr`.
    Expr(Box<Expr>),
}

pub(crate) fn parse_default(
    attr: &syn::Attribute,
    name: &str,
    errors: &mut Errors,
) -> Option<DefaultArg> {
    let args = match &attr.meta {
        syn::Meta::Path(_) => return None,
        syn::Meta::List(list) => match parse_args(list.tokens.clone()) {
            Ok(args) => args,
            Err(error) => {
                errors.push(error);
                return None;
            }
        },
        syn::Meta::NameValue(value) => {
            errors.push(syn::Error::new(
                value.span(),
                format!("expected `#[{name}]` or `#[{name}(default = ...)]`"),
            ));
            return None;
        }
    };
    let attr_name = format!("#[{name}]");
    let mut default = Once::new("default");
    for arg in args {
        let span = arg.key.span();
        if arg.key == "default" {
            let value = match arg.value {
                Some(expr) => DefaultArg::Expr(Box::new(expr)),
                None => DefaultArg::Trait,
            };
            default.set(errors, &attr_name, span, value);
        } else {
            unknown(errors, &attr_name, &arg.key, &["default"]);
        }
    }
    default.get()
}
