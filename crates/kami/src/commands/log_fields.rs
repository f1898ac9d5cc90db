//! Span fields as a JSON object, written straight into the span's string.
//!
//! Every request opens a span (request id, method, path) whose fields the
//! JSON log keeps as text, ready for any line logged inside it.
//! tracing-subscriber's `JsonFields` builds that text by gathering the
//! fields into a map of `serde_json::Value`s and serialising the map: a
//! fifth of the instructions of a whole `/healthz` (callgrind,
//! docs/PERFORMANCE.md stop 23), paid by every request whether or not
//! anything is logged. This writes the same object directly. Written by
//! hand because the crate offers no cheaper JSON field formatter; the
//! output is checked against `JsonFields` in the tests below.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

/// The JSON log's span fields: strings, numbers and booleans as JSON, any
/// other value as the string of its `Debug` (for `%value`, its `Display`),
/// as `JsonFields` has them. A field recorded later is appended; a name
/// recorded twice appears twice, and JSON readers (the log's own event
/// formatter among them) keep the last, as `JsonFields` does.
pub struct JsonSpanFields;

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut members = Members::default();
        fields.record(&mut members);
        writer.write_char('{')?;
        writer.write_str(members.text()?)?;
        writer.write_char('}')
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let mut members = Members {
            out: Vec::new(),
            empty: current.fields.is_empty() || current.fields == "{}",
        };
        fields.record(&mut members);
        if members.out.is_empty() {
            return Ok(());
        }
        if current.fields.is_empty() {
            current.fields.push('{');
        } else if current.fields.pop() != Some('}') {
            return Err(fmt::Error);
        }
        current.fields.push_str(members.text()?);
        current.fields.push('}');
        Ok(())
    }
}

/// `"name":value` pairs, comma-separated, as serde_json writes them.
struct Members {
    out: Vec<u8>,
    /// No member written yet (none before this visit either).
    empty: bool,
}

impl Default for Members {
    fn default() -> Self {
        Self {
            out: Vec::with_capacity(128),
            empty: true,
        }
    }
}

impl Members {
    fn member(&mut self, field: &Field, value: impl serde::Serialize) {
        self.name(field);
        // Writing to a Vec cannot fail, and these values always serialise
        // (a non-finite float is written as null).
        let _ = serde_json::to_writer(&mut self.out, &value);
    }

    /// `"name":`, after a comma unless it is the first member.
    fn name(&mut self, field: &Field) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        let name = field.name();
        let _ = serde_json::to_writer(&mut self.out, name.strip_prefix("r#").unwrap_or(name));
        self.out.push(b':');
    }

    /// serde_json writes UTF-8 only.
    fn text(&self) -> Result<&str, fmt::Error> {
        std::str::from_utf8(&self.out).map_err(|_| fmt::Error)
    }
}

impl Visit for Members {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.member(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        use serde::Serializer as _;
        self.name(field);
        // Escaped as it is formatted, without a String of it first.
        let _ = serde_json::Serializer::new(&mut self.out).collect_str(&AsDisplay(value));
    }
}

/// A `Debug` value where serde wants `Display` (`%value` fields are `Debug`
/// through their `Display` already).
struct AsDisplay<'a>(&'a dyn fmt::Debug);

impl fmt::Display for AsDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use serde_json::{json, Value};
    use tracing_subscriber::fmt::format::JsonFields;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// What a request's log line carries of its span, formatted by `fields`.
    fn logged_span<N>(fields: N) -> Value
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(fields)
            .with_writer(lines.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let path = "/products/\"1\"\\\n\u{7}\u{e9}";
            let rid = "0a1b2c3d-000000000001";
            let span = tracing::info_span!("request", request_id = %rid, method = %"GET",
                path = %path, order_no = tracing::field::Empty, n = 7u64, neg = -3i64,
                ok = true, ratio = 0.5f64, r#type = "raw", s = "plain");
            let _in = span.enter();
            span.record("order_no", "K2026");
            span.record("n", 8u64);
            tracing::info!("inside");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        line["span"].clone()
    }

    #[test]
    fn spans_log_as_json_fields_does() {
        let ours = logged_span(JsonSpanFields);
        assert_eq!(ours, logged_span(JsonFields::new()));
        assert_eq!(
            ours,
            json!({"name": "request", "request_id": "0a1b2c3d-000000000001", "method": "GET",
                   "path": "/products/\"1\"\\\n\u{7}\u{e9}", "order_no": "K2026", "n": 8,
                   "neg": -3, "ok": true, "ratio": 0.5, "type": "raw", "s": "plain"})
        );
    }

    #[test]
    fn a_span_without_fields_gets_them_when_recorded() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .fmt_fields(JsonSpanFields)
            .with_writer(lines.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("bare", later = tracing::field::Empty);
            let _in = span.enter();
            tracing::info!("before");
            span.record("later", "now");
            tracing::info!("after");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let spans: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["span"].clone())
            .collect();
        assert_eq!(
            spans,
            vec![
                json!({"name": "bare"}),
                json!({"name": "bare", "later": "now"})
            ]
        );
    }
}
