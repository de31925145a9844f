//! [`PartitionHandle`]: how the rest of the node reaches a partition actor,
//! counting every message in flight (its mailbox depth) on the way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::watch;

use super::{ArchiveStatus, PartitionActor, Reconfigure, Watermarks};
use crate::error::Error;
use crate::TopicPartition;

/// A partition's address plus its published watermarks.
///
/// Invariant: every message to the actor goes through [`PartitionHandle::ask`]
/// or [`PartitionHandle::tell`] (the address is private), so
/// [`PartitionHandle::mailbox_depth`] counts all of them.
#[derive(Debug, Clone)]
pub struct PartitionHandle {
    pub tp: TopicPartition,
    addr: Addr<PartitionActor>,
    pub watermarks: watch::Receiver<Watermarks>,
    pub archive_status: Arc<ArchiveStatus>,
    mailbox_depth: MailboxDepth,
}

impl PartitionHandle {
    /// A handle on a started actor; its mailbox-depth count starts at 0.
    pub fn new(tp: TopicPartition, addr: Addr<PartitionActor>, watermarks: watch::Receiver<Watermarks>, archive_status: Arc<ArchiveStatus>) -> Self {
        PartitionHandle { tp, addr, watermarks, archive_status, mailbox_depth: MailboxDepth::default() }
    }

    /// The watermarks the actor last published (no message round trip).
    pub fn watermarks(&self) -> Watermarks {
        *self.watermarks.borrow()
    }

    /// Messages sent through this handle (or its clones) and not yet answered.
    pub fn mailbox_depth(&self) -> u64 {
        self.mailbox_depth.get()
    }

    /// Sends a message, folding a dead or restarting actor into [`Error::Unavailable`].
    ///
    /// The message counts in [`PartitionHandle::mailbox_depth`] until its answer
    /// arrives, the send fails, or this future is dropped.
    pub async fn ask<M>(&self, msg: M) -> Result<<M::Result as ResultInner>::Ok, Error>
    where
        M: Message + Send + 'static,
        M::Result: Send + ResultInner,
        PartitionActor: Handler<M>,
    {
        let _queued = self.mailbox_depth.enter();
        match self.addr.send(msg).await {
            Ok(result) => result.into_result(),
            Err(e) => Err(Error::Unavailable(self.tp.to_string(), e.to_string())),
        }
    }

    /// Queues a message without waiting for its answer. A full mailbox or a
    /// stopped actor is an error, never a wait (see [`MAILBOX_CAPACITY`]).
    ///
    /// The message counts in [`PartitionHandle::mailbox_depth`] until the actor's
    /// handler returns, or until it is dropped unhandled.
    pub fn tell<M>(&self, msg: M) -> Result<(), Error>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        PartitionActor: Handler<Counted<M>>,
    {
        let counted = Counted { msg, _queued: self.mailbox_depth.enter() };
        self.addr.try_send(counted).map_err(|e| Error::Unavailable(self.tp.to_string(), e.to_string()))
    }
}

/// How many messages sent to one partition actor are queued or being handled.
///
/// actix does not expose a mailbox's length, so senders count: [`InMailbox`]
/// adds one when a message is sent and takes it away when dropped. Shared by a
/// handle's clones. A cancelled `ask` stops counting at once, although its
/// message may still be in the mailbox: the count is of work someone waits for.
#[derive(Debug, Clone, Default)]
struct MailboxDepth(Arc<AtomicU64>);

impl MailboxDepth {
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn enter(&self) -> InMailbox {
        self.0.fetch_add(1, Ordering::Relaxed);
        InMailbox(Arc::clone(&self.0))
    }
}

/// One message counted in a [`MailboxDepth`]; dropping it uncounts the message,
/// whichever way it ends (answered, failed to send, cancelled, or handled).
#[derive(Debug)]
struct InMailbox(Arc<AtomicU64>);

impl Drop for InMailbox {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A message sent with [`PartitionHandle::tell`], carrying its place in the
/// mailbox-depth count into the actor so that handling it uncounts it.
#[derive(Debug)]
pub struct Counted<M> {
    msg: M,
    _queued: InMailbox,
}

impl<M: Message> Message for Counted<M> {
    type Result = M::Result;
}

// One impl per told message: a blanket `impl<M> Handler<Counted<M>>` sends
// trait resolution into `Counted<Counted<..>>` for every `ask`.
impl Handler<Counted<Reconfigure>> for PartitionActor {
    type Result = ();

    fn handle(&mut self, counted: Counted<Reconfigure>, ctx: &mut Context<Self>) {
        // `_queued` drops when this returns: the message has been handled.
        let Counted { msg, _queued } = counted;
        <PartitionActor as Handler<Reconfigure>>::handle(self, msg, ctx)
    }
}

impl Handler<Counted<super::FollowerAtLogEnd>> for PartitionActor {
    type Result = ();

    fn handle(&mut self, counted: Counted<super::FollowerAtLogEnd>, ctx: &mut Context<Self>) {
        let Counted { msg, _queued } = counted;
        <PartitionActor as Handler<super::FollowerAtLogEnd>>::handle(self, msg, ctx)
    }
}

/// The replica manager tells partitions their new role in image order; a
/// refused role is logged by the actor.
impl Handler<Counted<crate::replication::SetRole>> for PartitionActor {
    type Result = Result<(), Error>;

    fn handle(&mut self, counted: Counted<crate::replication::SetRole>, ctx: &mut Context<Self>) -> Self::Result {
        let Counted { msg, _queued } = counted;
        <PartitionActor as Handler<crate::replication::SetRole>>::handle(self, msg, ctx)
    }
}

/// Lets [`PartitionHandle::ask`] flatten `Result<T, Error>` message results.
pub trait ResultInner {
    type Ok;
    fn into_result(self) -> Result<Self::Ok, Error>;
}

impl<T> ResultInner for Result<T, Error> {
    type Ok = T;
    fn into_result(self) -> Result<T, Error> {
        self
    }
}
