//! The plain-HTTP answers of a SockJS service around its sessions: the head every answer
//! shares (CORS for the caller's origin, `JSESSIONID` where the service asks for sticky load
//! balancing), `/info`, CORS preflights, the greeting, and `iframe.html` with its caching.
//! Their exact headers are what the `sockjs-protocol` suite checks.

use std::hash::{BuildHasher, Hasher};

/// `Expires` of what may be cached for good (CORS preflights, `iframe.html`): the far-future
/// date HTTP caches have long used for "never changes" (nginx's `expires max`), which keeps
/// this code free of a clock.
pub const FAR_EXPIRES: &str = "Thu, 31 Dec 2037 23:55:55 GMT";

const CACHE_FOR_A_YEAR: &str = "Cache-Control: public, max-age=31536000\r\n";

const NO_CACHE: &str =
    "Cache-Control: no-store, no-cache, no-transform, must-revalidate, max-age=0\r\n";

/// The `JSESSIONID` value a session answer sets, when the service asks for one
/// (`cookie_needed`): the client's own if it sent one, else `dummy` (what the protocol's
/// reference servers set: the balancer only needs to see the cookie).
pub fn jsessionid(cookie_header: Option<&str>, needed: bool) -> Option<&str> {
    if !needed {
        return None;
    }
    let sent = cookie_header
        .into_iter()
        .flat_map(|c| c.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix("JSESSIONID="))
        .find(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic() && b != b';'));
    Some(sent.unwrap_or("dummy"))
}

/// The head every SockJS answer starts with: its status line, CORS (a request's `Origin` is
/// echoed with credentials allowed, `null` included, which is what a page loaded from a file
/// sends; without one, `*` and no credentials), and `set_cookie` as `JSESSIONID`.
pub fn head(status: u16, origin: Option<&str>, set_cookie: Option<&str>) -> String {
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\n",
        crate::ws::handshake::status_text(status)
    );
    match origin.filter(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_graphic())) {
        Some(o) => h.push_str(&format!(
            "Access-Control-Allow-Origin: {o}\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
        )),
        None => h.push_str("Access-Control-Allow-Origin: *\r\n"),
    }
    if let Some(id) = set_cookie {
        h.push_str(&format!("Set-Cookie: JSESSIONID={id}; path=/\r\n"));
    }
    h
}

fn connection(keep_alive: bool) -> &'static str {
    if keep_alive { "keep-alive" } else { "close" }
}

/// A whole answer that must not be cached: `head` plus a body of `content_type`.
pub fn answer(
    status: u16,
    origin: Option<&str>,
    set_cookie: Option<&str>,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = head(status, origin, set_cookie);
    if !content_type.is_empty() {
        out.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    out.push_str(NO_CACHE);
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        connection(keep_alive)
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// `GET {prefix}/info`: whether WebSocket is on, whether a cookie is needed, and entropy for
/// the client (a fresh random number each time). It sets no cookie itself.
pub fn info(
    origin: Option<&str>,
    cookie_needed: bool,
    websocket: bool,
    keep_alive: bool,
) -> Vec<u8> {
    let entropy = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u32;
    let body = format!(
        r#"{{"websocket":{websocket},"cookie_needed":{cookie_needed},"origins":["*:*"],"entropy":{entropy}}}"#
    );
    answer(
        200,
        origin,
        None,
        "application/json; charset=UTF-8",
        body.as_bytes(),
        keep_alive,
    )
}

/// A CORS preflight (`OPTIONS`): 204, cacheable for a year, allowing `methods` and the headers
/// the browser asked for (none when it asked for none).
pub fn preflight(
    origin: Option<&str>,
    asked: Option<&str>,
    methods: &str,
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = head(204, origin, None);
    out.push_str(CACHE_FOR_A_YEAR);
    out.push_str(&format!(
        "Expires: {FAR_EXPIRES}\r\nAccess-Control-Max-Age: 31536000\r\nAccess-Control-Allow-Methods: {methods}\r\n"
    ));
    if let Some(h) = asked.filter(|h| !h.trim().is_empty())
        && h.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        out.push_str(&format!("Access-Control-Allow-Headers: {h}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: 0\r\nConnection: {}\r\n\r\n",
        connection(keep_alive)
    ));
    out.into_bytes()
}

/// `{prefix}` and `{prefix}/`.
pub fn greeting(keep_alive: bool) -> Vec<u8> {
    answer(
        200,
        None,
        None,
        "text/plain; charset=UTF-8",
        b"Welcome to SockJS!\n",
        keep_alive,
    )
}

/// `{prefix}/iframe.html`: the page iframe-based transports load, which loads `sockjs-client`
/// from `client_url` and hands over to it.
pub struct Iframe {
    body: String,
    etag: String,
}

impl Iframe {
    /// The page for `client_url` (HTML-escaped into its one attribute).
    pub fn new(client_url: &str) -> Iframe {
        let mut url = String::with_capacity(client_url.len());
        for c in client_url.chars() {
            match c {
                '&' => url.push_str("&amp;"),
                '"' => url.push_str("&quot;"),
                '<' => url.push_str("&lt;"),
                '>' => url.push_str("&gt;"),
                c => url.push(c),
            }
        }
        let body = format!(
            "<!DOCTYPE html>\n<html>\n<head>\n  <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\" />\n  <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n  <script src=\"{url}\"></script>\n  <script>\n    document.domain = document.domain;\n    SockJS.bootstrap_iframe();\n  </script>\n</head>\n<body>\n  <h2>Don't panic!</h2>\n  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>\n</body>\n</html>"
        );
        // SipHash with fixed keys: the same page has the same tag in every process.
        let mut h = std::hash::DefaultHasher::new();
        h.write(body.as_bytes());
        let etag = format!("\"{:016x}\"", h.finish());
        Iframe { body, etag }
    }

    /// The answer to a GET: the page, cacheable for a year, or 304 when the client's
    /// `If-None-Match` already names this version.
    pub fn answer(&self, if_none_match: Option<&str>, keep_alive: bool) -> Vec<u8> {
        let fresh = if_none_match.is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == self.etag || t.trim() == "*")
        });
        let mut out = format!(
            "HTTP/1.1 {}\r\n{CACHE_FOR_A_YEAR}Expires: {FAR_EXPIRES}\r\nETag: {}\r\n",
            if fresh { "304 Not Modified" } else { "200 OK" },
            self.etag
        );
        if fresh {
            out.push_str(&format!("Connection: {}\r\n\r\n", connection(keep_alive)));
            return out.into_bytes();
        }
        out.push_str(&format!(
            "Content-Type: text/html; charset=UTF-8\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{}",
            self.body.len(),
            connection(keep_alive),
            self.body
        ));
        out.into_bytes()
    }
}

