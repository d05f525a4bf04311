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

/// `Ok`, or why `topic` cannot be a topic's name: a name (as above) that also has no white
/// space and no empty `/` segment, so `/topic/news` given where `news` was meant, or a name
/// with a stray space, is refused instead of creating a topic nobody subscribes to.
pub fn check_topic(topic: &str) -> Result<(), String> {
    check("topic", topic)?;
    if topic.chars().any(char::is_whitespace) {
        return Err(format!("invalid topic name {topic:?}: no white space"));
    }
    if topic.starts_with('/') || topic.ends_with('/') || topic.contains("//") {
        let hint = match topic.strip_prefix("/topic/") {
            Some(name) => format!(": give the name alone, {name:?}"),
            None => String::new(),
        };
        return Err(format!(
            "invalid topic name {topic:?}: no leading, trailing or doubled '/'{hint}"
        ));
    }
    Ok(())
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
        assert!(super::check_topic("news.eu/1:x").is_ok());
        for bad in ["a b", "/topic/news", "news/", "a//b", "tab\tx"] {
            assert!(super::check_topic(bad).is_err(), "{bad:?}");
        }
        assert!(
            super::check_topic("/topic/news")
                .unwrap_err()
                .contains("\"news\"")
        );
        assert!(super::valid(&"x".repeat(super::MAX)));
        assert!(!super::valid(&"x".repeat(super::MAX + 1)));
    }
}
