//! Pills: a mentioned user's name in a message's HTML made a link to the
//! user (`<a href="https://matrix.to/#/@user:server">Name</a>`), which
//! Matrix clients show as a pill.
//!
//! <https://spec.matrix.org/v1.16/client-server-api/#user-and-room-mentions>

use ruma::UserId;

use crate::markdown::escape;

/// A mentioned user and the name it goes by in the text.
#[derive(Clone, Copy, Debug)]
pub struct Pill<'a> {
    pub user_id: &'a UserId,
    pub name: &'a str,
}

/// A plain text as HTML: escaped, its line breaks `<br>`.
pub fn plain_html(body: &str) -> String {
    escape(body).replace('\n', "<br>")
}

/// `html` with each of `pills`' names in its text made a pill: the name as
/// a whole word, or after an `@` (which the pill replaces). Text inside
/// links and code is left alone, and so are tags. `None` when no name
/// appears, so a message that names nobody keeps its content.
pub fn insert(html: &str, pills: &[Pill<'_>]) -> Option<String> {
    let mut names: Vec<(String, String)> = pills
        .iter()
        .filter(|pill| !pill.name.trim().is_empty())
        .map(|pill| (escape(pill.name), link(pill)))
        .collect();
    // The longest first, so "Ann Lee" wins over "Ann".
    names.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = String::with_capacity(html.len());
    let mut inserted = false;
    // Inside `<a>`, `<code>` or `<pre>`: how deep.
    let mut untouchable = 0usize;
    let mut rest = html;
    while !rest.is_empty() {
        if rest.starts_with('<') {
            let end = rest.find('>').map_or(rest.len(), |end| end + 1);
            let tag = &rest[..end];
            match tag_name(tag) {
                Some((name, closing)) if ["a", "code", "pre"].contains(&name.as_str()) => {
                    if closing {
                        untouchable = untouchable.saturating_sub(1);
                    } else {
                        untouchable += 1;
                    }
                }
                _ => {}
            }
            out.push_str(tag);
            rest = &rest[end..];
            continue;
        }
        let end = rest.find('<').unwrap_or(rest.len());
        let text = &rest[..end];
        if untouchable == 0 {
            inserted |= replace_names(text, &names, &mut out);
        } else {
            out.push_str(text);
        }
        rest = &rest[end..];
    }
    inserted.then_some(out)
}

/// Writes `text` to `out` with every name in it replaced by its pill:
/// whether one was.
fn replace_names(text: &str, names: &[(String, String)], out: &mut String) -> bool {
    let mut replaced = false;
    let mut i = 0;
    let mut copied = 0;
    while i < text.len() {
        let at_word_start = text[..i]
            .chars()
            .next_back()
            .is_none_or(|before| !before.is_alphanumeric());
        let found = at_word_start
            .then(|| {
                names.iter().find_map(|(name, pill)| {
                    let skip = usize::from(text[i..].starts_with('@'));
                    let after = text[i + skip..].strip_prefix(name.as_str())?;
                    let at_word_end = after.chars().next().is_none_or(|c| !c.is_alphanumeric());
                    at_word_end.then_some((skip + name.len(), pill))
                })
            })
            .flatten();
        match found {
            Some((len, pill)) => {
                out.push_str(&text[copied..i]);
                out.push_str(pill);
                i += len;
                copied = i;
                replaced = true;
            }
            None => i += text[i..].chars().next().map_or(1, char::len_utf8),
        }
    }
    out.push_str(&text[copied..]);
    replaced
}

/// The pill of a user.
fn link(pill: &Pill<'_>) -> String {
    format!(
        "<a href=\"{}\">{}</a>",
        pill.user_id.matrix_to_uri(),
        escape(pill.name)
    )
}

/// A tag's lower-case name, and whether it closes.
fn tag_name(tag: &str) -> Option<(String, bool)> {
    let inner = tag.strip_prefix('<')?;
    let (closing, inner) = match inner.strip_prefix('/') {
        Some(inner) => (true, inner),
        None => (false, inner),
    };
    let name: String = inner
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    (!name.is_empty()).then(|| (name.to_ascii_lowercase(), closing))
}

#[cfg(test)]
mod tests {
    use ruma::user_id;

    use super::*;

    fn pills() -> Vec<Pill<'static>> {
        vec![
            Pill {
                user_id: user_id!("@app_ann:localhost"),
                name: "Ann",
            },
            Pill {
                user_id: user_id!("@app_ann2:localhost"),
                name: "Ann Lee",
            },
        ]
    }

    #[test]
    fn names_become_pills_with_or_without_the_at() {
        let html = insert("<p>Hi @Ann Lee and Ann!</p>", &pills()).unwrap();
        assert_eq!(
            html,
            "<p>Hi <a href=\"https://matrix.to/#/@app_ann2:localhost\">Ann Lee</a> and \
             <a href=\"https://matrix.to/#/@app_ann:localhost\">Ann</a>!</p>"
        );
    }

    #[test]
    fn only_whole_words_in_text_outside_links_and_code() {
        let html =
            "<p>Annabel, <code>Ann</code> <a href=\"x\">Ann</a> <em title=\"Ann\">x</em></p>";
        assert_eq!(insert(html, &pills()), None);
        assert_eq!(insert("no names here", &pills()), None);
    }

    #[test]
    fn plain_text_is_escaped_with_line_breaks() {
        let html = plain_html("a < b & \"c\"\n@Ann");
        assert_eq!(html, "a &lt; b &amp; &quot;c&quot;<br>@Ann");
        let pilled = insert(&html, &pills()).unwrap();
        assert!(
            pilled.ends_with("<br><a href=\"https://matrix.to/#/@app_ann:localhost\">Ann</a>"),
            "{pilled}"
        );
    }

    #[test]
    fn names_that_need_escaping_are_found_escaped() {
        let pill = Pill {
            user_id: user_id!("@app_x:localhost"),
            name: "A&B <3",
        };
        let html = insert(&plain_html("hey A&B <3!"), &[pill]).unwrap();
        assert!(html.contains(">A&amp;B &lt;3</a>!"), "{html}");
    }
}
