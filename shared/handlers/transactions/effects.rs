//! What a transaction's events do, worked out in memory from what the table
//! knows, event after event in order: the messages to store, the stored
//! messages to change, the deliveries to confirm, the member changes, and
//! the events to publish, in order per conversation. No I/O.
//!
//! Every event that maps to something is published, even when the table
//! already shows its effect (a transaction processed again after failing
//! part-way): its deduplication id makes SQS drop a repeat.

use std::collections::HashMap;

use ruma::{OwnedEventId, OwnedUserId, UserId};

use super::classify::{At, Change, Head, Incoming, Kind};
use super::content::{Content, Posted};
use super::reads::Known;
use crate::ids::{ConversationId, PuppetNamer};
use crate::inbound::{EventKind, InboundEvent, Membership};
use crate::model::MentionList;
use crate::model::{
    Delivery, Format, Member, Mentioned, Mentions, Message, MessageId, MessageStatus, Origin,
    Reaction, Removal, Role, Sender,
};
use crate::store::MemberChange;

/// A change of a stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageChange {
    Edit { content: Content, at: At },
    Delete { at: At },
}

impl MessageChange {
    pub fn apply(&self, message: &mut Message) {
        if message.status == MessageStatus::Deleted {
            return;
        }
        match self {
            Self::Edit { content, at } => {
                message.body.clone_from(&content.body);
                message.mentions.clone_from(&content.mentions);
                message.html.clone_from(&content.html);
                message.msgtype = content.msgtype;
                message.file.clone_from(&content.file);
                message.edited_at = Some(at.time());
            }
            Self::Delete { at } => {
                *message = message.deleted(at.time());
                // Nothing left to deliver: the event is gone.
                message.pending_change = None;
            }
        }
    }
}

/// A stored message and the changes to make to it.
#[derive(Clone, Debug)]
pub struct Update {
    pub read: Message,
    pub changes: Vec<MessageChange>,
}

/// Everything a transaction does.
#[derive(Default)]
pub struct Effects {
    /// New messages to store.
    pub new_messages: Vec<Message>,
    /// Stored messages to change.
    pub updates: Vec<Update>,
    /// Pending messages of ours that were delivered as these events.
    pub echoes: Vec<(Message, OwnedEventId)>,
    pub members: Vec<MemberChange>,
    /// Reactions of Matrix users to record, then those to take back (in
    /// that order: one may be both).
    pub reactions_added: Vec<Reaction>,
    pub reactions_removed: Vec<Reaction>,
    /// What to publish, with the index of the event it comes from.
    pub events: Vec<(u32, InboundEvent)>,
    /// Events that changed nothing (an edit of a message the bridge does
    /// not know, an edit by someone else than the sender).
    pub ignored: u32,
    /// Events in rooms the bridge does not know.
    pub unknown_rooms: u32,
    /// Puppets a Matrix moderator kicked or banned.
    pub puppets_removed: u32,
}

impl Effects {
    /// Whether anything is to be written to the table.
    pub fn writes(&self) -> bool {
        !(self.new_messages.is_empty()
            && self.updates.is_empty()
            && self.echoes.is_empty()
            && self.members.is_empty()
            && self.reactions_added.is_empty()
            && self.reactions_removed.is_empty())
    }
}

/// A message as this transaction leaves it.
struct Tracked {
    /// As stored, when it was.
    stored: Option<Message>,
    current: Message,
    changes: Vec<MessageChange>,
}

struct Work<'a> {
    namer: &'a PuppetNamer,
    /// What tells this transaction's ephemeral events from another's.
    transaction: &'a str,
    known: &'a Known,
    members: HashMap<(ConversationId, OwnedUserId), Member>,
    messages: HashMap<(ConversationId, MessageId), Tracked>,
    by_event: HashMap<OwnedEventId, (ConversationId, MessageId)>,
    /// Event -> reaction: the stored ones redactions name, and this
    /// transaction's.
    reactions: HashMap<OwnedEventId, Reaction>,
    effects: Effects,
}

