//! Raw records from JSONL, JSON (array of objects), CSV and TSV files, each tagged with the
//! 1-based line where it starts, before any interpretation as a conversation.
//!
//! Kept apart from [`super::readers`] so that the presets can apply their own row logic (filters
//! on labels, several responses per row) while sharing the parsing and the error positions.
//! A CSV record's fields are all strings; JSON values keep their types.

use super::DataError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

/// File layouts the readers understand.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line (`.jsonl`, `.ndjson`).
    Jsonl,
    /// One JSON array of objects (`.json`).
    Json,
    /// Comma-separated with a header row (`.csv`).
    Csv,
    /// Tab-separated with a header row (`.tsv`).
    Tsv,
}

impl Format {
    /// The format implied by a file's extension.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "tsv" => Some(Format::Tsv),
            _ => None,
        }
    }
}

/// One row of a data file: its fields and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// 1-based line of the row's first character (JSONL line, CSV record line, JSON element).
    pub line: usize,
    /// 0-based index of the element, for JSON arrays only.
    pub element: Option<usize>,
    pub fields: Map<String, Value>,
}

impl Record {
    /// A required string field, returned as written; absent, non-string or blank (whitespace
    /// only) is an error.
    pub fn string(&self, path: &Path, key: &str) -> Result<&str, DataError> {
        let s = self.opt_string(path, key)?.ok_or_else(|| self.error(path, format!("missing field `{key}`")))?;
        if s.trim().is_empty() {
            return Err(self.error(path, format!("field `{key}`: empty")));
        }
        Ok(s)
    }

    /// An optional string field: absent → `None`; present but not a string → error.
    pub fn opt_string(&self, path: &Path, key: &str) -> Result<Option<&str>, DataError> {
        match self.fields.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.error(path, format!("field `{key}`: expected a string, found {}", type_name(v)))),
        }
    }

    /// An error about this record, positioned at its line (and element, for JSON arrays).
    pub fn error(&self, path: &Path, message: impl Into<String>) -> DataError {
        let message = message.into();
        let message = match self.element {
            Some(i) => format!("array element {i}: {message}"),
            None => message,
        };
        DataError::row(path, self.line, message)
    }
}

/// JSON type name for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Read every record of a file. The outer error is about the whole file (unreadable, unknown
/// format, unparseable JSON document, bad CSV header); inner errors are per row, so a caller
/// can skip bad rows.
pub fn read_records(path: &Path, format: Option<Format>) -> Result<Vec<Result<Record, DataError>>, DataError> {
    let format = format.or_else(|| Format::from_path(path)).ok_or_else(|| {
        DataError::file(path, "unknown file format (expected .jsonl, .json, .csv or .tsv; or set the format)")
    })?;
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    parse_records(path, &text, format)
}

/// [`read_records`] on text already in memory; `path` only names the source in errors.
pub fn parse_records(path: &Path, text: &str, format: Format) -> Result<Vec<Result<Record, DataError>>, DataError> {
    match format {
        Format::Jsonl => Ok(parse_jsonl_records(path, text)),
        Format::Json => parse_json_records(path, text),
        Format::Csv => parse_csv_records(path, text, b','),
        Format::Tsv => parse_csv_records(path, text, b'\t'),
    }
}

fn parse_jsonl_records(path: &Path, text: &str) -> Vec<Result<Record, DataError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = i + 1;
        out.push(match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(fields)) => Ok(Record { line: line_no, element: None, fields }),
            Ok(v) => Err(DataError::row(path, line_no, format!("expected a JSON object, found {}", type_name(&v)))),
            Err(e) => Err(DataError::row(path, line_no, format!("bad JSON: {e}"))),
        });
    }
    out
}

fn parse_json_records(path: &Path, text: &str) -> Result<Vec<Result<Record, DataError>>, DataError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc: Value =
        serde_json::from_str(text).map_err(|e| DataError::row(path, e.line(), format!("bad JSON document: {e}")))?;
    let Value::Array(items) = doc else {
        return Err(DataError::file(path, format!("expected a JSON array of objects, found {}", type_name(&doc))));
    };
    let lines = array_element_lines(text);
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let line = lines.get(i).copied().unwrap_or(1);
            match v {
                Value::Object(fields) => Ok(Record { line, element: Some(i), fields }),
                v => Err(DataError::row(
                    path,
                    line,
                    format!("array element {i}: expected an object, found {}", type_name(&v)),
                )),
            }
        })
        .collect())
}

