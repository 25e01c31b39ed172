//! An in-memory homeserver for unit tests of the handlers: it records every
//! call, refuses what Synapse refuses where the bridge depends on it (a
//! puppet that has not joined may not send, redact, type or send receipts;
//! a redaction needs a known event and, for another user's event, the power
//! to redact), and can be told to fail the next calls of a kind. Rooms
//! keep their state ([`rooms`]): members, power levels, name, aliases.

mod rooms;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ruma::events::room::member::MembershipState;
use ruma::{
    EventId, MxcUri, OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId,
    RoomVersionId, UserId, owned_user_id,
};

use super::{Matrix, MatrixError, MemberState, RoomSpec};

/// A call the fake received.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Register(String),
    DisplayName(OwnedUserId, String),
    Avatar(OwnedUserId, String),
    CreateRoom(RoomSpec),
    AddSpaceChild {
        space: OwnedRoomId,
        child: OwnedRoomId,
    },
    Invite(OwnedRoomId, OwnedUserId),
    Join(OwnedRoomId, OwnedUserId),
    Send {
        room: OwnedRoomId,
        sender: OwnedUserId,
        txn_id: String,
        content: serde_json::Value,
    },
    /// An `m.reaction`: `target` annotated with `key`.
    React {
        room: OwnedRoomId,
        sender: OwnedUserId,
        txn_id: String,
        target: OwnedEventId,
        key: String,
    },
    Redact {
        room: OwnedRoomId,
        sender: OwnedUserId,
        event_id: OwnedEventId,
        txn_id: String,
        reason: Option<String>,
    },
    Upload {
        uploader: OwnedUserId,
        content_type: String,
        filename: Option<String>,
        size: usize,
    },
    Typing {
        room: OwnedRoomId,
        user: OwnedUserId,
        typing: bool,
        timeout: Duration,
    },
    Receipt {
        room: OwnedRoomId,
        user: OwnedUserId,
        event_id: OwnedEventId,
    },
    ResolveAlias(String),
    Leave(OwnedRoomId, OwnedUserId),
    Kick(OwnedRoomId, OwnedUserId),
    Unban(OwnedRoomId, OwnedUserId),
    /// A read of one state event.
    ReadState {
        room: OwnedRoomId,
        event_type: String,
        state_key: String,
    },
    PutState {
        room: OwnedRoomId,
        sender: OwnedUserId,
        event_type: String,
        state_key: String,
        content: serde_json::Value,
    },
    /// A read of a room's whole state.
    RoomState(OwnedRoomId),
    Directory(OwnedRoomId, bool),
}

/// The kinds of call [`FakeMatrix::fail_next`] can make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Send,
    React,
    Join,
    Redact,
    Upload,
    Typing,
    Receipt,
    CreateRoom,
    Invite,
    Leave,
    Kick,
    PutState,
}

/// How the next call of a kind fails.
#[derive(Clone, Copy, Debug)]
pub enum Failure {
    /// A 502: worth retrying.
    Down,
    /// A 429 with a delay.
    RateLimited,
    /// A 400 refusal: not worth retrying.
    Refused,
    /// The call takes effect, but its answer is lost (a 504 from a proxy).
    AnswerLost,
    /// The connection is refused: the request never reaches the homeserver.
    ConnectionRefused,
}

impl From<Failure> for MatrixError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Down => MatrixError::from_status(502, b"", None),
            Failure::RateLimited => MatrixError::from_status(
                429,
                br#"{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":2000}"#,
                None,
            ),
            Failure::Refused => {
                MatrixError::from_status(400, br#"{"errcode":"M_BAD_JSON","error":"bad"}"#, None)
            }
            Failure::AnswerLost => MatrixError::from_status(504, b"", None),
            Failure::ConnectionRefused => match reqwest::Client::new().get("http://[").build() {
                // A request error of reqwest's own, standing for the refusal.
                Err(source) => MatrixError::Unreachable {
                    maybe_delivered: false,
                    source,
                },
                Ok(_) => MatrixError::Protocol("a request to nowhere was built".into()),
            },
        }
    }
}

fn forbidden(error: &str) -> MatrixError {
    let body = serde_json::json!({"errcode": "M_FORBIDDEN", "error": error}).to_string();
    MatrixError::from_status(403, body.as_bytes(), None)
}

fn not_found(error: &str) -> MatrixError {
    let body = serde_json::json!({"errcode": "M_NOT_FOUND", "error": error}).to_string();
    MatrixError::from_status(404, body.as_bytes(), None)
}

fn event_id(id: String) -> Result<OwnedEventId, MatrixError> {
    OwnedEventId::try_from(id).map_err(|err| MatrixError::Protocol(err.to_string()))
}

/// The power level Synapse's default power levels ask to redact another
/// user's event.
const REDACT_LEVEL: i64 = 50;

