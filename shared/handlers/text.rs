//! A message's text as the API takes it: checked (not empty, at most
//! [`MAX_BODY`] bytes) and rendered to HTML for `markdown`.

use crate::api::ApiError;
use crate::markdown;
use crate::model::Format;

/// The largest message body, in bytes.
pub const MAX_BODY: usize = 32 * 1024;

/// Checks `body` and renders it: the HTML for `markdown`, none for `plain`.
/// A caption (the body of a message with a file) may be empty.
pub fn checked(body: &str, format: Format, caption: bool) -> Result<Option<String>, ApiError> {
    if body.trim().is_empty() && !caption {
        return Err(ApiError::InvalidRequest(
            "body must not be empty (it may be, as a caption, with an attachment)".into(),
        ));
    }
    if body.len() > MAX_BODY {
        return Err(ApiError::PayloadTooLarge(format!(
            "body is {} bytes; at most {MAX_BODY} are accepted",
            body.len()
        )));
    }
    Ok(match format {
        Format::Markdown => markdown::render(body),
        Format::Plain => None,
    })
}
