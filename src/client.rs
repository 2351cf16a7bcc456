//! The POP3 client library behind `popguard client`.