/// An `m.room.message` that landed in a room.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub room: OwnedRoomId,
    pub sender: OwnedUserId,
    /// Emptied when the event is redacted, as the homeserver does.
    pub content: serde_json::Value,
    pub event_id: OwnedEventId,
    /// The redaction event that redacted it, if one did.
    pub redacted_by: Option<OwnedEventId>,
    /// When it landed (`origin_server_ts`).
    pub at: time::OffsetDateTime,
}

/// A file in the fake media repository.
#[derive(Clone, Debug, PartialEq)]
pub struct Media {
    pub uploader: OwnedUserId,
    pub content_type: String,
    pub filename: Option<String>,
    pub bytes: Vec<u8>,
}

/// What runs while a send is on its way, before it lands: a test's
/// concurrent request. It gets the content being sent.
pub type SendHook = Box<
    dyn FnOnce(serde_json::Value) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send,
>;

#[derive(Default)]
struct State {
    /// Runs during the next `send_message`, before it lands.
    before_send: Option<SendHook>,
    calls: Vec<Call>,
    failures: HashMap<Op, VecDeque<Failure>>,
    joined: HashSet<(OwnedRoomId, OwnedUserId)>,
    /// Rooms are invite-only, as the presets the bridge uses make them.
    invited: HashSet<(OwnedRoomId, OwnedUserId)>,
    /// Power levels above 0 (the bot, the rooms' creator, has them all).
    power: HashMap<(OwnedRoomId, OwnedUserId), i64>,
    rooms_made: usize,
    /// How many times a lost answer was looked for (`find_sent_event`).
    lookups: usize,
    timeline: Vec<Event>,
    /// Redactions by request path (room, event, transaction id): Synapse
    /// remembers an appservice's transactions per path, whoever the puppet.
    redactions: HashMap<(OwnedRoomId, OwnedEventId, String), OwnedEventId>,
    media: Vec<(OwnedMxcUri, Media)>,
    /// Who is typing, where.
    typing: HashSet<(OwnedRoomId, OwnedUserId)>,
    /// The latest `m.read` receipt of each user in each room.
    receipts: HashMap<(OwnedRoomId, OwnedUserId), OwnedEventId>,
    /// Every room's state, members included (who set each membership, and why).
    rooms: rooms::Rooms,
}

impl State {
    fn next_failure(&mut self, op: Op) -> Option<Failure> {
        self.failures.get_mut(&op).and_then(VecDeque::pop_front)
    }

    fn is_joined(&self, room: &RoomId, user: &UserId) -> bool {
        self.joined.contains(&(room.to_owned(), user.to_owned()))
    }

    fn require_joined(&self, room: &RoomId, user: &UserId) -> Result<(), MatrixError> {
        if self.is_joined(room, user) {
            Ok(())
        } else {
            Err(forbidden("not in room"))
        }
    }

    /// Sets a membership in the room's state (by `sender`, with the
    /// moderator's `reason` of a kick or ban) and in the sets the other
    /// checks read.
    fn set_membership(
        &mut self,
        room: &RoomId,
        sender: &UserId,
        user: &UserId,
        membership: &str,
        reason: Option<&str>,
    ) {
        let key = (room.to_owned(), user.to_owned());
        self.joined.remove(&key);
        self.invited.remove(&key);
        match membership {
            "join" => {
                self.joined.insert(key);
            }
            "invite" => {
                self.invited.insert(key);
            }
            _ => {}
        }
        self.rooms
            .set_membership(room, sender, user, membership, false, reason);
    }

    /// Reads the levels of a room's power levels into the map redactions check.
    fn sync_power(&mut self, room: &RoomId, levels: &serde_json::Value) {
        // The creator keeps its unlimited power; the others are as listed.
        self.power
            .retain(|(id, _), level| id != room || *level == i64::MAX);
        if let Some(users) = levels["users"].as_object() {
            for (user, level) in users {
                if let (Ok(user), Some(level)) =
                    (OwnedUserId::try_from(user.as_str()), level.as_i64())
                {
                    self.power.insert((room.to_owned(), user), level);
                }
            }
        }
    }
}

/// Clones share their state, so a test can keep one to inspect.
#[derive(Clone)]
pub struct FakeMatrix {
    state: Arc<Mutex<State>>,
    bot: OwnedUserId,
}

impl Default for FakeMatrix {
    /// A homeserver whose appservice bot is `@bridgebot:localhost`.
    fn default() -> Self {
        Self {
            state: Arc::default(),
            bot: owned_user_id!("@bridgebot:localhost"),
        }
    }
}

/// The effect of a call, and what it answers, given the failure injected
/// for it: `AnswerLost` lets the effect happen and loses the answer; the
/// others fail before anything happens.
fn answer<T>(
    failure: Option<Failure>,
    effect: impl FnOnce() -> Result<T, MatrixError>,
) -> Result<T, MatrixError> {
    match failure {
        Some(Failure::AnswerLost) => effect().and(Err(Failure::AnswerLost.into())),
        Some(failure) => Err(failure.into()),
        None => effect(),
    }
}

