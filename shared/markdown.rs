//! Renders message bodies to the HTML that Matrix clients show, and
//! sanitises the HTML that arrives from Matrix.
//!
//! Markdown is rendered with CommonMark (pulldown-cmark) and then sanitised
//! (ammonia) down to the tags and attributes the Matrix spec suggests clients
//! allow (<https://spec.matrix.org/v1.16/client-server-api/#mroommessage-msgtypes>),
//! so raw HTML in a message cannot inject scripts, styles or event handlers.
//! A `formatted_body` from Matrix goes through the same allow-list, and loses
//! its reply fallback (`<mx-reply>`) on the way.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use pulldown_cmark::{Options, Parser, html};

const ALLOWED_TAGS: &[&str] = &[
    "del",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "p",
    "a",
    "ul",
    "ol",
    "sup",
    "sub",
    "li",
    "b",
    "i",
    "u",
    "strong",
    "em",
    "s",
    "strike",
    "code",
    "hr",
    "br",
    "div",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "caption",
    "pre",
    "span",
    "details",
    "summary",
];

static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| sanitizer(&[]));

/// For HTML from Matrix: a reply fallback goes with its content.
static INBOUND_SANITIZER: LazyLock<ammonia::Builder<'static>> =
    LazyLock::new(|| sanitizer(&["mx-reply"]));

/// The allow-list, dropping `script`, `style` and `drop` with their content.
fn sanitizer(drop: &[&'static str]) -> ammonia::Builder<'static> {
    let mut builder = ammonia::Builder::empty();
    let mut dropped = HashSet::from(["script", "style"]);
    dropped.extend(drop);
    builder
        .tags(ALLOWED_TAGS.iter().copied().collect())
        .tag_attributes(HashMap::from([
            ("a", HashSet::from(["href"])),
            ("ol", HashSet::from(["start"])),
            ("code", HashSet::from(["class"])),
        ]))
        // Absolute links of these schemes only: a relative or
        // protocol-relative one (`//evil.example`) would resolve against
        // whatever page shows the message.
        .url_schemes(HashSet::from(["http", "https", "mailto", "matrix"]))
        .url_relative(ammonia::UrlRelative::Deny)
        // No attribute on every tag (ammonia's default keeps lang and title).
        .generic_attributes(HashSet::new())
        // A code block names its language (`language-rust`), nothing else.
        .attribute_filter(|element, attribute, value| match (element, attribute) {
            ("code", "class") => value
                .split_whitespace()
                .all(|class| {
                    class.strip_prefix("language-").is_some_and(|language| {
                        !language.is_empty()
                            && language
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "+#-_.".contains(c))
                    })
                })
                .then(|| value.into()),
            _ => Some(value.into()),
        })
        .link_rel(None)
        .allowed_classes(HashMap::new())
        .clean_content_tags(dropped);
    builder
}

/// Markdown to sanitised HTML. `None` when the text has no formatting, so
/// such a message is sent as plain text only.
pub fn render(markdown: &str) -> Option<String> {
    let mut options = Options::empty();
    options.insert(Options::ENABLE_STRIKETHROUGH);
    options.insert(Options::ENABLE_TABLES);
    let mut rendered = String::with_capacity(markdown.len() * 2);
    html::push_html(&mut rendered, Parser::new_ext(markdown, options));
    let clean = SANITIZER.clean(&rendered).to_string();
    let clean = clean.trim_end().to_owned();
    let unformatted = format!("<p>{}</p>", escape(markdown.trim()));
    (clean != unformatted && !clean.is_empty()).then_some(clean)
}

/// A `formatted_body` from Matrix, down to the allowed tags; `None` when
/// nothing is left.
pub fn sanitize(html: &str) -> Option<String> {
    let clean = INBOUND_SANITIZER.clean(html).to_string();
    let clean = clean.trim();
    (!clean.is_empty()).then(|| clean.to_owned())
}

/// Text escaped for HTML, as the sanitiser writes it.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{render, sanitize};

    #[test]
    fn renders_emphasis_and_code() {
        assert_eq!(
            render("**Hello** _world_ and `code`").as_deref(),
            Some("<p><strong>Hello</strong> <em>world</em> and <code>code</code></p>")
        );
    }

    #[test]
    fn plain_text_needs_no_html() {
        assert_eq!(render("just words, nothing else"), None);
        assert_eq!(render("a < b & c"), None);
    }

    #[test]
    fn lists_links_and_strikethrough_survive() {
        let html = render("- one\n- [two](https://example.org)\n\n~~gone~~").unwrap();
        assert!(html.contains("<ul>"), "{html}");
        assert!(
            html.contains("<a href=\"https://example.org\">two</a>"),
            "{html}"
        );
        assert!(html.contains("<del>gone</del>"), "{html}");
    }

    #[test]
    fn only_absolute_links_and_language_classes_survive() {
        let html = render(
            "[a](//evil.example) [b](/relative) [c](matrix:r/room:example.org) [d](mailto:x@example.org)",
        )
        .unwrap();
        assert!(!html.contains("evil.example"), "{html}");
        assert!(!html.contains("/relative"), "{html}");
        assert!(
            html.contains("href=\"matrix:r/room:example.org\""),
            "{html}"
        );
        assert!(html.contains("href=\"mailto:x@example.org\""), "{html}");
        let code = render("```rust\nfn main() {}\n```").unwrap();
        assert!(code.contains("<code class=\"language-rust\">"), "{code}");
        let hostile = render(
            "<code class=\"evil\">x</code> <code class=\"language-a b\">y</code> <p lang=\"en\" title=\"t\">z</p>",
        )
        .unwrap();
        assert!(!hostile.contains("class"), "{hostile}");
        assert!(
            !hostile.contains("lang=") && !hostile.contains("title="),
            "{hostile}"
        );
    }

    #[test]
    fn hostile_html_is_removed() {
        let html = render("hi <script>alert(1)</script><img src=x onerror=alert(2)> [x](javascript:alert(3)) <b onclick=\"y()\">b</b>")
            .unwrap();
        assert!(!html.contains("script"), "{html}");
        assert!(!html.contains("alert"), "{html}");
        assert!(!html.contains("onerror"), "{html}");
        assert!(!html.contains("onclick"), "{html}");
        assert!(!html.contains("javascript"), "{html}");
        assert!(html.contains("<b>b</b>"), "{html}");
    }

    #[test]
    fn code_blocks_keep_their_language() {
        let html = render("```rust\nfn main() {}\n```").unwrap();
        assert_eq!(
            html,
            "<pre><code class=\"language-rust\">fn main() {}\n</code></pre>"
        );
    }

    #[test]
    fn html_from_matrix_keeps_allowed_tags_only_and_no_reply_fallback() {
        let html = sanitize(
            "<mx-reply><blockquote>quoted <a href=\"https://matrix.to/#/$e\">x</a></blockquote></mx-reply>\
             <b onclick=\"x()\">bold</b><script>alert(1)</script><img src=x>",
        );
        assert_eq!(html.as_deref(), Some("<b>bold</b>"));
        assert_eq!(sanitize("<script>x</script>"), None);
    }
}
