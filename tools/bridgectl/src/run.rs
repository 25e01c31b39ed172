//! The cutover run: users, then conversations (spaces first, so the
//! conversations in them find them), then the extra memberships, each
//! record through the provisioning service the API uses, `concurrency` at
//! a time (the memberships of one conversation one after another, as its
//! outbox lets only one change at a time go to Matrix directly).
//!
//! It can be run again and again: a record whose mapping shows it
//! provisioned (a registered puppet with that profile, an active
//! conversation, a member with that role and name and nothing pending) is
//! skipped, and what an interrupted run left half done (a claim of a
//! conversation, a room made but not recorded) is finished by the same
//! code that makes creation exactly-once. A homeserver or table that
//! falters is tried again (with backoff); a claim left by an interrupted
//! run is waited out (its lease is 35 s).
//!
//! `--dry-run` reads the export and the table and writes nothing: every
//! record is checked as the API would check it, and counted as one to
//! provision or one already there.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bridge::error::Error;
use bridge::handlers::provision::Provisioning;
use bridge::handlers::provision::plan::{
    Avatar, CreateConversation, MAX_NAME, Plan, checked_display_name, checked_text, member_ids,
};
use bridge::ids::{AppUserId, ConversationId};
use bridge::matrix::Matrix;
use bridge::model::{ConversationKind, ConversationStatus, Puppet, SyncSubject};
use bridge::queue::RetryQueue;
use bridge::store::Store;
use futures::{StreamExt, future, stream};
use ruma::OwnedRoomId;

use crate::input::{Export, Line, MembershipLine, UserLine};
use crate::progress::Progress;
use crate::report::{Failure, Kind, Outcome, Report};

/// How a run goes.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Records provisioned at once.
    pub concurrency: usize,
    pub dry_run: bool,
}

/// Tries of a record whose failure may pass (homeserver or table faltering).
const ATTEMPTS: u32 = 5;
/// Tries of a conversation another run's claim holds.
const CLAIMED_ATTEMPTS: u32 = 3;
/// Longer than a provisioning claim's lease.
const LONGEST_CLAIM: Duration = Duration::from_secs(40);

