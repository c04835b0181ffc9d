//! One request's head as the proxy decides on it, borrowed alike from hyper's parsed parts
//! (HTTP/2) and from the HTTP/1 parser's buffer, headers looked up by name without a map.

use std::borrow::Cow;

/// A request head.
#[derive(Debug)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query, without `?`.
    pub query: Option<&'a str>,
    /// The authority of an absolute-form target, or HTTP/2's `:authority`.
    pub authority: Option<&'a str>,
    /// Header fields in order, names as received.
    pub headers: Vec<(&'a str, &'a [u8])>,
}

impl<'a> RequestHead<'a> {
    /// The head of a request hyper parsed.
    pub fn from_parts(parts: &'a http::request::Parts) -> RequestHead<'a> {
        RequestHead {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            authority: parts.uri.authority().map(http::uri::Authority::as_str),
            headers: parts.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect(),
        }
    }

    /// All values of a header, in order.
    pub fn values(&self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }

    /// The first value of a header, when it is text.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The host the request is for: the target's authority, else the Host header; without its
    /// port, lowercase. `None` when it is missing or not a valid host.
    pub fn host(&self) -> Option<String> {
        host_of(self.authority.or_else(|| self.header("host"))?)
    }

    /// The value of a cookie.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.values("cookie").filter_map(|v| std::str::from_utf8(v).ok()).flat_map(|v| v.split(';')).find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
    }

    /// The path and query, as received.
    pub fn path_and_query(&self) -> String {
        match self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.to_owned(),
        }
    }

    /// The query's parameters in order (not percent-decoded, as Gateway API matches them).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| kv.split_once('=').map_or((kv.to_owned(), String::new()), |(k, v)| (k.to_owned(), v.to_owned())))
            .collect()
    }
}

/// A path that cannot be routed.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidPath;

/// The path as routes match it, nginx's way: `%XX` decoded, `//` merged, `.` and `..` segments
/// resolved — so that `/public/../admin` is routed as `/admin`, where the backend will take it.
/// `Err` for a bad escape, a `..` above the root, or a path that is not text once decoded.
pub fn normalized_path(path: &str) -> Result<Cow<'_, str>, InvalidPath> {
    if !path.contains('%') && !path.contains("//") && !path.contains("/.") {
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(InvalidPath)?;
            let value = std::str::from_utf8(hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or(InvalidPath)?;
            decoded.push(value);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(decoded).map_err(|_| InvalidPath)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(InvalidPath)?;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// The host of an authority (`host[:port]`, `[v6]:port`), lowercase; `None` when invalid.
fn host_of(authority: &str) -> Option<String> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
                return None;
            }
            (v6, after.strip_prefix(':').map_or(if after.is_empty() { Some("") } else { None }, Some)?)
        }
        None => authority.split_once(':').unwrap_or((authority, "")),
    };
    let valid_port = port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    let valid_host = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    (valid_port && valid_host).then(|| host.to_ascii_lowercase())
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), never forwarded.
pub const HOP_BY_HOP: [&str; 9] =
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "proxy-authorization", "proxy-authenticate"];

/// Whether a header is hop-by-hop: a fixed one, or named by a `Connection` value in `connection`.
pub fn is_hop_by_hop(name: &str, connection: &[&[u8]]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || connection.iter().flat_map(|v| v.split(|b| *b == b',')).any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(headers: &[(&'a str, &'a str)], authority: Option<&'a str>) -> RequestHead<'a> {
        RequestHead { method: "GET", path: "/", query: None, authority, headers: headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect() }
    }

    #[test]
    fn host_is_the_authority_else_the_host_header_without_port() {
        assert_eq!(head(&[("Host", "Shop.Example.com:8080")], None).host().as_deref(), Some("shop.example.com"));
        assert_eq!(head(&[("Host", "ignored")], Some("target.example")).host().as_deref(), Some("target.example"));
        assert_eq!(head(&[("Host", "[::1]:80")], None).host().as_deref(), Some("::1"));
        assert_eq!(head(&[("Host", "bad host")], None).host(), None);
        assert_eq!(head(&[], None).host(), None);
        assert_eq!(head(&[("Host", "a:b:c")], None).host(), None);
        assert_eq!(head(&[("Host", "a:80x")], None).host(), None);
        assert_eq!(head(&[("Host", "[::1")], None).host(), None);
        assert_eq!(head(&[("Host", "")], None).host(), None);
        assert_eq!(head(&[("Host", "a.b:")], None).host().as_deref(), Some("a.b"));
    }

    #[test]
    fn paths_are_normalized_as_nginx_does() {
        for (path, want) in [
            ("/plain/path", Ok("/plain/path")),
            ("/public/../admin", Ok("/admin")),
            ("/a/./b//c/", Ok("/a/b/c/")),
            ("//a", Ok("/a")),
            ("/a/..", Ok("/")),
            ("/a/b/..", Ok("/a/")),
            ("/%61dmin", Ok("/admin")),
            ("/public%2F..%2Fadmin", Ok("/admin")),
            ("/caf%C3%A9", Ok("/café")),
            ("/..", Err(())),
            ("/a/../..", Err(())),
            ("/bad%zz", Err(())),
            ("/cut%4", Err(())),
            ("/%FF", Err(())),
        ] {
            assert_eq!(normalized_path(path).as_deref().map_err(|_| ()), want, "{path}");
        }
    }

    #[test]
    fn cookies_and_hop_by_hop() {
        let h = head(&[("Cookie", "a=1; route=abc"), ("cookie", "b=2")], None);
        assert_eq!(h.cookie("route"), Some("abc"));
        assert_eq!(h.cookie("b"), Some("2"));
        assert_eq!(h.cookie("c"), None);
        assert!(is_hop_by_hop("Keep-Alive", &[]));
        assert!(is_hop_by_hop("x-secret", &[b"close, X-Secret"]));
        assert!(!is_hop_by_hop("x-other", &[b"close, X-Secret"]));
    }
}
