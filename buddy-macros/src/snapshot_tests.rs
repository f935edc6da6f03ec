//! Expansion snapshots: `tests/expand/*.rs` expanded and pretty-printed must equal the
//! committed `*.expanded.rs` (pin-project's macrotest idea, without the `cargo expand`
//! dependency). `BUDDY_BLESS=1 cargo test -p buddy-macros` rewrites the snapshots.

use std::path::{Path, PathBuf};

use proc_macro2::TokenStream;
use quote::ToTokens;

/// Expands every `#[workflow]` item of a file with the macro's own entry point; other items
/// are kept as they are.
fn expand_file(source: &str) -> Result<String, syn::Error> {
    let file = syn::parse_file(source)?;
    let mut items = Vec::new();
    for mut item in file.items {
        let Some(attrs) = item_attrs(&mut item) else {
            items.push(item);
            continue;
        };
        let Some(index) = attrs
            .iter()
            .position(|attr| attr.path().is_ident("workflow"))
        else {
            items.push(item);
            continue;
        };
        let attr = attrs.remove(index);
        let args = match attr.meta {
            syn::Meta::List(list) => list.tokens,
            _ => TokenStream::new(),
        };
        let expanded = crate::workflow::expand(args, item.into_token_stream());
        items.extend(syn::parse2::<syn::File>(expanded)?.items);
    }
    Ok(prettyplease::unparse(&syn::File {
        shebang: None,
        attrs: file.attrs,
        items,
    }))
}

fn item_attrs(item: &mut syn::Item) -> Option<&mut Vec<syn::Attribute>> {
    match item {
        syn::Item::Struct(item) => Some(&mut item.attrs),
        syn::Item::Impl(item) => Some(&mut item.attrs),
        _ => None,
    }
}

fn expand_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/expand")
}

fn check_snapshot(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let input = expand_dir().join(format!("{name}.rs"));
    let snapshot = expand_dir().join(format!("{name}.expanded.rs"));
    let expanded = expand_file(&std::fs::read_to_string(&input)?)?;
    if std::env::var_os("BUDDY_BLESS").is_some() {
        std::fs::write(&snapshot, &expanded)?;
        return Ok(());
    }
    let committed = std::fs::read_to_string(&snapshot).unwrap_or_default();
    if committed != expanded {
        return Err(format!(
            "the expansion of {} differs from {}; review it, then run `BUDDY_BLESS=1 cargo test -p buddy-macros` to update the snapshot\n\n{expanded}",
            input.display(),
            snapshot.display(),
        )
        .into());
    }
    Ok(())
}

#[test]
fn article_workflow() -> Result<(), Box<dyn std::error::Error>> {
    check_snapshot("article_workflow")
}

/// With `crate = path`, nothing in the expansion names `::buddy`.
#[test]
fn crate_path_replaces_buddy() -> Result<(), Box<dyn std::error::Error>> {
    let source = r#"
        #[workflow(crate = renamed, description = "d")]
        pub struct Renamed {
            #[member(default = Agent::new("a"))]
            agent: Agent,
        }

        #[workflow(crate = renamed)]
        impl Renamed {
            async fn run(&mut self, topic: Option<String>, #[arg(default = 2)] times: u32) -> RunResponse {
                RunResponse::from_text(topic.unwrap_or_default().repeat(times as usize))
            }
        }
    "#;
    let expanded = expand_file(source)?;
    assert!(expanded.contains("renamed::__private"), "{expanded}");
    assert!(!expanded.contains("buddy::"), "{expanded}");
    Ok(())
}