/// Calls `call` until it succeeds, fails for good, or runs out of tries.
async fn retrying<T, F, Fut>(mut call: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(err) if err.is_transient() && attempt < ATTEMPTS => {
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A failure's reason for the failures file: the whole chain (an
/// operator's file; no secret is in any of these errors).
fn reason(err: &Error) -> String {
    bridge::api::ErrorChain(err).to_string()
}

/// A run of one export through one provisioning service.
pub struct Run<'a, S, M, Q> {
    pub service: &'a Provisioning<S, M, Q>,
    pub report: &'a Report,
    pub options: Options,
    /// Set on Ctrl-C: no new record is started.
    pub stop: &'a AtomicBool,
}

impl<S: Store, M: Matrix, Q: RetryQueue> Run<'_, S, M, Q> {
    /// Provisions the whole export.
    pub async fn all(&self, export: &Export) {
        for failure in &export.unreadable {
            self.report.fail(failure.clone());
        }
        self.users(&export.users).await;
        let (spaces, others): (
            Vec<&Line<CreateConversation>>,
            Vec<&Line<CreateConversation>>,
        ) = export
            .conversations
            .iter()
            .partition(|line| line.value.kind == ConversationKind::Space);
        let spaces_in_export: HashSet<ConversationId> =
            spaces.iter().map(|line| line.value.id.clone()).collect();
        let progress = Progress::start(Kind::Conversation, export.conversations.len(), self.report);
        // A conversation another run holds a claim on, or whose space is not
        // there yet, waits for a last pass rather than holding up the others.
        let deferred = Mutex::new(Vec::new());
        for batch in [spaces, others] {
            self.each(batch, &progress, |line| async {
                usize::from(
                    self.conversation(line, &spaces_in_export, Some(&deferred))
                        .await,
                )
            })
            .await;
        }
        let last: Vec<&Line<CreateConversation>> = deferred.into_inner().unwrap_or_default();
        let (spaces, others): (Vec<_>, Vec<_>) = last
            .into_iter()
            .partition(|line| line.value.kind == ConversationKind::Space);
        for batch in [spaces, others] {
            self.each(batch, &progress, |line| async {
                usize::from(self.conversation(line, &spaces_in_export, None).await)
            })
            .await;
        }
        progress.finish();
        let known: HashSet<&ConversationId> = export
            .conversations
            .iter()
            .map(|line| &line.value.id)
            .collect();
        let progress = Progress::start(Kind::Membership, export.memberships.len(), self.report);
        // The memberships of one conversation one after another, in the
        // export's order: a change while another of the same conversation
        // is in flight would wait in its outbox for the retry function.
        self.each(
            by_conversation(&export.memberships),
            &progress,
            |lines| async {
                let mut done = 0;
                for line in lines {
                    if self.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    done += usize::from(self.membership(line, &known).await);
                }
                done
            },
        )
        .await;
        progress.finish();
    }

    /// Runs `work` on every item, `concurrency` at a time, until stopped;
    /// `work` says how many lines it is through with (it may put some off).
    async fn each<I, F, Fut>(&self, items: Vec<I>, progress: &Progress<'_>, work: F)
    where
        F: Fn(I) -> Fut,
        Fut: Future<Output = usize>,
    {
        stream::iter(items)
            .take_while(|_| future::ready(!self.stop.load(Ordering::SeqCst)))
            .map(|item| {
                let done = work(item);
                async move {
                    for _ in 0..done.await {
                        progress.step();
                    }
                }
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .collect::<Vec<()>>()
            .await;
    }

    fn outcome(&self, kind: Kind, id: String, line: usize, result: Result<Outcome, Error>) {
        match result {
            Ok(outcome) => self.report.count(kind, outcome),
            Err(err) => self.report.fail(Failure {
                kind,
                id: Some(id),
                line: Some(line),
                reason: reason(&err),
            }),
        }
    }

    async fn users(&self, lines: &[Line<UserLine>]) {
        let progress = Progress::start(Kind::User, lines.len(), self.report);
        let ids: Vec<AppUserId> = lines
            .iter()
            .map(|line| line.value.user_id.clone())
            .collect();
        // One batch read decides which are provisioned already; if it fails,
        // each user is simply provisioned (and fails with its own reason).
        let known: HashMap<AppUserId, Puppet> =
            retrying(|| async { Ok(self.service.store().puppets(&ids).await?) })
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|puppet| (puppet.user_id.clone(), puppet))
                .collect();
        self.each(lines.iter().collect(), &progress, |line| async {
            let result = self.user(&line.value, known.get(&line.value.user_id)).await;
            self.outcome(
                Kind::User,
                line.value.user_id.to_string(),
                line.number,
                result,
            );
            1
        })
        .await;
        progress.finish();
    }

    async fn user(&self, user: &UserLine, known: Option<&Puppet>) -> Result<Outcome, Error> {
        let display_name = user
            .display_name
            .clone()
            .map(|name| checked_text("display_name", name, MAX_NAME))
            .transpose()?;
        let avatar = user
            .avatar_url
            .as_deref()
            .map(|url| Avatar::parse("avatar_url", url))
            .transpose()?;
        if known.is_some_and(|puppet| in_sync(puppet, display_name.as_deref(), avatar.as_ref())) {
            return Ok(Outcome::Skipped);
        }
        if !self.options.dry_run {
            retrying(|| self.service.put_user(user.user_id.clone(), user.profile())).await?;
        }
        Ok(Outcome::Done)
    }

    /// Provisions a conversation or, given `deferred`, puts it there when
    /// it conflicts with what another run or its space may yet resolve.
    async fn conversation<'l>(
        &self,
        line: &'l Line<CreateConversation>,
        spaces: &HashSet<ConversationId>,
        deferred: Option<&Mutex<Vec<&'l Line<CreateConversation>>>>,
    ) -> bool {
        let input = &line.value;
        let result = self.create(input, spaces, deferred.is_none()).await;
        if let (Err(Error::Conflict(_)), Some(deferred)) = (&result, deferred)
            && let Ok(mut deferred) = deferred.lock()
        {
            deferred.push(line);
            return false;
        }
        self.outcome(
            Kind::Conversation,
            input.id.to_string(),
            line.number,
            result,
        );
        true
    }

    /// Provisions a conversation; `wait` out a claim another run left.
    async fn create(
        &self,
        input: &CreateConversation,
        spaces: &HashSet<ConversationId>,
        wait: bool,
    ) -> Result<Outcome, Error> {
        let id = &input.id;
        let existing =
            retrying(|| async { Ok(self.service.store().conversation(id).await?) }).await?;
        let now = time::OffsetDateTime::now_utc();
        match existing {
            Some(c) if c.status != ConversationStatus::Provisioning => {
                return if c.kind == input.kind {
                    Ok(Outcome::Skipped)
                } else {
                    Err(Error::Invalid(format!(
                        "conversation '{id}' exists already with another kind"
                    )))
                };
            }
            Some(c) if !wait && c.claim.as_ref().is_some_and(|claim| claim.until > now) => {
                return Err(Error::Conflict(format!(
                    "conversation '{id}' is claimed by another run"
                )));
            }
            _ => {}
        }
        if self.options.dry_run {
            let parent = match &input.parent_id {
                None => None,
                Some(parent) if spaces.contains(parent) => {
                    Some((parent.clone(), placeholder_room()))
                }
                Some(parent) => Some(self.service.parent_space(parent).await?),
            };
            let matrix = self.service.matrix();
            Plan::from_request(self.service.namer(), matrix.bot(), input.clone(), parent)?;
            return Ok(Outcome::Done);
        }
        for _ in 0..CLAIMED_ATTEMPTS {
            match retrying(|| self.service.create_conversation(input.clone())).await {
                Ok(provisioned) if provisioned.created => return Ok(Outcome::Done),
                Ok(_) => return Ok(Outcome::Skipped),
                Err(Error::Conflict(reason)) => {
                    // A claim an interrupted run left holds until its lease ends.
                    let current = self.service.store().conversation(id).await?;
                    let Some(claim) = current
                        .filter(|c| c.status == ConversationStatus::Provisioning)
                        .and_then(|c| c.claim)
                    else {
                        return Err(Error::Conflict(reason));
                    };
                    let left = claim.until - time::OffsetDateTime::now_utc();
                    let wait = Duration::try_from(left)
                        .unwrap_or_default()
                        .min(LONGEST_CLAIM);
                    tokio::time::sleep(wait + Duration::from_secs(1)).await;
                }
                Err(err) => return Err(err),
            }
        }
        Err(Error::Conflict(format!(
            "conversation '{id}' stayed claimed by another request"
        )))
    }

    async fn membership(
        &self,
        line: &Line<MembershipLine>,
        in_export: &HashSet<&ConversationId>,
    ) -> bool {
        let result = self.member(&line.value, in_export).await;
        let label = format!(
            "{}/{}",
            line.value.conversation_id,
            line.value.member_label()
        );
        self.outcome(Kind::Membership, label, line.number, result);
        true
    }

    async fn member(
        &self,
        line: &MembershipLine,
        in_export: &HashSet<&ConversationId>,
    ) -> Result<Outcome, Error> {
        let (who, put) = line.change().map_err(Error::Invalid)?;
        let (matrix_user_id, user_id) =
            member_ids(self.service.namer(), self.service.matrix().bot(), &who)?;
        let display_name =
            checked_display_name("display_name", put.display_name.clone(), user_id.is_some())?;
        let id = &line.conversation_id;
        let subject = SyncSubject::Member {
            matrix_user_id,
            user_id,
        };
        let context =
            retrying(|| async { Ok(self.service.store().sync_context(id, &subject).await?) })
                .await?;
        let in_sync = context.sync.is_none()
            && context.member.as_ref().is_some_and(|member| {
                member.role == put.role
                    && (display_name.is_none() || member.display_name == display_name)
            });
        if in_sync {
            return Ok(Outcome::Skipped);
        }
        if self.options.dry_run {
            if context.conversation.is_none() && !in_export.contains(id) {
                return Err(Error::NotFound(format!(
                    "conversation '{id}' is neither in the export nor provisioned"
                )));
            }
            return Ok(Outcome::Done);
        }
        retrying(|| self.service.put_member(id, &who, put.clone())).await?;
        Ok(Outcome::Done)
    }
}

/// The lines grouped by conversation, each group and the lines in it in the
/// export's order.
fn by_conversation(lines: &[Line<MembershipLine>]) -> Vec<Vec<&Line<MembershipLine>>> {
    let mut groups: Vec<Vec<&Line<MembershipLine>>> = Vec::new();
    let mut index: HashMap<&ConversationId, usize> = HashMap::new();
    for line in lines {
        let group = *index.entry(&line.value.conversation_id).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(line);
    }
    groups
}

/// A room id for a dry run's plan of a conversation whose space is only in
/// the export yet.
fn placeholder_room() -> OwnedRoomId {
    OwnedRoomId::try_from("!dry-run:invalid").unwrap_or_else(|_| unreachable!("a valid room id"))
}

/// Whether a puppet has the profile a user line asks for.
fn in_sync(puppet: &Puppet, display_name: Option<&str>, avatar: Option<&Avatar>) -> bool {
    let name = display_name.is_none_or(|name| puppet.display_name.as_deref() == Some(name));
    let avatar = match avatar {
        None => true,
        Some(Avatar::Mxc(uri)) => puppet.avatar_url.as_deref() == Some(uri.as_str()),
        Some(Avatar::Fetch(url)) => puppet.avatar_source.as_deref() == Some(url.as_str()),
    };
    puppet.registered && name && avatar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberships_are_grouped_by_conversation_in_the_exports_order() {
        let line = |number: usize, conversation: &str, user: &str| Line {
            number,
            value: MembershipLine {
                conversation_id: ConversationId::parse(conversation).unwrap(),
                user_id: Some(AppUserId::parse(user).unwrap()),
                matrix_user_id: None,
                role: bridge::model::Role::Member,
                display_name: None,
            },
        };
        let lines = [
            line(1, "a", "ann"),
            line(2, "b", "bo"),
            line(3, "a", "cy"),
            line(4, "c", "di"),
            line(5, "b", "ed"),
        ];
        let numbers: Vec<Vec<usize>> = by_conversation(&lines)
            .into_iter()
            .map(|group| group.into_iter().map(|line| line.number).collect())
            .collect();
        assert_eq!(numbers, [vec![1, 3], vec![2, 5], vec![4]]);
    }

    #[test]
    fn a_puppet_is_in_sync_when_its_profile_is_what_the_line_asks() {
        let puppet = Puppet {
            user_id: AppUserId::parse("ann").unwrap(),
            matrix_user_id: ruma::owned_user_id!("@app_ann:localhost"),
            display_name: Some("Ann".into()),
            avatar_url: Some("mxc://localhost/a".into()),
            registered: true,
            avatar_source: Some("https://example.org/a.png".into()),
        };
        let fetched = Avatar::Fetch("https://example.org/a.png".into());
        assert!(in_sync(&puppet, Some("Ann"), Some(&fetched)));
        assert!(in_sync(&puppet, None, None));
        assert!(!in_sync(&puppet, Some("Anne"), None));
        assert!(!in_sync(
            &puppet,
            None,
            Some(&Avatar::Fetch("https://example.org/b.png".into()))
        ));
        assert!(in_sync(
            &puppet,
            None,
            Some(&Avatar::Mxc("mxc://localhost/a".into()))
        ));
        let unregistered = Puppet {
            registered: false,
            ..puppet
        };
        assert!(!in_sync(&unregistered, None, None));
    }
}