impl FakeMatrix {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The `Send` calls, in order.
    pub fn sends(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|call| matches!(call, Call::Send { .. }))
            .collect()
    }

    /// Forgets the transaction ids of redactions, as Synapse does when it
    /// restarts (it keeps them in memory): the same redaction again makes a
    /// second redaction event.
    pub fn forget_transactions(&self) {
        self.state().redactions.clear();
    }

    /// How many times the timeline was searched for a send or edit whose
    /// answer may have been lost.
    pub fn lookups(&self) -> usize {
        self.state().lookups
    }

    /// Makes the next call of kind `op` fail (failures queue up, in order).
    pub fn fail_next(&self, op: Op, failure: Failure) {
        self.state()
            .failures
            .entry(op)
            .or_default()
            .push_back(failure);
    }

    /// Runs `hook` while the next send is on its way (after the request
    /// left, before it lands): a race, made deterministic.
    pub fn during_next_send(&self, hook: SendHook) {
        self.state().before_send = Some(hook);
    }

    pub fn fail_next_send(&self, failure: Failure) {
        self.fail_next(Op::Send, failure);
    }

    pub fn fail_next_join(&self, failure: Failure) {
        self.fail_next(Op::Join, failure);
    }

    /// Makes a user leave a room without a moderator (it left, or the
    /// bridge made it leave): to come back to an invite-only room, it needs
    /// a new invite.
    pub fn remove(&self, room: &RoomId, user: &UserId) {
        self.state().set_membership(room, user, user, "leave", None);
    }

    /// Has `by` (a moderator) kick `user` out of a room.
    pub fn moderator_kick(&self, room: &RoomId, user: &UserId, by: &UserId, reason: Option<&str>) {
        self.state().set_membership(room, by, user, "leave", reason);
    }

    /// Has `by` (a moderator) ban `user` from a room: it cannot be invited.
    pub fn moderator_ban(&self, room: &RoomId, user: &UserId, by: &UserId, reason: Option<&str>) {
        self.state().set_membership(room, by, user, "ban", reason);
    }

    /// Puts a user in a room without an invite, as a test's setup.
    pub fn add_member(&self, room: &RoomId, user: &UserId) {
        self.state().set_membership(room, user, user, "join", None);
    }

    /// The version rooms created from now on get (12 unless told).
    pub fn set_default_room_version(&self, version: RoomVersionId) {
        self.state().rooms.default_version = version;
    }

    /// The content of a room's state event.
    pub fn state_of(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Option<serde_json::Value> {
        self.state()
            .rooms
            .get(room, event_type, state_key)
            .map(|event| event.content.clone())
    }

    /// A user's membership in a room (`join`, `invite`, `leave`, `ban`).
    pub fn membership_of(&self, room: &RoomId, user: &UserId) -> Option<String> {
        self.state().rooms.membership(room, user)
    }

    /// Whether a room is listed in the room directory.
    pub fn is_listed(&self, room: &RoomId) -> bool {
        self.state().rooms.is_listed(room)
    }

    /// How many rooms were created.
    pub fn rooms_created(&self) -> usize {
        self.state().rooms_made
    }

    /// The `m.room.message` events of a room, oldest first.
    pub fn timeline(&self, room: &RoomId) -> Vec<Event> {
        self.state()
            .timeline
            .iter()
            .filter(|event| event.room == room)
            .cloned()
            .collect()
    }

    /// An event by id, as the room has it now (emptied once redacted).
    pub fn event(&self, event_id: &EventId) -> Option<Event> {
        self.state()
            .timeline
            .iter()
            .find(|event| event.event_id == event_id)
            .cloned()
    }

    /// A file of the media repository.
    pub fn media(&self, uri: &MxcUri) -> Option<Media> {
        self.state()
            .media
            .iter()
            .find(|(stored, _)| stored == uri)
            .map(|(_, media)| media.clone())
    }

    /// Whether `user` is typing in `room` now (timeouts do not run out here).
    pub fn is_typing(&self, room: &RoomId, user: &UserId) -> bool {
        self.state()
            .typing
            .contains(&(room.to_owned(), user.to_owned()))
    }

    /// The event up to which `user` said it read `room`.
    pub fn read_up_to(&self, room: &RoomId, user: &UserId) -> Option<OwnedEventId> {
        self.state()
            .receipts
            .get(&(room.to_owned(), user.to_owned()))
            .cloned()
    }
}

impl Matrix for FakeMatrix {
    fn bot(&self) -> &UserId {
        &self.bot
    }

    async fn register_puppet(&self, localpart: &str) -> Result<(), MatrixError> {
        self.state()
            .calls
            .push(Call::Register(localpart.to_owned()));
        Ok(())
    }

    async fn set_display_name(&self, user: &UserId, name: &str) -> Result<(), MatrixError> {
        let mut state = self.state();
        state
            .calls
            .push(Call::DisplayName(user.to_owned(), name.to_owned()));
        state
            .rooms
            .set_profile(user, "displayname", serde_json::json!(name));
        Ok(())
    }