/// The iframe page's answer for `client_url` (see `Iframe`).
pub fn iframe(client_url: &str, if_none_match: Option<&str>, keep_alive: bool) -> Vec<u8> {
    Iframe::new(client_url).answer(if_none_match, keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers() {
        let info = String::from_utf8(info(Some("http://a"), false, true, false)).unwrap();
        assert!(info.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(info.contains("Access-Control-Allow-Origin: http://a\r\n"));
        assert!(info.contains("Access-Control-Allow-Credentials: true\r\n"));
        assert!(info.contains(r#""websocket":true,"cookie_needed":false,"origins":["*:*"]"#));
        assert!(!info.contains("Set-Cookie"));
        let pre = String::from_utf8(preflight(None, Some("x-a"), "OPTIONS, GET", true)).unwrap();
        assert!(pre.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(pre.contains("Access-Control-Allow-Origin: *\r\n"));
        assert!(!pre.contains("Credentials"));
        assert!(pre.contains("Access-Control-Allow-Headers: x-a\r\n"));
        assert!(pre.contains(&format!("Expires: {FAR_EXPIRES}\r\n")));
        let null = String::from_utf8(preflight(Some("null"), Some(""), "GET", true)).unwrap();
        assert!(null.contains("Access-Control-Allow-Origin: null\r\n"));
        assert!(!null.contains("Allow-Headers"));
        assert_eq!(jsessionid(Some("a=1; JSESSIONID=xyz"), true), Some("xyz"));
        assert_eq!(jsessionid(None, true), Some("dummy"));
        assert_eq!(jsessionid(Some("JSESSIONID=xyz"), false), None);
        assert!(head(200, None, Some("xyz")).contains("Set-Cookie: JSESSIONID=xyz; path=/\r\n"));
    }

    #[test]
    fn the_iframe_page_is_cacheable_and_escaped() {
        let page = Iframe::new("https://x/s.js?a=1&b=\"2\"");
        let first = String::from_utf8(page.answer(None, true)).unwrap();
        assert!(first.contains("<script src=\"https://x/s.js?a=1&amp;b=&quot;2&quot;\"></script>"));
        let etag = first
            .lines()
            .find_map(|l| l.strip_prefix("ETag: "))
            .unwrap()
            .to_string();
        assert_eq!(Iframe::new("https://x/s.js?a=1&b=\"2\"").etag, etag);
        let again = String::from_utf8(page.answer(Some(&etag), true)).unwrap();
        assert!(again.starts_with("HTTP/1.1 304 Not Modified\r\n"));
        assert!(!again.contains("Content-Type") && again.ends_with("\r\n\r\n"));
    }
}
