//! [`Matrix`] over HTTP: ruma request types -> `http::Request` ->
//! `reqwest` -> `http::Response` -> ruma response types. One pipeline for
//! every call, one shared `reqwest::Client`, the `as_token` in the
//! `Authorization` header and the puppet in `?user_id=`. A request the
//! homeserver refuses with `M_UNKNOWN_TOKEN` is sent once more if the token
//! was rotated meanwhile (read again from where it is kept).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ruma::api::Direction;
use ruma::api::auth_scheme::{AuthScheme, SendAccessToken};
use ruma::api::client::alias::get_alias;
use ruma::api::client::directory::set_room_visibility;
use ruma::api::client::discovery::get_capabilities;
use ruma::api::client::media::create_content;
use ruma::api::client::membership::invite_user;
use ruma::api::client::membership::{kick_user, leave_room, unban_user};
use ruma::api::client::message::get_message_events;
use ruma::api::client::profile::{ProfileFieldValue, set_profile_field};
use ruma::api::client::receipt::create_receipt::{self, v3::ReceiptType};
use ruma::api::client::redact::redact_event;
use ruma::api::client::room::{create_room, get_room_event};
use ruma::api::client::state::get_state_event_for_key::{self, v3::StateEventFormat};
use ruma::api::client::state::{get_state_events, send_state_event};
use ruma::api::client::typing::create_typing_event::{
    self,
    v3::{Typing, TypingInfo},
};
use ruma::api::client::{
    account::register, membership::join_room_by_id, message::send_message_event,
};
use ruma::api::error::ErrorKind;
use ruma::api::path_builder::{PathBuilder, SinglePath, VersionHistory};
use ruma::api::{
    AppserviceUserIdentity, IncomingResponseExt, MatrixVersion, OutgoingRequest,
    OutgoingRequestAppserviceExt, SupportedVersions,
};
use ruma::events::reaction::ReactionEventContent;
use ruma::events::relation::Annotation;
use ruma::events::room::avatar::RoomAvatarEventContent;
use ruma::events::room::member::MembershipState;
use ruma::events::space::child::SpaceChildEventContent;
use ruma::events::space::parent::SpaceParentEventContent;
use ruma::events::{InitialStateEvent, MessageLikeEventType, StateEventType};
use ruma::room::RoomType;
use ruma::serde::Raw;
use ruma::{
    EventId, Int, MxcUri, OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId,
    RoomVersionId, UserId,
};

use super::{Matrix, MatrixError, MemberState, RoomSpec};
use crate::config::{ConfigError, MatrixConfig};
use crate::metrics::Metrics;
use crate::model::{ConversationKind, Visibility};
use crate::secrets::CachedSecret;

/// Picks the input a request's path builder needs.
pub trait PathInput: PathBuilder {
    fn input(versions: &SupportedVersions) -> Self::Input<'_>;
}

impl PathInput for VersionHistory {
    fn input(versions: &SupportedVersions) -> Self::Input<'_> {
        Cow::Borrowed(versions)
    }
}

impl PathInput for SinglePath {
    fn input(_: &SupportedVersions) -> Self::Input<'_> {}
}

/// The appservice's client-server API client.
/// Clones share their HTTP connections, their request count and the
/// homeserver's default room version once read.
#[derive(Clone)]
pub struct AppserviceClient {
    http: reqwest::Client,
    base_url: String,
    as_token: CachedSecret,
    bot: OwnedUserId,
    versions: SupportedVersions,
    requests: Arc<AtomicU64>,
    room_version: Arc<tokio::sync::OnceCell<RoomVersionId>>,
    /// Where each call's latency goes (`MatrixLatency`); off unless set.
    metrics: Metrics,
}

impl AppserviceClient {
    /// The client of `config`'s homeserver, with the `as_token` already read.
    pub fn new(http: reqwest::Client, config: &MatrixConfig, as_token: CachedSecret) -> Self {
        let versions = SupportedVersions {
            versions: [MatrixVersion::V1_1, MatrixVersion::V1_11]
                .into_iter()
                .collect(),
            features: Default::default(),
        };
        Self {
            http,
            base_url: config.homeserver_url.clone(),
            as_token,
            bot: config.bot_user_id.clone(),
            versions,
            requests: Arc::new(AtomicU64::new(0)),
            room_version: Arc::default(),
            metrics: Metrics::off("matrix"),
        }
    }

