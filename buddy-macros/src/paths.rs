//! The one place that builds paths into the runtime.

use proc_macro2::TokenStream;
use quote::quote;

/// The runtime root: `::buddy` unless `#[workflow(crate = path)]` says otherwise.
#[derive(Clone)]
pub(crate) struct Runtime {
    root: TokenStream,
}

impl Runtime {
    pub(crate) fn new(krate: Option<&syn::Path>) -> Self {
        let root = match krate {
            Some(path) => quote!(#path),
            None => quote!(::buddy),
        };
        Runtime { root }
    }

    /// `<root>::__private`, the module generated code names every runtime item through.
    pub(crate) fn private(&self) -> TokenStream {
        let root = &self.root;
        quote!(#root::__private)
    }

    /// The type of the context a workflow hands its members, as generated signatures name
    /// it (the one place that spells it).
    pub(crate) fn member_context(&self) -> TokenStream {
        let private = self.private();
        quote!(&#private::MemberContext)
    }

    /// `<root>::item` as a string for an intra-doc link (no leading `::`, which rustdoc does
    /// not resolve).
    pub(crate) fn doc_link(&self, item: &str) -> String {
        let root = self.root.to_string().replace(' ', "");
        format!("{}::{item}", root.trim_start_matches("::"))
    }

    /// The path of `__private` as a string, for `#[serde(crate = "...")]`.
    pub(crate) fn private_string(&self, item: &str) -> String {
        let private = self.private().to_string().replace(' ', "");
        format!("{private}::{item}")
    }
}
