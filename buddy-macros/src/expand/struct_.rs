//! What `#[workflow]` generates for a struct: the hidden runtime field, the `Workflow` and
//! `Member` impls, the builder, (when every field has a default) `Default`, and the check
//! that the struct's `impl` block has `#[workflow]` too.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::args::DefaultArg;
use crate::model::{Field, WorkflowStruct};

pub(crate) fn expand(workflow: &WorkflowStruct) -> TokenStream {
    let definition = definition(workflow);
    let workflow_impl = workflow_impl(workflow);
    let builder = builder(workflow);
    let default = default_impl(workflow);
    let run_check = run_check(workflow);
    quote! {
        #definition
        #workflow_impl
        #builder
        #default
        #run_check
    }
}

/// What a struct whose attributes are wrong (but whose shape is fine) expands to next to the
/// errors: everything [`expand`] generates, so that code using the workflow adds no second
/// wave of errors; `Default` even when a field lacks a default (a misspelt
/// `#[field(default)]` is the likely cause), with a body that never runs.
pub(crate) fn expand_fallback(workflow: &WorkflowStruct) -> TokenStream {
    let definition = definition(workflow);
    let workflow_impl = workflow_impl(workflow);
    let builder = builder(workflow);
    let run_check = run_check(workflow);
    let default = if workflow.all_defaults() {
        default_impl(workflow)
    } else {
        let private = workflow.runtime.private();
        let ident = &workflow.item.ident;
        quote! {
            #[automatically_derived]
            impl #private::Default for #ident {
                fn default() -> Self {
                    #private::expansion_failed()
                }
            }
        }
    };
    quote! {
        #definition
        #workflow_impl
        #builder
        #default
        #run_check
    }
}

/// `Self: RunWorkflow`, checked at compile time: forgetting `#[workflow]` on the `impl` block
/// that defines `run` is an error (whose note says so) rather than a workflow whose `run`
/// is a plain method, without ids or persistence.
fn run_check(workflow: &WorkflowStruct) -> TokenStream {
    let private = workflow.runtime.private();
    let ident = &workflow.item.ident;
    quote::quote_spanned! {ident.span()=>
        const _: () = #private::assert_run_workflow::<#ident>();
    }
}

