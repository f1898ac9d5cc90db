//! Cuts a top-level member's value out of a JSON object as the exact text it
//! was sent as. Alipay signs `"alipay_trade_query_response": {...}` over
//! those bytes, spacing, key order and escapes included, so parsing and
//! re-serialising would break genuine signatures.

/// The raw text of `key`'s value in the top-level object `body`, or `None`
/// when `body` is not an object or has no such member.
pub fn top_level_value<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    let b = body.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        match b.get(i)? {
            b'}' => return None,
            b'"' => {}
            _ => return None,
        }
        let key_end = skip_string(b, i)?;
        let name: String = serde_json::from_str(&body[i..key_end]).ok()?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let end = skip_value(b, start)?;
        if name == key {
            return Some(&body[start..end]);
        }
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i += 1,
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `b[i]` is the opening quote; returns the index after the closing one.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match b.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// Returns the index just after the value starting at `b[i]`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            // number, true, false, null
            let mut j = i;
            while !matches!(
                b.get(j),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::top_level_value;

    #[test]
    fn cuts_the_exact_text_of_a_top_level_member() {
        let body = r#"{ "alipay_trade_query_response" : {"code":"10000", "msg":"Success","sub":{"a":"}\"{"},"list":[1,{"b":2}]} ,"sign":"c2ln"}"#;
        assert_eq!(
            top_level_value(body, "alipay_trade_query_response"),
            Some(r#"{"code":"10000", "msg":"Success","sub":{"a":"}\"{"},"list":[1,{"b":2}]}"#)
        );
        assert_eq!(top_level_value(body, "sign"), Some(r#""c2ln""#));
        // A nested key of the same name is not a top-level member.
        assert_eq!(top_level_value(body, "code"), None);
        assert_eq!(top_level_value("[1]", "sign"), None);
        assert_eq!(top_level_value(r#"{"sign": "unterminated"#, "sign"), None);
        assert_eq!(
            top_level_value(r#"{"n": 12, "sign":true}"#, "n"),
            Some("12")
        );
    }
}
