//! A real DNS server on 127.0.0.1 (hickory-server, authoritative in-memory zones) for the DNSBL tests and benchmark,
//! counting the queries it receives; and a "black hole" UDP socket that reads queries and never answers.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use tokio::net::{TcpListener, UdpSocket};

/// TTL of every answer, and the SOA minimum (the negative-caching TTL, RFC 2308 §4).
pub const TTL: u32 = 300;
/// Query names kept for inspection (the benchmark sends many thousands; only the count matters there).
const MAX_LOGGED_NAMES: usize = 10_000;

/// One authoritative zone: its origin (`zen.test`) and A records by full name (`2.0.0.127.zen.test`).
pub struct TestZone {
    pub origin: String,
    pub records: Vec<(String, Ipv4Addr)>,
}

impl TestZone {
    pub fn new(origin: &str) -> TestZone {
        TestZone {
            origin: origin.to_string(),
            records: Vec::new(),
        }
    }

    /// Adds `LABEL.ORIGIN A answer` (`label` is the reversed IP or the domain).
    pub fn with(mut self, label: &str, answer: Ipv4Addr) -> TestZone {
        self.records
            .push((format!("{label}.{}", self.origin), answer));
        self
    }
}

#[derive(Default)]
struct Stats {
    count: AtomicUsize,
    names: Mutex<Vec<String>>,
}

struct Counting {
    inner: Catalog,
    stats: Arc<Stats>,
}

#[async_trait::async_trait]
impl RequestHandler for Counting {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.stats.count.fetch_add(1, Ordering::SeqCst);
        if let Ok(info) = request.request_info()
            && let Ok(mut names) = self.stats.names.lock()
            && names.len() < MAX_LOGGED_NAMES
        {
            names.push(info.query.name().to_string());
        }
        self.inner
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// A running test DNS server; stops when dropped.
pub struct TestDns {
    pub addr: SocketAddr,
    stats: Arc<Stats>,
    _server: Server<Counting>,
}

impl TestDns {
    /// Serves `zones` on 127.0.0.1 (UDP, and TCP on the same port), an ephemeral port, with [`TTL`].
    pub async fn start(zones: Vec<TestZone>) -> TestDns {
        TestDns::start_with_ttl(zones, TTL).await
    }

    /// Same, with every TTL (and the SOA minimum, the negative TTL) set to `ttl` seconds.
    pub async fn start_with_ttl(zones: Vec<TestZone>, ttl: u32) -> TestDns {
        let mut catalog = Catalog::new();
        for zone in zones {
            let origin = Name::from_ascii(format!("{}.", zone.origin)).expect("test zone origin");
            let mut handler = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
                origin.clone(),
                ZoneType::Primary,
                AxfrPolicy::Deny,
            );
            let soa = SOA::new(
                Name::from_ascii(format!("ns.{}.", zone.origin)).expect("mname"),
                Name::from_ascii(format!("hostmaster.{}.", zone.origin)).expect("rname"),
                1,
                3600,
                600,
                86400,
                ttl,
            );
            assert!(
                handler.upsert_mut(Record::from_rdata(origin.clone(), ttl, RData::SOA(soa)), 1)
            );
            for (name, answer) in zone.records {
                let name = Name::from_ascii(format!("{name}.")).expect("test record name");
                assert!(handler.upsert_mut(Record::from_rdata(name, ttl, RData::A(A(answer))), 1));
            }
            let handler: Arc<dyn ZoneHandler> = Arc::new(handler);
            catalog.upsert(LowerName::new(&origin), vec![handler]);
        }
        let stats = Arc::new(Stats::default());
        let mut server = Server::new(Counting {
            inner: catalog,
            stats: stats.clone(),
        });
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let addr = udp.local_addr().expect("udp addr");
        server.register_socket(udp);
        if let Ok(tcp) = TcpListener::bind(addr).await {
            server.register_listener(tcp, Duration::from_secs(5), 64);
        }
        TestDns {
            addr,
            stats,
            _server: server,
        }
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.stats.count.load(Ordering::SeqCst)
    }

    /// Names asked so far (lower-case, with the trailing dot), oldest first.
    pub fn names(&self) -> Vec<String> {
        self.stats
            .names
            .lock()
            .map(|n| n.iter().map(|s| s.to_ascii_lowercase()).collect())
            .unwrap_or_default()
    }
}

/// A UDP "resolver" that reads every query and never answers; stops when dropped.
pub struct BlackHole {
    pub addr: SocketAddr,
    received: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    pub async fn start() -> BlackHole {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let addr = socket.local_addr().expect("udp addr");
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while socket.recv_from(&mut buf).await.is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        BlackHole {
            addr,
            received,
            task,
        }
    }

    /// Datagrams swallowed so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}
