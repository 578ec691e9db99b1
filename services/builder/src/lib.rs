//! molde's builder. This first part is the Dockerfile frontend: the text is
//! parsed into instructions that keep their line (`dockerfile`), words are
//! expanded against build args and the environment (`expand`), and
//! instructions are grouped into stages (`Dockerfile::stages`).

pub mod cache;
pub mod copy;
pub mod dockerfile;
pub mod entitlements;
pub mod expand;
pub mod git;
pub mod ignore;
pub mod mounts;
pub mod plan;
pub mod scope;
pub mod service;
pub mod stage;

pub use dockerfile::{Command, Dockerfile, Instruction, ParseError, Stage};