    /// Opens the connection to the homeserver (TCP, TLS) with
    /// `GET /_matrix/client/versions`, which needs no token, so that the
    /// first invocation does not pay for it; not counted as a request.
    pub async fn warm_up(&self) -> Result<(), reqwest::Error> {
        self.http
            .get(format!("{}/_matrix/client/versions", self.base_url))
            .send()
            .await?
            .bytes()
            .await
            .map(drop)
    }

    /// The same client, recording each call's latency in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// A client with the `as_token` given in the environment (the local
    /// stack's and the tests' way; deployed functions read a stored secret).
    pub fn local(http: reqwest::Client, config: &MatrixConfig) -> Result<Self, ConfigError> {
        let as_token = CachedSecret::fixed(config.as_token.local_value()?);
        Ok(Self::new(http, config, as_token))
    }

    /// The room version new rooms get: the homeserver's default, read once
    /// from `GET /capabilities` (a version ruma does not know the rules of
    /// is replaced by version 12, whose rules the bridge knows).
    async fn room_version(&self) -> Result<RoomVersionId, MatrixError> {
        self.room_version
            .get_or_try_init(|| async {
                let response = self
                    .call(get_capabilities::v3::Request::new(), None)
                    .await?;
                let default = response.capabilities.room_versions.default;
                Ok::<_, MatrixError>(if default.rules().is_some() {
                    default
                } else {
                    RoomVersionId::V12
                })
            })
            .await
            .cloned()
    }

    /// The HTTP client every Matrix call shares: the process's TLS
    /// configuration ([`crate::tls`]), bounded timeouts.
    pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
        crate::tls::client_builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(50))
            .user_agent(concat!("lambda-matrix-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    /// How many HTTP requests this client has sent.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Who to masquerade as to act as `user`: nobody for the bot, which
    /// the `as_token` already is.
    fn acting_as<'a>(&self, user: &'a UserId) -> Option<&'a UserId> {
        (user != self.bot).then_some(user)
    }

    /// Sends `request`, as `user` when given (masquerading), else as the bot.
    async fn call<R>(
        &self,
        request: R,
        user: Option<&UserId>,
    ) -> Result<R::IncomingResponse, MatrixError>
    where
        R: OutgoingRequest,
        R::PathBuilder: PathInput,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        let identity = user.map(AppserviceUserIdentity::new).unwrap_or_default();
        let token = self.as_token.current();
        let http_request = request
            .try_into_http_request_with_identity::<Vec<u8>>(
                &self.base_url,
                SendAccessToken::Appservice(token.expose()),
                identity,
                R::PathBuilder::input(&self.versions),
            )
            .map_err(|err| MatrixError::Protocol(err.to_string()))?;
        let request = reqwest::Request::try_from(http_request)
            .map_err(|err| MatrixError::Protocol(err.to_string()))?;
        // The body is `Bytes`: a spare copy costs a reference count.
        let spare = request.try_clone();
        let response = match (self.execute(request).await, spare) {
            (Err(err), Some(mut spare))
                if matches!(err.kind(), Some(ErrorKind::UnknownToken(_)))
                    && self.as_token.refresh(&token).await =>
            {
                // Refused before anything was done: safe to send again.
                let fresh = self.as_token.current();
                let mut value = http::HeaderValue::try_from(format!("Bearer {}", fresh.expose()))
                    .map_err(|err| MatrixError::Protocol(err.to_string()))?;
                value.set_sensitive(true);
                spare
                    .headers_mut()
                    .insert(http::header::AUTHORIZATION, value);
                self.execute(spare).await?
            }
            (result, _) => result?,
        };
        let (parts, body) = response.into_parts();
        R::IncomingResponse::try_from_http_response(http::Response::from_parts(
            parts,
            body.as_ref(),
        ))
        .map_err(|err| MatrixError::Protocol(err.to_string()))
    }

    /// Sends one request: its success answer, or the error it is.
    async fn execute(
        &self,
        request: reqwest::Request,
    ) -> Result<http::Response<bytes::Bytes>, MatrixError> {
        let method = request.method().clone();
        let path = request.url().path().to_owned();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let response =
            self.http
                .execute(request)
                .await
                .map_err(|source| MatrixError::Unreachable {
                    maybe_delivered: !source.is_connect(),
                    source: source.without_url(),
                })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .map(Duration::from_secs);
        let mut builder = http::Response::builder().status(status);
        if let Some(headers) = builder.headers_mut() {
            headers.extend(response.headers().clone());
        }
        let body = response
            .bytes()
            .await
            .map_err(|source| MatrixError::Unreachable {
                maybe_delivered: true,
                source: source.without_url(),
            })?;
        let elapsed = started.elapsed();
        self.metrics.matrix_call(elapsed);
        tracing::debug!(%method, path, status = status.as_u16(), elapsed_ms = elapsed.as_millis() as u64, "matrix call");
        if !status.is_success() {
            return Err(MatrixError::from_status(
                status.as_u16(),
                &body,
                retry_after,
            ));
        }
        builder
            .body(body)
            .map_err(|err| MatrixError::Protocol(err.to_string()))
    }
}

