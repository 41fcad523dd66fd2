//! The parameters of `GET /v1/subscribe`: `after`, `durable`, `prefix`, and
//! the `Last-Event-ID` header. Pure; every error names the parameter.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::event::Prefix;
use crate::commit::parse::percent_decode;

/// A validated subscribe request, before it is checked against the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeQuery {
    /// Stream versions above this; `None`: from the current committed version.
    pub after: Option<u64>,
    pub durable: bool,
    pub prefix: Option<Prefix>,
}

/// Longest `prefix` accepted, in bytes (decoded): a key is never longer.
pub const PREFIX_BYTES_MAX: usize = 10 * 1024;

/// Parses the query and `Last-Event-ID` (which, when present, wins over
/// `after`: a reconnecting EventSource repeats its original URL).
pub fn parse(query: Option<&str>, last_event_id: Option<&[u8]>) -> Result<SubscribeQuery, String> {
    let mut parsed = SubscribeQuery { after: None, durable: true, prefix: None };
    for pair in query.unwrap_or("").split('&').filter(|pair| !pair.is_empty()) {
        let (name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "after" => {
                let value = percent_decode(raw_value).ok_or("after: invalid percent-encoding")?;
                parsed.after = Some(parse_version("after", &value)?);
            }
            "durable" => {
                let value = percent_decode(raw_value).ok_or("durable: invalid percent-encoding")?;
                parsed.durable = match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => return Err(format!("durable: {other:?} is not true or false")),
                };
            }
            "prefix" => {
                // Base64 has no spaces, so a literal '+' is kept as '+'.
                let value = percent_decode(&raw_value.replace('+', "%2B")).ok_or("prefix: invalid percent-encoding")?;
                let bytes = STANDARD
                    .decode(value.as_bytes())
                    .map_err(|_| "prefix: invalid base64 (standard alphabet, with padding)".to_string())?;
                if bytes.len() > PREFIX_BYTES_MAX {
                    return Err(format!("prefix: {} bytes is over the limit of {PREFIX_BYTES_MAX}", bytes.len()));
                }
                parsed.prefix = (!bytes.is_empty()).then(|| Prefix::new(bytes));
            }
            other => return Err(format!("unknown parameter {other:?}; expected after, durable, prefix")),
        }
    }
    if let Some(id) = last_event_id {
        let text = std::str::from_utf8(id).map_err(|_| "Last-Event-ID: not UTF-8".to_string())?;
        parsed.after = Some(parse_version("Last-Event-ID", text.trim())?);
    }
    Ok(parsed)
}

fn parse_version(name: &str, value: &str) -> Result<u64, String> {
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| value.parse().ok()).flatten().ok_or_else(|| format!("{name}: {value:?} is not a version"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_durable_from_now() {
        assert_eq!(parse(None, None), Ok(SubscribeQuery { after: None, durable: true, prefix: None }));
        assert_eq!(parse(Some(""), None).unwrap().after, None);
    }

    #[test]
    fn parameters_parse() {
        let query = parse(Some("after=42&durable=false&prefix=dXNlci8%3D"), None).unwrap();
        assert_eq!(query.after, Some(42));
        assert!(!query.durable);
        assert_eq!(query.prefix.unwrap().as_bytes(), b"user/");
        // A '+' of base64 survives an unencoded query.
        assert_eq!(parse(Some("prefix=+w=="), None).unwrap().prefix.unwrap().as_bytes(), [0xfb]);
        assert!(parse(Some("durable=1"), None).unwrap().durable);
    }

    #[test]
    fn last_event_id_wins_over_after() {
        assert_eq!(parse(Some("after=5"), Some(b"9")).unwrap().after, Some(9));
        assert_eq!(parse(None, Some(b" 7 ")).unwrap().after, Some(7));
    }

    #[test]
    fn errors_name_the_parameter() {
        let error = |query: &str| parse(Some(query), None).unwrap_err();
        assert!(error("after=-1").starts_with("after:"), "{}", error("after=-1"));
        assert!(error("after=").starts_with("after:"));
        assert!(error("after=18446744073709551616").starts_with("after:"));
        assert!(error("durable=maybe").starts_with("durable:"));
        assert!(error("prefix=abc").starts_with("prefix:"));
        assert!(error("prefix=%zz").starts_with("prefix:"));
        assert!(error("from=1").contains("unknown parameter \"from\""));
        assert!(parse(None, Some(b"x")).unwrap_err().starts_with("Last-Event-ID:"));
        assert!(parse(None, Some(b"\xff")).unwrap_err().starts_with("Last-Event-ID:"));
    }
}
