//! What `#[workflow]` emits when the input is wrong: the user's item (minus the attributes
//! only the macro understands) next to the errors, so one mistake gives one error and IDEs
//! keep working (thiserror's `fallback.rs`).

use proc_macro2::TokenStream;
use quote::quote;
use syn::punctuated::Punctuated;

use crate::errors::Errors;
use crate::expand;
use crate::model::WorkflowStruct;

/// A struct whose shape is valid: the definition with its hidden field and the `Workflow`
/// impl, so the `impl` block's expansion adds no second wave of errors; no builder.
pub(crate) fn valid_struct(mut workflow: WorkflowStruct, errors: &Errors) -> TokenStream {
    remove_derive(&mut workflow.item.attrs, "Default");
    let definition = expand::struct_::definition(&workflow);
    let workflow_impl = expand::struct_::workflow_impl(&workflow);
    let compile_errors = errors.to_compile_errors();
    quote!(#definition #workflow_impl #compile_errors)
}

/// A struct the macro cannot model (generic, tuple): the item as written.
pub(crate) fn invalid_struct(workflow: WorkflowStruct, errors: &Errors) -> TokenStream {
    let item = &workflow.item;
    let compile_errors = errors.to_compile_errors();
    quote!(#item #compile_errors)
}

/// An invalid `impl` block: as written, minus the `#[arg(...)]` attributes on `run`'s
/// arguments, which mean nothing to the compiler.
pub(crate) fn impl_block(mut item: syn::ItemImpl, errors: &Errors) -> TokenStream {
    for impl_item in &mut item.items {
        let syn::ImplItem::Fn(function) = impl_item else {
            continue;
        };
        for input in &mut function.sig.inputs {
            if let syn::FnArg::Typed(arg) = input {
                arg.attrs.retain(|attr| !attr.path().is_ident("arg"));
            }
        }
    }
    let compile_errors = errors.to_compile_errors();
    quote!(#item #compile_errors)
}

/// Removes `name` from the `#[derive(...)]` attributes (dropping a derive left empty).
fn remove_derive(attrs: &mut Vec<syn::Attribute>, name: &str) {
    attrs.retain_mut(|attr| {
        if !attr.path().is_ident("derive") {
            return true;
        }
        let Ok(paths) =
            attr.parse_args_with(Punctuated::<syn::Path, syn::Token![,]>::parse_terminated)
        else {
            return true;
        };
        let kept: Punctuated<syn::Path, syn::Token![,]> = paths
            .into_iter()
            .filter(|path| !path.is_ident(name))
            .collect();
        if kept.is_empty() {
            return false;
        }
        *attr = syn::parse_quote!(#[derive(#kept)]);
        true
    });
}
