//! `#[tool]`: turns a function and its doc comment into a tool an agent can call.
//!
//! Parse the attribute (`args.rs`) → model and validate the function (`model.rs`) →
//! expand (`expand.rs`). When anything is wrong the function is still emitted, with the
//! errors next to it.

mod args;
mod expand;
mod model;

use proc_macro2::TokenStream;
use quote::quote;

use crate::errors::Errors;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = match crate::args::parse_args(args) {
        Ok(parsed) => args::ToolArgs::from_args(parsed, &mut errors),
        Err(error) => {
            errors.push(error);
            args::ToolArgs::default()
        }
    };
    let function = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Fn(function)) => function,
        Ok(other) => {
            errors.push(syn::Error::new(
                item_keyword(&other),
                "`#[tool]` goes on a function; its doc comment becomes the tool's description and its arguments the tool's parameters",
            ));
            let compile_errors = errors.to_compile_errors();
            return quote!(#other #compile_errors);
        }
        Err(error) => {
            errors.push(error);
            let compile_errors = errors.to_compile_errors();
            return quote!(#item #compile_errors);
        }
    };
    let tool = model::ToolFn::parse(args, function, &mut errors);
    if errors.is_empty() {
        expand::expand(&tool)
    } else {
        let function = &tool.function;
        let compile_errors = errors.to_compile_errors();
        quote!(#function #compile_errors)
    }
}

fn item_keyword(item: &syn::Item) -> proc_macro2::Span {
    use syn::spanned::Spanned;
    match item {
        syn::Item::Struct(item) => item.struct_token.span,
        syn::Item::Enum(item) => item.enum_token.span,
        syn::Item::Impl(item) => item.impl_token.span,
        syn::Item::Trait(item) => item.trait_token.span,
        syn::Item::Mod(item) => item.mod_token.span,
        other => other.span(),
    }
}
