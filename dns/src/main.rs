//! `skiff-dns`: the cluster's DNS server. Watches Services and EndpointSlices, answers for
//! the cluster domain over UDP and TCP, and forwards every other name to the upstream
//! servers, until SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use skiff_client::services::ServiceWatch;
use skiff_client::Client;
use skiff_dns::{nameservers, udp, Outcome, Resolver, Zone};
use skiff_http::daemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Skiff's cluster DNS server.
#[derive(Debug, Parser)]
#[command(name = "skiff-dns", version)]
struct Args {
    /// The kubeconfig to reach the API server with (default: $KUBECONFIG, ~/.kube/config,
    /// else, in a pod, its ServiceAccount through the in-cluster configuration).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Address and port to answer on (UDP and TCP).
    #[arg(long, default_value = "0.0.0.0:53")]
    dns_bind_address: SocketAddr,
    /// Servers for names outside the cluster domain (repeatable; default: the nameservers of
    /// --resolv-conf).
    #[arg(long)]
    upstream: Vec<IpAddr>,
    /// Where the default upstream servers are read from.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Address and port for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:9153")]
    metrics_bind_address: SocketAddr,
    #[command(flatten)]
    log: daemon::LogFlags,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtoLabels {
    proto: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RcodeLabels {
    rcode: String,
}

/// CoreDNS's metric names, so existing dashboards fit.
#[derive(Clone)]
struct Metrics {
    requests: Family<ProtoLabels, Counter>,
    responses: Family<RcodeLabels, Counter>,
    duration: Histogram,
    forwards: Counter,
}

struct Server {
    resolver: Resolver,
    zone: RwLock<Arc<Zone>>,
    upstream: Vec<SocketAddr>,
    metrics: Metrics,
}

impl Server {
    /// The answer to one query's bytes; `None` for what cannot be answered at all.
    async fn handle(&self, bytes: &[u8], proto: &str) -> Option<Vec<u8>> {
        let start = Instant::now();
        self.metrics
            .requests
            .get_or_create(&ProtoLabels {
                proto: proto.into(),
            })
            .inc();
        let query = match Message::from_vec(bytes) {
            Ok(q) if q.metadata.message_type == MessageType::Query => q,
            Ok(_) => return None,
            Err(_) => {
                // Enough of a header to say FORMERR to.
                if bytes.len() < 12 {
                    return None;
                }
                let id = u16::from_be_bytes([bytes[0], bytes[1]]);
                let m = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
                return m.to_vec().ok();
            }
        };
        let zone = self.zone.read().clone();
        let out = match self.resolver.resolve(&query, &zone) {
            Outcome::Answer(m) => Some(m),
            Outcome::Forward => {
                self.metrics.forwards.inc();
                match self.forward(bytes).await {
                    Some(b) => {
                        self.record(start, u16::from(b.get(3).copied().unwrap_or(2) & 0x0f));
                        return Some(b);
                    }
                    None => {
                        let mut m = Message::error_msg(
                            query.metadata.id,
                            query.metadata.op_code,
                            ResponseCode::ServFail,
                        );
                        m.metadata.recursion_desired = query.metadata.recursion_desired;
                        m.metadata.recursion_available = true;
                        for q in &query.queries {
                            m.add_query(q.clone());
                        }
                        Some(m)
                    }
                }
            }
        }?;
        self.record(start, u16::from(out.metadata.response_code));
        let mut bytes = out.to_vec().ok()?;
        // Over UDP, an answer longer than the client takes is cut to the header and question,
        // marked truncated: the client asks again over TCP.
        let limit = query
            .edns
            .as_ref()
            .map(|e| usize::from(e.max_payload()))
            .unwrap_or(512)
            .max(512);
        if proto == "udp" && bytes.len() > limit {
            let mut t = Message::new(out.metadata.id, MessageType::Response, out.metadata.op_code);
            t.metadata.authoritative = out.metadata.authoritative;
            t.metadata.recursion_desired = out.metadata.recursion_desired;
            t.metadata.recursion_available = true;
            t.metadata.truncation = true;
            t.metadata.response_code = out.metadata.response_code;
            for q in &out.queries {
                t.add_query(q.clone());
            }
            bytes = t.to_vec().ok()?;
        }
        Some(bytes)
    }

    fn record(&self, start: Instant, rcode: u16) {
        // As CoreDNS names them.
        let rcode = match rcode {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            _ => "OTHER",
        };
        self.metrics
            .responses
            .get_or_create(&RcodeLabels {
                rcode: rcode.into(),
            })
            .inc();
        self.metrics.duration.observe(start.elapsed().as_secs_f64());
    }

    /// Asks the upstream servers in turn (UDP, two seconds each); their first answer.
    async fn forward(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        for up in &self.upstream {
            let bind: SocketAddr = if up.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                ([0u16; 8], 0).into()
            };
            let Ok(sock) = UdpSocket::bind(bind).await else {
                continue;
            };
            if sock.send_to(bytes, up).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 65535];
            match tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) if from == *up => return Some(buf[..n].to_vec()),
                _ => continue,
            }
        }
        None
    }
}

