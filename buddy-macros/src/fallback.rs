//! What `#[workflow]` emits when the input is wrong: the user's item (minus the attributes
//! only the macro understands) next to the errors, so one mistake gives one error and IDEs
//! keep working (thiserror's `fallback.rs`).

use proc_macro2::TokenStream;
use quote::quote;
use syn::punctuated::Punctuated;

use crate::errors::Errors;
use crate::expand;
use crate::model::WorkflowStruct;
use crate::paths::Runtime;

/// A struct whose shape is valid: its full expansion (see
/// [`expand_fallback`](expand::struct_::expand_fallback)), so that neither the `impl` block's
/// expansion nor code using the workflow adds a second wave of errors.
pub(crate) fn valid_struct(mut workflow: WorkflowStruct, errors: &Errors) -> TokenStream {
    remove_derive(&mut workflow.item.attrs, "Default");
    let expansion = expand::struct_::expand_fallback(&workflow);
    let compile_errors = errors.to_compile_errors();
    quote!(#expansion #compile_errors)
}

/// A struct the macro cannot model (generic, tuple): the item as written.
pub(crate) fn invalid_struct(workflow: WorkflowStruct, errors: &Errors) -> TokenStream {
    let item = &workflow.item;
    let compile_errors = errors.to_compile_errors();
    quote!(#item #compile_errors)
}

/// An invalid `impl` block: as written, minus the `#[arg(...)]` attributes on `run`'s
/// arguments (which mean nothing to the compiler), with `run` made `async` (so that a body
/// that awaits adds no error to "`run` must be an `async fn`") and public, and a stub `RunWorkflow`
/// impl (so that the struct's check that its `impl` block has `#[workflow]` holds).
pub(crate) fn impl_block(
    mut item: syn::ItemImpl,
    runtime: &Runtime,
    errors: &Errors,
) -> TokenStream {
    for impl_item in &mut item.items {
        let syn::ImplItem::Fn(function) = impl_item else {
            continue;
        };
        for input in &mut function.sig.inputs {
            if let syn::FnArg::Typed(arg) = input {
                arg.attrs.retain(|attr| !attr.path().is_ident("arg"));
            }
        }
        if function.sig.ident == "run" {
            if function.sig.asyncness.is_none() {
                function.sig.asyncness = Some(syn::Token![async](function.sig.fn_token.span));
            }
            // As public as the `run` the macro would have generated.
            if matches!(function.vis, syn::Visibility::Inherited) {
                function.vis = syn::parse_quote!(pub);
            }
        }
    }
    let stub = run_workflow_stub(&item, runtime);
    let compile_errors = errors.to_compile_errors();
    quote!(#item #stub #compile_errors)
}

/// `impl RunWorkflow` without parameters, for an inherent impl of a type named by an
/// identifier (nothing otherwise: a trait impl, or a type the macro cannot name). It is
/// only ever compiled next to a `compile_error!`, so its body never runs.
fn run_workflow_stub(item: &syn::ItemImpl, runtime: &Runtime) -> TokenStream {
    let syn::Type::Path(path) = &*item.self_ty else {
        return TokenStream::new();
    };
    if item.trait_.is_some() || path.qself.is_some() || !item.generics.params.is_empty() {
        return TokenStream::new();
    }
    let Some(ident) = path.path.get_ident() else {
        return TokenStream::new();
    };
    let private = runtime.private();
    quote::quote_spanned! {ident.span()=>
        #[automatically_derived]
        impl #private::RunWorkflow for #ident {
            type Input = ();
            const STREAMING: #private::bool = false;
            const PARAMETERS: &'static [#private::Parameter] = &[];

            fn __buddy_call(&mut self, _: ()) -> #private::BoxFuture<'_, #private::Body<'_>> {
                #private::expansion_failed()
            }
        }
    }
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