    async fn set_avatar_url(&self, user: &UserId, url: &MxcUri) -> Result<(), MatrixError> {
        let mut state = self.state();
        state
            .calls
            .push(Call::Avatar(user.to_owned(), url.to_string()));
        state
            .rooms
            .set_profile(user, "avatar_url", serde_json::json!(url));
        Ok(())
    }

    async fn create_room(&self, spec: &RoomSpec) -> Result<OwnedRoomId, MatrixError> {
        let mut state = self.state();
        state.calls.push(Call::CreateRoom(spec.clone()));
        let failure = state.next_failure(Op::CreateRoom);
        let bot = self.bot.clone();
        answer(failure, || {
            let alias = state.rooms.claim_alias(spec, bot.server_name().as_str())?;
            let number = state.rooms_made + 1;
            state.rooms_made = number;
            let room = OwnedRoomId::try_from(format!("!room{number}:localhost"))
                .map_err(|err| MatrixError::Protocol(err.to_string()))?;
            state.rooms.create(&room, &bot, spec, alias);
            for user in &spec.invite {
                state.invited.insert((room.clone(), user.clone()));
            }
            for (user, level) in &spec.power_levels {
                state.power.insert((room.clone(), user.clone()), *level);
            }
            // The creator is in its room, with every power.
            state.joined.insert((room.clone(), bot.clone()));
            state.power.insert((room.clone(), bot.clone()), i64::MAX);
            Ok(room)
        })
    }

    async fn add_space_child(&self, space: &RoomId, child: &RoomId) -> Result<(), MatrixError> {
        self.state().calls.push(Call::AddSpaceChild {
            space: space.to_owned(),
            child: child.to_owned(),
        });
        Ok(())
    }

    async fn invite(&self, room: &RoomId, user: &UserId) -> Result<(), MatrixError> {
        let mut state = self.state();
        state
            .calls
            .push(Call::Invite(room.to_owned(), user.to_owned()));
        let failure = state.next_failure(Op::Invite);
        let bot = self.bot.clone();
        answer(failure, || {
            match state.rooms.membership(room, user).as_deref() {
                Some("join") => return Err(forbidden("User is already in the room.")),
                Some("ban") => return Err(forbidden("user is banned from this room")),
                _ => {}
            }
            state.set_membership(room, &bot, user, "invite", None);
            Ok(())
        })
    }

    async fn join(&self, room: &RoomId, user: &UserId) -> Result<(), MatrixError> {
        let mut state = self.state();
        state
            .calls
            .push(Call::Join(room.to_owned(), user.to_owned()));
        let failure = state.next_failure(Op::Join);
        answer(failure, || {
            let key = (room.to_owned(), user.to_owned());
            if state.rooms.membership(room, user).as_deref() == Some("ban") {
                return Err(forbidden("You are banned from the room"));
            }
            let public = state.rooms.is_public(room);
            if !public && !state.invited.contains(&key) && !state.joined.contains(&key) {
                return Err(forbidden("You are not invited to this room."));
            }
            // An invite is used up by joining: after leaving, a new one is needed.
            if !state.joined.contains(&key) {
                state.set_membership(room, user, user, "join", None);
            }
            Ok(())
        })
    }

    async fn find_sent_event(
        &self,
        room: &RoomId,
        sender: &UserId,
        sent: super::Sent<'_>,
        since: time::OffsetDateTime,
    ) -> Result<Option<OwnedEventId>, MatrixError> {
        let mut state = self.state();
        state.lookups += 1;
        Ok(state
            .timeline
            .iter()
            .rev()
            .take_while(|event| event.at >= since - super::CLOCK_SKEW)
            .find(|event| {
                event.room == room && event.sender == sender && sent.is_in(&event.content)
            })
            .map(|event| event.event_id.clone()))
    }

    async fn send_message(
        &self,
        room: &RoomId,
        sender: &UserId,
        txn_id: &str,
        content: &serde_json::Value,
    ) -> Result<OwnedEventId, MatrixError> {
        let hook = self.state().before_send.take();
        if let Some(hook) = hook {
            hook(content.clone()).await;
        }
        let mut state = self.state();
        state.calls.push(Call::Send {
            room: room.to_owned(),
            sender: sender.to_owned(),
            txn_id: txn_id.to_owned(),
            content: content.clone(),
        });
        let failure = state.next_failure(Op::Send);
        answer(failure, || {
            state.require_joined(room, sender)?;
            let event_id = event_id(format!("${txn_id}"))?;
            state.timeline.push(Event {
                room: room.to_owned(),
                sender: sender.to_owned(),
                content: content.clone(),
                event_id: event_id.clone(),
                redacted_by: None,
                at: time::OffsetDateTime::now_utc(),
            });
            Ok(event_id)
        })
    }

