//! What a name may be: projects, topics, queues, users and STOMP subscription ids. Every one of
//! them ends up as a hub key, a STOMP header or a log field, so none may carry a control
//! character (a NUL would break a key, a line break would forge a frame), and all are bounded.

/// Longest name accepted, in bytes.
pub const MAX: usize = 256;

/// The rule, as error messages state it.
pub const RULE: &str = "1–256 bytes, no control characters";

/// Whether `name` may be used as a name.
pub fn valid(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX && !name.chars().any(char::is_control)
}

/// `Ok`, or the reason `name` (a `what` name: topic, queue, ...) is refused.
pub fn check(what: &str, name: &str) -> Result<(), String> {
    if valid(name) {
        Ok(())
    } else {
        Err(format!("invalid {what} name: {RULE}"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_and_lengths() {
        assert!(super::valid("alice"));
        assert!(super::valid("news.eu/1:x"));
        for bad in ["", "a\0b", "a\nb", "a\rb", "\u{7f}", "\u{85}"] {
            assert!(!super::valid(bad), "{bad:?}");
        }
        assert!(super::valid(&"x".repeat(super::MAX)));
        assert!(!super::valid(&"x".repeat(super::MAX + 1)));
    }
}
