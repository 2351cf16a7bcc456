//! Accept loops with a connection limit and graceful shutdown, shared by the server and the proxy.
