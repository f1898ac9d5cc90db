//! Product descriptions are Markdown written by the merchant (or pasted from
//! another shop). They render to HTML on the product page, so they are made
//! safe twice: raw HTML in the source is shown as text, never passed
//! through, and the output is sanitised by ammonia (which drops `javascript:`
//! links and anything outside its allow-list). Images are dropped: a product
//! page loads nothing from other hosts.

use pulldown_cmark::{html, Event, Options, Parser, Tag, TagEnd};

/// Safe HTML for a Markdown description.
pub fn to_html(md: &str) -> String {
    let events = Parser::new_ext(md, Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TABLES).map(
        |e| match e {
            Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
            other => other,
        },
    );
    let mut out = String::with_capacity(md.len() * 3 / 2);
    html::push_html(&mut out, events);
    ammonia::Builder::default()
        .rm_tags(["img"])
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(&out)
        .to_string()
}

/// The description as plain text (for excerpts): the words, no markup.
pub fn to_text(md: &str) -> String {
    let mut out = String::new();
    for e in Parser::new(md) {
        match e {
            Event::Text(t) | Event::Code(t) | Event::Html(t) | Event::InlineHtml(t) => {
                out.push_str(&t)
            }
            Event::SoftBreak
            | Event::HardBreak
            | Event::End(TagEnd::Paragraph | TagEnd::Heading(_) | TagEnd::Item) => out.push(' '),
            Event::Start(Tag::Image { .. }) => {}
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_markdown() {
        let html = to_html("**Steam** card\n\n- one\n- two\n\n[help](https://example.com/help)");
        assert!(html.contains("<strong>Steam</strong>"), "{html}");
        assert!(html.contains("<li>one</li>"), "{html}");
        assert!(
            html.contains(r#"href="https://example.com/help""#),
            "{html}"
        );
        assert!(html.contains("noopener"), "{html}");
    }

    #[test]
    fn raw_html_and_script_links_are_inert() {
        for payload in [
            "<script>window.__xss=1</script>",
            "<img src=x onerror=window.__xss=1>",
            "[x](javascript:window.__xss=1)",
            "<a href=\"javascript:alert(1)\">x</a>",
            "![x](https://tracker.example/pixel.png)",
        ] {
            let html = to_html(payload);
            let lower = html.to_lowercase();
            assert!(!lower.contains("<script"), "{payload} → {html}");
            assert!(!lower.contains("<img"), "{payload} → {html}");
            // Whatever survives of raw HTML is escaped text, not a tag.
            assert!(
                !lower.contains("<a href=\"javascript"),
                "{payload} → {html}"
            );
        }
        // Raw HTML is shown as text, escaped.
        assert!(to_html("<b>hi</b>").contains("&lt;b&gt;hi&lt;/b&gt;"));
    }

    #[test]
    fn plain_text_drops_markup() {
        assert_eq!(
            to_text("# Title\n\n**Bold** and `code`\n- item"),
            "Title Bold and code item"
        );
    }
}
