//! The POP3 wire protocol (RFC 1939, 2449, 2595, 5034, 6856), shared by proxy, server and client; no policy.
