//! The configuration's parsing, merging, validation and printing.

use super::*;

#[test]
fn file_then_overrides() {
    let dir = std::env::temp_dir().join(format!("ringcast-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("c.toml");
    std::fs::write(
        &f,
        "[server]\nlisten = \"127.0.0.1:9000\"\nshards = 3\n[projects.demo]\njwt_alg = \"HS256\"\njwt_secret = \"s\"\n",
    )
    .unwrap();
    let c = Config::load(Some(&f), &Overrides::default()).unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:9000");
    assert_eq!(c.server.shards, 3);
    assert!(c.auth.enabled, "a config file keeps auth on by default");
    let o = Overrides {
        shards: Some(5),
        no_auth: true,
        ..Default::default()
    };
    let c = Config::load(Some(&f), &o).unwrap();
    assert_eq!(c.server.shards, 5);
    assert!(!c.auth.enabled);
    assert!(c.to_toml().contains("[projects.demo]"));
    let shown = c.to_toml();
    assert!(
        shown.contains(MASK) && !shown.contains("jwt_secret = \"s\""),
        "{shown}"
    );
    std::fs::write(&f, "[server]\nlisten = 1\n").unwrap();
    assert!(Config::load(Some(&f), &Overrides::default()).is_err());
    std::fs::write(&f, "[server]\nlistn = \"x\"\n").unwrap();
    assert!(
        Config::load(Some(&f), &Overrides::default())
            .unwrap_err()
            .to_string()
            .contains("listn")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn printed_urls_hide_their_password() {
    assert_eq!(
        mask_password("redis://u:p@h:1/0"),
        format!("redis://u:{MASK}@h:1/0")
    );
    assert_eq!(mask_password("redis://:p@h"), format!("redis://:{MASK}@h"));
    assert_eq!(mask_password("redis://h:1/0"), "redis://h:1/0");
}

#[test]
fn embedded_default_has_auth_off() {
    let c = Config::load(None, &Overrides::default()).unwrap();
    assert!(!c.auth.enabled);
    assert_eq!(c.server.listen, "127.0.0.1:8080");
}

#[test]
fn text_parses_without_a_file_and_key_paths_follow_its_folder() {
    let text = "[projects.p]\njwt_alg = \"RS256\"\njwt_public_key = \"keys/p.pem\"\n[tls]\ncert = \"/abs/c.pem\"\nkey = \"k.pem\"\n";
    let c = Config::from_toml(text, Path::new("/etc/ringcast/ringcast.toml")).unwrap();
    let p = &c.projects["p"];
    assert_eq!(
        p.jwt_public_key.as_deref(),
        Some(Path::new("/etc/ringcast/keys/p.pem"))
    );
    assert_eq!(c.tls.cert.as_deref(), Some(Path::new("/abs/c.pem")));
    assert_eq!(c.tls.key.as_deref(), Some(Path::new("/etc/ringcast/k.pem")));
    let e = Config::from_toml("[server]\nnope = 1\n", Path::new("x.toml")).unwrap_err();
    assert!(
        e.to_string().contains("x.toml") && e.to_string().contains("nope"),
        "{e}"
    );
}
