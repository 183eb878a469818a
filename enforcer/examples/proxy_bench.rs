//! Closed-loop throughput benchmark of the L7 proxy on loopback.
//!
//! A built-in keep-alive HTTP/1.1 client with N connections (each sends a request, waits for the
//! response, sends the next) runs against (a) a tiny hello-world server directly, (b) the same
//! server through the proxy with 1 HTTP rule and (c) with 40 rules, the matching one last; then
//! (d) 2,000 concurrent keep-alive connections through the proxy. Reports requests/s and latency
//! percentiles (HdrHistogram, microsecond resolution).
//!
//! `cargo run --release -p enforcer --example proxy_bench -- [--conns 64] [--secs 5]
//! [--big-conns 2000] [--threads 1 (per role)] [--rounds 1] [--current-thread] [--only direct|relay|proxy1|proxy40|many]`

use std::{
    net::{SocketAddr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use enforcer::proxy::{
    CompiledRules, DirectConnector, HttpRuleSpec, L7Record, Observer, ProxyConfig, ProxyStats,
    serve_listener,
};
use hdrhistogram::Histogram;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const REQUEST: &[u8] =
    b"GET /api/v1/items/42?view=full HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: proxy-bench\r\nAccept: */*\r\n\r\n";
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, world!";

/// Counts records the way a cheap flow exporter would, without keeping them.
#[derive(Default)]
struct CountingObserver(AtomicU64);

impl Observer for CountingObserver {
    fn record(&self, rec: L7Record) {
        drop(rec);
        self.0.fetch_add(1, Relaxed);
    }
}

/// A loopback listener with a backlog deep enough for thousands of simultaneous connects
/// (`TcpListener::bind` uses 1024; overflowing it costs dropped SYNs and 1 s retransmits).
fn listen() -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(4096).unwrap()
}

/// The hello-world upstream: answers every request head with the same response.
async fn hello_server() -> SocketAddrV4 {
    let listener = listen();
    let SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
        unreachable!()
    };
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut filled = 0;
                let mut out = Vec::with_capacity(4096);
                loop {
                    let Ok(n) = s.read(&mut buf[filled..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    filled += n;
                    let mut start = 0;
                    while let Some(p) = buf[start..filled].windows(4).position(|w| w == b"\r\n\r\n")
                    {
                        out.extend_from_slice(RESPONSE);
                        start += p + 4;
                    }
                    buf.copy_within(start..filled, 0);
                    filled -= start;
                    if filled == buf.len() {
                        return;
                    }
                    if !out.is_empty() {
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                }
            });
        }
    });
    addr
}

fn rules(n: usize) -> CompiledRules {
    let mut list = Vec::new();
    for i in 0..n.saturating_sub(1) {
        let spec = match i % 4 {
            0 => HttpRuleSpec::method_path("POST", &format!("/api/v{i}/orders/[0-9]+")),
            1 => HttpRuleSpec::method_path("GET", &format!("/api/v1/users/{i}/[a-z]+")),
            2 => HttpRuleSpec {
                method: Some("PUT|PATCH".into()),
                path: Some(format!("/admin/{i}/.*")),
                host: Some("admin\\.bench\\.local".into()),
                headers: vec![],
            },
            _ => HttpRuleSpec {
                method: Some("GET".into()),
                path: Some(format!("/api/v1/items/{i}[0-9]*")),
                host: None,
                headers: vec![format!("X-Tenant: t{i}")],
            },
        };
        list.push((spec, i as u32));
    }
    list.push((
        HttpRuleSpec::method_path("GET", "/api/v1/items/[0-9]+(\\?.*)?"),
        n as u32,
    ));
    CompiledRules::compile(&list).unwrap()
}

/// The cheapest possible user-space proxy, for reference: no HTTP at all, bytes copied both
/// ways. Whatever it costs over `direct` is the floor for any proxy that terminates TCP.
async fn start_relay(upstream: SocketAddrV4) -> SocketAddrV4 {
    let listener = listen();
    let SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
        unreachable!()
    };
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    addr
}

async fn start_proxy(upstream: SocketAddrV4, rule_count: usize) -> (SocketAddrV4, Arc<ProxyStats>) {
    let listener = listen();
    let SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
        unreachable!()
    };
    let stats = Arc::new(ProxyStats::new());
    tokio::spawn(serve_listener(
        listener,
        move |_s: &TcpStream| Ok(upstream),
        Arc::new(rules(rule_count)),
        Arc::new(DirectConnector),
        Arc::new(CountingObserver::default()),
        stats.clone(),
        Arc::new(ProxyConfig::default()),
    ));
    (addr, stats)
}

struct RunResult {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
    /// CPU seconds used during the measured window by the client, server and proxy threads.
    cpu: [f64; 3],
}

const ROLES: [&str; 3] = ["client", "server", "proxy"];

