//! `${VAR}` and `${VAR:-default}` substitution in configuration strings. `$${` is a literal `${`.

/// Why a string could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubstError {
    /// `${NAME}` of an unset variable without a default.
    Unset(String),
    /// `${` without its `}`.
    Unterminated,
    /// `${…}` holding something that is not a variable name.
    BadName(String),
}

impl std::fmt::Display for SubstError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubstError::Unset(name) => write!(
                f,
                "environment variable `{name}` is not set (set it, or give a default with `${{{name}:-default}}`)"
            ),
            SubstError::Unterminated => f.write_str("`${` without a closing `}` (write `$${` for a literal `${`)"),
            SubstError::BadName(name) => {
                write!(f, "`${{{name}}}` is not a variable reference: names are letters, digits and `_`")
            }
        }
    }
}

/// Substitutes every reference in `input`, looking variables up with `env`.
pub fn substitute(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, SubstError> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or(SubstError::Unterminated)?;
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(SubstError::BadName(inner.to_owned()));
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(SubstError::Unset(name.to_owned())),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("k-123".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn references_defaults_and_escapes() {
        let s = |i: &str| substitute(i, &env);
        assert_eq!(s("plain"), Ok("plain".into()));
        assert_eq!(s("${KEY}"), Ok("k-123".into()));
        assert_eq!(s("a-${KEY}-b"), Ok("a-k-123-b".into()));
        assert_eq!(s("${NOPE:-60s}"), Ok("60s".into()));
        assert_eq!(s("${EMPTY:-fallback}"), Ok("fallback".into()));
        assert_eq!(s("${NOPE:-}"), Ok("".into()));
        assert_eq!(s("$${KEY}"), Ok("${KEY}".into()));
        assert_eq!(s("cost: $5"), Ok("cost: $5".into()));
        assert_eq!(s("${NOPE}"), Err(SubstError::Unset("NOPE".into())));
        assert_eq!(s("${KEY"), Err(SubstError::Unterminated));
        assert_eq!(s("${1A}"), Err(SubstError::BadName("1A".into())));
    }
}
