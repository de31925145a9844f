//! The cluster's metadata. [`quorum`] is the replicated metadata log on
//! openraft and the image it builds; [`controller`] is what the active
//! controller does beside the log: broker sessions, fencing on expiry.

pub mod controller;
pub mod quorum;
