//! Walking an error's source chain: the proxy tells a client's broken body from an upstream's
//! failure this way, the webhook receiver an oversized delivery from a broken one.

use std::error::Error;

/// The first error of type `E` in `error`'s source chain (itself included).
pub fn find<'a, E: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn finds_itself_or_a_cause_or_nothing() {
        let e = Outer(std::io::Error::other("inner"));
        assert!(find::<Outer>(&e).is_some());
        assert_eq!(find::<std::io::Error>(&e).map(ToString::to_string).as_deref(), Some("inner"));
        assert!(find::<std::fmt::Error>(&e).is_none());
    }
}
