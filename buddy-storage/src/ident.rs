//! Table and schema names: validated once at construction, quoted everywhere after.

use buddy_core::StorageError;

/// The longest identifier accepted (Postgres truncates names beyond 63 bytes).
pub(crate) const MAX_IDENT: usize = 63;

/// Checks that `name` matches `^[A-Za-z_][A-Za-z0-9_]{0,62}$`, so it can be spliced into SQL
/// between double quotes without any escaping.
pub(crate) fn validate(name: &str) -> Result<(), StorageError> {
    let invalid = |reason| {
        Err(StorageError::InvalidTableName {
            name: name.to_owned(),
            reason,
        })
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return invalid("the name is empty"),
        Some(first) if !(first.is_ascii_alphabetic() || first == '_') => {
            return invalid("the name must start with an ASCII letter or `_`");
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return invalid("the name may only contain ASCII letters, digits and `_`");
    }
    if name.len() > MAX_IDENT {
        return invalid("the name is longer than 63 characters");
    }
    Ok(())
}

/// Checks a table name and that its runs table `{name}_runs` is a valid identifier too.
pub(crate) fn validate_table(name: &str) -> Result<(), StorageError> {
    validate(name)?;
    if runs_table(name).len() > MAX_IDENT {
        return Err(StorageError::InvalidTableName {
            name: name.to_owned(),
            reason: "the name is too long for its runs table `{name}_runs` to fit in 63 characters",
        });
    }
    Ok(())
}

/// The name of the runs table of `table`.
pub(crate) fn runs_table(table: &str) -> String {
    format!("{table}_runs")
}

/// `"name"`: a validated identifier between double quotes (keeps its case).
pub(crate) fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// An index name derived from `table` and `suffix` that fits in 63 characters; long table
/// names are shortened and disambiguated with a hash of the full name.
pub(crate) fn index_name(table: &str, suffix: &str) -> String {
    let name = format!("{table}_{suffix}");
    if name.len() <= MAX_IDENT {
        return name;
    }
    // FNV-1a: stable across Rust versions and processes, unlike `DefaultHasher`.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in table.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    let keep = MAX_IDENT - suffix.len() - 10;
    // Identifiers are ASCII, so any byte index is a char boundary.
    format!("{}_{hash:08x}_{suffix}", &table[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_identifiers() {
        for name in ["workflows", "_t", "Agent_Sessions2", &"a".repeat(58)] {
            assert!(validate_table(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for name in [
            "",
            "1abc",
            "a-b",
            "a b",
            "t\"; DROP TABLE x; --",
            "tëst",
            &"a".repeat(64),
            &"a".repeat(59), // `{name}_runs` would be 64 characters
        ] {
            let error = validate_table(name).err();
            assert!(
                matches!(error, Some(StorageError::InvalidTableName { .. })),
                "{name}"
            );
        }
    }

    #[test]
    fn index_names_fit() {
        let long = "t".repeat(58);
        let name = index_name(&long, "updated_idx");
        assert!(name.len() <= MAX_IDENT);
        assert_ne!(name, index_name(&"u".repeat(58), "updated_idx"));
        assert_eq!(index_name("wf", "updated_idx"), "wf_updated_idx");
    }
}
