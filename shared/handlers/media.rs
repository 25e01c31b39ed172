//! The `media` function: a member uploads a file into a conversation, to
//! attach it to a message (`attachments` of a send) afterwards.
//!
//! The file is the raw request body (API Gateway base64-encodes binary
//! bodies and `lambda_http` decodes them), its type the `Content-Type`
//! header, its name `?filename=`. It is checked before anything is stored
//! ([`crate::media::inspect`]: the allow-list, the bytes against the
//! declared type, at most [`MAX_MEDIA`](crate::media::MAX_MEDIA)), put in
//! the homeserver's media repository as the member's puppet
//! (`POST /_matrix/media/v3/upload`), and recorded in the table, so that
//! a send can attach it by its `media_id`.

use lambda_http::{Body, Response};
use time::OffsetDateTime;

use super::access::member_of;
use crate::api::views::MediaView;
use crate::api::{self, ApiError, ApiRequest, Route};
use crate::function::{BoxFuture, Function, Handler, HttpFunction};
use crate::ids::PuppetNamer;
use crate::matrix::Matrix;
use crate::media::{self, MediaError};
use crate::metrics::Metrics;
use crate::model::{MediaId, MediaRecord};
use crate::ports::{InitError, Ports};
use crate::store::Store;

pub const NAME: &str = "media";

/// The function, for the registry.
pub fn function<P: Ports>() -> Function<P> {
    Function::http(NAME, |ports| Box::pin(build(ports)))
}

async fn build<P: Ports>(ports: &P) -> Result<Handler, InitError> {
    Ok(Handler::Http(Box::new(MediaService {
        store: ports.store().await?,
        matrix: ports.matrix().await?,
        namer: ports.namer()?,
        metrics: ports.metrics(NAME),
    })))
}

/// The media function's state, built once per container.
pub struct MediaService<S, M> {
    pub store: S,
    pub matrix: M,
    pub namer: PuppetNamer,
    pub metrics: Metrics,
}

impl<S: Store + 'static, M: Matrix + 'static> HttpFunction for MediaService<S, M> {
    fn call(&self, request: lambda_http::Request) -> BoxFuture<'_, Response<Body>> {
        Box::pin(self.handle(request))
    }
}

/// Why a file is refused, as the API answers it.
fn refusal(err: MediaError) -> ApiError {
    match err {
        MediaError::Empty => ApiError::InvalidRequest(format!("{err}: send the file as the body")),
        MediaError::TooLarge { .. } => ApiError::PayloadTooLarge(err.to_string()),
        MediaError::NotAllowed(_) | MediaError::Mismatch { .. } | MediaError::Corrupt(_) => {
            ApiError::UnsupportedMediaType(err.to_string())
        }
    }
}

impl<S: Store, M: Matrix> MediaService<S, M> {
    pub async fn handle(&self, request: lambda_http::Request) -> Response<Body> {
        api::serve(&self.metrics, request, |request| async move {
            match request.route {
                Route::UploadMedia => self.upload(request).await,
                _ => Err(ApiError::NotFound("no such route".into())),
            }
        })
        .await
    }

    async fn upload(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let id = request.conversation_id()?;
        let user = request.caller.acting_user(request.query("as_user")?)?;
        let filename = request.query::<String>("filename")?;
        let acting = member_of(&self.store, &self.namer, &request, user, &id).await?;

        let content_type = request.header("content-type").unwrap_or_default();
        let info = media::inspect(content_type, request.body()).map_err(refusal)?;
        let filename = filename
            .as_deref()
            .and_then(media::sanitize_filename)
            .unwrap_or_else(|| info.fallback_filename());
        let content_uri = self
            .matrix
            .upload_media(
                &acting.puppet,
                &info.mimetype,
                Some(&filename),
                request.body().to_vec(),
            )
            .await?;
        let record = MediaRecord {
            media_id: MediaId::new(),
            conversation_id: id,
            uploader: acting.user,
            content_uri,
            info,
            filename,
            created_at: OffsetDateTime::now_utc(),
        };
        self.store.put_media(&record).await?;
        tracing::info!(media_id = %record.media_id, size = record.info.size, mimetype = %record.info.mimetype, "media uploaded");
        api::json(201, &MediaView::from(&record))
    }
}
