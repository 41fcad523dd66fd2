//! Percent-encoding as S3 and SigV4 use it, and query strings.

use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but SigV4's unreserved characters (`A-Za-z0-9-_.~`).
const SIGV4_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
/// Keys in listings with `encoding-type=url`: as above, but `/` kept.
const KEY_ENCODE: &AsciiSet = &SIGV4_ENCODE.remove(b'/');

/// Encodes as SigV4's canonical query string requires.
pub fn encode_strict(text: &str) -> String {
    utf8_percent_encode(text, SIGV4_ENCODE).to_string()
}

/// Encodes a key for a listing with `encoding-type=url`.
pub fn encode_key(text: &str) -> String {
    utf8_percent_encode(text, KEY_ENCODE).to_string()
}

/// Decodes `%XX` (not `+`, which S3 paths keep as is). `None` when the
/// result is not UTF-8.
pub fn decode(text: &str) -> Option<String> {
    percent_decode(text.as_bytes()).decode_utf8().ok().map(|decoded| decoded.into_owned())
}

/// Decodes a query component: `+` is a space, then `%XX`.
pub fn decode_query_component(text: &str) -> Option<String> {
    decode(&text.replace('+', " "))
}

/// The parameters of a query string, decoded, in order.
pub fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                decode_query_component(name).unwrap_or_else(|| name.to_string()),
                decode_query_component(value).unwrap_or_else(|| value.to_string()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes() {
        assert_eq!(encode_strict("a b+c/d~e"), "a%20b%2Bc%2Fd~e");
        assert_eq!(encode_key("a b+c/d\u{e9}"), "a%20b%2Bc/d%C3%A9");
        assert_eq!(decode("a%2Fb+c").as_deref(), Some("a/b+c"));
        assert_eq!(decode("%ff"), None);
        assert_eq!(
            parse_query(Some("list-type=2&prefix=a+b%2B&empty&x=")),
            vec![
                ("list-type".to_string(), "2".to_string()),
                ("prefix".to_string(), "a b+".to_string()),
                ("empty".to_string(), String::new()),
                ("x".to_string(), String::new()),
            ]
        );
    }
}
