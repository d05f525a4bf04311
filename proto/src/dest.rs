//! Destinations: what a publish is addressed to and a subscription listens to, inside a
//! project. One parser for what clients, the admin API and other nodes write
//! (`/topic/NAME`, `/user/queue/NAME`), and the index key the hub and the cluster use.

/// What a destination string names, before it is bound to a project (and a user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written<'a> {
    /// `/topic/NAME`: a broadcast.
    Topic(&'a str),
    /// `/user/queue/NAME` (or `/queue/NAME` where `short_queue` allows it): a user's queue.
    UserQueue(&'a str),
}

impl<'a> Written<'a> {
    /// Splits `written` into its kind and name; `None` if it is neither form. The name is
    /// not checked here (`Dest::topic` / `Dest::user_queue` do that).
    pub fn parse(written: &'a str, short_queue: bool) -> Option<Written<'a>> {
        if let Some(name) = written.strip_prefix("/topic/") {
            return Some(Written::Topic(name));
        }
        written
            .strip_prefix("/user/queue/")
            .or_else(|| written.strip_prefix("/queue/").filter(|_| short_queue))
            .map(Written::UserQueue)
    }
}

/// A destination inside a project. Topics and user queues are separate namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dest {
    /// `/topic/NAME` in a project: every subscriber.
    Topic {
        /// The project (tenant).
        project: String,
        /// The topic's name.
        topic: String,
    },
    /// `/user/queue/NAME` of one user: every session of that user subscribed to it.
    User {
        /// The project (tenant).
        project: String,
        /// The user whose sessions get it.
        user: String,
        /// The queue's name.
        queue: String,
    },
}

impl Dest {
    /// The project (tenant) it belongs to.
    pub fn project(&self) -> &str {
        match self {
            Dest::Topic { project, .. } | Dest::User { project, .. } => project,
        }
    }

    /// The index key: the namespaces cannot collide because of the leading tag and the NULs,
    /// which no project, topic or user name may contain.
    pub fn key(&self) -> String {
        let mut k = String::new();
        self.write_key(&mut k);
        k
    }

    /// Writes the index key into `out` (cleared first): lookups reuse one buffer instead of
    /// allocating a key per publish.
    pub fn write_key(&self, out: &mut String) {
        out.clear();
        let parts: &[&str] = match self {
            Dest::Topic { project, topic } => &["t", project, topic],
            Dest::User {
                project,
                user,
                queue,
            } => &["u", project, user, queue],
        };
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                out.push('\0');
            }
            out.push_str(p);
        }
    }

    /// The destination of an index key (`None` if `key` is not one, or names a destination
    /// no client could have: `check_name` holds for every name).
    pub fn from_key(key: &str) -> Option<Dest> {
        let parts: Vec<&str> = key.split('\0').collect();
        if !parts[1..].iter().all(|n| crate::names::valid(n)) {
            return None;
        }
        match parts.as_slice() {
            ["t", project, topic] => Some(Dest::Topic {
                project: (*project).into(),
                topic: (*topic).into(),
            }),
            ["u", project, user, queue] => Some(Dest::User {
                project: (*project).into(),
                user: (*user).into(),
                queue: (*queue).into(),
            }),
            _ => None,
        }
    }
}

impl Dest {
    /// `/topic/{topic}` of `project`, names checked.
    pub fn topic(project: &str, topic: &str) -> Result<Dest, String> {
        crate::names::check("project", project)?;
        crate::names::check_topic(topic)?;
        Ok(Dest::Topic {
            project: project.into(),
            topic: topic.into(),
        })
    }

    /// `/user/queue/{queue}` of `user` in `project`, names checked.
    pub fn user_queue(project: &str, user: &str, queue: &str) -> Result<Dest, String> {
        crate::names::check("project", project)?;
        crate::names::check("user", user)?;
        crate::names::check("queue", queue)?;
        Ok(Dest::User {
            project: project.into(),
            user: user.into(),
            queue: queue.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(p: &str, t: &str) -> Dest {
        Dest::topic(p, t).unwrap()
    }

    #[test]
    fn keys_name_their_destination() {
        let u = Dest::User {
            project: "p:1".into(),
            user: "al ice".into(),
            queue: "q".into(),
        };
        assert_eq!(Dest::from_key(&u.key()), Some(u));
        let t = topic("p", "a:b");
        assert_eq!(Dest::from_key(&t.key()), Some(t));
        for bad in [
            "",
            "t",
            "t\0p",
            "x\0p\0t",
            "t\0\0t",
            "t\0p\0t\0extra",
            "u\0p\0u",
        ] {
            assert_eq!(Dest::from_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn written_forms() {
        assert_eq!(
            Written::parse("/topic/a/b", false),
            Some(Written::Topic("a/b"))
        );
        assert_eq!(
            Written::parse("/user/queue/q", false),
            Some(Written::UserQueue("q"))
        );
        assert_eq!(Written::parse("/queue/q", false), None);
        assert_eq!(
            Written::parse("/queue/q", true),
            Some(Written::UserQueue("q"))
        );
        assert_eq!(Written::parse("/topics/x", true), None);
        assert!(Dest::topic("p", "").is_err() && Dest::user_queue("p", "a\nb", "q").is_err());
    }
}