/// The creation preset: public rooms can be joined by anyone, the others
/// by invitation. Direct rooms are private chats too, not trusted ones: in
/// room version 12 a trusted chat makes its invitees creators, with powers
/// nobody can take away, which a bridged member must not have.
fn preset(spec: &RoomSpec) -> create_room::v3::RoomPreset {
    match (spec.kind, spec.visibility) {
        (Some(ConversationKind::Direct), _) | (_, Visibility::Private) => {
            create_room::v3::RoomPreset::PrivateChat
        }
        (_, Visibility::Public) => create_room::v3::RoomPreset::PublicChat,
    }
}

/// Whether creators of rooms of `version` have unlimited power without
/// being listed in the power levels' `users` (version 12 on), in which
/// case they must not be listed.
fn creators_privileged(version: &RoomVersionId) -> bool {
    version
        .rules()
        .is_some_and(|rules| rules.authorization.explicitly_privilege_room_creators)
}

/// The `users` of a new room's power levels: the members' levels, and the
/// bot (the creator) at 100 where the room version does not give creators
/// their power by itself (Synapse then requires the creator to be listed).
fn initial_power_users(
    version: &RoomVersionId,
    bot: &UserId,
    levels: &std::collections::BTreeMap<OwnedUserId, i64>,
) -> std::collections::BTreeMap<OwnedUserId, Int> {
    let mut users: std::collections::BTreeMap<OwnedUserId, Int> = levels
        .iter()
        .filter(|(user, _)| **user != bot)
        .map(|(user, level)| (user.clone(), Int::from(i32::try_from(*level).unwrap_or(0))))
        .collect();
    if !creators_privileged(version) {
        users.insert(bot.to_owned(), Int::from(100));
    }
    users
}

fn raw<T: serde::Serialize>(value: &T) -> Result<Raw<T>, MatrixError> {
    Raw::new(value).map_err(|err| MatrixError::Protocol(err.to_string()))
}

impl Matrix for AppserviceClient {
    fn bot(&self) -> &UserId {
        &self.bot
    }