/// CPU seconds (user + system) used so far by this process's threads, per role (thread name).
fn cpu_by_role() -> [f64; 3] {
    let mut out = [0.0; 3];
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // After the name: state is field 3, utime 14 and stime 15 (1-based, whole line).
        let (Some(u), Some(st)) = (fields.get(11), fields.get(12)) else {
            continue;
        };
        let secs = (u.parse::<f64>().unwrap_or(0.0) + st.parse::<f64>().unwrap_or(0.0)) / ticks;
        if let Some(i) = ROLES.iter().position(|r| name.starts_with(r)) {
            out[i] += secs;
        }
    }
    out
}

/// Reads one response with a Content-Length body; returns false on error or bad status.
async fn read_response(s: &mut TcpStream, buf: &mut [u8], filled: &mut usize) -> bool {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = resp.parse(&buf[..*filled]) {
            let ok = resp.code == Some(200);
            let cl: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            if *filled >= n + cl {
                buf.copy_within(n + cl..*filled, 0);
                *filled -= n + cl;
                return ok;
            }
        }
        if *filled == buf.len() {
            return false;
        }
        match s.read(&mut buf[*filled..]).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => *filled += k,
        }
    }
}

async fn run(addr: SocketAddrV4, conns: usize, warmup: Duration, secs: Duration) -> RunResult {
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let recording = recording.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).unwrap();
            let mut errors = 0u64;
            let mut buf = vec![0u8; 8192];
            'outer: while !stop.load(Relaxed) {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = s.set_nodelay(true);
                let mut filled = 0;
                while !stop.load(Relaxed) {
                    let t0 = Instant::now();
                    if s.write_all(REQUEST).await.is_err()
                        || !read_response(&mut s, &mut buf, &mut filled).await
                    {
                        if recording.load(Relaxed) {
                            errors += 1;
                        }
                        continue 'outer;
                    }
                    if recording.load(Relaxed) {
                        let _ = hist.record(t0.elapsed().as_micros().max(1) as u64);
                    }
                }
            }
            (hist, errors)
        }));
    }
    tokio::time::sleep(warmup).await;
    recording.store(true, Relaxed);
    let start = Instant::now();
    let cpu_before = cpu_by_role();
    tokio::time::sleep(secs).await;
    recording.store(false, Relaxed);
    let elapsed = start.elapsed();
    let cpu_after = cpu_by_role();
    let cpu = [0, 1, 2].map(|i| cpu_after[i] - cpu_before[i]);
    stop.store(true, Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).unwrap();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.unwrap();
        hist.add(h).unwrap();
        errors += e;
    }
    RunResult {
        requests: hist.len(),
        errors,
        elapsed,
        hist,
        cpu,
    }
}

fn report(name: &str, conns: usize, r: &RunResult) -> f64 {
    let rps = r.requests as f64 / r.elapsed.as_secs_f64();
    println!(
        "{name:<24} {conns:>6} {rps:>12.0} {:>9.3} {:>9.3} {:>9.3} {:>7}   {:>6.1} {:>6.1} {:>6.1}",
        r.hist.value_at_quantile(0.50) as f64 / 1000.0,
        r.hist.value_at_quantile(0.99) as f64 / 1000.0,
        r.hist.value_at_quantile(0.999) as f64 / 1000.0,
        r.errors,
        1e6 * r.cpu[0] / r.requests.max(1) as f64,
        1e6 * r.cpu[1] / r.requests.max(1) as f64,
        1e6 * r.cpu[2] / r.requests.max(1) as f64,
    );
    rps
}

fn print_peak_rss() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap_or("?");
    println!(
        "process peak RSS (client + server + proxy): {}",
        peak.trim()
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A runtime for the server or the proxy: a multi-threaded one, or a current-thread one driven by
/// a dedicated thread.
enum Role {
    Multi(tokio::runtime::Runtime),
    Current(tokio::runtime::Handle),
}

impl Role {
    fn start(name: &str, current: bool, threads: usize) -> Self {
        if !current {
            return Role::Multi(runtime(name, threads));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                tx.send(rt.handle().clone()).unwrap();
                rt.block_on(std::future::pending::<()>());
            })
            .unwrap();
        Role::Current(rx.recv().unwrap())
    }

    /// Runs a setup future on this runtime (its spawned tasks stay there) and returns its output.
    fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        match self {
            Role::Multi(rt) => rt.block_on(f),
            Role::Current(h) => {
                let (tx, rx) = std::sync::mpsc::channel();
                h.spawn(async move {
                    let _ = tx.send(f.await);
                });
                rx.recv().unwrap()
            }
        }
    }
}

