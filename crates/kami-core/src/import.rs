//! Parsing of card-import files, one code per line.
//!
//! The parser is push-based (`feed` chunks, then `finish`) so that the HTTP
//! body stream and the CLI's file reader share it, and a 1,000,000-line file
//! never has to be in memory at once: it holds at most one line.
//!
//! Accepted: UTF-8 with or without BOM, LF, CRLF or a bare CR (what "CSV
//! (Macintosh)" exports from spreadsheets still end lines with), and GBK/GB18030 (common in
//! exports from Chinese shops), decided per line so a file mixing both still
//! imports. Blank lines are skipped; surrounding whitespace is trimmed.

use std::borrow::Cow;

/// A raw line longer than this is rejected without being buffered further.
pub const MAX_LINE_BYTES: usize = 4096;
/// A code longer than this (in characters, after trimming) is rejected.
pub const MAX_CODE_CHARS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedLine {
    Code { line: u64, code: String },
    Rejected { line: u64, reason: RejectReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    TooLong,
    InvalidEncoding,
    ControlCharacters,
}

impl RejectReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TooLong => "line is too long (a code has at most 1024 characters)",
            Self::InvalidEncoding => "line is neither UTF-8 nor GBK/GB18030",
            Self::ControlCharacters => "line contains control characters",
        }
    }
}

/// The whole file is refused: it holds NUL bytes, so it is binary (or UTF-16,
/// which card exports are not) and no line of it can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the file looks binary (it contains NUL bytes); save it as UTF-8 or GBK text, one code per line")]
pub struct BinaryFile;

#[derive(Debug, Default)]
pub struct CardFileParser {
    line: Vec<u8>,
    line_no: u64,
    overlong: bool,
    /// The last line ended with a CR: an LF right after it (perhaps at the
    /// start of the next chunk) is the same line break, not a blank line.
    after_cr: bool,
}

impl CardFileParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lines seen so far (including blank and rejected ones).
    pub fn lines_seen(&self) -> u64 {
        self.line_no
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<ParsedLine>) -> Result<(), BinaryFile> {
        if chunk.contains(&0) {
            return Err(BinaryFile);
        }
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            rest = rest.strip_prefix(b"\n").unwrap_or(rest);
        }
        // Neither byte occurs inside a GBK or GB18030 character, so splitting
        // the raw bytes before decoding is safe for both encodings.
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.push_bytes(&rest[..pos]);
            self.end_line(out);
            let cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.push_bytes(rest);
        Ok(())
    }

    pub fn finish(mut self, out: &mut Vec<ParsedLine>) {
        if !self.line.is_empty() || self.overlong {
            self.end_line(out);
        }
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        if self.overlong {
            return;
        }
        if self.line.len() + bytes.len() > MAX_LINE_BYTES {
            self.overlong = true;
            self.line = Vec::new();
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self, out: &mut Vec<ParsedLine>) {
        self.line_no += 1;
        let line = self.line_no;
        let raw = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.overlong) {
            out.push(ParsedLine::Rejected {
                line,
                reason: RejectReason::TooLong,
            });
            return;
        }
        let mut bytes = raw.as_slice();
        if line == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        if let Some(parsed) = parse_line(line, bytes) {
            out.push(parsed);
        }
    }
}