    async fn send_reaction(
        &self,
        room: &RoomId,
        sender: &UserId,
        txn_id: &str,
        target: &EventId,
        key: &str,
    ) -> Result<OwnedEventId, MatrixError> {
        let mut state = self.state();
        state.calls.push(Call::React {
            room: room.to_owned(),
            sender: sender.to_owned(),
            txn_id: txn_id.to_owned(),
            target: target.to_owned(),
            key: key.to_owned(),
        });
        let failure = state.next_failure(Op::React);
        answer(failure, || {
            state.require_joined(room, sender)?;
            let event_id = event_id(format!("${txn_id}"))?;
            // The same transaction id is the same event.
            if !state
                .timeline
                .iter()
                .any(|event| event.event_id == event_id)
            {
                state.timeline.push(Event {
                    room: room.to_owned(),
                    sender: sender.to_owned(),
                    content: serde_json::json!({"m.relates_to": {
                        "rel_type": "m.annotation", "event_id": target, "key": key,
                    }}),
                    event_id: event_id.clone(),
                    redacted_by: None,
                    at: time::OffsetDateTime::now_utc(),
                });
            }
            Ok(event_id)
        })
    }

    async fn is_redacted(
        &self,
        room: &RoomId,
        reader: &UserId,
        event_id: &EventId,
    ) -> Result<bool, MatrixError> {
        let state = self.state();
        if !state.is_joined(room, reader) {
            return Err(not_found("Event not found."));
        }
        state
            .timeline
            .iter()
            .find(|event| event.room == room && event.event_id == event_id)
            .map(|event| event.redacted_by.is_some())
            .ok_or_else(|| not_found("Event not found."))
    }

    async fn redact(
        &self,
        room: &RoomId,
        sender: &UserId,
        event_id: &EventId,
        txn_id: &str,
        reason: Option<&str>,
    ) -> Result<OwnedEventId, MatrixError> {
        let mut state = self.state();
        state.calls.push(Call::Redact {
            room: room.to_owned(),
            sender: sender.to_owned(),
            event_id: event_id.to_owned(),
            txn_id: txn_id.to_owned(),
            reason: reason.map(str::to_owned),
        });
        let failure = state.next_failure(Op::Redact);
        answer(failure, || {
            let path = (room.to_owned(), event_id.to_owned(), txn_id.to_owned());
            if let Some(redaction) = state.redactions.get(&path) {
                return Ok(redaction.clone());
            }
            state.require_joined(room, sender)?;
            let count = state.redactions.len() + 1;
            let sender_power = state
                .power
                .get(&(room.to_owned(), sender.to_owned()))
                .copied()
                .unwrap_or(0);
            let Some(target) = state
                .timeline
                .iter_mut()
                .find(|event| event.room == room && event.event_id == event_id)
            else {
                return Err(not_found(&format!("Could not find event {event_id}")));
            };
            if target.sender != sender && sender_power < REDACT_LEVEL {
                return Err(forbidden("You don't have permission to redact events"));
            }
            let redaction = self::event_id(format!("$redaction{count}"))?;
            target.content = serde_json::json!({});
            target.redacted_by = Some(redaction.clone());
            state.redactions.insert(path, redaction.clone());
            Ok(redaction)
        })
    }

    async fn upload_media(
        &self,
        uploader: &UserId,
        content_type: &str,
        filename: Option<&str>,
        bytes: Vec<u8>,
    ) -> Result<OwnedMxcUri, MatrixError> {
        let mut state = self.state();
        state.calls.push(Call::Upload {
            uploader: uploader.to_owned(),
            content_type: content_type.to_owned(),
            filename: filename.map(str::to_owned),
            size: bytes.len(),
        });
        let failure = state.next_failure(Op::Upload);
        answer(failure, || {
            let uri = OwnedMxcUri::from(format!("mxc://localhost/media{}", state.media.len() + 1));
            state.media.push((
                uri.clone(),
                Media {
                    uploader: uploader.to_owned(),
                    content_type: content_type.to_owned(),
                    filename: filename.map(str::to_owned),
                    bytes,
                },
            ));
            Ok(uri)
        })
    }

    async fn set_typing(
        &self,
        room: &RoomId,
        user: &UserId,
        typing: bool,
        timeout: Duration,
    ) -> Result<(), MatrixError> {
        let mut state = self.state();
        state.calls.push(Call::Typing {
            room: room.to_owned(),
            user: user.to_owned(),
            typing,
            timeout,
        });
        let failure = state.next_failure(Op::Typing);
        answer(failure, || {
            state.require_joined(room, user)?;
            let key = (room.to_owned(), user.to_owned());
            if typing {
                state.typing.insert(key);
            } else {
                state.typing.remove(&key);
            }
            Ok(())
        })
    }

    async fn send_read_receipt(
        &self,
        room: &RoomId,
        user: &UserId,
        event_id: &EventId,
    ) -> Result<(), MatrixError> {
        let mut state = self.state();
        state.calls.push(Call::Receipt {
            room: room.to_owned(),
            user: user.to_owned(),
            event_id: event_id.to_owned(),
        });
        let failure = state.next_failure(Op::Receipt);
        answer(failure, || {
            // Synapse checks the membership, not that the event exists.
            state.require_joined(room, user)?;
            state
                .receipts
                .insert((room.to_owned(), user.to_owned()), event_id.to_owned());
            Ok(())
        })
    }