/// Works out what `incoming` does; `transaction` identifies the
/// transaction (its id and ephemeral fingerprint).
pub fn work_out(
    namer: &PuppetNamer,
    transaction: &str,
    known: &Known,
    incoming: Vec<Incoming>,
) -> Effects {
    let mut work = Work {
        namer,
        transaction,
        known,
        members: known.members.clone(),
        messages: HashMap::new(),
        by_event: known.by_event.clone(),
        reactions: known.reactions.clone(),
        effects: Effects::default(),
    };
    for event in incoming {
        let Some(conversation) = known.conversations.get(&event.room) else {
            work.effects.unknown_rooms += 1;
            continue;
        };
        work.apply(conversation.clone(), event.index, event.kind);
    }
    work.finish()
}

impl Work<'_> {
    fn sender(&self, conversation: &ConversationId, user: &UserId) -> Sender {
        Sender {
            user_id: self.namer.app_user(user),
            matrix_user_id: user.to_owned(),
            display_name: self
                .members
                .get(&(conversation.clone(), user.to_owned()))
                .and_then(|member| member.display_name.clone()),
        }
    }

    /// A message's content with whom it mentions told apart: puppets as
    /// their application users, other users by their Matrix ids.
    fn with_mentions(&self, mut content: Content) -> Content {
        content.mentions = content
            .mentions
            .take()
            .map(|mentions| self.mentions(&mentions));
        content
    }

    fn mentions(&self, mentions: &Mentions) -> Mentions {
        let users = mentions
            .users
            .iter()
            .map(|user| Mentioned {
                matrix_user_id: user.matrix_user_id.clone(),
                user_id: self.namer.app_user(&user.matrix_user_id),
            })
            .collect();
        Mentions {
            users,
            room: mentions.room,
        }
    }

    /// The message `event_id` is, in this conversation.
    fn message_of(
        &self,
        conversation: &ConversationId,
        event_id: &OwnedEventId,
    ) -> Option<MessageId> {
        self.by_event
            .get(event_id)
            .filter(|(of, _)| of == conversation)
            .map(|(_, id)| *id)
    }

    /// A message this transaction may change: one it created, or a stored one.
    fn tracked(&mut self, key: (ConversationId, MessageId)) -> Option<&mut Tracked> {
        if !self.messages.contains_key(&key) {
            let stored = self.known.messages.get(&key)?;
            self.messages.insert(
                key.clone(),
                Tracked {
                    stored: Some(stored.clone()),
                    current: stored.clone(),
                    changes: Vec::new(),
                },
            );
        }
        self.messages.get_mut(&key)
    }

    fn publish(&mut self, index: u32, event: InboundEvent) {
        self.effects.events.push((index, event));
    }

    fn apply(&mut self, conversation: ConversationId, index: u32, kind: Kind) {
        match kind {
            Kind::Posted {
                head,
                posted:
                    Posted::New {
                        content,
                        reply_to,
                        thread,
                    },
            } => self.created(conversation, index, head, content, (reply_to, thread)),
            Kind::Posted {
                head,
                posted: Posted::Edit { target, content },
            } => self.edited(conversation, index, head, &target, content),
            Kind::Redaction {
                head,
                target,
                reason,
            } if self.reactions.contains_key(&target) => {
                self.unreacted(conversation, index, head, &target, reason);
            }
            Kind::Redaction {
                head,
                target,
                reason,
            } => self.redacted(conversation, index, head, &target, reason),
            Kind::Reacted { head, target, key } => {
                self.reacted(conversation, index, head, &target, key);
            }
            Kind::Echo {
                event_id,
                message_id,
            } => {
                let key = (conversation, message_id);
                if let Some(stored) = self.known.messages.get(&key) {
                    if stored.status == MessageStatus::Pending {
                        self.effects.echoes.push((stored.clone(), event_id.clone()));
                    }
                    self.by_event.insert(event_id, key);
                }
            }
            Kind::Membership {
                head,
                member,
                change,
            } => self.membership(conversation, index, head, &member, change),
            Kind::Typing { users } => {
                let typing = users
                    .iter()
                    .map(|user| self.sender(&conversation, user))
                    .collect();
                let users: Vec<&str> = users.iter().map(|user| user.as_str()).collect();
                // Typing has no event id: it is told apart by the
                // transaction and its place in it.
                let mut event = InboundEvent::new(
                    EventKind::Typing,
                    conversation,
                    At::now().time(),
                    &[self.transaction, &index.to_string(), &users.join(",")],
                );
                event.typing = Some(typing);
                self.publish(index, event);
            }
            Kind::Receipt {
                event_id,
                user,
                at,
                receipt_type,
            } => {
                let mut event = InboundEvent::new(
                    EventKind::Receipt,
                    conversation.clone(),
                    at.time(),
                    &[event_id.as_str(), user.as_str(), &receipt_type],
                );
                event.message_id = self.message_of(&conversation, &event_id);
                event.sender = Some(self.sender(&conversation, &user));
                event.event_id = Some(event_id);
                event.receipt_type = Some(receipt_type);
                self.publish(index, event);
            }
        }
    }

    fn created(
        &mut self,
        conversation: ConversationId,
        index: u32,
        head: Head,
        content: Content,
        (reply_to, thread): (Option<OwnedEventId>, Option<OwnedEventId>),
    ) {
        let Head {
            event_id,
            sender,
            at,
        } = head;
        let sender = sender.as_ref();
        let id = MessageId::for_event(at.0, &event_id);
        let key = (conversation.clone(), id);
        let reply_to = reply_to.and_then(|reply| self.message_of(&conversation, &reply));
        let thread_id = thread.and_then(|root| self.message_of(&conversation, &root));
        let from = self.sender(&conversation, sender);
        let mut event = InboundEvent::new(
            EventKind::MessageCreated,
            conversation.clone(),
            at.time(),
            &[event_id.as_str()],
        );
        event.message_id = Some(id);
        event.event_id = Some(event_id.clone());
        event.sender = Some(from.clone());
        let content = self.with_mentions(content);
        set_content(&mut event, &content);
        event.reply_to = reply_to;
        event.thread_id = thread_id;
        if self.tracked(key.clone()).is_none() {
            let message = Message {
                id,
                conversation_id: conversation,
                sender: from,
                body: content.body,
                format: Format::Plain,
                html: content.html,
                reply_to,
                status: MessageStatus::Sent,
                delivery: Delivery::Direct,
                event_id: Some(event_id.clone()),
                origin: Origin::Matrix,
                created_at: at.time(),
                edited_at: None,
                deleted_at: None,
                failure: None,
                changes: 0,
                pending_change: None,
                in_doubt: false,
                thread_id,
                revision: 0,
                attachments: Vec::new(),
                msgtype: content.msgtype,
                file: content.file,
                mentions: content.mentions,
            };
            self.messages.insert(
                key.clone(),
                Tracked {
                    stored: None,
                    current: message,
                    changes: Vec::new(),
                },
            );
        }
        self.by_event.insert(event_id, key);
        self.publish(index, event);
    }

    /// A Matrix user's reaction to a message the bridge knows (else it
    /// changes nothing).
    fn reacted(
        &mut self,
        conversation: ConversationId,
        index: u32,
        head: Head,
        target: &OwnedEventId,
        key: String,
    ) {
        let Some(message_id) = self.message_of(&conversation, target) else {
            self.effects.ignored += 1;
            return;
        };
        let reaction = Reaction {
            id: MessageId::for_event(head.at.0, &head.event_id),
            conversation_id: conversation.clone(),
            message_id,
            key: key.clone(),
            sender: self.sender(&conversation, &head.sender),
            event_id: Some(head.event_id.clone()),
            origin: Origin::Matrix,
            created_at: head.at.time(),
        };
        let event = reaction_event(
            EventKind::ReactionAdded,
            &head,
            &reaction,
            reaction.sender.clone(),
        );
        self.reactions.insert(head.event_id, reaction.clone());
        self.effects.reactions_added.push(reaction);
        self.publish(index, event);
    }

    /// A redaction of a reaction: it is taken back.
    fn unreacted(
        &mut self,
        conversation: ConversationId,
        index: u32,
        head: Head,
        target: &OwnedEventId,
        reason: Option<String>,
    ) {
        let Some(reaction) = self
            .reactions
            .remove(target)
            .filter(|reaction| reaction.conversation_id == conversation)
        else {
            self.effects.ignored += 1;
            return;
        };
        let redactor = self.sender(&conversation, &head.sender);
        let mut event = reaction_event(EventKind::ReactionRemoved, &head, &reaction, redactor);
        event.reason = reason;
        self.effects.reactions_removed.push(reaction);
        self.publish(index, event);
    }

    fn edited(
        &mut self,
        conversation: ConversationId,
        index: u32,
        head: Head,
        target: &OwnedEventId,
        content: Content,
    ) {
        let content = self.with_mentions(content);
        let change = MessageChange::Edit {
            content: content.clone(),
            at: head.at,
        };
        // Only the sender may replace an event (the spec asks receivers to
        // ignore other replacements), and a deleted message stays deleted.
        let allowed = |message: &Message, editor: &UserId| {
            message.sender.matrix_user_id == editor && message.status != MessageStatus::Deleted
        };
        let kind = EventKind::MessageEdited;
        match self.change_message(conversation, head, target, kind, change, allowed) {
            Some(mut event) => {
                set_content(&mut event, &content);
                self.publish(index, event);
            }
            None => self.effects.ignored += 1,
        }
    }

    fn redacted(
        &mut self,
        conversation: ConversationId,
        index: u32,
        head: Head,
        target: &OwnedEventId,
        reason: Option<String>,
    ) {
        // The homeserver let the redaction through: its sender may redact.
        let change = MessageChange::Delete { at: head.at };
        let kind = EventKind::MessageDeleted;
        match self.change_message(conversation, head, target, kind, change, |_, _| true) {
            Some(mut event) => {
                event.reason = reason;
                self.publish(index, event);
            }
            None => self.effects.ignored += 1,
        }
    }

    /// Applies `change` to the message `target` is in this conversation,
    /// if `allowed` of it and of `head`'s sender; the event of `kind` that
    /// tells the application. `None` for a message the bridge does not know.
    fn change_message(
        &mut self,
        conversation: ConversationId,
        head: Head,
        target: &OwnedEventId,
        kind: EventKind,
        change: MessageChange,
        allowed: impl Fn(&Message, &UserId) -> bool,
    ) -> Option<InboundEvent> {
        let id = self.message_of(&conversation, target)?;
        let from = self.sender(&conversation, &head.sender);
        let tracked = self.tracked((conversation.clone(), id))?;
        if !allowed(&tracked.current, &head.sender) {
            return None;
        }
        change.apply(&mut tracked.current);
        tracked.changes.push(change);
        let mut event = InboundEvent::new(
            kind,
            conversation,
            head.at.time(),
            &[head.event_id.as_str()],
        );
        event.message_id = Some(id);
        event.event_id = Some(head.event_id);
        event.sender = Some(from);
        Some(event)
    }

    fn membership(
        &mut self,
        conversation: ConversationId,
        index: u32,
        head: Head,
        member: &UserId,
        change: Change,
    ) {
        let Head { event_id, at, .. } = head;
        let key = (conversation.clone(), member.to_owned());
        match change {
            Change::Joined { display_name } | Change::Renamed { display_name }
                if self.namer.app_user(member).is_none() =>
            {
                let published = !self.members.get(&key).is_some_and(|known| known.joined);
                let joined = Member {
                    conversation_id: conversation.clone(),
                    matrix_user_id: member.to_owned(),
                    user_id: None,
                    role: Role::Member,
                    display_name: display_name.clone(),
                    joined: true,
                    removed: None,
                    typing_until: None,
                };
                let record = self.members.entry(key).or_insert_with(|| joined.clone());
                record.joined = true;
                record.removed = None;
                if display_name.is_some() {
                    record.display_name = display_name;
                }
                self.effects.members.push(MemberChange::Joined(joined));
                if published {
                    let mut event = InboundEvent::new(
                        EventKind::MemberJoined,
                        conversation.clone(),
                        at.time(),
                        &[event_id.as_str()],
                    );
                    event.event_id = Some(event_id);
                    event.sender = Some(self.sender(&conversation, member));
                    event.membership = Some(Membership::Join);
                    self.publish(index, event);
                }
            }
            Change::Joined { .. } | Change::Renamed { .. } => self.effects.ignored += 1,
            Change::PuppetJoined => {
                // The bridge put it (back) in the room; the record learns of it.
                if let Some(record) = self
                    .members
                    .get_mut(&key)
                    .filter(|record| record.removed.is_some() || !record.joined)
                {
                    record.joined = true;
                    record.removed = None;
                    self.effects
                        .members
                        .push(MemberChange::Joined(record.clone()));
                }
            }
            Change::Left {
                reason,
                banned,
                removed_by,
                was_joined,
            } => {
                let removal = removed_by.as_ref().map(|by| Removal {
                    by: by.clone(),
                    banned,
                    reason: reason.clone(),
                    at: at.time(),
                });
                if removal.is_some() && self.namer.app_user(member).is_some() {
                    self.effects.puppets_removed += 1;
                }
                if let Some(record) = self.members.get_mut(&key) {
                    record.joined = false;
                    if removal.is_some() {
                        record.removed.clone_from(&removal);
                    }
                }
                self.effects.members.push(MemberChange::Left {
                    conversation_id: conversation.clone(),
                    matrix_user_id: member.to_owned(),
                    removal,
                });
                if was_joined {
                    let mut event = InboundEvent::new(
                        EventKind::MemberLeft,
                        conversation.clone(),
                        at.time(),
                        &[event_id.as_str()],
                    );
                    event.event_id = Some(event_id);
                    event.sender = Some(self.sender(&conversation, member));
                    event.actor = removed_by.map(|by| self.sender(&conversation, &by));
                    event.reason = reason;
                    event.membership = Some(if banned {
                        Membership::Ban
                    } else {
                        Membership::Leave
                    });
                    self.publish(index, event);
                }
            }
        }
    }

    fn finish(mut self) -> Effects {
        for (_, tracked) in self.messages {
            match tracked.stored {
                None => self.effects.new_messages.push(tracked.current),
                Some(stored) if !tracked.changes.is_empty() => {
                    self.effects.updates.push(Update {
                        read: stored,
                        changes: tracked.changes,
                    });
                }
                Some(_) => {}
            }
        }
        self.effects
    }
}

/// The event telling the application of `head` (a reaction, or its
/// redaction) about `reaction`, by `sender`.
fn reaction_event(
    kind: EventKind,
    head: &Head,
    reaction: &Reaction,
    sender: Sender,
) -> InboundEvent {
    let mut event = InboundEvent::new(
        kind,
        reaction.conversation_id.clone(),
        head.at.time(),
        &[head.event_id.as_str()],
    );
    event.message_id = Some(reaction.message_id);
    event.event_id = Some(head.event_id.clone());
    event.sender = Some(sender);
    event.key = Some(reaction.key.clone());
    event
}

fn set_content(event: &mut InboundEvent, content: &Content) {
    event.mentions = content.mentions.as_ref().map(MentionList::from);
    event.body = Some(content.body.clone());
    event.format = Some(Format::Plain);
    event.html.clone_from(&content.html);
    event.msgtype = content.msgtype;
    event.attachments = content.file.iter().cloned().collect();
}