fn parse_line(line: u64, bytes: &[u8]) -> Option<ParsedLine> {
    let text: Cow<str> = match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => {
            match encoding_rs::GB18030.decode_without_bom_handling_and_without_replacement(bytes) {
                Some(s) => s,
                None => {
                    return Some(ParsedLine::Rejected {
                        line,
                        reason: RejectReason::InvalidEncoding,
                    })
                }
            }
        }
    };
    let code = text.trim();
    if code.is_empty() {
        return None;
    }
    let reason = if code.chars().any(|c| c.is_control() && c != '\t') {
        Some(RejectReason::ControlCharacters)
    } else if code.chars().count() > MAX_CODE_CHARS {
        Some(RejectReason::TooLong)
    } else {
        None
    };
    Some(match reason {
        Some(reason) => ParsedLine::Rejected { line, reason },
        None => ParsedLine::Code {
            line,
            code: code.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Result<Vec<ParsedLine>, BinaryFile> {
        let mut p = CardFileParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out)?;
        }
        p.finish(&mut out);
        Ok(out)
    }

    fn codes(lines: &[ParsedLine]) -> Vec<&str> {
        lines
            .iter()
            .filter_map(|l| match l {
                ParsedLine::Code { code, .. } => Some(code.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn trims_skips_blanks_and_handles_crlf_and_bom() {
        let out = parse_chunks(&[b"\xEF\xBB\xBF  AAA-1 \r\n\r\n\tBBB-2\r\nCCC-3"]).unwrap();
        assert_eq!(codes(&out), ["AAA-1", "BBB-2", "CCC-3"]);
        assert!(matches!(out[2], ParsedLine::Code { line: 4, .. }));
    }

    #[test]
    fn a_bare_cr_ends_a_line_and_crlf_is_one_break() {
        let out =
            parse_chunks(&[b"AAA-1\rBBB-2\r\rCCC-3\r\nDDD-4\r", b"\nEEE-5\r", b"FFF-6"]).unwrap();
        assert_eq!(
            codes(&out),
            ["AAA-1", "BBB-2", "CCC-3", "DDD-4", "EEE-5", "FFF-6"]
        );
        let lines: Vec<u64> = out
            .iter()
            .map(|l| match l {
                ParsedLine::Code { line, .. } | ParsedLine::Rejected { line, .. } => *line,
            })
            .collect();
        // The blank line between BBB-2 and CCC-3 is counted; a CRLF split
        // across two chunks is one break, not a blank line.
        assert_eq!(lines, [1, 2, 4, 5, 6, 7]);
    }

    #[test]
    fn lines_split_across_chunks_join() {
        let out = parse_chunks(&[b"AB", b"C\nD", b"EF\r", b"\n"]).unwrap();
        assert_eq!(codes(&out), ["ABC", "DEF"]);
    }

    #[test]
    fn gbk_lines_are_converted() {
        let (gbk, _, _) = encoding_rs::GBK.encode("卡密-测试-001");
        let mut file = gbk.to_vec();
        file.extend_from_slice(b"\r\nplain\r\n");
        let out = parse_chunks(&[&file]).unwrap();
        assert_eq!(codes(&out), ["卡密-测试-001", "plain"]);
    }

    #[test]
    fn invalid_encoding_is_rejected_per_line() {
        let out = parse_chunks(&[b"ok\n\xff\xff\xff\nok2\n"]).unwrap();
        assert_eq!(codes(&out), ["ok", "ok2"]);
        assert_eq!(
            out[1],
            ParsedLine::Rejected {
                line: 2,
                reason: RejectReason::InvalidEncoding
            }
        );
    }

    #[test]
    fn an_overlong_line_is_rejected_without_buffering_it() {
        let big = vec![b'x'; 1024 * 1024];
        let mut p = CardFileParser::new();
        let mut out = Vec::new();
        p.feed(b"first\n", &mut out).unwrap();
        for _ in 0..10 {
            p.feed(&big, &mut out).unwrap();
            assert!(p.line.len() <= MAX_LINE_BYTES);
        }
        p.feed(b"\nlast\n", &mut out).unwrap();
        p.finish(&mut out);
        assert_eq!(codes(&out), ["first", "last"]);
        assert_eq!(
            out[1],
            ParsedLine::Rejected {
                line: 2,
                reason: RejectReason::TooLong
            }
        );
    }

    #[test]
    fn nul_bytes_refuse_the_whole_file() {
        assert_eq!(parse_chunks(&[b"ok\n", b"a\0b\n"]), Err(BinaryFile));
    }

    #[test]
    fn control_characters_are_rejected() {
        let out = parse_chunks(&[b"a\x07b\nfine\ttab\n"]).unwrap();
        assert_eq!(codes(&out), ["fine\ttab"]);
        assert!(matches!(
            out[0],
            ParsedLine::Rejected {
                reason: RejectReason::ControlCharacters,
                ..
            }
        ));
    }
}
