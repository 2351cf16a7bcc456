//! The built-in POP3 server over maildirs.

pub mod lock;
pub mod maildir;
pub mod users;
