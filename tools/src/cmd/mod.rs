//! One module per `tape` subcommand.

pub mod ls;
pub mod prune;
pub mod service;
pub mod tail;
pub mod verify;
pub mod write;
