//! An HTTP/1.1 load generator with wrk2's semantics, for `lab bench` (it runs inside the
//! load-generator pod as `lab load-gen --json CONFIG` and prints a [`Report`] as JSON).
//!
//! # Two modes
//! - **Open loop** (`rate` set): every connection has its own schedule of *intended* send times,
//!   `connections / rate` seconds apart, the connections' schedules staggered so that together
//!   they send at `rate` requests per second. Each connection has at most one request in flight
//!   (keep-alive, no pipelining). When a response comes late, the next request goes out as soon as
//!   it arrives, but its latency is still counted **from its intended send time**: a server that
//!   stalls for a second is charged for every request the schedule wanted to send in that second,
//!   not only for the one request that waited (the "coordinated omission" of closed-loop tools).
//!   The time from the actual send is recorded too, as `service_time`, to show the difference.
//! - **Closed loop** (`rate` absent): every connection sends its next request as soon as the
//!   previous response is complete; the achieved rate is the maximum throughput the system
//!   under test sustains with that many connections. Latency is from the actual send.
//!
//! # Mechanics
//! Each of `threads` OS threads owns a share of the connections and runs its own epoll loop over
//! non-blocking sockets; send times come from a `timerfd` armed at the next intended time
//! (nanosecond resolution, no timer slack), not from a millisecond timer wheel. Requests are
//! written from one prepared buffer; responses are framed with `httparse` (Content-Length or
//! chunked). Latencies go into HdrHistograms (microseconds, 3 significant digits), merged at the
//! end. A request whose response takes longer than `timeout_ms` counts as a timeout and its
//! connection is replaced; so does a connection the server closes or resets.
//!
//! # Window
//! All connections are opened first. Then `warmup_ms` of load whose results are discarded, then
//! `duration_ms` measured: the histogram holds the requests whose intended time (open loop) or
//! send time (closed loop) falls in the window; the achieved rate counts responses completed in
//! the window. After the window no new request is sent; responses still in flight are awaited
//! for at most `drain_ms`. Requests the schedule wanted sent in the window but that never left
//! (their connection was still waiting) are reported as `backlog`: together with the achieved
//! rate they say how far past saturation a run was.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        Arc, Barrier,
        atomic::{AtomicU64, Ordering},
    },
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// What to load, how hard, and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server's address (an IP and port: resolve names before).
    pub target: SocketAddr,
    /// Requests per second across all connections; absent (or 0) means closed loop.
    #[serde(default)]
    pub rate: Option<f64>,
    #[serde(default = "default_connections")]
    pub connections: usize,
    #[serde(default = "default_threads")]
    pub threads: usize,
    #[serde(default = "default_duration")]
    pub duration_ms: u64,
    #[serde(default)]
    pub warmup_ms: u64,
    /// A response slower than this (from the actual send) is a timeout.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// How long to wait after the window for responses in flight.
    #[serde(default = "default_drain")]
    pub drain_ms: u64,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_host")]
    pub host: String,
    /// Include the recorded latency histogram (`[value_us, count]` pairs) so runs can be merged.
    #[serde(default)]
    pub histogram: bool,
}

fn default_connections() -> usize {
    16
}
fn default_threads() -> usize {
    2
}
fn default_duration() -> u64 {
    10_000
}
fn default_timeout() -> u64 {
    5_000
}
fn default_connect_timeout() -> u64 {
    2_000
}
fn default_drain() -> u64 {
    2_000
}
fn default_method() -> String {
    "GET".into()
}
fn default_path() -> String {
    "/".into()
}
fn default_host() -> String {
    "bench".into()
}

impl Config {
    /// A closed-loop configuration against `target` with defaults for everything else.
    pub fn new(target: SocketAddr) -> Self {
        Config {
            target,
            rate: None,
            connections: default_connections(),
            threads: default_threads(),
            duration_ms: default_duration(),
            warmup_ms: 0,
            timeout_ms: default_timeout(),
            connect_timeout_ms: default_connect_timeout(),
            drain_ms: default_drain(),
            method: default_method(),
            path: default_path(),
            host: default_host(),
            histogram: false,
        }
    }

