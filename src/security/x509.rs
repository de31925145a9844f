//! Just enough DER to read an X.509 certificate's subject and print it as
//! an RFC 2253 distinguished name (what Java's `X500Principal.getName()`,
//! and so Kafka's SSL principal, gives). rustls verifies certificates but
//! does not expose their names; a full X.509 parser is not needed for one field.

/// The most nesting levels walked (a certificate's subject is three deep).
const DEPTH_MAX: usize = 8;

/// One DER element: its tag and contents.
struct Element<'a> {
    tag: u8,
    contents: &'a [u8],
}

/// Reads one element from the front of `input`, returning it and the rest.
fn element(input: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((Element { tag, contents: &rest[..len] }, &rest[len..]))
}

/// The elements of a constructed value.
fn children(mut contents: &[u8]) -> Option<Vec<Element<'_>>> {
    let mut out = Vec::new();
    while !contents.is_empty() {
        let (e, rest) = element(contents)?;
        out.push(e);
        contents = rest;
        if out.len() > 64 {
            return None;
        }
    }
    Some(out)
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// The subject of a DER certificate, RFC 2253 form; `None` if it cannot be read.
pub fn subject_dn(certificate: &[u8]) -> Option<String> {
    let (cert, _) = element(certificate)?;
    let tbs = children(cert.contents)?.into_iter().next().filter(|e| e.tag == SEQUENCE)?;
    let fields = children(tbs.contents)?;
    // [0] version is optional; then serial, signature, issuer, validity, subject.
    let skip = usize::from(fields.first()?.tag == 0xa0);
    let subject = fields.get(skip + 4).filter(|e| e.tag == SEQUENCE)?;
    name(subject.contents, 0)
}

/// An RDNSequence as RFC 2253 text: last RDN first, `+` within an RDN.
fn name(contents: &[u8], depth: usize) -> Option<String> {
    if depth > DEPTH_MAX {
        return None;
    }
    let mut rdns = Vec::new();
    for rdn in children(contents)? {
        if rdn.tag != SET {
            return None;
        }
        let mut parts = Vec::new();
        for atv in children(rdn.contents)? {
            let pair = children(atv.contents)?;
            let (oid, value) = (pair.first().filter(|e| e.tag == OID)?, pair.get(1)?);
            parts.push(format!("{}={}", attribute_name(oid.contents), attribute_value(value)));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// RFC 2253's keywords, else the dotted OID.
fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x09] => "STREET".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID".into(),
        _ => dotted(oid),
    }
}

fn dotted(oid: &[u8]) -> String {
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    for (i, &b) in oid.iter().enumerate() {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() && i < 8 {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

/// A string value, escaped as RFC 2253 asks; other types as `#` and hex DER.
fn attribute_value(value: &Element<'_>) -> String {
    let text = match value.tag {
        // UTF8String, PrintableString, IA5String, VisibleString
        0x0c | 0x13 | 0x16 | 0x1a => std::str::from_utf8(value.contents).ok().map(str::to_owned),
        // TeletexString: treated as Latin-1, as most encoders mean it
        0x14 => Some(value.contents.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16BE
        0x1e if value.contents.len().is_multiple_of(2) => {
            String::from_utf16(&value.contents.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect::<Vec<_>>()).ok()
        }
        _ => None,
    };
    match text {
        Some(text) => escape(&text),
        None => {
            let mut hex = format!("#{:02x}", value.tag);
            hex.push_str(&format!("{:02x}", value.contents.len()));
            value.contents.iter().for_each(|b| hex.push_str(&format!("{b:02x}")));
            hex
        }
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') || (i == 0 && (c == '#' || c == ' ')) || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(contents.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(contents);
        out
    }

    fn rdn(oid: &[u8], tag: u8, value: &str) -> Vec<u8> {
        der(SET, &der(SEQUENCE, &[der(OID, oid), der(tag, value.as_bytes())].concat()))
    }

    /// A certificate skeleton: only the fields the reader walks are real.
    fn certificate(subject: &[u8]) -> Vec<u8> {
        let tbs = [der(0xa0, &der(0x02, &[2])), der(0x02, &[1]), der(SEQUENCE, &[]), der(SEQUENCE, &[]), der(SEQUENCE, &[]), der(SEQUENCE, subject)].concat();
        der(SEQUENCE, &[der(SEQUENCE, &tbs), der(SEQUENCE, &[]), der(0x03, &[0])].concat())
    }

    #[test]
    fn the_subject_prints_most_specific_first_as_rfc_2253_does() {
        let subject = [rdn(&[0x55, 4, 6], 0x13, "DE"), rdn(&[0x55, 4, 10], 0x0c, "Example, Inc"), rdn(&[0x55, 4, 3], 0x0c, "client-1")].concat();
        assert_eq!(subject_dn(&certificate(&subject)).as_deref(), Some("CN=client-1,O=Example\\, Inc,C=DE"));
    }

    #[test]
    fn unknown_attributes_print_as_dotted_oids_and_truncated_input_as_none() {
        let subject = rdn(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01], 0x16, "a@b");
        assert_eq!(subject_dn(&certificate(&subject)).as_deref(), Some("1.2.840.113549.1.9.1=a@b"));
        let cert = certificate(&subject);
        for cut in 0..cert.len() {
            assert_eq!(subject_dn(&cert[..cut]), None);
        }
    }
}
