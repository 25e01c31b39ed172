//! An in-memory homeserver for unit tests of the handlers: it records every
//! call, refuses messages from users who have not joined (as Synapse does),
//! and can be told to fail the next sends.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use ruma::{MxcUri, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{Matrix, MatrixError, RoomSpec};

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
}

/// How the next send fails.
#[derive(Clone, Copy, Debug)]
pub enum Failure {
    /// A 502: worth retrying.
    Down,
    /// A 429 with a delay.
    RateLimited,
    /// A 400 refusal: not worth retrying.
    Refused,
    /// The send lands, but its answer is lost (a 504 from a proxy).
    AnswerLost,
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
        }
    }
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    failures: VecDeque<Failure>,
    join_failures: VecDeque<Failure>,
    joined: HashSet<(OwnedRoomId, OwnedUserId)>,
    /// Rooms are invite-only, as the presets the bridge uses make them.
    invited: HashSet<(OwnedRoomId, OwnedUserId)>,
    rooms: usize,
    /// What landed in rooms: room, sender, content, event id.
    timeline: Vec<(OwnedRoomId, OwnedUserId, serde_json::Value, OwnedEventId)>,
}

/// Clones share their state, so a test can keep one to inspect.
#[derive(Clone, Default)]
pub struct FakeMatrix {
    state: Arc<Mutex<State>>,
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

    pub fn fail_next_send(&self, failure: Failure) {
        self.state().failures.push_back(failure);
    }

    pub fn fail_next_join(&self, failure: Failure) {
        self.state().join_failures.push_back(failure);
    }

    /// Makes a user leave a room, as a kick on the Matrix side would: to
    /// come back to an invite-only room, it needs a new invite.
    pub fn remove(&self, room: &RoomId, user: &UserId) {
        self.state()
            .joined
            .remove(&(room.to_owned(), user.to_owned()));
    }
}

impl Matrix for FakeMatrix {
    async fn register_puppet(&self, localpart: &str) -> Result<(), MatrixError> {
        self.state()
            .calls
            .push(Call::Register(localpart.to_owned()));
        Ok(())
    }

    async fn set_display_name(&self, user: &UserId, name: &str) -> Result<(), MatrixError> {
        self.state()
            .calls
            .push(Call::DisplayName(user.to_owned(), name.to_owned()));
        Ok(())
    }

    async fn set_avatar_url(&self, user: &UserId, url: &MxcUri) -> Result<(), MatrixError> {
        self.state()
            .calls
            .push(Call::Avatar(user.to_owned(), url.to_string()));
        Ok(())
    }

    async fn create_room(&self, spec: &RoomSpec) -> Result<OwnedRoomId, MatrixError> {
        let mut state = self.state();
        state.rooms += 1;
        state.calls.push(Call::CreateRoom(spec.clone()));
        let room = OwnedRoomId::try_from(format!("!room{}:localhost", state.rooms))
            .map_err(|err| MatrixError::Protocol(err.to_string()))?;
        for user in &spec.invite {
            state.invited.insert((room.clone(), user.clone()));
        }
        Ok(room)
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
        state.invited.insert((room.to_owned(), user.to_owned()));
        Ok(())
    }

    async fn join(&self, room: &RoomId, user: &UserId) -> Result<(), MatrixError> {
        let mut state = self.state();
        state
            .calls
            .push(Call::Join(room.to_owned(), user.to_owned()));
        if let Some(failure) = state.join_failures.pop_front() {
            return Err(failure.into());
        }
        let key = (room.to_owned(), user.to_owned());
        if !state.invited.contains(&key) && !state.joined.contains(&key) {
            return Err(MatrixError::from_status(
                403,
                br#"{"errcode":"M_FORBIDDEN","error":"You are not invited to this room."}"#,
                None,
            ));
        }
        // An invite is used up by joining: after leaving, a new one is needed.
        state.invited.remove(&key);
        state.joined.insert(key);
        Ok(())
    }

    async fn find_sent_event(
        &self,
        room: &RoomId,
        sender: &UserId,
        message_id: &str,
    ) -> Result<Option<OwnedEventId>, MatrixError> {
        let state = self.state();
        Ok(state
            .timeline
            .iter()
            .rev()
            .take(super::RECENT_EVENTS as usize)
            .find(|(in_room, from, content, _)| {
                in_room == room && from == sender && super::carries_message(content, message_id)
            })
            .map(|(.., event_id)| event_id.clone()))
    }

    async fn send_message(
        &self,
        room: &RoomId,
        sender: &UserId,
        txn_id: &str,
        content: &serde_json::Value,
    ) -> Result<OwnedEventId, MatrixError> {
        let mut state = self.state();
        state.calls.push(Call::Send {
            room: room.to_owned(),
            sender: sender.to_owned(),
            txn_id: txn_id.to_owned(),
            content: content.clone(),
        });
        let failure = state.failures.pop_front();
        if let Some(failure) = failure.filter(|f| !matches!(f, Failure::AnswerLost)) {
            return Err(failure.into());
        }
        if !state.joined.contains(&(room.to_owned(), sender.to_owned())) {
            return Err(MatrixError::from_status(
                403,
                br#"{"errcode":"M_FORBIDDEN","error":"not in room"}"#,
                None,
            ));
        }
        let event_id = OwnedEventId::try_from(format!("${txn_id}"))
            .map_err(|err| MatrixError::Protocol(err.to_string()))?;
        state.timeline.push((
            room.to_owned(),
            sender.to_owned(),
            content.clone(),
            event_id.clone(),
        ));
        match failure {
            Some(lost) => Err(lost.into()),
            None => Ok(event_id),
        }
    }
}