    async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>, MatrixError> {
        let mut state = self.state();
        state.calls.push(Call::ResolveAlias(alias.to_string()));
        Ok(state.rooms.resolve(alias))
    }

    async fn leave(&self, room: &RoomId, user: &UserId) -> Result<(), MatrixError> {
        let mut state = self.state();
        state
            .calls
            .push(Call::Leave(room.to_owned(), user.to_owned()));
        let failure = state.next_failure(Op::Leave);
        answer(failure, || {
            match state.rooms.membership(room, user).as_deref() {
                Some("join" | "invite") => {}
                _ => return Err(forbidden("User has no membership in room")),
            }
            state.set_membership(room, user, user, "leave", None);
            Ok(())
        })
    }

    async fn kick(
        &self,
        room: &RoomId,
        user: &UserId,
        reason: Option<&str>,
    ) -> Result<(), MatrixError> {
        let mut state = self.state();
        state
            .calls
            .push(Call::Kick(room.to_owned(), user.to_owned()));
        let failure = state.next_failure(Op::Kick);
        let bot = self.bot.clone();
        answer(failure, || {
            match state.rooms.membership(room, user).as_deref() {
                Some("join" | "invite") => {}
                _ => return Err(forbidden("The target user is not in the room")),
            }
            state.set_membership(room, &bot, user, "leave", reason);
            Ok(())
        })
    }

