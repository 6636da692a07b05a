//! skiff-proxy-bench: the service proxy at 10,000 services of 10 endpoints each, in network
//! namespaces of its own.
//!
//! - the kernel alone: a full sync (working out the table, then the kernel transaction, timed
//!   apart), one service added among 10,000, one endpoint changed;
//! - the iptables mode at 1,000 services (iptables-restore's time in place of the kernel's);
//! - through a real API server: the first full sync from the informers, and network
//!   programming latency — from an EndpointSlice write at the API server to the end of the
//!   kernel transaction that carries it;
//! - the `skiff-proxy` binary's resident memory with all of it in place.
//!
//! Prints a Markdown report on stdout.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_client::reflector::ObjectKey;
use skiff_client::{Api, Client, PostParams};
use skiff_e2e::bench::{fan_out, percentile, rss_kib, status_kib};
use skiff_e2e::netns::NetNs;
use skiff_e2e::{ApiServer, Etcd};
use skiff_proxy::iptables::{Commands, Iptables};
use skiff_proxy::model::{Endpoint, ServicePort, TCP};
use skiff_proxy::nft::netlink::Socket;
use skiff_proxy::proxier::{self, Program, Proxier};
use skiff_proxy::rules::Config;
use tokio_util::sync::CancellationToken;

const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 10;
const CLIENTS: usize = 64;
const LATENCY_SAMPLES: usize = 200;

fn cfg() -> Config {
    Config {
        cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0), 16)),
    }
}

/// Endpoint `e` of service `i`: a distinct pod address.
fn endpoint_ip(i: usize, e: usize) -> Ipv4Addr {
    let n = (i * ENDPOINTS + e) as u32;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + n + 1)
}

fn service_port(i: usize) -> ServicePort {
    let eps: Vec<Endpoint> = (0..ENDPOINTS)
        .map(|e| Endpoint {
            ip: endpoint_ip(i, e),
            port: 8080,
        })
        .collect();
    ServicePort {
        name: format!("bench/svc-{i}:80"),
        proto: TCP,
        cluster_ips: vec![Ipv4Addr::from(
            u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i as u32 + 10,
        )],
        port: 80,
        node_port: None,
        load_balancer_ips: vec![],
        affinity_timeout: None,
        external_local: false,
        cluster_endpoints: eps.clone(),
        external_endpoints: eps,
        local_endpoints: vec![],
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    percentile(&v, 0.5)
}

fn key(i: usize) -> ObjectKey {
    ObjectKey::new("bench", &format!("svc-{i}"))
}

/// Full sync, one service added, one endpoint changed, against the kernel alone.
fn kernel_only(out: &mut String) -> anyhow::Result<()> {
    let ns = NetNs::new("bench-kernel")?;
    let sock = ns.enter(Socket::open)??;
    let mut p = Proxier::new(cfg(), "node", sock);
    let mut ports: Vec<ServicePort> = (0..SERVICES).map(service_port).collect();
    let all = |ports: &[ServicePort]| {
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| (key(i), vec![p.clone()]))
            .collect::<Vec<_>>()
    };
    let (mut build, mut kernel) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let s = p.full(all(&ports))?;
        build.push(s.build);
        kernel.push(s.kernel);
    }
    let last = p.full(all(&ports))?;
    let (b, k) = (median(build), median(kernel));
    out.push_str(&format!(
        "| full sync, {SERVICES} services × {ENDPOINTS} endpoints ({} rules, {} elements; median of 5) | {} | {} | **{}** |\n",
        last.rules, last.elements, ms(b), ms(k), ms(b + k)
    ));
    let (mut build, mut kernel) = (Vec::new(), Vec::new());
    for extra in SERVICES..SERVICES + 20 {
        ports.push(service_port(extra));
        let s = p.update(vec![(key(extra), vec![ports[extra].clone()])])?;
        build.push(s.build);
        kernel.push(s.kernel);
    }
    let (b, k) = (median(build), median(kernel));
    out.push_str(&format!(
        "| one service added among {SERVICES} (median of 20) | {} | {} | **{}** |\n",
        ms(b),
        ms(k),
        ms(b + k)
    ));
    let (mut build, mut kernel) = (Vec::new(), Vec::new());
    for (i, port) in ports.iter_mut().enumerate().take(20) {
        port.cluster_endpoints[0].ip = Ipv4Addr::new(10, 245, 0, i as u8 + 1);
        let s = p.update(vec![(key(i), vec![port.clone()])])?;
        build.push(s.build);
        kernel.push(s.kernel);
    }
    let (b, k) = (median(build), median(kernel));
    out.push_str(&format!(
        "| one endpoint changed (median of 20) | {} | {} | **{}** |\n",
        ms(b),
        ms(k),
        ms(b + k)
    ));
    // The updates kept count of the table as a full write of the same services finds it.
    let updated = p.update(vec![(key(0), vec![ports[0].clone()])])?.elements;
    let whole = p.full(all(&ports))?.elements;
    anyhow::ensure!(
        updated == whole,
        "after the updates the proxier counts {updated} elements, a full write {whole}"
    );
    Ok(())
}

