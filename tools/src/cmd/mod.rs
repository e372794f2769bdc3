//! One module per `tape` subcommand.

pub mod bridge;
pub mod ls;
pub mod service;
pub mod tail;
pub mod verify;
pub mod write;
