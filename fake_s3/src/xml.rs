//! XML in and out: request bodies (`Delete`, `CompleteMultipartUpload`,
//! `CreateBucketConfiguration`) are read into a small element tree with
//! quick-xml; responses are written by hand with escaping.

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::error::S3Error;

pub const NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
/// Elements nested deeper than this are refused (no S3 document needs it).
const DEPTH_MAX: usize = 16;

/// An element: its local name, its text (all text directly inside it,
/// unescaped, not trimmed) and its child elements.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|child| child.name == name)
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |child| child.name == name)
    }
}

/// Parses a document into its root element; any error is `MalformedXML`.
pub fn parse(body: &[u8]) -> Result<Element, S3Error> {
    let mut reader = Reader::from_reader(body);
    let mut stack: Vec<Element> = Vec::new();
    loop {
        match reader.read_event().map_err(|_| S3Error::MalformedXml)? {
            Event::Start(start) => {
                if stack.len() >= DEPTH_MAX {
                    return Err(S3Error::MalformedXml);
                }
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                stack.push(Element { name, ..Element::default() });
            }
            Event::Empty(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                let element = Element { name, ..Element::default() };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => return Ok(element),
                }
            }
            Event::Text(text) => {
                if let Some(current) = stack.last_mut() {
                    current.text.push_str(&text.unescape().map_err(|_| S3Error::MalformedXml)?);
                }
            }
            Event::CData(data) => {
                if let Some(current) = stack.last_mut() {
                    current.text.push_str(std::str::from_utf8(&data).map_err(|_| S3Error::MalformedXml)?);
                }
            }
            Event::End(_) => {
                let element = stack.pop().ok_or(S3Error::MalformedXml)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => return Ok(element),
                }
            }
            Event::Eof => return Err(S3Error::MalformedXml),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
}

/// Appends `text` with the five XML special characters escaped, and the
/// control characters S3 keys may hold as character references.
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 => {
                out.push_str("&#");
                out.push_str(&(c as u32).to_string());
                out.push(';');
            }
            c => out.push(c),
        }
    }
}

/// Builds an XML document element by element.
#[derive(Debug)]
pub struct XmlWriter {
    out: String,
}

impl XmlWriter {
    /// Starts a document whose root element carries S3's namespace.
    pub fn new(root: &str) -> XmlWriter {
        let mut out = String::with_capacity(512);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
        out.push_str(root);
        out.push_str(" xmlns=\"");
        out.push_str(NAMESPACE);
        out.push_str("\">");
        XmlWriter { out }
    }

    /// Starts a document with a root element and no namespace (errors).
    pub fn bare(root: &str) -> XmlWriter {
        let mut out = String::with_capacity(512);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
        out.push_str(root);
        out.push('>');
        XmlWriter { out }
    }

    pub fn open(&mut self, name: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// `<name>text</name>`, the text escaped.
    pub fn element(&mut self, name: &str, text: &str) -> &mut Self {
        self.open(name);
        escape_into(&mut self.out, text);
        self.close(name)
    }

    /// Text inside the element opened last, escaped.
    pub fn text(&mut self, text: &str) -> &mut Self {
        escape_into(&mut self.out, text);
        self
    }

    pub fn finish(mut self, root: &str) -> Vec<u8> {
        self.close(root);
        self.out.into_bytes()
    }
}

/// The error document for `error`.
pub fn error_document(error: &S3Error, resource: &str, request_id: &str) -> Vec<u8> {
    let mut writer = XmlWriter::bare("Error");
    writer.element("Code", error.code()).element("Message", &error.to_string());
    for (name, value) in error.details() {
        writer.element(name, &value);
    }
    writer.element("Resource", resource).element("RequestId", request_id).element("HostId", "fake-s3");
    writer.finish("Error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_delete_with_odd_keys_untrimmed() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>
<Object><Key> a &amp; b </Key></Object><Object><Key>&#13;x</Key></Object><Object><Key><![CDATA[<c>]]></Key></Object></Delete>"#;
        let root = parse(body).unwrap();
        assert_eq!(root.name, "Delete");
        assert_eq!(root.child("Quiet").unwrap().text, "true");
        let keys: Vec<&str> = root.children_named("Object").map(|o| o.child("Key").unwrap().text.as_str()).collect();
        assert_eq!(keys, vec![" a & b ", "\rx", "<c>"]);
    }

    #[test]
    fn malformed_documents_are_errors_not_panics() {
        for body in [&b""[..], b"<a>", b"<a></b>", b"</a>", b"<a><b></a>", b"\xff\xfe<"] {
            assert_eq!(parse(body), Err(S3Error::MalformedXml), "{body:?}");
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(parse(deep.as_bytes()), Err(S3Error::MalformedXml));
    }

    #[test]
    fn escapes_text_and_control_characters() {
        let mut out = String::new();
        escape_into(&mut out, "a<b>&\"'\r\u{e9}");
        assert_eq!(out, "a&lt;b&gt;&amp;&quot;&apos;&#13;\u{e9}");
    }

    #[test]
    fn error_document_names_code_and_key() {
        let document = error_document(&S3Error::NoSuchKey { key: "a&b".into() }, "/b/a&b", "42");
        let text = String::from_utf8(document).unwrap();
        assert!(text.contains("<Code>NoSuchKey</Code>"), "{text}");
        assert!(text.contains("<Key>a&amp;b</Key>"), "{text}");
        let root = parse(text.as_bytes()).unwrap();
        assert_eq!(root.child("RequestId").unwrap().text, "42");
    }
}