    async fn state(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<serde_json::Value>, MatrixError> {
        let mut state = self.state();
        state.calls.push(Call::ReadState {
            room: room.to_owned(),
            event_type: event_type.to_owned(),
            state_key: state_key.to_owned(),
        });
        if !state.rooms.exists(room) {
            return Err(forbidden("User not in room"));
        }
        Ok(state
            .rooms
            .get(room, event_type, state_key)
            .map(|event| event.content.clone()))
    }

    async fn put_state(
        &self,
        room: &RoomId,
        sender: &UserId,
        event_type: &str,
        state_key: &str,
        content: &serde_json::Value,
    ) -> Result<OwnedEventId, MatrixError> {
        let mut state = self.state();
        state.calls.push(Call::PutState {
            room: room.to_owned(),
            sender: sender.to_owned(),
            event_type: event_type.to_owned(),
            state_key: state_key.to_owned(),
            content: content.clone(),
        });
        let failure = state.next_failure(Op::PutState);
        answer(failure, || {
            state
                .rooms
                .check(room, sender, event_type, state_key, content)?;
            let id = state
                .rooms
                .set(room, sender, event_type, state_key, content.clone());
            if event_type == "m.room.power_levels" {
                state.sync_power(room, content);
            }
            event_id(id)
        })
    }

    async fn room_state(&self, room: &RoomId) -> Result<Vec<serde_json::Value>, MatrixError> {
        let mut state = self.state();
        state.calls.push(Call::RoomState(room.to_owned()));
        if !state.rooms.exists(room) {
            return Err(forbidden("User not in room"));
        }
        Ok(state.rooms.all(room))
    }

    async fn set_directory_visibility(
        &self,
        room: &RoomId,
        public: bool,
    ) -> Result<(), MatrixError> {
        let mut state = self.state();
        state.calls.push(Call::Directory(room.to_owned(), public));
        state.rooms.set_listed(room, public);
        Ok(())
    }

    async fn membership(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<Option<MemberState>, MatrixError> {
        let state = self.state();
        let Some(event) = state.rooms.get(room, "m.room.member", user.as_str()) else {
            return Ok(None);
        };
        let membership =
            MembershipState::from(event.content["membership"].as_str().unwrap_or("leave"));
        Ok(Some(MemberState {
            membership,
            sender: event.sender.clone(),
            reason: event.content["reason"].as_str().map(str::to_owned),
        }))
    }

    async fn unban(&self, room: &RoomId, user: &UserId) -> Result<(), MatrixError> {
        let mut state = self.state();
        state
            .calls
            .push(Call::Unban(room.to_owned(), user.to_owned()));
        if state.rooms.membership(room, user).as_deref() != Some("ban") {
            return Err(forbidden("The target user is not banned"));
        }
        let bot = self.bot.clone();
        state.set_membership(room, &bot, user, "leave", None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ruma::{event_id, owned_user_id, room_id};

    use super::*;

    /// A room with alice (a member), mod (power 50) and the bot; bob is
    /// invited but not joined.
    async fn room(matrix: &FakeMatrix) -> (OwnedRoomId, OwnedUserId, OwnedUserId, OwnedUserId) {
        let alice = owned_user_id!("@app_alice:localhost");
        let moderator = owned_user_id!("@app_mod:localhost");
        let bob = owned_user_id!("@app_bob:localhost");
        let spec = RoomSpec {
            invite: vec![alice.clone(), moderator.clone(), bob.clone()],
            power_levels: [(moderator.clone(), 50)].into_iter().collect(),
            ..RoomSpec::default()
        };
        let room = matrix.create_room(&spec).await.unwrap();
        matrix.join(&room, &alice).await.unwrap();
        matrix.join(&room, &moderator).await.unwrap();
        (room, alice, moderator, bob)
    }

    async fn say(matrix: &FakeMatrix, room: &RoomId, user: &UserId, txn: &str) -> OwnedEventId {
        let content = serde_json::json!({
            "msgtype": "m.text",
            "body": txn,
            super::super::MESSAGE_ID_KEY: txn,
        });
        matrix
            .send_message(room, user, txn, &content)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn redacts_like_synapse() {
        let matrix = FakeMatrix::default();
        let (room, alice, moderator, bob) = room(&matrix).await;
        let hello = say(&matrix, &room, &alice, "hello").await;
        let by_mod = say(&matrix, &room, &moderator, "by-mod").await;

        let unknown = event_id!("$nope");
        let err = matrix
            .redact(&room, &alice, unknown, "r0", None)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(404));
        let err = matrix
            .redact(&room, &bob, &hello, "r1", None)
            .await
            .unwrap_err();
        assert!(err.is_forbidden(), "not joined");
        let err = matrix
            .redact(&room, &alice, &by_mod, "r2", None)
            .await
            .unwrap_err();
        assert!(err.is_forbidden(), "another's event needs power 50");
        let elsewhere = room_id!("!other:localhost");
        let err = matrix
            .redact(elsewhere, &matrix.bot, &hello, "r3", None)
            .await
            .unwrap_err();
        assert!(err.status().is_some(), "the event is in another room");

        let first = matrix
            .redact(&room, &alice, &hello, "r4", Some("oops"))
            .await
            .unwrap();
        assert_eq!(matrix.event(&hello).unwrap().content, serde_json::json!({}));
        assert_eq!(
            matrix.event(&hello).unwrap().redacted_by,
            Some(first.clone())
        );
        let again = matrix
            .redact(&room, &alice, &hello, "r4", Some("oops"))
            .await
            .unwrap();
        assert_eq!(
            again, first,
            "the same transaction answers the same redaction"
        );
        let another = matrix
            .redact(&room, &alice, &hello, "r5", None)
            .await
            .unwrap();
        assert_ne!(another, first, "a new transaction redacts again");

        matrix
            .redact(&room, &moderator, &hello, "r6", None)
            .await
            .unwrap();
        assert_eq!(
            matrix
                .find_sent_event(
                    &room,
                    &moderator,
                    super::super::Sent::Message("by-mod"),
                    an_hour_ago()
                )
                .await
                .unwrap(),
            Some(by_mod.clone())
        );
        matrix
            .redact(&room, matrix.bot(), &by_mod, "r7", None)
            .await
            .unwrap();
        assert_eq!(
            matrix
                .find_sent_event(
                    &room,
                    &moderator,
                    super::super::Sent::Message("by-mod"),
                    an_hour_ago()
                )
                .await
                .unwrap(),
            None,
            "a redacted event no longer carries its content"
        );
        assert!(matches!(
            matrix.calls().last(),
            Some(Call::Redact { txn_id, .. }) if txn_id == "r7"
        ));
    }

    #[tokio::test]
    async fn failures_are_injected_per_kind_of_call() {
        let matrix = FakeMatrix::default();
        let (room, alice, ..) = room(&matrix).await;
        let hello = say(&matrix, &room, &alice, "hello").await;

        matrix.fail_next(Op::Redact, Failure::Down);
        matrix.fail_next(Op::Redact, Failure::AnswerLost);
        let err = matrix
            .redact(&room, &alice, &hello, "r", None)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(502));
        assert!(
            matrix.event(&hello).unwrap().redacted_by.is_none(),
            "nothing happened"
        );
        let err = matrix
            .redact(&room, &alice, &hello, "r", None)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(504));
        let landed = matrix.event(&hello).unwrap().redacted_by.unwrap();
        assert_eq!(
            matrix
                .redact(&room, &alice, &hello, "r", None)
                .await
                .unwrap(),
            landed,
            "the retry finds the redaction whose answer was lost"
        );

        matrix.fail_next(Op::Upload, Failure::RateLimited);
        let err = matrix
            .upload_media(&alice, "image/png", None, vec![1])
            .await
            .unwrap_err();
        assert!(err.rate_limit().is_some());
        matrix.fail_next(Op::Typing, Failure::Refused);
        let err = matrix
            .set_typing(&room, &alice, true, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(400));
        matrix.fail_next(Op::Receipt, Failure::Down);
        assert!(
            matrix
                .send_read_receipt(&room, &alice, &hello)
                .await
                .is_err()
        );
        // The other kinds are untouched, and the queues are used up.
        matrix.fail_next_send(Failure::Down);
        assert!(
            matrix
                .set_typing(&room, &alice, true, Duration::from_secs(5))
                .await
                .is_ok()
        );
        assert!(
            matrix
                .send_read_receipt(&room, &alice, &hello)
                .await
                .is_ok()
        );
        assert!(
            matrix
                .upload_media(&alice, "image/png", None, vec![1])
                .await
                .is_ok()
        );
        let content = serde_json::json!({"msgtype": "m.text", "body": "x"});
        assert!(
            matrix
                .send_message(&room, &alice, "t", &content)
                .await
                .is_err()
        );
        assert!(
            matrix
                .send_message(&room, &alice, "t", &content)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn typing_and_receipts_need_a_member() {
        let matrix = FakeMatrix::default();
        let (room, alice, _, bob) = room(&matrix).await;
        let hello = say(&matrix, &room, &alice, "hello").await;
        let timeout = Duration::from_secs(30);

        assert!(
            matrix
                .set_typing(&room, &bob, true, timeout)
                .await
                .unwrap_err()
                .is_forbidden()
        );
        assert!(
            matrix
                .send_read_receipt(&room, &bob, &hello)
                .await
                .unwrap_err()
                .is_forbidden()
        );

        matrix
            .set_typing(&room, &alice, true, timeout)
            .await
            .unwrap();
        assert!(matrix.is_typing(&room, &alice));
        matrix
            .set_typing(&room, &alice, false, timeout)
            .await
            .unwrap();
        assert!(!matrix.is_typing(&room, &alice));

        matrix
            .send_read_receipt(&room, &alice, &hello)
            .await
            .unwrap();
        assert_eq!(matrix.read_up_to(&room, &alice), Some(hello.clone()));
        // Like Synapse, a receipt for an event the room lacks is taken.
        matrix
            .send_read_receipt(&room, &alice, event_id!("$unknown"))
            .await
            .unwrap();
        assert!(matrix.calls().contains(&Call::Typing {
            room: room.clone(),
            user: alice.clone(),
            typing: false,
            timeout,
        }));
    }

    #[tokio::test]
    async fn uploads_land_in_the_media_repository() {
        let matrix = FakeMatrix::default();
        let alice = owned_user_id!("@app_alice:localhost");
        let uri = matrix
            .upload_media(&alice, "image/png", Some("cat.png"), vec![0x89, b'P'])
            .await
            .unwrap();
        assert!(uri.is_valid());
        let media = matrix.media(&uri).unwrap();
        assert_eq!(media.bytes, vec![0x89, b'P']);
        assert_eq!(media.filename.as_deref(), Some("cat.png"));
        assert_eq!(media.uploader, alice);
        let second = matrix
            .upload_media(&alice, "text/plain", None, vec![b'x'])
            .await
            .unwrap();
        assert_ne!(second, uri);
        assert_eq!(
            matrix.calls().last(),
            Some(&Call::Upload {
                uploader: alice,
                content_type: "text/plain".into(),
                filename: None,
                size: 1
            })
        );
    }

    #[tokio::test]
    async fn an_edit_is_not_the_message_it_edits() {
        let matrix = FakeMatrix::default();
        let (room, alice, ..) = room(&matrix).await;
        let marker = serde_json::json!({super::super::MESSAGE_ID_KEY: "m1", "body": "v1"});
        let original = matrix
            .send_message(&room, &alice, "send-m1", &marker)
            .await
            .unwrap();
        let mut edit = marker.clone();
        edit["m.relates_to"] = serde_json::json!({"rel_type": "m.replace", "event_id": original});
        matrix
            .send_message(&room, &alice, "edit-m1", &edit)
            .await
            .unwrap();
        assert_eq!(
            matrix
                .find_sent_event(
                    &room,
                    &alice,
                    super::super::Sent::Message("m1"),
                    an_hour_ago()
                )
                .await
                .unwrap(),
            Some(original)
        );
        assert_eq!(matrix.timeline(&room).len(), 2);
    }

    fn an_hour_ago() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() - time::Duration::hours(1)
    }

    #[tokio::test]
    async fn a_sent_event_is_found_by_time_however_busy_the_room() {
        let matrix = FakeMatrix::default();
        let (room, alice, moderator, _) = room(&matrix).await;
        let marker = serde_json::json!({super::super::MESSAGE_ID_KEY: "m1", "body": "v1"});
        let original = matrix
            .send_message(&room, &alice, "send-m1", &marker)
            .await
            .unwrap();
        for n in 0..150 {
            let chatter = serde_json::json!({"body": format!("chatter {n}")});
            matrix
                .send_message(&room, &moderator, &format!("chatter-{n}"), &chatter)
                .await
                .unwrap();
        }
        assert_eq!(
            matrix
                .find_sent_event(
                    &room,
                    &alice,
                    super::super::Sent::Message("m1"),
                    an_hour_ago()
                )
                .await
                .unwrap(),
            Some(original),
            "150 events later, still found"
        );
        let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
        assert_eq!(
            matrix
                .find_sent_event(&room, &alice, super::super::Sent::Message("m1"), later)
                .await
                .unwrap(),
            None,
            "nothing from before the message's acceptance is looked at"
        );
    }
}
