//! The `history` function: a conversation's messages from the table, those
//! sent through the API and those that arrived from Matrix alike.

use lambda_http::{Body, Response};

use super::views::MessageView;
use crate::api::{self, ApiError, ApiRequest, Function, Route};
use crate::ids::{AppUserId, ConversationId, PuppetNamer};
use crate::model::MessageId;
use crate::store::Store;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 100;

/// The history function's state, built once per container.
pub struct History<S> {
    pub store: S,
    pub namer: PuppetNamer,
}

impl<S: Store> History<S> {
    pub async fn handle(&self, request: lambda_http::Request) -> Response<Body> {
        api::serve(Function::History, request, |request| async move {
            match request.route {
                Route::ListMessages => self.list(request).await,
                Route::GetMessage => self.get(request).await,
                _ => Err(ApiError::NotFound("no such route".into())),
            }
        })
        .await
    }

    /// `404` unless the acting user is a member (or a service token reads
    /// without `as_user`), so ids do not leak.
    async fn check_visible(
        &self,
        request: &ApiRequest,
        id: &ConversationId,
    ) -> Result<(), ApiError> {
        let as_user: Option<AppUserId> = request.query("as_user")?;
        let not_found = || ApiError::NotFound(format!("conversation '{id}' not found"));
        if request.caller.admin && as_user.is_none() {
            return self
                .store
                .conversation(id)
                .await?
                .map(drop)
                .ok_or_else(not_found);
        }
        let user = request.caller.acting_user(as_user)?;
        self.store
            .member(id, &self.namer.user_id(&user))
            .await?
            .map(drop)
            .ok_or_else(not_found)
    }

    async fn list(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let id = request.conversation_id()?;
        let limit = request.query::<usize>("limit")?.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::InvalidRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        let before = request.query::<MessageId>("before")?;
        let (visible, page) = tokio::join!(
            self.check_visible(&request, &id),
            self.store.messages(&id, limit, before)
        );
        visible?;
        let page = page?;
        let messages: Vec<MessageView> = page.messages.iter().map(MessageView::from).collect();
        api::json(
            200,
            &serde_json::json!({"messages": messages, "next": page.next}),
        )
    }

    async fn get(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let id = request.conversation_id()?;
        let message_id: MessageId = request.path_param("message_id")?;
        let (visible, message) = tokio::join!(
            self.check_visible(&request, &id),
            self.store.message(&id, message_id)
        );
        visible?;
        let message = message?
            .ok_or_else(|| ApiError::NotFound(format!("message '{message_id}' not found")))?;
        api::json(200, &MessageView::from(&message))
    }
}
