//! What `#[tool]` parsed: the function, its parameters and their docs, checked.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, Pat, ReturnType, Type};

use super::args::ToolArgs;
use crate::errors::Errors;

/// One parameter of the tool function.
pub(crate) struct Param {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    /// Doc comment attributes taken off the parameter (they become the field's docs).
    pub(crate) docs: Vec<syn::Attribute>,
}

/// A validated tool function.
pub(crate) struct ToolFn {
    /// The function as it will be emitted (parameter docs removed).
    pub(crate) function: syn::ItemFn,
    pub(crate) args: ToolArgs,
    pub(crate) params: Vec<Param>,
    pub(crate) description: String,
    /// Whether the function returns a `Result` (syntactically).
    pub(crate) returns_result: bool,
}

impl ToolFn {
    pub(crate) fn parse(args: ToolArgs, mut function: syn::ItemFn, errors: &mut Errors) -> Self {
        let sig = &function.sig;
        if !sig.generics.params.is_empty() {
            errors.push(syn::Error::new_spanned(
                &sig.generics.params,
                "`#[tool]` functions cannot be generic; the model's arguments need one concrete type each",
            ));
        }
        if let Some(variadic) = &sig.variadic {
            errors.push(syn::Error::new(
                variadic.span(),
                "`#[tool]` functions cannot be variadic",
            ));
        }
        let mut params = Vec::new();
        for input in function.sig.inputs.iter_mut() {
            match input {
                FnArg::Receiver(receiver) => errors.push(syn::Error::new(
                    receiver.span(),
                    "`#[tool]` goes on a free function, not a method; call the method from a free function",
                )),
                FnArg::Typed(typed) => {
                    let docs: Vec<syn::Attribute> = typed
                        .attrs
                        .iter()
                        .filter(|attr| attr.path().is_ident("doc"))
                        .cloned()
                        .collect();
                    typed.attrs.retain(|attr| !attr.path().is_ident("doc"));
                    let ident = match &*typed.pat {
                        Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                            pat.ident.clone()
                        }
                        other => {
                            errors.push(syn::Error::new(
                                other.span(),
                                "`#[tool]` parameters must be plain names (`city: String`); patterns have no name to show the model",
                            ));
                            continue;
                        }
                    };
                    if let Type::Reference(reference) = &*typed.ty {
                        errors.push(syn::Error::new_spanned(
                            reference,
                            "`#[tool]` parameters must be owned types, decoded from the model's JSON; use `String` for `&str`, `Vec<T>` for `&[T]`",
                        ));
                    }
                    if let Type::ImplTrait(bound) = &*typed.ty {
                        errors.push(syn::Error::new(
                            bound.span(),
                            "`#[tool]` parameters need concrete types, not `impl Trait`",
                        ));
                    }
                    params.push(Param {
                        ident,
                        ty: (*typed.ty).clone(),
                        docs,
                    });
                }
            }
        }
        let description = match &args.description {
            Some(text) => text.value(),
            None => doc_text(&function.attrs),
        };
        if description.trim().is_empty() {
            errors.push(syn::Error::new(
                function.sig.ident.span(),
                format!(
                    "`#[tool]` function `{}` needs a description: write a doc comment (the model reads it to decide when to call the tool) or `#[tool(description = \"...\")]`",
                    function.sig.ident
                ),
            ));
        }
        let returns_result = match &function.sig.output {
            ReturnType::Type(_, ty) => is_result(ty),
            ReturnType::Default => false,
        };
        ToolFn {
            function,
            args,
            params,
            description,
            returns_result,
        }
    }

    /// The name the model calls the tool by.
    pub(crate) fn tool_name(&self) -> String {
        match &self.args.name {
            Some(name) => name.value(),
            None => self
                .function
                .sig
                .ident
                .to_string()
                .trim_start_matches("r#")
                .to_owned(),
        }
    }

    /// `get_weather` → `GetWeather`, the generated tool type.
    pub(crate) fn struct_ident(&self) -> Ident {
        let name = self.function.sig.ident.to_string();
        let mut pascal = String::new();
        for part in name
            .trim_start_matches("r#")
            .split('_')
            .filter(|p| !p.is_empty())
        {
            let mut chars = part.chars();
            if let Some(first) = chars.next() {
                pascal.extend(first.to_uppercase());
                pascal.push_str(chars.as_str());
            }
        }
        Ident::new(&pascal, self.function.sig.ident.span())
    }

    /// The hidden arguments struct.
    pub(crate) fn args_ident(&self) -> Ident {
        Ident::new(
            &format!("__BuddyToolArgs{}", self.struct_ident()),
            Span::call_site(),
        )
    }
}

/// The text of `///` comments: lines joined with newlines, trimmed.
fn doc_text(attrs: &[syn::Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .filter_map(|attr| match &attr.meta {
            syn::Meta::NameValue(syn::MetaNameValue {
                value:
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(text),
                        ..
                    }),
                ..
            }) => Some(text.value()),
            _ => None,
        })
        .map(|line| {
            line.strip_prefix(' ')
                .unwrap_or(&line)
                .trim_end()
                .to_owned()
        })
        .collect();
    lines.join("\n").trim().to_owned()
}

fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Result"),
        Type::Group(group) => is_result(&group.elem),
        Type::Paren(paren) => is_result(&paren.elem),
        _ => false,
    }
}
