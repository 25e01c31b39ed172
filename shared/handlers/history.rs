//! The `history` function: a conversation's messages from the table, those
//! sent through the API and those that arrived from Matrix alike.
//!
//! Each request is two reads at once: the conversation with its members
//! (who may see it, and the senders' display names) and the messages (for
//! one thread, `?thread_id=`, its root's record at the same time); then
//! the page's reaction counts and the reader's own reactions, two queries
//! at once, whatever the page's size.

use std::collections::HashMap;

use lambda_http::{Body, Response};
use ruma::OwnedUserId;
use serde::Serialize;

use crate::api::views::MessageView;
use crate::api::{self, ApiError, ApiRequest, Route};
use crate::function::{BoxFuture, Function, Handler, HttpFunction};
use crate::ids::{ConversationId, PuppetNamer};
use crate::metrics::Metrics;
use crate::model::{Conversation, Member, Message, MessageId, Page, ReactionCount};
use crate::ports::{InitError, Ports};
use crate::store::Store;

pub const NAME: &str = "history";

/// The function, for the registry.
pub fn function<P: Ports>() -> Function<P> {
    Function::http(NAME, |ports| Box::pin(build(ports)))
}

/// The table only: no Matrix token.
async fn build<P: Ports>(ports: &P) -> Result<Handler, InitError> {
    let namer = ports.namer()?;
    Ok(Handler::Http(Box::new(History {
        store: ports.store().await?,
        namer,
        metrics: ports.metrics(NAME),
    })))
}

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 100;

/// The history function's state, built once per container.
pub struct History<S> {
    pub store: S,
    pub namer: PuppetNamer,
    pub metrics: Metrics,
}

impl<S: Store + 'static> HttpFunction for History<S> {
    fn call(&self, request: lambda_http::Request) -> BoxFuture<'_, Response<Body>> {
        Box::pin(self.handle(request))
    }
}

#[derive(Serialize)]
struct PageView<'a> {
    messages: Vec<MessageView<'a>>,
    next: Option<MessageId>,
}

/// Display names of a conversation's members, by Matrix ID, and the
/// reader's puppet (none for a service token reading as itself).
struct Names(HashMap<OwnedUserId, String>, Option<OwnedUserId>);

impl Names {
    fn of(members: Vec<Member>, reader: Option<OwnedUserId>) -> Self {
        Self(
            members
                .into_iter()
                .filter_map(|member| {
                    member
                        .display_name
                        .map(|name| (member.matrix_user_id, name))
                })
                .collect(),
            reader,
        )
    }

    fn view<'a>(&'a self, message: &'a Message, reactions: &'a Reactions) -> MessageView<'a> {
        let name = self
            .0
            .get(&message.sender.matrix_user_id)
            .map(String::as_str);
        let counts = reactions
            .iter()
            .filter(|(id, _)| *id == message.id)
            .map(|(_, count)| count);
        MessageView::from(message)
            .with_sender_name(name)
            .with_reactions(counts)
    }
}

/// The reaction counts of a page's messages.
type Reactions = Vec<(MessageId, ReactionCount)>;

impl<S: Store> History<S> {
    pub async fn handle(&self, request: lambda_http::Request) -> Response<Body> {
        api::serve(&self.metrics, request, |request| async move {
            match request.route {
                Route::ListMessages => self.list(request).await,
                Route::GetMessage => self.get(request).await,
                _ => Err(ApiError::NotFound("no such route".into())),
            }
        })
        .await
    }

    /// The members' names, if the acting user may see the conversation: a
    /// member, or a service token reading without `as_user`. Others get
    /// `404`, so ids do not leak.
    fn visible(
        &self,
        request: &ApiRequest,
        id: &ConversationId,
        found: Option<(Conversation, Vec<Member>)>,
    ) -> Result<Names, ApiError> {
        let not_found = || ApiError::NotFound(format!("conversation '{id}' not found"));
        let (_, members) = found.ok_or_else(not_found)?;
        let reader = match request.caller.reader(request.query("as_user")?)? {
            Some(reader) => {
                let reader = self.namer.user_id(&reader);
                if !members.iter().any(|member| member.matrix_user_id == reader) {
                    return Err(not_found());
                }
                Some(reader)
            }
            None => None,
        };
        Ok(Names::of(members, reader))
    }

    /// The reactions to the messages of `messages` (one range of ids).
    async fn reactions(
        &self,
        id: &ConversationId,
        names: &Names,
        messages: &[Message],
    ) -> Result<Reactions, ApiError> {
        let (Some(first), Some(last)) = (
            messages.iter().map(|m| m.id).min(),
            messages.iter().map(|m| m.id).max(),
        ) else {
            return Ok(Vec::new());
        };
        Ok(self
            .store
            .reaction_counts(id, first, last, names.1.as_deref())
            .await?)
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
        let thread = request.query::<MessageId>("thread_id")?;
        let page = async {
            match thread {
                // The thread's root must be a message of the conversation.
                Some(root) => {
                    let (found, page) = tokio::join!(
                        self.store.message(&id, root),
                        self.store.thread(&id, root, limit, before)
                    );
                    Ok(found?.map(|_| page).transpose()?)
                }
                None => self.store.messages(&id, limit, before).await.map(Some),
            }
        };
        let (found, page) = tokio::join!(self.store.conversation_with_members(&id), page);
        let names = self.visible(&request, &id, found?)?;
        let page: Option<Page> = page.map_err(ApiError::from)?;
        let page = page.ok_or_else(|| {
            ApiError::NotFound(format!(
                "thread_id: no message '{}' in conversation '{id}'",
                thread.map(|t| t.to_string()).unwrap_or_default()
            ))
        })?;
        let reactions = self.reactions(&id, &names, &page.messages).await?;
        let view = PageView {
            messages: page
                .messages
                .iter()
                .map(|m| names.view(m, &reactions))
                .collect(),
            next: page.next,
        };
        api::json(200, &view)
    }

    async fn get(&self, request: ApiRequest) -> Result<Response<Body>, ApiError> {
        let id = request.conversation_id()?;
        let message_id: MessageId = request.path_param("message_id")?;
        let (found, message) = tokio::join!(
            self.store.conversation_with_members(&id),
            self.store.message(&id, message_id)
        );
        let names = self.visible(&request, &id, found?)?;
        let message = message?
            .ok_or_else(|| ApiError::NotFound(format!("message '{message_id}' not found")))?;
        let reactions = self
            .reactions(&id, &names, std::slice::from_ref(&message))
            .await?;
        api::json(200, &names.view(&message, &reactions))
    }
}