async fn serve_udp(server: Arc<Server>, sock: Arc<udp::Socket>, shutdown: CancellationToken) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sock.recv(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "udp receive");
                    continue;
                }
            },
        };
        let (server, sock, query) = (server.clone(), sock.clone(), buf[..n].to_vec());
        tokio::spawn(async move {
            if let Some(answer) = server.handle(&query, "udp").await {
                let _ = sock.reply(&answer, peer).await;
            }
        });
    }
}

async fn serve_tcp(server: Arc<Server>, listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let (mut conn, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        let server = server.clone();
        tokio::spawn(async move {
            // Length-prefixed messages, until the client closes or idles for ten seconds.
            loop {
                let mut len = [0u8; 2];
                let read = tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut len));
                if !matches!(read.await, Ok(Ok(_))) {
                    return;
                }
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if conn.read_exact(&mut query).await.is_err() {
                    return;
                }
                let Some(answer) = server.handle(&query, "tcp").await else {
                    return;
                };
                let Ok(n) = u16::try_from(answer.len()) else {
                    return;
                };
                if conn.write_all(&n.to_be_bytes()).await.is_err()
                    || conn.write_all(&answer).await.is_err()
                {
                    return;
                }
            }
        });
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let resolver = Resolver::new(&args.cluster_domain)
        .with_context(|| format!("--cluster-domain {:?}", args.cluster_domain))?;
    let upstream: Vec<SocketAddr> = if args.upstream.is_empty() {
        let text = std::fs::read_to_string(&args.resolv_conf).unwrap_or_default();
        nameservers(&text)
    } else {
        args.upstream.clone()
    }
    .into_iter()
    .map(|ip| SocketAddr::new(ip, 53))
    // Never to itself.
    .filter(|a| *a != args.dns_bind_address)
    .collect();
    // In the cluster there is no kubeconfig: `infer` falls back to the pod's ServiceAccount
    // token and CA (the in-cluster configuration), re-read as the kubelet refreshes them.
    let client = match &args.kubeconfig {
        Some(k) => Client::new(skiff_client::Config::from_kubeconfig(k)?)?,
        None => Client::new(skiff_client::Config::infer()?)?,
    };

    let metrics = Metrics {
        requests: Family::default(),
        responses: Family::default(),
        duration: Histogram::new(exponential_buckets(0.00001, 2.0, 18)),
        forwards: Counter::default(),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register(
        "coredns_dns_requests",
        "DNS requests by transport",
        metrics.requests.clone(),
    );
    registry.register(
        "coredns_dns_responses",
        "DNS responses by response code",
        metrics.responses.clone(),
    );
    registry.register(
        "coredns_dns_request_duration_seconds",
        "Time to answer a request",
        metrics.duration.clone(),
    );
    registry.register(
        "coredns_forward_requests",
        "Requests forwarded upstream",
        metrics.forwards.clone(),
    );
    client.register_metrics(&mut registry);

    let shutdown = CancellationToken::new();
    let ready = CancellationToken::new();
    let health = daemon::serve_health(
        args.metrics_bind_address,
        registry,
        ready.clone(),
        "the cluster's names are not loaded yet",
        shutdown.clone(),
    )
    .await?;
    daemon::cancel_on_signal(shutdown.clone());

    let udp = Arc::new(
        udp::Socket::bind(args.dns_bind_address)
            .with_context(|| format!("binding UDP {}", args.dns_bind_address))?,
    );
    let tcp = TcpListener::bind(args.dns_bind_address)
        .await
        .with_context(|| format!("binding TCP {}", args.dns_bind_address))?;
    tracing::info!(dns = %args.dns_bind_address, %health, domain = %resolver.domain(), upstream = ?upstream, "serving");

    let server = Arc::new(Server {
        resolver,
        zone: RwLock::new(Arc::new(Zone::default())),
        upstream,
        metrics,
    });
    let mut watch = ServiceWatch::spawn(client, shutdown.clone());
    tokio::spawn(serve_udp(server.clone(), udp, shutdown.clone()));
    tokio::spawn(serve_tcp(server.clone(), tcp, shutdown.clone()));
    watch.ready().await;
    loop {
        let (services, slices) = watch.state();
        let zone = Zone::build(&services, &slices);
        tracing::debug!(services = zone.services.len(), "names rebuilt");
        *server.zone.write() = Arc::new(zone);
        ready.cancel();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            more = watch.changed() => if !more { break },
        }
        watch.settle(Duration::from_millis(5)).await;
    }
    tracing::info!("stopped");
    Ok(())
}
