//! What every connection reads and never writes: the configuration and the keys, with the
//! configured projects' names interned so a million sessions share them.

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::Auth;
use crate::config::Config;

/// The configuration and keys in force; shards swap it whole on reload.
pub struct Context {
    /// The merged configuration.
    pub cfg: Config,
    /// The keys built from it.
    pub auth: Auth,
    projects: HashMap<String, Arc<str>>,
}

impl Context {
    /// Wraps a configuration and its keys, interning the configured project names.
    pub fn new(cfg: Config, auth: Auth) -> Context {
        let projects = cfg
            .projects
            .keys()
            .map(String::as_str)
            .chain(["default"])
            .map(|p| (p.to_string(), Arc::from(p)))
            .collect();
        Context {
            cfg,
            auth,
            projects,
        }
    }

    /// A project name, shared if it is a configured one.
    pub fn project(&self, name: &str) -> Arc<str> {
        self.projects
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.into())
    }
}
