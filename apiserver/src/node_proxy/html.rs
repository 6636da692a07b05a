//! Links in HTML pages answered through a proxy, rewritten to go through it, as
//! kube-apiserver's proxy transport rewrites them: the URL-valued attributes of the tags that
//! have them (`a href`, `img src`, `form action`, ...), in pages sent plain, gzip- or
//! deflate-encoded. Everything else of the page is left byte for byte as it was.

use std::io::{Read, Write};

/// The attributes of a tag that hold URLs (the HTML 4 and 5 ones Kubernetes lists).
fn url_attributes(tag: &str) -> &'static [&'static str] {
    match tag {
        "a" | "area" | "base" | "link" => &["href"],
        "applet" => &["codebase"],
        "audio" | "embed" | "script" | "source" => &["src"],
        "blockquote" | "del" | "ins" | "q" => &["cite"],
        "body" => &["background"],
        "button" => &["formaction"],
        "command" => &["icon"],
        "form" => &["action"],
        "frame" | "iframe" => &["longdesc", "src"],
        "head" => &["profile"],
        "html" => &["manifest"],
        "img" => &["longdesc", "src", "usemap"],
        "input" => &["src", "usemap", "formaction"],
        "object" => &["classid", "codebase", "data", "usemap"],
        "video" => &["poster", "src"],
        _ => &[],
    }
}

/// Elements whose content is text, not markup, up to their end tag.
const RAW_TEXT: &[&str] = &[
    "script", "style", "textarea", "title", "xmp", "noembed", "noframes",
];

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| from + i)
}

/// Where the end tag `</name` (any case) starts, from `from`.
fn find_end_tag(page: &[u8], from: usize, name: &str) -> Option<usize> {
    let mut i = from;
    while let Some(at) = find(page, i, b"</") {
        let rest = &page[at + 2..];
        if rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name.as_bytes()) {
            return Some(at);
        }
        i = at + 2;
    }
    None
}

/// The page with every URL-valued attribute passed through `rewrite`.
pub fn rewrite(page: &[u8], rewrite: &dyn Fn(&str) -> String) -> Vec<u8> {
    let mut out = Vec::with_capacity(page.len() + 256);
    let mut i = 0;
    while i < page.len() {
        let Some(lt) = find(page, i, b"<") else {
            out.extend_from_slice(&page[i..]);
            break;
        };
        out.extend_from_slice(&page[i..lt]);
        let next = page.get(lt + 1).copied().unwrap_or(0);
        if page[lt..].starts_with(b"<!--") {
            let end = find(page, lt + 4, b"-->").map_or(page.len(), |e| e + 3);
            out.extend_from_slice(&page[lt..end]);
            i = end;
            continue;
        }
        if matches!(next, b'!' | b'?' | b'/') {
            let end = find(page, lt, b">").map_or(page.len(), |e| e + 1);
            out.extend_from_slice(&page[lt..end]);
            i = end;
            continue;
        }
        if !next.is_ascii_alphabetic() {
            out.push(b'<');
            i = lt + 1;
            continue;
        }
        let (end, name) = start_tag(page, lt, &mut out, rewrite);
        i = end;
        if RAW_TEXT.contains(&name.as_str()) {
            let close = find_end_tag(page, i, &name).unwrap_or(page.len());
            out.extend_from_slice(&page[i..close]);
            i = close;
        }
    }
    out
}