/// Services in the iptables comparison: kube-proxy's shapes (a chain per service port and
/// per endpoint) are too slow to write at the full count in a bounded run.
const IPTABLES_SERVICES: usize = 1_000;

/// The iptables mode at a tenth of the load: a full write, one service added.
fn iptables_mode(out: &mut String) -> anyhow::Result<()> {
    let ns = NetNs::new("bench-ipt")?;
    let mut p = Iptables::new(cfg(), "node", Commands::default());
    let mut ports: Vec<(ObjectKey, Vec<ServicePort>)> = (0..IPTABLES_SERVICES)
        .map(|i| (key(i), vec![service_port(i)]))
        .collect();
    let full = ns.enter(|| p.full(ports.clone()))??;
    out.push_str(&format!(
        "| iptables mode: full write, {IPTABLES_SERVICES} services × {ENDPOINTS} endpoints ({} rules) | {} | {} | **{}** |\n",
        full.rules,
        ms(full.build),
        ms(full.kernel),
        ms(full.build + full.kernel)
    ));
    let (mut build, mut kernel) = (Vec::new(), Vec::new());
    for extra in IPTABLES_SERVICES..IPTABLES_SERVICES + 5 {
        let change = (key(extra), vec![service_port(extra)]);
        ports.push(change.clone());
        let s = ns.enter(|| p.update(vec![change]))??;
        build.push(s.build);
        kernel.push(s.kernel);
    }
    let (b, k) = (median(build), median(kernel));
    out.push_str(&format!(
        "| iptables mode: one service added among {IPTABLES_SERVICES} (median of 5) | {} | {} | **{}** |\n",
        ms(b),
        ms(k),
        ms(b + k)
    ));
    Ok(())
}

fn slice(i: usize, first: Ipv4Addr) -> anyhow::Result<EndpointSlice> {
    let endpoints: Vec<serde_json::Value> = (0..ENDPOINTS)
        .map(|e| {
            let ip = if e == 0 { first } else { endpoint_ip(i, e) };
            // On other nodes, as the endpoints controller names them.
            json!({"addresses": [ip.to_string()], "conditions": {"ready": true},
                "nodeName": format!("node-{}", e % 3)})
        })
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-1"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))?)
}