    async fn register_puppet(&self, localpart: &str) -> Result<(), MatrixError> {
        let mut request = register::v3::Request::new();
        request.username = Some(localpart.to_owned());
        request.inhibit_login = true;
        request.login_type = Some(register::LoginType::ApplicationService);
        match self.call(request, None).await {
            Ok(_) => Ok(()),
            Err(err) if matches!(err.kind(), Some(ruma::api::error::ErrorKind::UserInUse)) => {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    async fn set_display_name(&self, user: &UserId, name: &str) -> Result<(), MatrixError> {
        let request = set_profile_field::v3::Request::new(
            user.to_owned(),
            ProfileFieldValue::DisplayName(name.to_owned()),
        );
        self.call(request, Some(user)).await.map(drop)
    }

    async fn set_avatar_url(&self, user: &UserId, url: &MxcUri) -> Result<(), MatrixError> {
        let request = set_profile_field::v3::Request::new(
            user.to_owned(),
            ProfileFieldValue::AvatarUrl(url.to_owned()),
        );
        self.call(request, Some(user)).await.map(drop)
    }

    async fn create_room(&self, spec: &RoomSpec) -> Result<OwnedRoomId, MatrixError> {
        let mut request = create_room::v3::Request::new();
        request.name = spec.name.clone();
        request.topic = spec.topic.clone();
        request.invite = spec.invite.clone();
        request.is_direct = spec.kind == Some(ConversationKind::Direct);
        request.preset = Some(preset(spec));
        request.room_alias_name = spec.alias.clone();
        // The homeserver's default, named, so the power levels below match
        // it: in version 12 the creator (the bot) has unlimited power and
        // may not be listed in `users`; before, it must be.
        let version = self.room_version().await?;
        if spec.visibility == Visibility::Public {
            request.visibility = ruma::api::client::room::Visibility::Public;
        }
        if spec.kind == Some(ConversationKind::Space) {
            let mut creation = create_room::v3::CreationContent::new();
            creation.room_type = Some(RoomType::Space);
            request.creation_content = Some(raw(&creation)?);
        }
        if let Some(parent) = &spec.parent {
            let mut content = SpaceParentEventContent::new(vec![self.bot.server_name().to_owned()]);
            content.canonical = true;
            request
                .initial_state
                .push(InitialStateEvent::new(parent.clone(), content).to_raw_any());
        }
        if let Some(avatar) = &spec.avatar {
            let mut content = RoomAvatarEventContent::new();
            content.url = Some(avatar.clone());
            request
                .initial_state
                .push(InitialStateEvent::with_empty_state_key(content).to_raw_any());
        }
        let mut levels = create_room::RoomPowerLevelsContentOverride::new();
        levels.users = initial_power_users(&version, &self.bot, &spec.power_levels);
        request.room_version = Some(version);
        request.power_level_content_override = Some(raw(&levels)?);
        Ok(self.call(request, None).await?.room_id)
    }

    async fn add_space_child(&self, space: &RoomId, child: &RoomId) -> Result<(), MatrixError> {
        let content = SpaceChildEventContent::new(vec![self.bot.server_name().to_owned()]);
        let request =
            send_state_event::v3::Request::new(space.to_owned(), &child.to_owned(), &content)
                .map_err(|err| MatrixError::Protocol(err.to_string()))?;
        self.call(request, None).await.map(drop)
    }

    async fn invite(&self, room: &RoomId, user: &UserId) -> Result<(), MatrixError> {
        let recipient = invite_user::v3::InviteUserId::new(user.to_owned());
        let request = invite_user::v3::Request::new(room.to_owned(), recipient.into());
        self.call(request, None).await.map(drop)
    }

    async fn join(&self, room: &RoomId, user: &UserId) -> Result<(), MatrixError> {
        let request = join_room_by_id::v3::Request::new(room.to_owned());
        self.call(request, Some(user)).await.map(drop)
    }

    async fn find_sent_event(
        &self,
        room: &RoomId,
        sender: &UserId,
        sent: super::Sent<'_>,
        since: time::OffsetDateTime,
    ) -> Result<Option<OwnedEventId>, MatrixError> {
        // Milliseconds since the epoch of the oldest event worth reading.
        let oldest = (since - super::CLOCK_SKEW).unix_timestamp_nanos() / 1_000_000;
        let mut from: Option<String> = None;
        loop {
            let mut request =
                get_message_events::v3::Request::new(room.to_owned(), Direction::Backward);
            request.from = from.take();
            request.limit = 100u32.into();
            // Only the sender's messages: a busy room costs few pages.
            request.filter.senders = Some(vec![sender.to_owned()]);
            request.filter.types = Some(vec!["m.room.message".to_owned()]);
            let response = self.call(request, Some(sender)).await?;
            let mut older = false;
            for event in &response.chunk {
                let at = event.get_field::<i128>("origin_server_ts").ok().flatten();
                if at.is_some_and(|at| at < oldest) {
                    older = true;
                    break;
                }
                let from_sender = event
                    .get_field::<OwnedUserId>("sender")
                    .ok()
                    .flatten()
                    .as_deref()
                    == Some(sender);
                let content = event
                    .get_field::<serde_json::Value>("content")
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                if from_sender && sent.is_in(&content) {
                    return Ok(event.get_field::<OwnedEventId>("event_id").ok().flatten());
                }
            }
            match response.end {
                Some(end) if !older && !response.chunk.is_empty() => from = Some(end),
                _ => return Ok(None),
            }
        }
    }

    async fn send_message(
        &self,
        room: &RoomId,
        sender: &UserId,
        txn_id: &str,
        content: &serde_json::Value,
    ) -> Result<OwnedEventId, MatrixError> {
        let content = serde_json::value::to_raw_value(content)
            .map_err(|err| MatrixError::Protocol(err.to_string()))?;
        let request = send_message_event::v3::Request::new_raw(
            room.to_owned(),
            txn_id.into(),
            MessageLikeEventType::RoomMessage,
            Raw::from_json(content),
        );
        Ok(self.call(request, Some(sender)).await?.event_id)
    }

    async fn send_reaction(
        &self,
        room: &RoomId,
        sender: &UserId,
        txn_id: &str,
        target: &EventId,
        key: &str,
    ) -> Result<OwnedEventId, MatrixError> {
        let content = ReactionEventContent::new(Annotation::new(target.to_owned(), key.to_owned()));
        let request =
            send_message_event::v3::Request::new(room.to_owned(), txn_id.into(), &content)
                .map_err(|err| MatrixError::Protocol(err.to_string()))?;
        Ok(self.call(request, Some(sender)).await?.event_id)
    }

    async fn is_redacted(
        &self,
        room: &RoomId,
        reader: &UserId,
        event_id: &EventId,
    ) -> Result<bool, MatrixError> {
        let request = get_room_event::v3::Request::new(room.to_owned(), event_id.to_owned());
        let response = self.call(request, self.acting_as(reader)).await?;
        let unsigned = response
            .event
            .get_field::<serde_json::Value>("unsigned")
            .ok()
            .flatten()
            .unwrap_or_default();
        Ok(unsigned.get("redacted_because").is_some())
    }

    async fn redact(
        &self,
        room: &RoomId,
        sender: &UserId,
        event_id: &EventId,
        txn_id: &str,
        reason: Option<&str>,
    ) -> Result<OwnedEventId, MatrixError> {
        let mut request =
            redact_event::v3::Request::new(room.to_owned(), event_id.to_owned(), txn_id.into());
        request.reason = reason.map(str::to_owned);
        Ok(self.call(request, self.acting_as(sender)).await?.event_id)
    }

    async fn upload_media(
        &self,
        uploader: &UserId,
        content_type: &str,
        filename: Option<&str>,
        bytes: Vec<u8>,
    ) -> Result<OwnedMxcUri, MatrixError> {
        let mut request = create_content::v3::Request::new(bytes);
        request.content_type = Some(content_type.to_owned());
        request.filename = filename.map(str::to_owned);
        Ok(self
            .call(request, self.acting_as(uploader))
            .await?
            .content_uri)
    }

    async fn set_typing(
        &self,
        room: &RoomId,
        user: &UserId,
        typing: bool,
        timeout: Duration,
    ) -> Result<(), MatrixError> {
        let state = if typing {
            Typing::Yes(TypingInfo::new(timeout))
        } else {
            Typing::No
        };
        let request =
            create_typing_event::v3::Request::new(user.to_owned(), room.to_owned(), state);
        self.call(request, self.acting_as(user)).await.map(drop)
    }

    async fn send_read_receipt(
        &self,
        room: &RoomId,
        user: &UserId,
        event_id: &EventId,
    ) -> Result<(), MatrixError> {
        let request = create_receipt::v3::Request::new(
            room.to_owned(),
            ReceiptType::Read,
            event_id.to_owned(),
        );
        self.call(request, self.acting_as(user)).await.map(drop)
    }

    async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>, MatrixError> {
        let request = get_alias::v3::Request::new(alias.to_owned());
        match self.call(request, None).await {
            Ok(response) => Ok(Some(response.room_id)),
            Err(err) if err.status() == Some(404) => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn leave(&self, room: &RoomId, user: &UserId) -> Result<(), MatrixError> {
        let request = leave_room::v3::Request::new(room.to_owned());
        self.call(request, self.acting_as(user)).await.map(drop)
    }

    async fn kick(
        &self,
        room: &RoomId,
        user: &UserId,
        reason: Option<&str>,
    ) -> Result<(), MatrixError> {
        let mut request = kick_user::v3::Request::new(room.to_owned(), user.to_owned());
        request.reason = reason.map(str::to_owned);
        self.call(request, None).await.map(drop)
    }

    async fn state(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<serde_json::Value>, MatrixError> {
        let request = get_state_event_for_key::v3::Request::new(
            room.to_owned(),
            event_type.into(),
            state_key.to_owned(),
        );
        match self.call(request, None).await {
            Ok(response) => serde_json::from_str(response.event_or_content.get())
                .map(Some)
                .map_err(|err| MatrixError::Protocol(err.to_string())),
            Err(err) if err.status() == Some(404) => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn put_state(
        &self,
        room: &RoomId,
        sender: &UserId,
        event_type: &str,
        state_key: &str,
        content: &serde_json::Value,
    ) -> Result<OwnedEventId, MatrixError> {
        let content = serde_json::value::to_raw_value(content)
            .map_err(|err| MatrixError::Protocol(err.to_string()))?;
        let request = send_state_event::v3::Request::new_raw(
            room.to_owned(),
            event_type.into(),
            state_key.to_owned(),
            Raw::from_json(content),
        );
        Ok(self.call(request, self.acting_as(sender)).await?.event_id)
    }

    async fn room_state(&self, room: &RoomId) -> Result<Vec<serde_json::Value>, MatrixError> {
        let request = get_state_events::v3::Request::new(room.to_owned());
        self.call(request, None)
            .await?
            .room_state
            .iter()
            .map(|event| {
                serde_json::from_str(event.json().get())
                    .map_err(|err| MatrixError::Protocol(err.to_string()))
            })
            .collect()
    }

    async fn set_directory_visibility(
        &self,
        room: &RoomId,
        public: bool,
    ) -> Result<(), MatrixError> {
        let visibility = if public {
            ruma::api::client::room::Visibility::Public
        } else {
            ruma::api::client::room::Visibility::Private
        };
        let request = set_room_visibility::v3::Request::new(room.to_owned(), visibility);
        self.call(request, None).await.map(drop)
    }

    async fn membership(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<Option<MemberState>, MatrixError> {
        #[derive(serde::Deserialize)]
        struct Event {
            sender: OwnedUserId,
            content: Content,
        }
        #[derive(serde::Deserialize)]
        struct Content {
            membership: MembershipState,
            reason: Option<String>,
        }
        let mut request = get_state_event_for_key::v3::Request::new(
            room.to_owned(),
            StateEventType::RoomMember,
            user.to_string(),
        );
        request.format = StateEventFormat::Event;
        let response = match self.call(request, None).await {
            Ok(response) => response,
            Err(err) if matches!(err.kind(), Some(ruma::api::error::ErrorKind::NotFound)) => {
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        let event: Event = serde_json::from_str(response.event_or_content.get())
            .map_err(|err| MatrixError::Protocol(err.to_string()))?;
        Ok(Some(MemberState {
            membership: event.content.membership,
            sender: event.sender,
            reason: event.content.reason,
        }))
    }

    async fn unban(&self, room: &RoomId, user: &UserId) -> Result<(), MatrixError> {
        let request = unban_user::v3::Request::new(room.to_owned(), user.to_owned());
        self.call(request, None).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ruma::{RoomVersionId, owned_user_id, user_id};

    use super::*;

    #[test]
    fn the_creator_is_listed_only_where_the_room_version_needs_it() {
        let bot = user_id!("@bridgebot:localhost");
        let alice = owned_user_id!("@app_alice:localhost");
        let levels = BTreeMap::from([(alice.clone(), 100), (bot.to_owned(), 100)]);
        let v12 = initial_power_users(&RoomVersionId::V12, bot, &levels);
        assert_eq!(v12, BTreeMap::from([(alice.clone(), Int::from(100))]));
        let v10 = initial_power_users(&RoomVersionId::V10, bot, &levels);
        assert_eq!(
            v10,
            BTreeMap::from([(alice, Int::from(100)), (bot.to_owned(), Int::from(100))])
        );
        assert!(creators_privileged(&RoomVersionId::V12));
        assert!(!creators_privileged(&RoomVersionId::V11));
    }

    #[test]
    fn direct_rooms_are_private_chats() {
        let direct = RoomSpec {
            kind: Some(ConversationKind::Direct),
            visibility: Visibility::Public,
            ..RoomSpec::default()
        };
        assert_eq!(preset(&direct), create_room::v3::RoomPreset::PrivateChat);
        let public = RoomSpec {
            visibility: Visibility::Public,
            ..RoomSpec::default()
        };
        assert_eq!(preset(&public), create_room::v3::RoomPreset::PublicChat);
    }
}