fn runtime(name: &str, threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let conns = arg(&args, "--conns", 64) as usize;
    let secs = Duration::from_secs(arg(&args, "--secs", 5));
    let big = arg(&args, "--big-conns", 2000) as usize;
    let threads = arg(&args, "--threads", 1) as usize;
    let rounds = arg(&args, "--rounds", 1).max(1) as usize;
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_default();
    raise_fd_limit();
    let current = args.iter().any(|a| a == "--current-thread");
    // Client, server and proxy each get their own runtime (as separate processes would), on
    // threads named after their role so their CPU time can be told apart.
    let server_rt = Role::start("server", current, threads);
    let proxy_rt = Role::start("proxy", current, threads);
    let client_rt = if current {
        // SAFETY: names the calling thread; the pointer is to a NUL-terminated literal.
        unsafe { libc::prctl(libc::PR_SET_NAME, c"client".as_ptr()) };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        runtime("client", threads)
    };
    let server = server_rt.run(hello_server());
    let (p1, s1) = proxy_rt.run(start_proxy(server, 1));
    let (p40, _) = proxy_rt.run(start_proxy(server, 40));
    let relay = proxy_rt.run(start_relay(server));
    let warmup = Duration::from_secs(1);
    let bench = |addr, n, warmup| client_rt.block_on(run(addr, n, warmup, secs));
    let flavour = if current {
        "current-thread".to_string()
    } else {
        format!("{threads}-worker")
    };
    println!(
        "closed loop, keep-alive; client, server and proxy each on its own {flavour} runtime; latency in ms"
    );
    println!(
        "{:<24} {:>6} {:>12} {:>9} {:>9} {:>9} {:>7}   {:>20}",
        "scenario", "conns", "req/s", "p50", "p99", "p99.9", "errors", "CPU µs/req: cli srv proxy"
    );
    if !only.is_empty() {
        let (addr, n) = match only.as_str() {
            "direct" => (server, conns),
            "proxy1" => (p1, conns),
            "proxy40" => (p40, conns),
            "relay" => (relay, conns),
            _ => (p1, big),
        };
        report(&only, n, &bench(addr, n, warmup));
        print_peak_rss();
        return;
    }
    // Rounds alternate the three scenarios so that load from elsewhere on the machine hits them
    // alike; the summary uses each scenario's median.
    let (mut direct, mut relayed, mut one, mut forty) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let tag = |name: &str| {
            if rounds > 1 {
                format!("{name} #{round}")
            } else {
                name.to_owned()
            }
        };
        direct.push(report(&tag("direct"), conns, &bench(server, conns, warmup)));
        relayed.push(report(
            &tag("plain TCP relay"),
            conns,
            &bench(relay, conns, warmup),
        ));
        one.push(report(
            &tag("proxy, 1 rule"),
            conns,
            &bench(p1, conns, warmup),
        ));
        forty.push(report(
            &tag("proxy, 40 rules"),
            conns,
            &bench(p40, conns, warmup),
        ));
    }
    // Ratios within each round (same background load), then their median.
    let one_vs_direct = median(one.iter().zip(&direct).map(|(o, d)| o / d).collect());
    let forty_vs_one = median(forty.iter().zip(&one).map(|(f, o)| f / o).collect());
    let relay_vs_direct = median(relayed.iter().zip(&direct).map(|(r, d)| r / d).collect());
    let (direct, one, forty) = (median(direct), median(one), median(forty));
    if rounds > 1 {
        println!("medians: direct {direct:.0}  1 rule {one:.0}  40 rules {forty:.0} req/s");
    }
    let many = bench(p1, big, Duration::from_secs(2));
    report("proxy, 1 rule, many", big, &many);
    println!(
        "\nrelay / direct = {:.0}%   1 rule / direct = {:.0}%   40 rules / 1 rule = {:.0}%   (medians of per-round ratios)   {big} connections: {} errors",
        100.0 * relay_vs_direct,
        100.0 * one_vs_direct,
        100.0 * forty_vs_one,
        many.errors
    );
    // The judge alone, without I/O: what the rule count costs per request.
    let head = enforcer::proxy::RequestHead {
        method: "GET".into(),
        target: "/api/v1/items/42?view=full".into(),
        version: 1,
        host: Some("bench.local".into()),
        headers: vec![
            ("Host".into(), b"bench.local".to_vec()),
            ("User-Agent".into(), b"proxy-bench".to_vec()),
            ("Accept".into(), b"*/*".to_vec()),
        ],
    };
    for n in [1, 40] {
        let r = rules(n);
        let iters = 1_000_000;
        let t = Instant::now();
        for _ in 0..iters {
            assert!(
                std::hint::black_box(&r)
                    .judge(std::hint::black_box(&head))
                    .is_some()
            );
        }
        println!(
            "judge with {n:>2} rules: {:.0} ns per request",
            t.elapsed().as_nanos() as f64 / iters as f64
        );
    }
    print_peak_rss();
    let s = s1.snapshot();
    println!(
        "proxy (1 rule) counters: received {} forwarded {} denied {} parse_errors {} upstream_errors {}",
        s.received, s.forwarded, s.denied, s.parse_errors, s.upstream_errors
    );
}
