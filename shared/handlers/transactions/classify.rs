//! Each event of a transaction, read on its own with ruma's event types and
//! sorted: what to pass on to the application, what is the bridge's own
//! doing coming back (an echo, docs/DESIGN.md, decisions 6 and 9), what the bridge
//! ignores (counted), and what it cannot read (recorded with why). No I/O.

use ruma::api::appservice::event::push_events::v1::EphemeralData;
use ruma::events::reaction::ReactionEvent;
use ruma::events::room::member::MembershipState;
use ruma::events::room::message::RoomMessageEvent;
use ruma::events::room::redaction::RoomRedactionEvent;
use ruma::events::{AnyMessageLikeEvent, AnyStateEvent, AnyTimelineEvent, StateEvent};
use ruma::serde::Raw;
use ruma::{MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, UserId};
use time::OffsetDateTime;

use super::content::{self, Posted};
use crate::ids::PuppetNamer;
use crate::matrix::{MESSAGE_ID_KEY, carries_message};
use crate::model::{MessageId, SkippedEvent};

/// When something happened, in milliseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At(pub u64);

impl At {
    fn of(ts: MilliSecondsSinceUnixEpoch) -> Self {
        Self(ts.get().into())
    }

    pub fn now() -> Self {
        Self(
            u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(0),
        )
    }

    pub fn time(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// What every room event has: its id, who sent it, when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub event_id: OwnedEventId,
    pub sender: OwnedUserId,
    pub at: At,
}

/// A change of membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A Matrix user joined.
    Joined { display_name: Option<String> },
    /// A joined Matrix user changed its profile.
    Renamed { display_name: Option<String> },
    /// A member left, or `removed_by` someone else (not the bridge) kicked
    /// or banned it.
    Left {
        reason: Option<String>,
        banned: bool,
        removed_by: Option<OwnedUserId>,
        /// Whether it was joined before (else nothing is passed on).
        was_joined: bool,
    },
    /// One of our puppets joined (the bridge did that): only the member
    /// record may need to hear of it.
    PuppetJoined,
}

/// What an event means for the bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An `m.room.message` of a Matrix user: a message, or an edit.
    Posted { head: Head, posted: Posted },
    Redaction {
        head: Head,
        target: OwnedEventId,
        reason: Option<String>,
    },
    /// An `m.reaction` of a Matrix user: `target` annotated with `key`.
    Reacted {
        head: Head,
        target: OwnedEventId,
        key: String,
    },
    /// Our own message came back: it was delivered as `event_id`.
    Echo {
        event_id: OwnedEventId,
        message_id: MessageId,
    },
    /// `head.sender` changed `member`'s membership (its own, or someone
    /// else's: a kick, a ban).
    Membership {
        head: Head,
        member: OwnedUserId,
        change: Change,
    },
    /// Who is typing (Matrix users only).
    Typing { users: Vec<OwnedUserId> },
    /// `user` read up to `event_id`.
    Receipt {
        event_id: OwnedEventId,
        user: OwnedUserId,
        at: At,
        receipt_type: String,
    },
}

/// An event to act on, in its room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// Its place in the transaction (`events`, then `ephemeral`).
    pub index: u32,
    pub room: OwnedRoomId,
    pub kind: Kind,
}

/// How an event was sorted.
#[derive(Debug)]
pub enum Sorted {
    Use(Vec<Incoming>),
    Ignored(&'static str),
    Skipped(SkippedEvent),
}

/// Tells the bridge's own users (its puppets and its bot) from others.
pub struct Ours<'a> {
    pub namer: &'a PuppetNamer,
    pub bot: &'a UserId,
}