async fn through_the_api(out: &mut String, mem: &mut String) -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let api = ApiServer::start(&etcd).await?;
    let mut cc = skiff_client::Config::from_kubeconfig(&api.kubeconfig)?;
    cc.qps = 0.0;
    let client = Client::new(cc)?;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let s = services.clone();
    let took = fan_out(CLIENTS, SERVICES, move |i| {
        let s = s.clone();
        async move {
            let svc: Service = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("svc-{i}")},
                "spec": {"ports": [{"port": 80, "targetPort": 8080}]},
            }))?;
            s.create(&PostParams::default(), &svc).await?;
            Ok(())
        }
    })
    .await
    .context("creating services")?;
    let sl = slices.clone();
    let took_slices = fan_out(CLIENTS, SERVICES, move |i| {
        let sl = sl.clone();
        async move {
            sl.create(&PostParams::default(), &slice(i, endpoint_ip(i, 0))?)
                .await?;
            Ok(())
        }
    })
    .await
    .context("creating endpoint slices")?;
    eprintln!("created {SERVICES} services in {took:?} and their slices in {took_slices:?}");

    // The proxier in-process: its socket in a namespace of its own.
    let ns = NetNs::new("bench-api")?;
    let sock = ns.enter(Socket::open)??;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let (tx, mut syncs) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    tokio::spawn(proxier::run(
        client.clone(),
        Box::new(Proxier::new(cfg(), "node", sock)),
        Duration::from_secs(3600),
        stop.clone(),
        move |r| {
            let r = match r {
                Ok(s) => Ok(s.clone()),
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send((Instant::now(), r));
        },
    ));
    let (at, first) = syncs.recv().await.context("no first sync")?;
    let first = first.map_err(anyhow::Error::msg)?;
    out.push_str(&format!(
        "| first full sync from the API server's {SERVICES} services ({} elements) | {} | {} | {} (from start, lists included: {}) |\n",
        first.elements,
        ms(first.build),
        ms(first.kernel),
        ms(first.build + first.kernel),
        ms(at - started),
    ));

    // Programming latency: one EndpointSlice write at a time.
    let mut lat = Vec::new();
    for n in 0..LATENCY_SAMPLES {
        let i = (n * 37) % SERVICES;
        let new = Ipv4Addr::new(10, 246, (n / 250) as u8, (n % 250) as u8 + 1);
        let mut s = slice(i, new)?;
        let current = slices.get(&format!("svc-{i}-1")).await?;
        s.metadata.resource_version = current.metadata.resource_version;
        let t0 = Instant::now();
        slices
            .replace(&format!("svc-{i}-1"), &PostParams::default(), &s)
            .await?;
        let (done, r) = tokio::time::timeout(Duration::from_secs(10), syncs.recv())
            .await
            .context("no sync within 10 s of an EndpointSlice write")?
            .context("the proxier stopped")?;
        r.map_err(anyhow::Error::msg)?;
        lat.push(done - t0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        while syncs.try_recv().is_ok() {}
    }
    lat.sort();
    out.push_str(&format!(
        "| network programming: EndpointSlice write → kernel transaction done ({LATENCY_SAMPLES} writes, one at a time) | | | p50 {} / p99 {} / max {} |\n",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap_or(&Duration::ZERO)),
    ));
    stop.cancel();

    // The binary's memory with all of it in place.
    let node = NetNs::new("bench-rss")?;
    let (kubeconfig, _relay) = skiff_e2e::netns::relayed_kubeconfig(&api, &node)?;
    let mut child = node
        .command(&skiff_e2e::binary("skiff-proxy")?)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args([
            "--hostname-override=node",
            "--cluster-cidr=10.244.0.0/16",
            "--v=1",
        ])
        .spawn()?;
    let pid = child.id();
    let t = Instant::now();
    let ready = loop {
        let ok = node
            .run(&[
                "busybox",
                "wget",
                "-q",
                "-O",
                "-",
                "http://127.0.0.1:10249/readyz",
            ])
            .is_ok();
        if ok || t.elapsed() > Duration::from_secs(60) {
            break ok;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, peak) = (rss_kib(pid), status_kib(pid, "VmHWM:"));
    let _ = child.kill();
    let _ = child.wait();
    anyhow::ensure!(ready, "skiff-proxy never became ready");
    mem.push_str(&format!(
        "skiff-proxy with {SERVICES} services × {ENDPOINTS} endpoints in place: resident **{:.1} MiB** (peak {:.1} MiB).\n",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    ));
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut out = String::from(
        "| what | working out the table | kernel transaction | total |\n|---|---|---|---|\n",
    );
    kernel_only(&mut out)?;
    iptables_mode(&mut out)?;
    let mut mem = String::new();
    through_the_api(&mut out, &mut mem).await?;
    println!("{out}\n{mem}");
    Ok(())
}