    fn open_rate(&self) -> Option<f64> {
        self.rate.filter(|r| *r > 0.0)
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.connections > 0, "connections must be at least 1");
        anyhow::ensure!(self.threads > 0, "threads must be at least 1");
        anyhow::ensure!(self.duration_ms > 0, "duration must be positive");
        if let Some(r) = self.rate {
            anyhow::ensure!(r.is_finite() && r >= 0.0, "rate must be a positive number");
        }
        anyhow::ensure!(
            self.method.bytes().all(|b| b.is_ascii_alphabetic()) && !self.method.is_empty(),
            "bad method {:?}",
            self.method
        );
        anyhow::ensure!(
            self.path.starts_with('/') && !self.path.bytes().any(|b| b <= b' ' || b == 0x7f),
            "bad path {:?}",
            self.path
        );
        anyhow::ensure!(
            !self.host.bytes().any(|b| b <= b' ' || b == 0x7f),
            "bad host {:?}",
            self.host
        );
        Ok(())
    }
}

/// Counted failures (only those of requests in the measurement window).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Errors {
    /// Connections that could not be opened (refused, reset, or no answer in time).
    pub connect: u64,
    /// Connections closed or reset by the server while a request was in flight.
    pub read: u64,
    pub write: u64,
    /// Responses that were not valid HTTP/1.1.
    pub parse: u64,
    /// Responses slower than `timeout_ms`.
    pub timeout: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.parse + self.timeout
    }
    fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.parse += o.parse;
        self.timeout += o.timeout;
    }
}

/// A latency distribution in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub stdev_us: f64,
    pub max_us: u64,
    /// `[percentile, value_us]` at 50, 75, 90, 99, 99.9, 99.99, 99.999 and 100.
    pub percentiles: Vec<(f64, u64)>,
}

/// The percentiles of [`Latency::percentiles`].
pub const PERCENTILES: &[f64] = &[50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 99.999, 100.0];

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            min_us: h.min(),
            mean_us: h.mean(),
            stdev_us: h.stdev(),
            max_us: h.max(),
            percentiles: PERCENTILES
                .iter()
                .map(|p| (*p, h.value_at_quantile(p / 100.0)))
                .collect(),
        }
    }

    /// The value at a percentile listed in [`PERCENTILES`].
    pub fn at(&self, percentile: f64) -> Option<u64> {
        self.percentiles
            .iter()
            .find(|(p, _)| (*p - percentile).abs() < 1e-9)
            .map(|(_, v)| *v)
    }
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `open` (constant rate) or `closed` (maximum throughput).
    pub mode: String,
    pub requested_rps: Option<f64>,
    /// Responses completed in the window, per second.
    pub achieved_rps: f64,
    pub duration_s: f64,
    pub connections: usize,
    pub threads: usize,
    /// Requests sent whose intended (or send) time is in the window.
    pub sent: u64,
    /// Responses to those requests.
    pub completed: u64,
    /// Responses by status class: `2xx`, `3xx`, `4xx`, `5xx`, `other`.
    pub status: BTreeMap<String, u64>,
    pub errors: Errors,
    /// Requests the open-loop schedule wanted sent in the window that never left.
    pub backlog: u64,
    /// Requests still without a response when the drain time ran out.
    pub unfinished: u64,
    /// Open loop: from the intended send time (corrected). Closed loop: from the send.
    pub latency: Latency,
    /// From the actual send (what a closed-loop tool would report).
    pub service_time: Latency,
    /// `[value_us, count]` of the latency histogram, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Vec<(u64, u64)>>,
    /// The same for the service-time histogram.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_histogram: Option<Vec<(u64, u64)>>,
}

/// A histogram for microsecond latencies from 1 µs to one hour.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Rebuilds a histogram from `[value_us, count]` pairs (as in [`Report::histogram`]).
pub fn histogram_from_pairs(pairs: &[(u64, u64)]) -> Histogram<u64> {
    let mut h = new_histogram();
    for (v, c) in pairs {
        let _ = h.record_n((*v).clamp(1, 3_600_000_000), *c);
    }
    h
}