impl Ours<'_> {
    pub fn contains(&self, user: &UserId) -> bool {
        user == self.bot || self.namer.app_user(user).is_some()
    }

    /// Sorts a persistent event.
    pub fn timeline(&self, index: u32, raw: &Raw<AnyTimelineEvent>) -> Sorted {
        let skip = |reason: String| {
            Sorted::Skipped(SkippedEvent {
                index,
                event_id: raw.get_field("event_id").ok().flatten(),
                event_type: raw.get_field("type").ok().flatten(),
                reason,
            })
        };
        let event = match raw.deserialize() {
            Ok(event) => event,
            Err(err) => return skip(format!("malformed event: {err}")),
        };
        let room = event.room_id().to_owned();
        let kind = match event {
            AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(
                RoomMessageEvent::Original(message),
            )) => {
                if self.contains(&message.sender) {
                    return self.echo(index, raw, message.event_id);
                }
                match content::read(message.content) {
                    Ok(posted) => Kind::Posted {
                        head: Head {
                            event_id: message.event_id,
                            sender: message.sender,
                            at: At::of(message.origin_server_ts),
                        },
                        posted,
                    },
                    Err(reason) => return skip(reason),
                }
            }
            AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomRedaction(
                RoomRedactionEvent::Original(redaction),
            )) => {
                if self.contains(&redaction.sender) {
                    return Sorted::Ignored("the bridge's own redaction");
                }
                // Room versions 11 and later name the target in the content.
                let Some(target) = redaction.content.redacts.or(redaction.redacts) else {
                    return skip("a redaction that names no event".into());
                };
                Kind::Redaction {
                    head: Head {
                        event_id: redaction.event_id,
                        sender: redaction.sender,
                        at: At::of(redaction.origin_server_ts),
                    },
                    target,
                    reason: redaction.content.reason,
                }
            }
            AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::Reaction(
                ReactionEvent::Original(reaction),
            )) => {
                // Ours are the puppets' reactions the react function sent.
                if self.contains(&reaction.sender) {
                    return Sorted::Ignored("the bridge's own reaction");
                }
                let annotation = reaction.content.relates_to;
                Kind::Reacted {
                    head: Head {
                        event_id: reaction.event_id,
                        sender: reaction.sender,
                        at: At::of(reaction.origin_server_ts),
                    },
                    target: annotation.event_id,
                    key: annotation.key,
                }
            }
            AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomEncrypted(_)) => {
                return skip("encrypted events are not bridged".into());
            }
            AnyTimelineEvent::State(AnyStateEvent::RoomMember(StateEvent::Original(member))) => {
                let prev = member.unsigned.prev_content.map(|prev| prev.membership);
                let change = match self.membership_change(
                    &member.state_key,
                    &member.sender,
                    &member.content.membership,
                    prev.as_ref(),
                    member.content.displayname,
                    member.content.reason,
                ) {
                    Ok(change) => change,
                    Err(ignored) => return Sorted::Ignored(ignored),
                };
                Kind::Membership {
                    head: Head {
                        event_id: member.event_id,
                        sender: member.sender,
                        at: At::of(member.origin_server_ts),
                    },
                    member: member.state_key,
                    change,
                }
            }
            _ => return Sorted::Ignored("an event type the bridge does not pass on"),
        };
        Sorted::Use(vec![Incoming { index, room, kind }])
    }

    /// One of our puppets' (or the bot's) messages: the echo of a message
    /// the bridge sent (it carries our message id), or nothing to pass on.
    fn echo(&self, index: u32, raw: &Raw<AnyTimelineEvent>, event_id: OwnedEventId) -> Sorted {
        let content: Option<serde_json::Value> = raw.get_field("content").ok().flatten();
        let message_id = content.as_ref().and_then(|content| {
            let id = content.get(MESSAGE_ID_KEY)?.as_str()?;
            carries_message(content, id).then(|| id.parse().ok())?
        });
        let (Some(message_id), Ok(Some(room))) = (message_id, raw.get_field("room_id")) else {
            return Sorted::Ignored("the bridge's own event");
        };
        Sorted::Use(vec![Incoming {
            index,
            room,
            kind: Kind::Echo {
                event_id,
                message_id,
            },
        }])
    }

    /// What a membership event changes; `Err` why it changes nothing the
    /// application hears of.
    fn membership_change(
        &self,
        member: &UserId,
        sender: &UserId,
        membership: &MembershipState,
        prev: Option<&MembershipState>,
        display_name: Option<String>,
        reason: Option<String>,
    ) -> Result<Change, &'static str> {
        let by_us = self.contains(sender);
        match membership {
            MembershipState::Join if self.contains(member) => {
                if by_us {
                    Ok(Change::PuppetJoined)
                } else {
                    Err("a join of ours not made by the bridge")
                }
            }
            MembershipState::Join if prev == Some(&MembershipState::Join) => {
                Ok(Change::Renamed { display_name })
            }
            MembershipState::Join => Ok(Change::Joined { display_name }),
            MembershipState::Leave | MembershipState::Ban => {
                if member == self.bot {
                    tracing::warn!(%sender, "the bridge's bot lost its membership of a room");
                    return Err("the bot's own membership");
                }
                if self.contains(member) && by_us {
                    return Err("the bridge's own doing");
                }
                // The bridge's own kick (provisioning removed a Matrix
                // user) is the application's doing, not a moderator's.
                Ok(Change::Left {
                    reason,
                    banned: *membership == MembershipState::Ban,
                    removed_by: (sender != member && !by_us).then(|| sender.to_owned()),
                    was_joined: prev == Some(&MembershipState::Join),
                })
            }
            _ => Err("invites and knocks are not passed on"),
        }
    }

    /// Sorts an ephemeral event (`index` counts after the persistent ones).
    pub fn ephemeral(&self, index: u32, raw: &Raw<EphemeralData>) -> Sorted {
        let data = match raw.deserialize() {
            Ok(data) => data,
            Err(err) => {
                return Sorted::Skipped(SkippedEvent {
                    index,
                    event_id: None,
                    event_type: raw.get_field("type").ok().flatten(),
                    reason: format!("malformed ephemeral event: {err}"),
                });
            }
        };
        match data {
            EphemeralData::Typing(typing) => {
                let all = typing.content.user_ids;
                let users: Vec<OwnedUserId> = all
                    .iter()
                    .filter(|user| !self.contains(user))
                    .cloned()
                    .collect();
                if users.is_empty() && !all.is_empty() {
                    return Sorted::Ignored("only the bridge's own users are typing");
                }
                Sorted::Use(vec![Incoming {
                    index,
                    room: typing.room_id,
                    kind: Kind::Typing { users },
                }])
            }
            EphemeralData::Receipt(receipt) => {
                let room = receipt.room_id;
                let mut receipts = Vec::new();
                for (event_id, by_type) in receipt.content.0 {
                    for (receipt_type, users) in by_type {
                        for (user, details) in users {
                            if self.contains(&user) {
                                continue;
                            }
                            receipts.push(Incoming {
                                index,
                                room: room.clone(),
                                kind: Kind::Receipt {
                                    event_id: event_id.clone(),
                                    user,
                                    at: details.ts.map_or_else(At::now, At::of),
                                    receipt_type: receipt_type.to_string(),
                                },
                            });
                        }
                    }
                }
                if receipts.is_empty() {
                    return Sorted::Ignored("only the bridge's own users' receipts");
                }
                Sorted::Use(receipts)
            }
            _ => Sorted::Ignored("an ephemeral event the bridge does not pass on"),
        }
    }
}