/// The 1-based line on which each element of a top-level JSON array starts. A small scanner
/// (strings and escapes aware) because serde_json does not report element positions.
fn array_element_lines(text: &str) -> Vec<usize> {
    let (mut lines, mut line, mut depth) = (Vec::new(), 1usize, 0usize);
    let (mut in_str, mut escaped, mut expect) = (false, false, false);
    for ch in text.chars() {
        if in_str {
            match ch {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                '\n' => line += 1,
                _ => {}
            }
            continue;
        }
        if depth == 1 && expect && !ch.is_whitespace() && ch != ']' {
            lines.push(line);
            expect = false;
        }
        match ch {
            '"' => in_str = true,
            '[' | '{' => {
                depth += 1;
                if depth == 1 {
                    expect = true;
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 1 => expect = true,
            '\n' => line += 1,
            _ => {}
        }
    }
    lines
}

fn parse_csv_records(path: &Path, text: &str, delimiter: u8) -> Result<Vec<Result<Record, DataError>>, DataError> {
    let mut reader =
        csv::ReaderBuilder::new().delimiter(delimiter).has_headers(true).flexible(false).from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| DataError::row(path, 1, format!("bad header row: {e}")))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    let mut out = Vec::new();
    for rec in reader.records() {
        out.push(match rec {
            Ok(r) => {
                let line = r.position().map_or(0, |p| p.line() as usize);
                let fields =
                    headers.iter().zip(r.iter()).map(|(h, v)| (h.clone(), Value::String(v.to_string()))).collect();
                Ok(Record { line, element: None, fields })
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                Err(DataError::row(path, line, format!("bad CSV record: {e}")))
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(recs: &[Result<Record, DataError>]) -> Vec<usize> {
        recs.iter().map(|r| r.as_ref().map_or(0, |r| r.line)).collect()
    }

    #[test]
    fn json_element_lines_follow_the_text() {
        let text = "[\n  {\"a\": \"x,[y]\"},\n  {\"a\": \"q\\\"\n\"},\n\n  {\"a\": [1, 2]}\n]";
        assert_eq!(array_element_lines(text), vec![2, 3, 6]);
        let recs = parse_records(Path::new("f.json"), "[{\"a\":1}, 3]", Format::Json).unwrap();
        let err = recs[1].as_ref().unwrap_err().to_string();
        assert_eq!(err, "f.json:1: array element 1: expected an object, found a number");
    }

    #[test]
    fn csv_lines_count_multiline_fields() {
        let text = "prompt,response\nhi,there\n\"two\nlines\",x\nlast,y\n";
        let recs = parse_records(Path::new("f.csv"), text, Format::Csv).unwrap();
        assert_eq!(lines(&recs), vec![2, 3, 5]);
        let bad = parse_records(Path::new("f.csv"), "a,b\n1,2\n3\n4,5\n", Format::Csv).unwrap();
        assert!(bad[1].as_ref().unwrap_err().to_string().starts_with("f.csv:3: bad CSV record"));
        assert_eq!(bad[2].as_ref().map(|r| r.line).ok(), Some(4));
    }

    #[test]
    fn jsonl_skips_blank_lines_but_counts_them() {
        let recs = parse_records(Path::new("f.jsonl"), "{\"a\":\"1\"}\n\n{bad\n[1]\n", Format::Jsonl).unwrap();
        assert_eq!(recs.len(), 3);
        assert!(recs[1].as_ref().unwrap_err().to_string().starts_with("f.jsonl:3: bad JSON"));
        let e = recs[2].as_ref().unwrap_err().to_string();
        assert_eq!(e, "f.jsonl:4: expected a JSON object, found an array");
    }

    #[test]
    fn field_access_checks_type_and_emptiness() {
        let recs = parse_records(Path::new("f.json"), "[{\"p\": \" \", \"n\": 3}]", Format::Json).unwrap();
        let r = recs[0].as_ref().unwrap();
        let p = Path::new("f.json");
        assert_eq!(r.string(p, "p").unwrap_err().to_string(), "f.json:1: array element 0: field `p`: empty");
        assert!(r.string(p, "n").unwrap_err().to_string().contains("expected a string, found a number"));
        assert!(r.string(p, "z").unwrap_err().to_string().contains("missing field `z`"));
        assert_eq!(r.opt_string(p, "z").unwrap(), None);
        assert_eq!(Format::from_path(Path::new("a/b.JSONL")), Some(Format::Jsonl));
    }
}
