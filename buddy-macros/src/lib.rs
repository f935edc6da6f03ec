//! Procedural macros for buddy. Not for direct use; depend on `buddy`, which re-exports them
//! with their documentation.

mod tool;

use proc_macro::TokenStream;

/// Turns a struct and its `impl` block into a workflow. Documented on `buddy::workflow`.
#[proc_macro_attribute]
pub fn workflow(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}

/// Turns a function into a tool an agent can call. Documented on `buddy::tool`.
#[proc_macro_attribute]
pub fn tool(args: TokenStream, item: TokenStream) -> TokenStream {
    tool::expand(args.into(), item.into()).into()
}
