//! One module per `tape` subcommand.

pub mod bridge;
pub mod call;
pub mod file;
pub mod ls;
pub mod metrics;
pub mod nats;
pub mod online;
pub mod prune;
pub mod replay;
pub mod rpc;
pub mod service;
pub mod tail;
pub mod top;
pub mod var;
pub mod verify;
pub mod write;