/// The recorded values of a histogram as `[value_us, count]` pairs.
pub fn histogram_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| {
            (
                h.highest_equivalent(v.value_iterated_to()),
                v.count_at_value(),
            )
        })
        .collect()
}

/// Runs the load and returns the report. Blocks for the whole run.
pub fn run(cfg: &Config) -> anyhow::Result<Report> {
    cfg.check()?;
    raise_fd_limit(cfg.connections + 64);
    let threads = cfg.threads.min(cfg.connections);
    let request = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: lab-loadgen\r\nAccept: */*\r\n\r\n",
        cfg.method, cfg.path, cfg.host
    )
    .into_bytes();
    let request: Arc<[u8]> = request.into();
    let barrier = Arc::new(Barrier::new(threads + 1));
    let start = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for t in 0..threads {
        // Connections t, t + threads, t + 2·threads, ...: global indices for the stagger.
        let indices: Vec<usize> = (t..cfg.connections).step_by(threads).collect();
        let (cfg, request, barrier, start) =
            (cfg.clone(), request.clone(), barrier.clone(), start.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || Worker::new(&cfg, indices, request)?.run(&barrier, &start))?,
        );
    }
    // Every thread has opened its connections: start together, a little ahead.
    barrier.wait();
    start.store(now_ns() + 5_000_000, Ordering::SeqCst);
    barrier.wait();
    let mut total = ThreadResult::new();
    for h in handles {
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        total.merge(&r);
    }
    let duration_s = cfg.duration_ms as f64 / 1000.0;
    let mut status = BTreeMap::new();
    for (i, name) in ["other", "1xx", "2xx", "3xx", "4xx", "5xx"]
        .iter()
        .enumerate()
    {
        if total.status[i] > 0 {
            status.insert((*name).to_owned(), total.status[i]);
        }
    }
    Ok(Report {
        mode: if cfg.open_rate().is_some() {
            "open"
        } else {
            "closed"
        }
        .into(),
        requested_rps: cfg.open_rate(),
        achieved_rps: total.completed_in_window as f64 / duration_s,
        duration_s,
        connections: cfg.connections,
        threads,
        sent: total.sent,
        completed: total.completed,
        status,
        errors: total.errors.clone(),
        backlog: total.backlog,
        unfinished: total.unfinished,
        latency: Latency::from_histogram(&total.latency),
        service_time: Latency::from_histogram(&total.service),
        histogram: cfg.histogram.then(|| histogram_pairs(&total.latency)),
        service_histogram: cfg.histogram.then(|| histogram_pairs(&total.service)),
    })
}

/// Best effort: one descriptor per connection must fit under the soft limit.
fn raise_fd_limit(need: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && (lim.rlim_cur as usize) < need {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds (the clock `timerfd` is armed with).
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the local struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct ThreadResult {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    sent: u64,
    completed: u64,
    completed_in_window: u64,
    status: [u64; 6],
    errors: Errors,
    backlog: u64,
    unfinished: u64,
}

impl ThreadResult {
    fn new() -> Self {
        ThreadResult {
            latency: new_histogram(),
            service: new_histogram(),
            sent: 0,
            completed: 0,
            completed_in_window: 0,
            status: [0; 6],
            errors: Errors::default(),
            backlog: 0,
            unfinished: 0,
        }
    }
    fn merge(&mut self, o: &ThreadResult) {
        let _ = self.latency.add(&o.latency);
        let _ = self.service.add(&o.service);
        self.sent += o.sent;
        self.completed += o.completed;
        self.completed_in_window += o.completed_in_window;
        for i in 0..6 {
            self.status[i] += o.status[i];
        }
        self.errors.add(&o.errors);
        self.backlog += o.backlog;
        self.unfinished += o.unfinished;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No socket; reconnect when its heap entry comes due.
    Closed,
    Connecting,
    /// Connected, waiting for the next intended send time.
    Idle,
    /// A request partly written (`written` bytes so far).
    Writing,
    /// The request is out; reading the response.
    Reading,
}

struct Conn {
    stream: Option<TcpStream>,
    state: State,
    since: u64,
    written: usize,
    buf: Vec<u8>,
    /// Open loop: the first intended time and the index of the next request of the schedule.
    first: u64,
    k: u64,
    /// The request in flight: its intended and actual send times.
    intended: u64,
    sent_at: u64,
}

struct Worker {
    epoll: OwnedFd,
    timer: OwnedFd,
    conns: Vec<Conn>,
    /// Global index of each connection (for the stagger).
    index: Vec<usize>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    request: Arc<[u8]>,
    target: SocketAddr,
    interval_ns: Option<f64>,
    rate: Option<f64>,
    timeout_ns: u64,
    connect_timeout_ns: u64,
    warmup_ns: u64,
    duration_ns: u64,
    drain_ns: u64,
    /// The window, set once the start time is known.
    window: (u64, u64),
    armed: u64,
    res: ThreadResult,
}

const TIMER_TOKEN: u64 = u64::MAX;

fn cvt(ret: libc::c_int) -> std::io::Result<libc::c_int> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Worker {
    fn new(cfg: &Config, index: Vec<usize>, request: Arc<[u8]>) -> anyhow::Result<Self> {
        // SAFETY: plain system calls; the returned descriptors are owned right away.
        let (epoll, timer) = unsafe {
            let e = cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?;
            let epoll = OwnedFd::from_raw_fd(e);
            let t = cvt(libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            ))?;
            let timer = OwnedFd::from_raw_fd(t);
            // Wake-ups exactly when asked (the default slack is 50 µs).
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
            (epoll, timer)
        };
        let rate = cfg.open_rate();
        let w = Worker {
            epoll,
            timer,
            conns: index
                .iter()
                .map(|_| Conn {
                    stream: None,
                    state: State::Closed,
                    since: 0,
                    written: 0,
                    buf: Vec::with_capacity(4096),
                    first: 0,
                    k: 0,
                    intended: 0,
                    sent_at: 0,
                })
                .collect(),
            index,
            heap: BinaryHeap::new(),
            request,
            target: cfg.target,
            interval_ns: rate.map(|r| cfg.connections as f64 * 1e9 / r),
            rate,
            timeout_ns: cfg.timeout_ms * 1_000_000,
            connect_timeout_ns: cfg.connect_timeout_ms * 1_000_000,
            warmup_ns: cfg.warmup_ms * 1_000_000,
            duration_ns: cfg.duration_ms * 1_000_000,
            drain_ns: cfg.drain_ms * 1_000_000,
            window: (u64::MAX, u64::MAX),
            armed: 0,
            res: ThreadResult::new(),
        };
        w.ctl(
            libc::EPOLL_CTL_ADD,
            w.timer.as_raw_fd(),
            libc::EPOLLIN as u32,
            TIMER_TOKEN,
        )?;
        Ok(w)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: epoll_ctl with a valid epoll descriptor and a local event.
        cvt(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) }).map(|_| ())
    }

    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
        // SAFETY: the buffer is valid for `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        n.max(0) as usize
    }

    fn in_window(&self, t: u64) -> bool {
        t >= self.window.0 && t < self.window.1
    }

    /// Starts a non-blocking connect for connection `i`.
    fn connect(&mut self, i: usize, now: u64) {
        let c = &mut self.conns[i];
        c.buf.clear();
        c.since = now;
        match nonblocking_connect(self.target) {
            Ok(stream) => {
                let fd = stream.as_raw_fd();
                c.stream = Some(stream);
                c.state = State::Connecting;
                let ev = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
                if self.ctl(libc::EPOLL_CTL_ADD, fd, ev, i as u64).is_err() {
                    self.fail(i, now, Fail::Connect);
                }
            }
            Err(_) => self.fail(i, now, Fail::Connect),
        }
    }

    /// Closes connection `i` after a failure and schedules a new one.
    fn fail(&mut self, i: usize, now: u64, why: Fail) {
        let counts = match why {
            // Connect failures count when the window is running (they delay its requests).
            Fail::Connect => self.in_window(now),
            _ => self.in_window(self.conns[i].intended),
        };
        let c = &mut self.conns[i];
        if counts {
            let e = &mut self.res.errors;
            match why {
                Fail::Connect => e.connect += 1,
                Fail::Read => e.read += 1,
                Fail::Write => e.write += 1,
                Fail::Parse => e.parse += 1,
                Fail::Timeout => e.timeout += 1,
            }
        }
        if matches!(why, Fail::Read | Fail::Write | Fail::Parse | Fail::Timeout)
            && self.rate.is_some()
        {
            // The request is lost; the schedule goes on with the next one.
            c.k += 1;
        }
        c.stream = None; // closing removes it from the epoll set
        c.state = State::Closed;
        c.buf.clear();
        // Back off a little so a refusing server is not hammered in a loop.
        self.heap.push(Reverse((now + 10_000_000, i)));
    }

    /// The next intended send time of connection `i` (open loop), or `now` (closed loop).
    fn due(&self, i: usize, now: u64) -> u64 {
        let c = &self.conns[i];
        match self.interval_ns {
            Some(iv) => c.first + (c.k as f64 * iv) as u64,
            None => now,
        }
    }

    /// Connection `i` is idle: send now if due, else wait for its time.
    fn schedule(&mut self, i: usize, now: u64) {
        let due = self.due(i, now);
        if due >= self.window.1 {
            return; // the window is over: nothing more to send
        }
        if due <= now {
            self.send(i, now, due);
        } else {
            self.heap.push(Reverse((due, i)));
        }
    }

    fn send(&mut self, i: usize, now: u64, intended: u64) {
        let c = &mut self.conns[i];
        c.intended = intended;
        c.sent_at = now;
        c.written = 0;
        c.state = State::Writing;
        if self.in_window(intended) {
            self.res.sent += 1;
        }
        self.write(i, now);
    }

    fn write(&mut self, i: usize, now: u64) {
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        while c.written < self.request.len() {
            match stream.write(&self.request[c.written..]) {
                Ok(0) => return self.fail(i, now, Fail::Write),
                Ok(n) => c.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.fail(i, now, Fail::Write),
            }
        }
        c.state = State::Reading;
    }

    fn read(&mut self, i: usize, scratch: &mut [u8]) {
        loop {
            let c = &mut self.conns[i];
            let Some(stream) = c.stream.as_mut() else {
                return;
            };
            match stream.read(scratch) {
                Ok(0) => {
                    let now = now_ns();
                    if c.state == State::Reading || !c.buf.is_empty() {
                        self.fail(i, now, Fail::Read);
                    } else {
                        // An idle keep-alive connection closed by the server: replace it.
                        c.stream = None;
                        c.state = State::Closed;
                        self.heap.push(Reverse((now, i)));
                    }
                    return;
                }
                Ok(n) => {
                    c.buf.extend_from_slice(&scratch[..n]);
                    if c.state != State::Reading {
                        // Bytes nobody asked for.
                        return self.fail(i, now_ns(), Fail::Parse);
                    }
                    match parse_response(&c.buf) {
                        Ok(Some(resp)) => {
                            let now = now_ns();
                            if resp.len != c.buf.len() {
                                return self.fail(i, now, Fail::Parse);
                            }
                            c.buf.clear();
                            self.complete(i, now, resp.status);
                            let c = &mut self.conns[i];
                            if resp.close {
                                c.stream = None;
                                c.state = State::Closed;
                                self.heap.push(Reverse((now, i)));
                                return;
                            }
                            c.state = State::Idle;
                            self.schedule(i, now);
                        }
                        Ok(None) => {}
                        Err(()) => return self.fail(i, now_ns(), Fail::Parse),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.fail(i, now_ns(), Fail::Read),
            }
        }
    }

    fn complete(&mut self, i: usize, now: u64, status: u16) {
        let c = &mut self.conns[i];
        let intended = c.intended;
        let sent_at = c.sent_at;
        if self.rate.is_some() {
            c.k += 1;
        }
        if self.in_window(now) {
            self.res.completed_in_window += 1;
        }
        if self.in_window(intended) {
            self.res.completed += 1;
            let class = match status {
                100..=599 => (status / 100) as usize,
                _ => 0,
            };
            self.res.status[class] += 1;
            let us = |ns: u64| (ns / 1000).clamp(1, 3_600_000_000);
            let _ = self.res.latency.record(us(now.saturating_sub(intended)));
            let _ = self.res.service.record(us(now.saturating_sub(sent_at)));
        }
    }

    fn on_event(&mut self, i: usize, events: u32, scratch: &mut [u8]) {
        let now = now_ns();
        let state = self.conns[i].state;
        if state == State::Connecting {
            if events & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0 {
                return;
            }
            let ok = self.conns[i]
                .stream
                .as_ref()
                .is_some_and(|s| matches!(s.take_error(), Ok(None)))
                && events & (libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0;
            if !ok {
                return self.fail(i, now, Fail::Connect);
            }
            self.conns[i].state = State::Idle;
            if self.window.0 != u64::MAX {
                self.schedule(i, now);
            }
            return;
        }
        if state == State::Writing && events & libc::EPOLLOUT as u32 != 0 {
            self.write(i, now);
        }
        if events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
        {
            self.read(i, scratch);
        }
    }

    /// Fails requests and connects that have waited too long.
    fn check_timeouts(&mut self, now: u64) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            match c.state {
                State::Connecting if now.saturating_sub(c.since) > self.connect_timeout_ns => {
                    self.fail(i, now, Fail::Connect)
                }
                State::Writing | State::Reading
                    if now.saturating_sub(c.sent_at) > self.timeout_ns =>
                {
                    self.fail(i, now, Fail::Timeout)
                }
                _ => {}
            }
        }
    }

    fn arm(&mut self, at: u64) {
        if self.armed == at {
            return;
        }
        self.armed = at;
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at / 1_000_000_000) as libc::time_t,
                tv_nsec: (at % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: a valid timerfd and local structs.
        unsafe {
            libc::timerfd_settime(
                self.timer.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            );
        }
    }

    fn in_flight(&self) -> bool {
        self.conns
            .iter()
            .any(|c| matches!(c.state, State::Writing | State::Reading))
    }

    fn run(mut self, barrier: &Barrier, start: &AtomicU64) -> anyhow::Result<ThreadResult> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut scratch = vec![0u8; 64 * 1024];
        // Open every connection before the clock starts.
        let now = now_ns();
        for i in 0..self.conns.len() {
            self.connect(i, now);
        }
        let deadline = now + self.connect_timeout_ns;
        while self.conns.iter().any(|c| c.state == State::Connecting) && now_ns() < deadline {
            let n = self.wait(&mut events, 10);
            for ev in &events[..n] {
                let (token, flags) = (ev.u64, ev.events);
                if token != TIMER_TOKEN && self.conns[token as usize].state == State::Connecting {
                    self.on_event(token as usize, flags, &mut scratch);
                }
            }
        }
        self.heap.clear();
        barrier.wait();
        barrier.wait();
        let t0 = start.load(Ordering::SeqCst);
        self.window = (t0 + self.warmup_ns, t0 + self.warmup_ns + self.duration_ns);
        for i in 0..self.conns.len() {
            let first = match self.rate {
                Some(r) => t0 + (self.index[i] as f64 * 1e9 / r) as u64,
                None => t0,
            };
            let c = &mut self.conns[i];
            c.first = first;
            c.k = 0;
            match c.state {
                State::Idle => self.heap.push(Reverse((first, i))),
                // Still connecting or failed: retried when its entry comes due.
                _ => {
                    if c.state == State::Connecting {
                        c.stream = None;
                        c.state = State::Closed;
                    }
                    self.heap.push(Reverse((first, i)))
                }
            }
        }
        let end = self.window.1;
        let mut last_check = 0;
        loop {
            let now = now_ns();
            if now >= end && (!self.in_flight() || now >= end + self.drain_ns) {
                break;
            }
            while let Some(&Reverse((due, i))) = self.heap.peek() {
                if due > now {
                    break;
                }
                self.heap.pop();
                match self.conns[i].state {
                    State::Closed if now < end => self.connect(i, now),
                    // Stale entries (the connection was replaced since) are skipped: an idle
                    // connection always has its own entry at its due time.
                    State::Idle => {
                        let due = self.due(i, now);
                        if due <= now && due < end {
                            self.send(i, now, due);
                        }
                    }
                    _ => {}
                }
            }
            if now.saturating_sub(last_check) >= 10_000_000 {
                last_check = now;
                self.check_timeouts(now);
            }
            let next = self.heap.peek().map(|Reverse((d, _))| *d);
            if let Some(next) = next {
                self.arm(next.max(now + 1));
            }
            let limit = if now < end {
                ((end - now) / 1_000_000).clamp(1, 10) as i32
            } else {
                10
            };
            let n = self.wait(&mut events, limit);
            for ev in &events[..n] {
                let (token, flags) = (ev.u64, ev.events);
                if token == TIMER_TOKEN {
                    let mut b = [0u8; 8];
                    // SAFETY: reading the 8-byte expiry count of our timerfd.
                    unsafe { libc::read(self.timer.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
                    self.armed = 0;
                } else {
                    self.on_event(token as usize, flags, &mut scratch);
                }
            }
        }
        // What the window wanted but did not get.
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if matches!(c.state, State::Writing | State::Reading) && self.in_window(c.intended) {
                self.res.unfinished += 1;
            }
            if let Some(iv) = self.interval_ns {
                // Intended times from the next unsent request up to the end of the window.
                let mut k = c.k;
                if matches!(c.state, State::Writing | State::Reading) {
                    k += 1;
                }
                let next = c.first + (k as f64 * iv) as u64;
                if next < end {
                    let from = next.max(self.window.0);
                    self.res.backlog += ((end - from) as f64 / iv).ceil() as u64;
                }
            }
        }
        Ok(self.res)
    }
}

#[derive(Clone, Copy)]
enum Fail {
    Connect,
    Read,
    Write,
    Parse,
    Timeout,
}

/// A TCP connect that returns at once (EINPROGRESS); completion is signalled by EPOLLOUT.
fn nonblocking_connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(v4) = addr else {
        return Err(std::io::Error::new(ErrorKind::Unsupported, "IPv4 only"));
    };
    // SAFETY: socket/connect/setsockopt with local structs; the fd is owned at once.
    unsafe {
        let fd = cvt(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let stream = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(stream)
    }
}

struct Parsed {
    /// Bytes of the whole response (head and body).
    len: usize,
    status: u16,
    close: bool,
}

/// Frames one response at the start of `buf`: `Ok(None)` if more bytes are needed.
fn parse_response(buf: &[u8]) -> Result<Option<Parsed>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let status = resp.code.ok_or(())?;
    let mut length = None;
    let mut chunked = false;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| ())?;
            length = Some(v.trim().parse::<usize>().map_err(|_| ())?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = h.value.to_ascii_lowercase();
            if v == b"close" {
                close = true;
            } else if v == b"keep-alive" {
                close = false;
            }
        }
    }
    if (100..200).contains(&status) || status == 204 || status == 304 {
        length = Some(0);
    }
    if chunked {
        let mut at = head;
        loop {
            match httparse::parse_chunk_size(&buf[at..]) {
                Ok(httparse::Status::Complete((n, size))) => {
                    at += n;
                    if size == 0 {
                        // No trailers expected: the final CRLF.
                        return match buf.get(at..at + 2) {
                            None => Ok(None),
                            Some(b"\r\n") => Ok(Some(Parsed {
                                len: at + 2,
                                status,
                                close,
                            })),
                            Some(_) => Err(()),
                        };
                    }
                    let end = at + size as usize + 2;
                    if buf.len() < end {
                        return Ok(None);
                    }
                    at = end;
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err(()),
            }
        }
    }
    let length = length.ok_or(())?;
    if buf.len() < head + length {
        return Ok(None);
    }
    Ok(Some(Parsed {
        len: head + length,
        status,
        close,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_content_length_and_chunked_responses() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert!(parse_response(&r[..20]).unwrap().is_none());
        assert!(parse_response(&r[..r.len() - 1]).unwrap().is_none());
        let p = parse_response(r).unwrap().unwrap();
        assert_eq!((p.len, p.status, p.close), (r.len(), 200, false));
        let r = b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert!(parse_response(&r[..r.len() - 2]).unwrap().is_none());
        let p = parse_response(r).unwrap().unwrap();
        assert_eq!((p.len, p.status, p.close), (r.len(), 403, true));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    /// The echo server on loopback, in its own runtime thread.
    fn echo_server() -> SocketAddr {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                let _ = crate::echo::serve(l, crate::echo::Config::default()).await;
            });
        });
        rx.recv().unwrap()
    }

    fn monotonic(l: &Latency) -> bool {
        l.percentiles.windows(2).all(|w| w[0].1 <= w[1].1)
            && l.min_us <= l.percentiles[0].1
            && l.percentiles.last().unwrap().1 <= l.max_us.max(1)
    }

    #[test]
    fn open_loop_measures_every_scheduled_request() {
        let target = echo_server();
        let cfg = Config {
            rate: Some(400.0),
            connections: 8,
            threads: 2,
            duration_ms: 1_000,
            warmup_ms: 200,
            histogram: true,
            ..Config::new(target)
        };
        let r = run(&cfg).unwrap();
        assert_eq!(r.mode, "open");
        assert_eq!(r.requested_rps, Some(400.0));
        assert_eq!(r.errors, Errors::default(), "{r:#?}");
        // A fast local server keeps up: every request of the schedule was sent and answered.
        assert!((r.sent + r.backlog).abs_diff(400) <= 1, "{r:#?}");
        assert_eq!(r.completed, r.sent);
        assert_eq!(r.status.get("2xx"), Some(&r.completed));
        assert_eq!(r.latency.count, r.completed);
        assert!(
            monotonic(&r.latency) && monotonic(&r.service_time),
            "{r:#?}"
        );
        let h = histogram_from_pairs(r.histogram.as_ref().unwrap());
        assert_eq!(h.len(), r.completed);
    }

    #[test]
    fn closed_loop_and_refused_connections() {
        let target = echo_server();
        let cfg = Config {
            connections: 4,
            threads: 1,
            duration_ms: 300,
            ..Config::new(target)
        };
        let r = run(&cfg).unwrap();
        assert_eq!(r.mode, "closed");
        assert!(r.completed > 0 && r.achieved_rps > 0.0, "{r:#?}");
        assert_eq!(r.errors.total(), 0);
        // Nothing listens here: connections are refused and counted, nothing is measured.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let r = run(&Config {
            duration_ms: 200,
            ..Config::new(dead)
        })
        .unwrap();
        assert_eq!(r.completed, 0);
        assert!(r.errors.connect > 0, "{r:#?}");
    }

    #[test]
    fn rejects_bad_configs() {
        let t: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for bad in [
            Config {
                connections: 0,
                ..Config::new(t)
            },
            Config {
                path: "no-slash".into(),
                ..Config::new(t)
            },
            Config {
                rate: Some(f64::NAN),
                ..Config::new(t)
            },
        ] {
            assert!(run(&bad).is_err());
        }
        let cfg: Config = serde_json::from_str(r#"{"target":"10.0.0.1:80","rate":100}"#).unwrap();
        assert_eq!(cfg.rate, Some(100.0));
        assert!(serde_json::from_str::<Config>(r#"{"target":"10.0.0.1:80","rat":1}"#).is_err());
    }
}
