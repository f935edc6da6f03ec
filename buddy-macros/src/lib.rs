//! Procedural macros for buddy. Not for direct use; depend on `buddy`, which re-exports them
//! with their documentation.
//!
//! Each macro runs parse → model → validate → expand; only the first three can fail, and
//! when they do the user's item is still emitted next to the errors, so that one mistake
//! gives one error and IDEs keep working.

mod args;
mod errors;
mod expand;
mod fallback;
mod model;
mod paths;
#[cfg(test)]
mod snapshot_tests;
mod tool;
mod validate;

use proc_macro::TokenStream;

/// (`#[workflow]` is implemented in `buddy-macros`; depend on `buddy`, which re-exports it as
/// `buddy::workflow`.)
#[proc_macro_attribute]
pub fn workflow(args: TokenStream, item: TokenStream) -> TokenStream {
    workflow::expand(args.into(), item.into()).into()
}

/// Turns a function into a tool an agent can call. Documented on `buddy::tool`.
#[proc_macro_attribute]
pub fn tool(args: TokenStream, item: TokenStream) -> TokenStream {
    tool::expand(args.into(), item.into()).into()
}

mod workflow {
    use proc_macro2::TokenStream;
    use quote::quote;
    use syn::spanned::Spanned;

    use crate::args::{ImplArgs, StructArgs, parse_args};
    use crate::errors::Errors;
    use crate::model::{ImplParts, WorkflowImpl, WorkflowStruct};
    use crate::{expand, validate};

    /// Dispatches on the item: a struct or an inherent `impl` block.
    pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
        let mut errors = Errors::default();
        let parsed_args = match parse_args(args) {
            Ok(args) => args,
            Err(error) => {
                errors.push(error);
                Vec::new()
            }
        };
        match syn::parse2::<syn::Item>(item.clone()) {
            Ok(syn::Item::Struct(item)) => expand_struct(parsed_args, item, errors),
            Ok(syn::Item::Impl(item)) => expand_impl(parsed_args, item, errors),
            Ok(other) => {
                let what = match &other {
                    syn::Item::Enum(_) => "an enum",
                    syn::Item::Fn(_) => "a function",
                    syn::Item::Trait(_) => "a trait",
                    syn::Item::Union(_) => "a union",
                    syn::Item::Mod(_) => "a module",
                    _ => "this item",
                };
                let span = item_keyword_span(&other);
                errors.push(syn::Error::new(
                    span,
                    format!("`#[workflow]` cannot be applied to {what}; it goes on a struct and on the `impl` block that defines its `async fn run`"),
                ));
                let compile_errors = errors.to_compile_errors();
                quote!(#other #compile_errors)
            }
            Err(error) => {
                errors.push(error);
                let compile_errors = errors.to_compile_errors();
                quote!(#item #compile_errors)
            }
        }
    }

    fn item_keyword_span(item: &syn::Item) -> proc_macro2::Span {
        match item {
            syn::Item::Enum(item) => item.enum_token.span,
            syn::Item::Fn(item) => item.sig.fn_token.span,
            syn::Item::Trait(item) => item.trait_token.span,
            syn::Item::Union(item) => item.union_token.span,
            syn::Item::Mod(item) => item.mod_token.span,
            other => other.span(),
        }
    }

    fn expand_struct(
        args: Vec<crate::args::Arg>,
        item: syn::ItemStruct,
        mut errors: Errors,
    ) -> TokenStream {
        let args = StructArgs::from_args(args, &mut errors);
        let shape_ok = validate::struct_shape(&item, &mut errors);
        let workflow = WorkflowStruct::parse(args, item, &mut errors);
        validate::struct_model(&workflow, &mut errors);
        if errors.is_empty() {
            return expand::struct_::expand(&workflow);
        }
        if shape_ok {
            crate::fallback::valid_struct(workflow, &errors)
        } else {
            crate::fallback::invalid_struct(workflow, &errors)
        }
    }

    /// Attribute errors (`#[workflow(...)]`, `#[arg(...)]`) leave a block that still expands
    /// in full next to them; any other error leaves the block as written, with stubs
    /// (`fallback::impl_block`).
    fn expand_impl(
        args: Vec<crate::args::Arg>,
        item: syn::ItemImpl,
        mut errors: Errors,
    ) -> TokenStream {
        let args = ImplArgs::from_args(args, &mut errors);
        let runtime = crate::paths::Runtime::new(args.krate.as_ref());
        let mut shape_errors = Errors::default();
        let valid = validate::impl_block(&item, &mut shape_errors);
        let original = item.clone();
        if let Some(valid) = valid {
            let parts = ImplParts { args, item };
            if let Some(workflow) = WorkflowImpl::from_validated(
                parts,
                valid.self_ident,
                valid.run_index,
                valid.kind,
                &mut errors,
                &mut shape_errors,
            ) && shape_errors.is_empty()
            {
                let expansion = expand::impl_::expand(&workflow);
                let compile_errors = errors.to_compile_errors();
                return quote!(#expansion #compile_errors);
            }
        }
        errors.append(shape_errors);
        crate::fallback::impl_block(original, &runtime, &errors)
    }
}
