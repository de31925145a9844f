//! The cluster's metadata. [`quorum`] is the replicated metadata log on
//! openraft and the image it builds; [`store`] is the node's door to it
//! (proposals in, applied images out); [`controller`] is what the active
//! controller does beside the log: broker sessions, fencing on expiry.

pub mod controller;
pub mod quorum;
pub mod store;

pub use store::{MetadataStore, ProposalForwarder, RaftTiming, SingleVoterNetwork, StoreOptions};
