//! Bucket, variable and pattern names: what NATS's key-value store
//! accepts, checked before anything is sent.

use super::{other, VarError};

/// Checks a bucket name: 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn check_bucket(b: &str) -> Result<(), VarError> {
    if b.is_empty()
        || b.len() > 64
        || !b
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    {
        return Err(other(format!(
            "the bucket name {b:?} is not usable: give 1 to 64 of A-Z a-z 0-9 _ -"
        )));
    }
    Ok(())
}

/// Checks a variable name: 1 to 255 of `A-Z a-z 0-9 _ - / = .`, not
/// starting or ending with `.` and without `..` (a `.` separates the
/// tokens that a PATTERN's `*` and `>` match).
pub fn check_name(n: &str) -> Result<(), VarError> {
    let ok = !n.is_empty()
        && n.len() <= 255
        && !n.starts_with('.')
        && !n.ends_with('.')
        && !n.contains("..")
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_-/=.".contains(&c));
    if !ok {
        return Err(other(format!(
            "the variable name {n:?} is not usable: give 1 to 255 of A-Z a-z 0-9 _ - / = . (dots between words)"
        )));
    }
    Ok(())
}

/// Checks a PATTERN: a name whose dot-separated words may be `*` (any one
/// word) and whose last word may be `>` (one or more words).
pub fn check_pattern(p: &str) -> Result<(), VarError> {
    let words: Vec<&str> = p.split('.').collect();
    let bad = p.is_empty()
        || words.iter().enumerate().any(|(i, w)| {
            w.is_empty()
                || (*w == ">" && i + 1 != words.len())
                || (*w != "*"
                    && *w != ">"
                    && !w
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"_-/=".contains(&c)))
        });
    if bad {
        return Err(other(format!(
            "the pattern {p:?} is not usable: give dot-separated words, * for any one word, > at the end for the rest (e.g. md.*, risk.>)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_patterns() {
        assert!(check_name("risk.limit").is_ok());
        assert!(check_name("a/b=c_d-e").is_ok());
        for bad in ["", ".a", "a.", "a..b", "a b", "a*", "a>"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name(&"x".repeat(256)).is_err());
        for good in [">", "*", "md.*", "risk.>", "a.*.c"] {
            assert!(check_pattern(good).is_ok(), "{good}");
        }
        for bad in ["", "a.>.b", "a..b", "a b", "a*"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
        assert!(check_bucket("tape").is_ok());
        assert!(check_bucket("a.b").is_err());
        assert!(check_bucket("").is_err());
    }
}
