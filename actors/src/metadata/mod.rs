//! The cluster's metadata. [`quorum`] is the replicated metadata log on
//! openraft and the image it builds.

pub mod quorum;
