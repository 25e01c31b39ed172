//! Making sure application users have registered puppets with the right
//! profile. Registration is remembered in the table, so it happens once.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt, stream};
use ruma::{OwnedMxcUri, OwnedUserId};

use crate::error::Error;
use crate::ids::AppUserId;
use crate::matrix::Matrix;
use crate::metrics::{Counter, Metrics};
use crate::model::Puppet;
use crate::store::Store;

/// How many puppets are set up at once.
const CONCURRENCY: usize = 4;

/// A puppet as the application wants it.
#[derive(Clone, Debug)]
pub struct WantedPuppet {
    pub user: AppUserId,
    pub matrix_user_id: OwnedUserId,
    pub display_name: Option<String>,
    /// The avatar in the media repository, and the `https://` address it
    /// was fetched from, if it was.
    pub avatar: Option<(OwnedMxcUri, Option<String>)>,
    /// The profile above only fills in what the puppet has not got: a
    /// conversation's per-member name becomes a new puppet's global name,
    /// but does not replace the one the application set.
    pub defaults_only: bool,
}

/// Registers missing puppets and brings their profiles up to date; returns
/// the puppets in the order asked.
pub async fn ensure_puppets<S: Store, M: Matrix>(
    store: &S,
    matrix: &M,
    metrics: &Metrics,
    wanted: &[WantedPuppet],
) -> Result<Vec<Puppet>, Error> {
    let users: Vec<AppUserId> = wanted.iter().map(|w| w.user.clone()).collect();
    let known: HashMap<AppUserId, Puppet> = store
        .puppets(&users)
        .await?
        .into_iter()
        .map(|puppet| (puppet.user_id.clone(), puppet))
        .collect();
    let work: Vec<(WantedPuppet, Option<Puppet>)> = wanted
        .iter()
        .map(|want| (want.clone(), known.get(&want.user).cloned()))
        .collect();
    stream::iter(work)
        .map(|(want, known)| ensure_one(store, matrix, metrics, want, known))
        .buffered(CONCURRENCY)
        .try_collect()
        .await
}

/// Whether a wanted profile value replaces the current one.
fn replaces<T: PartialEq>(wanted: Option<&T>, current: Option<&T>, defaults_only: bool) -> bool {
    match (wanted, current) {
        (None, _) => false,
        (Some(_), Some(_)) if defaults_only => false,
        (Some(wanted), current) => current != Some(wanted),
    }
}

async fn ensure_one<S: Store, M: Matrix>(
    store: &S,
    matrix: &M,
    metrics: &Metrics,
    want: WantedPuppet,
    known: Option<Puppet>,
) -> Result<Puppet, Error> {
    let matrix_user_id = want.matrix_user_id.clone();
    let mut puppet = known.unwrap_or_else(|| Puppet {
        user_id: want.user.clone(),
        matrix_user_id: matrix_user_id.clone(),
        display_name: None,
        avatar_url: None,
        registered: false,
        avatar_source: None,
    });
    let mut changed = false;
    if !puppet.registered {
        matrix.register_puppet(matrix_user_id.localpart()).await?;
        metrics.count(Counter::PuppetsRegistered);
        puppet.registered = true;
        changed = true;
    }
    if let Some(name) = want.display_name.as_ref().filter(|name| {
        replaces(
            Some(*name),
            puppet.display_name.as_ref(),
            want.defaults_only,
        )
    }) {
        matrix.set_display_name(&matrix_user_id, name).await?;
        puppet.display_name = Some(name.to_owned());
        changed = true;
    }
    if let Some((url, source)) = want.avatar.as_ref().filter(|(url, _)| {
        replaces(
            Some(&url.to_string()),
            puppet.avatar_url.as_ref(),
            want.defaults_only,
        )
    }) {
        matrix.set_avatar_url(&matrix_user_id, url).await?;
        puppet.avatar_url = Some(url.to_string());
        puppet.avatar_source = source.clone();
        changed = true;
    }
    if changed {
        store.put_puppet(&puppet).await?;
    }
    Ok(puppet)
}

#[cfg(test)]
mod tests {
    use super::replaces;

    #[test]
    fn defaults_fill_in_and_wanted_values_replace() {
        let (a, b) = ("a".to_owned(), "b".to_owned());
        assert!(replaces(Some(&a), None, true));
        assert!(!replaces(Some(&a), Some(&b), true));
        assert!(replaces(Some(&a), Some(&b), false));
        assert!(!replaces(Some(&a), Some(&a), false));
        assert!(!replaces(None, Some(&a), false));
    }
}
