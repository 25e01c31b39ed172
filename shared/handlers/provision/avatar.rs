//! Avatars into the media repository: an `mxc://` URI is used as it is; an
//! `https://` address is fetched under the fetch policy (`crate::fetch`:
//! public addresses, size, type and time limits) and uploaded as the bot,
//! unless it is the address the current avatar came from.

use ruma::OwnedMxcUri;

use super::plan::Avatar;
use crate::error::Error;
use crate::fetch::Fetcher;
use crate::matrix::Matrix;

/// An avatar in the media repository, and the address it came from.
pub type Stored = (OwnedMxcUri, Option<String>);

/// The avatar `wanted` names, in the media repository. `current` is the
/// avatar there is now and its source, to fetch an address only once.
pub async fn store<M: Matrix>(
    matrix: &M,
    fetcher: &Fetcher,
    field: &str,
    wanted: &Avatar,
    current: (Option<&str>, Option<&str>),
) -> Result<Stored, Error> {
    let url = match wanted {
        Avatar::Mxc(uri) => return Ok((uri.clone(), None)),
        Avatar::Fetch(url) => url,
    };
    if let (Some(stored), Some(source)) = current
        && source == url
    {
        return Ok((OwnedMxcUri::from(stored), Some(url.clone())));
    }
    let fetched = fetcher
        .fetch_image(url)
        .await
        .map_err(|err| Error::Invalid(format!("{field}: the image could not be used: {err}")))?;
    let filename = fetched.info.fallback_filename();
    let uri = matrix
        .upload_media(
            matrix.bot(),
            &fetched.info.mimetype,
            Some(&filename),
            fetched.bytes,
        )
        .await?;
    tracing::info!(%uri, size = fetched.info.size, "avatar fetched and uploaded");
    Ok((uri, Some(url.clone())))
}
