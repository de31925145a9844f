//! SCRAM credential changes as proposals: the node turns a set of upserts
//! and deletions into one atomic batch of `ScramCredential` records and
//! answers once it is committed and applied here, so a login that follows
//! the answer on this node sees the new credential.

use actix::prelude::*;

use super::admin::ready;
use super::{Node, NodeHandle};
use crate::error::Error;
use crate::metadata::quorum::{MetadataBatch, MetadataRecord, ScramCredential, ScramCredentials, ScramMechanism};

/// One credential change.
#[derive(Debug, Clone)]
pub enum ScramCredentialChange {
    /// Create or replace `user`'s credential for `mechanism`.
    Upsert { user: String, mechanism: ScramMechanism, credential: ScramCredential },
    /// Remove `user`'s credential for `mechanism` (it must exist).
    Delete { user: String, mechanism: ScramMechanism },
}

/// Apply credential changes, all or none.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct AlterScramCredentials {
    pub changes: Vec<ScramCredentialChange>,
}

impl Handler<AlterScramCredentials> for Node {
    type Result = AtomicResponse<Self, Result<(), Error>>;

    fn handle(&mut self, msg: AlterScramCredentials, _ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.refuse_if_shutting_down() {
            return AtomicResponse::new(ready(Err(e)));
        }
        if msg.changes.is_empty() {
            return AtomicResponse::new(ready(Ok(())));
        }
        let records = msg
            .changes
            .into_iter()
            .map(|change| match change {
                ScramCredentialChange::Upsert { user, mechanism, credential } => {
                    MetadataRecord::ScramCredential { user, mechanism, credential: Some(credential) }
                }
                ScramCredentialChange::Delete { user, mechanism } => MetadataRecord::ScramCredential { user, mechanism, credential: None },
            })
            .collect();
        AtomicResponse::new(self.propose_then(MetadataBatch { records }, |_, _| Ok(())))
    }
}

impl NodeHandle {
    /// Applies credential changes through the metadata quorum, all or none.
    pub async fn alter_scram_credentials(&self, changes: Vec<ScramCredentialChange>) -> Result<(), Error> {
        self.ask(AlterScramCredentials { changes }).await?
    }

    /// `user`'s credential for `mechanism`, as this node's image holds it.
    pub fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.metadata_store().image().borrow().image.scram_credentials.get(user).and_then(|m| m.get(&mechanism)).cloned()
    }

    /// Every user's credentials, as this node's image holds them.
    pub fn scram_credentials(&self) -> ScramCredentials {
        self.metadata_store().image().borrow().image.scram_credentials.clone()
    }
}
