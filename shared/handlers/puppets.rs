//! Making sure application users have registered puppets with the right
//! profile. Registration is remembered in the table, so it happens once.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt, stream};
use ruma::OwnedMxcUri;

use crate::error::Error;
use crate::ids::{AppUserId, PuppetNamer};
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
    pub display_name: Option<String>,
    pub avatar_url: Option<OwnedMxcUri>,
}

/// Registers missing puppets and brings their profiles up to date; returns
/// the puppets in the order asked.
pub async fn ensure_puppets<S: Store, M: Matrix>(
    store: &S,
    matrix: &M,
    namer: &PuppetNamer,
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
        .map(|(want, known)| ensure_one(store, matrix, namer, metrics, want, known))
        .buffered(CONCURRENCY)
        .try_collect()
        .await
}

async fn ensure_one<S: Store, M: Matrix>(
    store: &S,
    matrix: &M,
    namer: &PuppetNamer,
    metrics: &Metrics,
    want: WantedPuppet,
    known: Option<Puppet>,
) -> Result<Puppet, Error> {
    let matrix_user_id = namer.user_id(&want.user);
    let mut puppet = known.unwrap_or_else(|| Puppet {
        user_id: want.user.clone(),
        matrix_user_id: matrix_user_id.clone(),
        display_name: None,
        avatar_url: None,
        registered: false,
    });
    let mut changed = false;
    if !puppet.registered {
        matrix.register_puppet(&namer.localpart(&want.user)).await?;
        metrics.count(Counter::PuppetsRegistered);
        puppet.registered = true;
        changed = true;
    }
    if let Some(name) = want
        .display_name
        .as_deref()
        .filter(|name| puppet.display_name.as_deref() != Some(*name))
    {
        matrix.set_display_name(&matrix_user_id, name).await?;
        puppet.display_name = Some(name.to_owned());
        changed = true;
    }
    if let Some(url) = want
        .avatar_url
        .as_ref()
        .filter(|url| puppet.avatar_url.as_deref() != Some(url.as_str()))
    {
        matrix.set_avatar_url(&matrix_user_id, url).await?;
        puppet.avatar_url = Some(url.to_string());
        changed = true;
    }
    if changed {
        store.put_puppet(&puppet).await?;
    }
    Ok(puppet)
}