fn state_type(workflow: &WorkflowStruct) -> TokenStream {
    let private = workflow.runtime.private();
    match &workflow.state {
        Some(state) => quote!(#private::Typed<#state>),
        None => quote!(#private::JsonState),
    }
}

fn description(workflow: &WorkflowStruct) -> TokenStream {
    let private = workflow.runtime.private();
    match &workflow.description {
        Some(text) => quote!(#private::Some(#text)),
        None => quote!(#private::None),
    }
}

/// The default display name: `name = "..."`, else the type name.
fn type_name(workflow: &WorkflowStruct) -> String {
    match &workflow.name {
        Some(name) => name.value(),
        None => workflow.item.ident.to_string(),
    }
}

/// The struct itself, with the hidden runtime field appended.
fn definition(workflow: &WorkflowStruct) -> TokenStream {
    let private = workflow.runtime.private();
    let mut item = workflow.item.clone();
    let state = state_type(workflow);
    let core: syn::Field = syn::parse_quote! {
        #[doc(hidden)]
        __buddy: #private::WorkflowCore<#state>
    };
    match &mut item.fields {
        syn::Fields::Named(fields) => fields.named.push(core),
        fields @ syn::Fields::Unit => {
            *fields = syn::Fields::Named(syn::parse_quote!({ #core }));
            item.semi_token = None;
        }
        syn::Fields::Unnamed(_) => {}
    }
    if workflow.derive_clone && !derives(&item.attrs, "Clone") {
        item.attrs
            .push(syn::parse_quote!(#[derive(#private::Clone)]));
    }
    quote!(#item)
}

fn derives(attrs: &[syn::Attribute], name: &str) -> bool {
    attrs
        .iter()
        .filter(|attr| attr.path().is_ident("derive"))
        .any(|attr| {
            let mut found = false;
            let _ = attr.parse_nested_meta(|meta| {
                found |= meta.path.is_ident(name);
                Ok(())
            });
            found
        })
}

/// `impl Workflow` and `impl Member` (a workflow can be a member of another).
fn workflow_impl(workflow: &WorkflowStruct) -> TokenStream {
    let private = workflow.runtime.private();
    let ident = &workflow.item.ident;
    let state = state_type(workflow);
    let type_ident = ident.to_string();
    let description = description(workflow);
    let context = workflow.runtime.member_context();
    let members: Vec<_> = workflow
        .fields
        .iter()
        .filter(|field| field.member)
        .map(|field| {
            let field_ident = &field.ident;
            let field_name = syn::ext::IdentExt::unraw(field_ident).to_string();
            let span = syn::spanned::Spanned::span(&field.ty);
            quote::quote_spanned! {span=>
                #private::attach_member(&mut self.#field_ident, context, #field_name);
            }
        })
        .collect();
    let unused_context = members.is_empty().then(|| quote!(let _ = context;));
    // Spanned on `state = T`, where a private state type behind a public workflow is
    // reported (E0446, "private type in public interface").
    let state_span = match &workflow.state {
        Some(state) => syn::spanned::Spanned::span(state),
        None => proc_macro2::Span::call_site(),
    };
    let state_item = quote::quote_spanned!(state_span=> type State = #state;);
    quote! {
        #[automatically_derived]
        impl #private::Workflow for #ident {
            #state_item
            const TYPE_NAME: &'static #private::str = #type_ident;
            const DESCRIPTION: #private::Option<&'static #private::str> = #description;

            fn __buddy_core(&self) -> &#private::WorkflowCore<Self::State> {
                &self.__buddy
            }

            fn __buddy_core_mut(&mut self) -> &mut #private::WorkflowCore<Self::State> {
                &mut self.__buddy
            }

            fn __buddy_attach_members(&mut self, context: #context) {
                #unused_context
                #(#members)*
            }
        }

        #[automatically_derived]
        impl #private::Member for #ident {
            fn attach(&mut self, context: #context) {
                self.__buddy.attach(context);
            }
        }
    }
}

fn default_value(workflow: &WorkflowStruct, field: &Field) -> Option<TokenStream> {
    let private = workflow.runtime.private();
    match &field.default {
        Some(DefaultArg::Trait) => Some(quote!(#private::Default::default())),
        Some(DefaultArg::Expr(expr)) => Some(quote!(#expr)),
        None => None,
    }
}

/// `Type::builder()`, the builder struct with a setter per field, its `build()`, and the
/// workflow settings' setters through `impl WorkflowBuilder` (declared once in the runtime).
fn builder(workflow: &WorkflowStruct) -> TokenStream {
    let private = workflow.runtime.private();
    let ident = &workflow.item.ident;
    let vis = &workflow.item.vis;
    let builder = format_ident!("{}Builder", ident);
    let name = type_name(workflow);
    let description = description(workflow);
    let builder_doc = format!(
        " Builder of [`{ident}`]: its fields, and the workflow settings through [`WorkflowBuilder`]({}). Created by [`{ident}::builder`].",
        workflow.runtime.doc_link("WorkflowBuilder"),
    );
    let fields = workflow.fields.iter().map(|field| {
        let field_ident = &field.ident;
        let ty = &field.ty;
        quote!(#field_ident: #private::Option<#ty>)
    });
    // A reserved field name is an error already; its setter would add a second one.
    let field_setters = workflow
        .fields
        .iter()
        .filter(|field| !field.reserved())
        .map(|field| {
            let field_ident = &field.ident;
            let ty = &field.ty;
            let doc = format!(" Sets the field `{field_ident}`.");
            quote! {
                #[doc = #doc]
                pub fn #field_ident(mut self, value: impl #private::Into<#ty>) -> Self {
                    self.#field_ident = #private::Some(#private::Into::into(value));
                    self
                }
            }
        });
    let field_builds = workflow.fields.iter().map(|field| {
        let field_ident = &field.ident;
        let field_name = field_ident.to_string();
        let type_ident = ident.to_string();
        let missing = match default_value(workflow, field) {
            Some(value) => value,
            None => quote! {
                return #private::Err(#private::Error::MissingField {
                    type_name: #type_ident,
                    field: #field_name,
                })
            },
        };
        quote! {
            #field_ident: match self.#field_ident {
                #private::Some(value) => value,
                #private::None => #missing,
            }
        }
    });
    let (state_field, state_setter, state_apply, core_binding) = match &workflow.state {
        Some(state) => (
            quote!(__buddy_state: #private::Option<#state>,),
            quote! {
                /// Sets the initial session state (typed).
                pub fn state(mut self, state: #state) -> Self {
                    self.__buddy_state = #private::Some(state);
                    self
                }
            },
            quote! {
                if let #private::Some(state) = self.__buddy_state {
                    __buddy.set_initial_state(#private::Typed(state))?;
                }
            },
            quote!(let mut __buddy),
        ),
        None => (quote!(), quote!(), quote!(), quote!(let __buddy)),
    };
    quote! {
        impl #ident {
            /// Starts building this workflow: set fields and workflow settings, then `build()`.
            #vis fn builder() -> #builder {
                #private::Default::default()
            }
        }

        #[doc = #builder_doc]
        #[must_use]
        #[derive(#private::Default)]
        #vis struct #builder {
            #(#fields,)*
            #state_field
            __buddy: #private::WorkflowSettings,
        }

        impl #builder {
            #(#field_setters)*
            #state_setter

            /// Builds the workflow; fails if a field without default was not set, or if
            /// the session state or extra data is not a JSON object.
            pub fn build(self) -> #private::Result<#ident, #private::Error> {
                #core_binding = #private::WorkflowCore::from_settings(self.__buddy, #name, #description)?;
                #state_apply
                #private::Ok(#ident {
                    #(#field_builds,)*
                    __buddy,
                })
            }
        }

        #[automatically_derived]
        impl #private::WorkflowBuilder for #builder {
            fn __buddy_settings(&mut self) -> &mut #private::WorkflowSettings {
                &mut self.__buddy
            }
        }
    }
}

fn default_impl(workflow: &WorkflowStruct) -> TokenStream {
    if !workflow.all_defaults() {
        return quote!();
    }
    let private = workflow.runtime.private();
    let ident = &workflow.item.ident;
    let name = type_name(workflow);
    let description = description(workflow);
    let fields = workflow.fields.iter().map(|field| {
        let field_ident = &field.ident;
        let value = default_value(workflow, field);
        quote!(#field_ident: #value)
    });
    quote! {
        #[automatically_derived]
        impl #private::Default for #ident {
            fn default() -> Self {
                #ident {
                    #(#fields,)*
                    __buddy: #private::WorkflowCore::with_defaults(#name, #description),
                }
            }
        }
    }
}
