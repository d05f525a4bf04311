//! HTTP/1.1 message framing shared by every listener that reads requests (the WebSocket and
//! SockJS listener, the admin socket, the network API): how long a request's body is. Strict,
//! because a length that two parsers read differently is how requests get smuggled
//! (RFC 9112 §6.3): digits only, every `Content-Length` equal, and never both a length and
//! `Transfer-Encoding`.

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `Content-Length` bytes (0 without the header).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The body framing `headers` declare, or why it is refused (status, reason): 400 for a
/// malformed, conflicting or ambiguous declaration, 501 for a transfer coding other than
/// `chunked`. Every refusal must also close the connection.
pub fn body(headers: &[httparse::Header<'_>]) -> Result<Body, (u16, String)> {
    let mut len = None;
    let mut coding = None;
    for h in headers {
        let v = std::str::from_utf8(h.value).unwrap_or("\u{fffd}").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<usize>().ok())
                .flatten()
                .ok_or_else(|| (400, format!("invalid Content-Length {v:?}: digits only")))?;
            if len.is_some_and(|l| l != n) {
                return Err((400, "conflicting Content-Length headers".into()));
            }
            len = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if coding.is_some() {
                return Err((400, "more than one Transfer-Encoding header".into()));
            }
            if !v.eq_ignore_ascii_case("chunked") {
                return Err((
                    501,
                    format!(
                        "Transfer-Encoding {v:?} is not supported: use chunked or Content-Length"
                    ),
                ));
            }
            coding = Some(());
        }
    }
    match (len, coding) {
        (Some(_), Some(())) => Err((
            400,
            "both Content-Length and Transfer-Encoding: send one of them".into(),
        )),
        (_, Some(())) => Ok(Body::Chunked),
        (n, None) => Ok(Body::Length(n.unwrap_or(0))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(raw: &[(&str, &str)]) -> Result<Body, (u16, String)> {
        let hs: Vec<httparse::Header> = raw
            .iter()
            .map(|(n, v)| httparse::Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect();
        body(&hs)
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert_eq!(of(&[]), Ok(Body::Length(0)));
        assert_eq!(of(&[("Content-Length", "5")]), Ok(Body::Length(5)));
        assert_eq!(
            of(&[("content-length", "5"), ("Content-Length", "5")]),
            Ok(Body::Length(5))
        );
        assert_eq!(of(&[("Transfer-Encoding", "Chunked")]), Ok(Body::Chunked));
        for bad in [
            vec![("Content-Length", "5"), ("Content-Length", "6")],
            vec![("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
            vec![
                ("Transfer-Encoding", "chunked"),
                ("Transfer-Encoding", "chunked"),
            ],
            vec![("Content-Length", "+5")],
            vec![("Content-Length", "5, 5")],
            vec![("Content-Length", "")],
            vec![("Content-Length", "99999999999999999999999")],
        ] {
            assert_eq!(of(&bad).map_err(|e| e.0), Err(400), "{bad:?}");
        }
        assert_eq!(
            of(&[("Transfer-Encoding", "gzip, chunked")]).map_err(|e| e.0),
            Err(501)
        );
    }
}
