//! The built-in POP3 server over maildirs.
