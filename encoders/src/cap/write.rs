//! XML writer for [`CapAlert`]: elements in the XSD's sequence, text escaped, message validated first.
//!
//! Written by hand rather than through serde: the XSD's element order, the optional-element rules and the escaping
//! are the whole point, and a 100-line writer states them more plainly than serde attributes would.

use super::message::{CapAlert, CapArea, CapInfo, InvalidMessage, ValuePair, CAP_NAMESPACE};
use super::times::format_cap_time;

/// Escapes text for element content or attribute values. `\r` becomes a character reference because a parser would
/// otherwise normalise it away; quotes are escaped too so the same function serves attributes.
pub(crate) fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

/// Escapes `text` into a new string (see [`escape_into`]).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
}

/// An indenting XML builder; callers have already validated the text (control characters).
pub(crate) struct XmlOut {
    buf: String,
    depth: usize,
}

impl XmlOut {
    pub(crate) fn new() -> Self {
        XmlOut { buf: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"), depth: 0 }
    }

    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.buf.push_str("  ");
        }
    }

    /// An indented `<name attr="v"…`, left open for `>` or `/>`.
    fn start_tag(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.indent();
        self.buf.push('<');
        self.buf.push_str(name);
        for (k, v) in attrs {
            self.buf.push(' ');
            self.buf.push_str(k);
            self.buf.push_str("=\"");
            escape_into(&mut self.buf, v);
            self.buf.push('"');
        }
    }

    /// `<name attr="v"…>` on its own line.
    pub(crate) fn open_with(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.start_tag(name, attrs);
        self.buf.push_str(">\n");
        self.depth += 1;
    }

    pub(crate) fn open(&mut self, name: &str) {
        self.open_with(name, &[]);
    }

    pub(crate) fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push_str(">\n");
    }

    /// `<name attr="v"…/>`.
    pub(crate) fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.start_tag(name, attrs);
        self.buf.push_str("/>\n");
    }

    /// `<name>text</name>`; the text is written exactly (no added whitespace), since xs:string preserves it.
    pub(crate) fn leaf(&mut self, name: &str, text: &str) {
        self.indent();
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push('>');
        escape_into(&mut self.buf, text);
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push_str(">\n");
    }

    fn opt_leaf(&mut self, name: &str, text: Option<&str>) {
        if let Some(text) = text {
            self.leaf(name, text);
        }
    }

    fn pairs(&mut self, name: &str, pairs: &[ValuePair]) {
        for p in pairs {
            self.open(name);
            self.leaf("valueName", &p.value_name);
            self.leaf("value", &p.value);
            self.close(name);
        }
    }

    pub(crate) fn finish(self) -> String {
        self.buf
    }
}

/// Time already checked by `validate`; the fallback is unreachable but keeps this path free of panics.
fn time_text(t: time::OffsetDateTime) -> String {
    format_cap_time(t).unwrap_or_default()
}

/// Writes `alert` as a CAP 1.2 XML document (UTF-8, with declaration). Validates first, so the output always passes
/// the OASIS XSD and the spec rules the XSD does not express.
pub fn write_alert(alert: &CapAlert) -> Result<String, InvalidMessage> {
    alert.validate()?;
    let mut x = XmlOut::new();
    x.open_with("alert", &[("xmlns", CAP_NAMESPACE)]);
    x.leaf("identifier", &alert.identifier);
    x.leaf("sender", &alert.sender);
    x.leaf("sent", &time_text(alert.sent));
    x.leaf("status", alert.status.as_str());
    x.leaf("msgType", alert.msg_type.as_str());
    x.opt_leaf("source", alert.source.as_deref());
    x.leaf("scope", alert.scope.as_str());
    x.opt_leaf("restriction", alert.restriction.as_deref());
    x.opt_leaf("addresses", alert.addresses.as_deref());
    for code in &alert.codes {
        x.leaf("code", code);
    }
    x.opt_leaf("note", alert.note.as_deref());
    if !alert.references.is_empty() {
        let refs: Vec<String> =
            alert.references.iter().map(|r| format!("{},{},{}", r.sender, r.identifier, time_text(r.sent))).collect();
        x.leaf("references", &refs.join(" "));
    }
    x.opt_leaf("incidents", alert.incidents.as_deref());
    for info in &alert.infos {
        write_info(&mut x, info);
    }
    x.close("alert");
    Ok(x.finish())
}

fn write_info(x: &mut XmlOut, info: &CapInfo) {
    x.open("info");
    x.leaf("language", &info.language);
    for c in &info.categories {
        x.leaf("category", c.as_str());
    }
    x.leaf("event", &info.event);
    for r in &info.response_types {
        x.leaf("responseType", r.as_str());
    }
    x.leaf("urgency", info.urgency.as_str());
    x.leaf("severity", info.severity.as_str());
    x.leaf("certainty", info.certainty.as_str());
    x.opt_leaf("audience", info.audience.as_deref());
    x.pairs("eventCode", &info.event_codes);
    x.opt_leaf("effective", info.effective.map(time_text).as_deref());
    x.opt_leaf("onset", info.onset.map(time_text).as_deref());
    x.opt_leaf("expires", info.expires.map(time_text).as_deref());
    x.opt_leaf("senderName", info.sender_name.as_deref());
    x.opt_leaf("headline", info.headline.as_deref());
    x.opt_leaf("description", info.description.as_deref());
    x.opt_leaf("instruction", info.instruction.as_deref());
    x.opt_leaf("web", info.web.as_deref());
    x.opt_leaf("contact", info.contact.as_deref());
    x.pairs("parameter", &info.parameters);
    for r in &info.resources {
        x.open("resource");
        x.leaf("resourceDesc", &r.resource_desc);
        x.leaf("mimeType", &r.mime_type);
        x.opt_leaf("size", r.size.map(|s| s.to_string()).as_deref());
        x.opt_leaf("uri", r.uri.as_deref());
        x.opt_leaf("derefUri", r.deref_uri.as_deref());
        x.opt_leaf("digest", r.digest.as_deref());
        x.close("resource");
    }
    for area in &info.areas {
        write_area(x, area);
    }
    x.close("info");
}

fn write_area(x: &mut XmlOut, area: &CapArea) {
    x.open("area");
    x.leaf("areaDesc", &area.area_desc);
    for p in &area.polygons {
        x.leaf("polygon", &p.to_string());
    }
    for c in &area.circles {
        x.leaf("circle", &c.to_string());
    }
    x.pairs("geocode", &area.geocodes);
    // f64 Display is a plain decimal (never exponent form), which is what xs:decimal needs.
    x.opt_leaf("altitude", area.altitude.map(|v| v.to_string()).as_deref());
    x.opt_leaf("ceiling", area.ceiling.map(|v| v.to_string()).as_deref());
    x.close("area");
}

impl CapAlert {
    /// Same as [`write_alert`].
    pub fn to_xml(&self) -> Result<String, InvalidMessage> {
        write_alert(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_all_five_and_cr() {
        assert_eq!(escape(r#"A&B <c> "d" 'e'"#), "A&amp;B &lt;c&gt; &quot;d&quot; &apos;e&apos;");
        assert_eq!(escape("一\r\n二"), "一&#13;\n二");
        assert_eq!(escape("]]>"), "]]&gt;");
    }
}