/// Copies the start tag at `lt` to `out` with its URL attributes rewritten; where it ends and
/// its (lowercased) name.
fn start_tag(
    page: &[u8],
    lt: usize,
    out: &mut Vec<u8>,
    rewrite: &dyn Fn(&str) -> String,
) -> (usize, String) {
    let mut i = lt + 1;
    while i < page.len() && !page[i].is_ascii_whitespace() && !matches!(page[i], b'>' | b'/') {
        i += 1;
    }
    let name = String::from_utf8_lossy(&page[lt + 1..i]).to_ascii_lowercase();
    let wanted = url_attributes(&name);
    out.extend_from_slice(&page[lt..i]);
    loop {
        let start = i;
        while i < page.len() && (page[i].is_ascii_whitespace() || page[i] == b'/') {
            i += 1;
        }
        out.extend_from_slice(&page[start..i]);
        if i >= page.len() {
            return (i, name);
        }
        if page[i] == b'>' {
            out.push(b'>');
            return (i + 1, name);
        }
        let attr_start = i;
        while i < page.len()
            && !page[i].is_ascii_whitespace()
            && !matches!(page[i], b'=' | b'>' | b'/')
        {
            i += 1;
        }
        let attr = String::from_utf8_lossy(&page[attr_start..i]).to_ascii_lowercase();
        let mut j = i;
        while j < page.len() && page[j].is_ascii_whitespace() {
            j += 1;
        }
        if page.get(j) != Some(&b'=') {
            out.extend_from_slice(&page[attr_start..i]);
            continue;
        }
        j += 1;
        while j < page.len() && page[j].is_ascii_whitespace() {
            j += 1;
        }
        let (value_start, value_end, after) = match page.get(j) {
            Some(&q @ (b'"' | b'\'')) => {
                let close = find(page, j + 1, &[q]).unwrap_or(page.len());
                (j + 1, close, (close + 1).min(page.len()))
            }
            _ => {
                let mut e = j;
                while e < page.len() && !page[e].is_ascii_whitespace() && page[e] != b'>' {
                    e += 1;
                }
                (j, e, e)
            }
        };
        out.extend_from_slice(&page[attr_start..value_start]);
        let value = &page[value_start..value_end];
        match std::str::from_utf8(value) {
            Ok(v) if wanted.contains(&attr.as_str()) => {
                out.extend_from_slice(rewrite(v).as_bytes())
            }
            _ => out.extend_from_slice(value),
        }
        out.extend_from_slice(&page[value_end..after]);
        i = after;
    }
}

/// The page decoded from its `Content-Encoding`, rewritten, and encoded again; `None` for an
/// encoding the proxy does not know (the page then goes as it came) or a page that does not
/// decode.
pub fn rewrite_encoded(page: &[u8], encoding: &str, f: &dyn Fn(&str) -> String) -> Option<Vec<u8>> {
    match encoding {
        "" => Some(rewrite(page, f)),
        "gzip" => {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(page)
                .read_to_end(&mut plain)
                .ok()?;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&rewrite(&plain, f)).ok()?;
            enc.finish().ok()
        }
        "deflate" => {
            let mut plain = Vec::new();
            flate2::read::DeflateDecoder::new(page)
                .read_to_end(&mut plain)
                .ok()?;
            let mut enc =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(&rewrite(&plain, f)).ok()?;
            enc.finish().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixed(u: &str) -> String {
        if u.starts_with('/') {
            format!("/p{u}")
        } else {
            u.to_string()
        }
    }

    #[test]
    fn url_attributes_are_rewritten_and_nothing_else() {
        let page = br#"<!DOCTYPE html><html><head><link rel=stylesheet href="/a.css"><title><a href="/x"></title>
<script src='/app.js'>if (a < b) { document.write('<a href="/no">'); }</script></head>
<body><!-- <a href="/comment"> --><A HREF = /up data-href="/keep">up</A> <img alt="/x" src="rel.png">
<form action="/post" method=post><input type=image src=/i.png formaction="/f"></form> 3 < 4 </body></html>"#;
        let out = String::from_utf8(rewrite(page, &prefixed)).unwrap();
        let want = r#"<!DOCTYPE html><html><head><link rel=stylesheet href="/p/a.css"><title><a href="/x"></title>
<script src='/p/app.js'>if (a < b) { document.write('<a href="/no">'); }</script></head>
<body><!-- <a href="/comment"> --><A HREF = /p/up data-href="/keep">up</A> <img alt="/x" src="rel.png">
<form action="/p/post" method=post><input type=image src=/p/i.png formaction="/p/f"></form> 3 < 4 </body></html>"#;
        assert_eq!(out, want);
    }

    #[test]
    fn truncated_pages_do_not_panic() {
        for page in [
            &b"<a href="[..],
            b"<a href=\"/x",
            b"<",
            b"<!--",
            b"<script>",
            b"<a",
            b"<a b",
        ] {
            let _ = rewrite(page, &prefixed);
        }
    }

    #[test]
    fn encoded_pages_are_rewritten() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(br#"<a href="/x">"#).unwrap();
        let gz = enc.finish().unwrap();
        let out = rewrite_encoded(&gz, "gzip", &prefixed).unwrap();
        let mut plain = String::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain, r#"<a href="/p/x">"#);
        assert!(rewrite_encoded(b"x", "br", &prefixed).is_none());
        assert!(rewrite_encoded(b"not gzip", "gzip", &prefixed).is_none());
    }
}
