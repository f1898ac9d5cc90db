//! QR codes rendered on the server as SVG, embedded as a `data:` image (the
//! pages' CSP allows `img-src data:`), so no markup from here is ever marked
//! safe in a template and nothing is fetched from another host.

use base64::Engine;

/// `None` when the text is too long for a QR code.
pub fn svg_data_uri(text: &str, min_size: u32) -> Option<String> {
    let svg = qrcode::QrCode::new(text.as_bytes())
        .ok()?
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(min_size, min_size)
        .build();
    Some(format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_a_payment_url_as_an_svg_image() {
        let uri = super::svg_data_uri("weixin://wxpay/bizpayurl?pr=abc123", 200).unwrap();
        let b64 = uri.strip_prefix("data:image/svg+xml;base64,").unwrap();
        use base64::Engine;
        let svg = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert!(String::from_utf8(svg).unwrap().contains("<svg"));
        assert!(super::svg_data_uri(&"x".repeat(8000), 200).is_none());
    }
}
