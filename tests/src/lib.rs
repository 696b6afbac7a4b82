//! Shared fixtures for cnet's integration tests.
//!
//! [`Sim`]: two stacks over the in-memory link in virtual time, the model for every run loop: poll
//! both hosts; when neither moves, jump to the earliest deadline (a stack timer or a delayed frame).
//! A drive is bounded in virtual time and fails loudly when it runs out.

#![deny(missing_docs)]

use cnet_drivers::host::Host;
use cnet_drivers::mem::{Impairments, LinkConfig, MemLink, MemPort};
use cnet_drivers::pcap::PcapPort;
use cnet_stack::{ConfigEvent, Duration, IfAddr, Instant, MacAddr, Pool, Stack, StackConfig};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// MAC of stack A.
pub const MAC_A: MacAddr = MacAddr([0x02, 0xc7, 0, 0, 0, 0x0a]);
/// MAC of stack B.
pub const MAC_B: MacAddr = MacAddr([0x02, 0xc7, 0, 0, 0, 0x0b]);
/// Address of stack A.
pub const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Address of stack B.
pub const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// A port of the simulated link, recorded to a pcap file.
pub type SimPort = PcapPort<MemPort>;

/// Two stacks joined by a seeded, impaired in-memory link.
pub struct Sim {
    /// Stack A and its port.
    pub a: Host<SimPort>,
    /// Stack B and its port.
    pub b: Host<SimPort>,
    /// Virtual time.
    pub now: Instant,
    capture: PathBuf,
    keep_capture: bool,
}

/// A stack with one /24 address, a pool of `frames` frames.
pub fn stack(mac: MacAddr, ip: Ipv4Addr, seed: u64, frames: usize) -> Stack {
    let mut cfg = StackConfig::new(mac);
    cfg.seed = seed;
    let pool = Pool::new(frames, Pool::DEFAULT_FRAME_SIZE, Pool::DEFAULT_HEADROOM)
        .expect("valid pool geometry");
    let mut s = Stack::new(cfg, pool);
    s.apply_config(
        ConfigEvent::AddrAdd(IfAddr {
            addr: ip,
            prefix_len: 24,
        }),
        Instant::ZERO,
    );
    s
}

impl Sim {
    /// A pair with the same impairments both ways; `name` names the pcap capture, which is kept
    /// only if the test fails (or `CNET_KEEP_PCAP` is set).
    pub fn new(name: &str, seed: u64, imp: Impairments) -> Sim {
        let cfg = LinkConfig::new(seed, MAC_A, MAC_B).with_impairments(imp);
        let (pa, pb) = MemLink::pair(cfg).expect("valid link config");
        let dir = std::env::temp_dir().join("cnet-pcap");
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let capture = dir.join(format!("{name}-{seed}.pcap"));
        let pa = PcapPort::create(pa, &capture).expect("pcap file can be created");
        Sim {
            a: Host::new(stack(MAC_A, IP_A, seed ^ 0xa, 4096), pa),
            b: Host::new(
                stack(MAC_B, IP_B, seed ^ 0xb, 4096),
                pb_wrap(pb, &dir, name, seed),
            ),
            now: Instant::ZERO,
            capture,
            keep_capture: std::env::var_os("CNET_KEEP_PCAP").is_some(),
        }
    }
}

/// A UDP echo exchange driven through a [`Sim`]: B echoes on port 7 (zero copy); A sends each
/// payload and resends it after `rto` until the echo comes back intact.
pub struct EchoCheck {
    /// Echo round trips completed.
    pub completed: usize,
    /// Resends needed.
    pub resends: usize,
    /// Replies that did not match the outstanding request (late duplicates).
    pub stale: usize,
}

impl Sim {
    /// Runs the echo exchange for every payload; panics if a reply arrives corrupted or the
    /// exchange does not finish within `limit` of virtual time.
    pub fn echo_all(&mut self, payloads: &[Vec<u8>], rto: Duration, limit: Duration) -> EchoCheck {
        let server = self
            .b
            .stack
            .udp_bind("0.0.0.0:7".parse().expect("addr"))
            .expect("bind");
        let client = self
            .a
            .stack
            .udp_bind("0.0.0.0:0".parse().expect("addr"))
            .expect("bind");
        let dst = std::net::SocketAddrV4::new(IP_B, 7);
        let mut check = EchoCheck {
            completed: 0,
            resends: 0,
            stale: 0,
        };
        let mut next = 0usize;
        let mut sent_at: Option<Instant> = None;
        self.run_until(limit, |sim| {
            let now = sim.now;
            while let Some(d) = sim.b.stack.udp_recv(server) {
                let _ = sim.b.stack.udp_send(server, d.frame, d.src, now);
            }
            while let Some(d) = sim.a.stack.udp_recv(client) {
                let mut got = vec![0u8; d.len];
                sim.a.stack.pool().chain_copy_to(&d.frame, &mut got);
                sim.a.stack.pool_mut().free(d.frame);
                match payloads.get(next) {
                    Some(want) if *want == got => {
                        check.completed += 1;
                        next += 1;
                        sent_at = None;
                    }
                    Some(want) if want.len() == got.len() => {
                        panic!("echo {next} came back corrupted")
                    }
                    _ => check.stale += 1,
                }
            }
            if next == payloads.len() {
                return true;
            }
            if sent_at.is_none_or(|t| now >= t + rto) {
                if sent_at.is_some() {
                    check.resends += 1;
                }
                sim.a
                    .stack
                    .udp_send_slice(client, &payloads[next], dst, now)
                    .expect("send accepted");
                sent_at = Some(now);
            }
            false
        });
        self.a.stack.udp_close(client);
        self.b.stack.udp_close(server);
        check
    }
}

impl Sim {
    /// Polls both hosts once; when nothing moved, jumps virtual time to the next deadline, or by
    /// `idle_step` when none is set (the application's own timers).
    pub fn step(&mut self, idle_step: Duration) {
        let sa = self.a.poll(self.now).expect("mem port does not fail");
        let sb = self.b.poll(self.now).expect("mem port does not fail");
        if sa.is_idle() && sb.is_idle() {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .filter(|t| *t > self.now)
                .min();
            self.now = match next {
                Some(t) if t < self.now + idle_step => t,
                _ => self.now + idle_step,
            };
        }
    }

    /// Steps until `done` returns true, at most `limit` of virtual time; panics on time-out.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Sim) -> bool) {
        let end = self.now + limit;
        let mut steps = 0u64;
        while !done(self) {
            assert!(
                self.now < end,
                "not done within {limit:?} of virtual time (capture kept at {})",
                self.capture.display()
            );
            steps += 1;
            assert!(steps < 50_000_000, "livelock: too many steps");
            self.step(Duration::from_millis(1));
        }
    }

    /// Checks that every frame of both pools is accounted for, then frees what the stacks hold.
    pub fn assert_frames_accounted(&mut self) {
        for h in [&mut self.a, &mut self.b] {
            let p = h.stack.pool().stats();
            assert_eq!(
                p.free + h.frames_held(),
                p.capacity,
                "every frame is free or held by the stack"
            );
            assert_eq!(p.double_frees, 0);
            h.release_all();
            assert_eq!(h.stack.pool().available(), p.capacity);
        }
    }
}

fn pb_wrap(pb: MemPort, dir: &std::path::Path, name: &str, seed: u64) -> SimPort {
    // Side B records too, so either direction's view is available after a failure.
    PcapPort::create(pb, dir.join(format!("{name}-{seed}-b.pcap"))).expect("pcap file")
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.a.port.flush();
        let _ = self.b.port.flush();
        if std::thread::panicking() {
            eprintln!("capture of the failed run: {}", self.capture.display());
        } else if !self.keep_capture {
            let _ = std::fs::remove_file(&self.capture);
            let b = self.capture.with_file_name(
                self.capture
                    .file_stem()
                    .map(|s| format!("{}-b.pcap", s.to_string_lossy()))
                    .unwrap_or_default(),
            );
            let _ = std::fs::remove_file(b);
        }
    }
}

/// A cnet stack on AF_XDP inside a lab namespace, driven by its own service thread; tests run code
/// on the stack's thread with [`XdpStack::with`].
pub mod xdp {
    use cnet_apps::lab::{Lab, STACK_DEV};
    use cnet_apps::service::{Service, ServiceConfig, ServicePort, TcpEcho, UdpEcho};
    use cnet_drivers::impair::ImpairConfig;
    use cnet_drivers::pcap::PcapPort;
    use cnet_drivers::xdp::XdpConfig;
    use cnet_drivers::Port;
    use cnet_stack::{Instant, Stack};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::thread::JoinHandle;

    type Job = Box<dyn FnOnce(&mut Stack, Instant) + Send>;
    /// An application run on every loop pass until it returns `false`.
    pub type App = Box<dyn FnMut(&mut Stack, Instant) -> bool + Send>;

    enum Msg {
        Job(Job),
        App(App),
    }

    /// The running stack. Its port is recorded to `<tmp>/cnet-pcap/<test>.pcap`, kept when the
    /// test fails (or `CNET_KEEP_PCAP` is set), deleted otherwise.
    pub struct XdpStack {
        jobs: mpsc::Sender<Msg>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<Result<String, String>>>,
        capture: std::path::PathBuf,
    }

    /// Runs `f` on a thread inside the lab's kernel namespace and returns its result.
    pub fn in_kernel<T: Send>(lab: &Lab, f: impl FnOnce() -> T + Send) -> T {
        cnet_netlink::run_in_netns(&cnet_netlink::netns_path(&lab.kernel_ns), f)
            .expect("enter the kernel namespace")
    }

    /// Polls `cond` on the stack's thread until true, at most `limit`; returns the time it took.
    pub fn wait_for(
        stack: &XdpStack,
        limit: std::time::Duration,
        cond: impl Fn(&mut Stack) -> bool + Send + Sync + Clone + 'static,
    ) -> Option<std::time::Duration> {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            let c = cond.clone();
            if stack.with(move |s, _| c(s)) {
                return Some(start.elapsed());
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
        None
    }

    /// Returns from the calling test with a printed reason when the lab cannot run here.
    #[macro_export]
    macro_rules! require_lab {
        () => {
            if let Some(why) = cnet_apps::lab::missing_requirements() {
                eprintln!("SKIP {}: {why}", module_path!());
                return;
            }
        };
    }

    /// The stack thread's life once its port is open: echo services, the test's jobs and apps,
    /// then the frame-accounting check.
    fn serve<P: ServicePort>(
        svc: anyhow::Result<Service<PcapPort<P>>>,
        ready_tx: mpsc::Sender<Result<(), String>>,
        rx: mpsc::Receiver<Msg>,
        stop: &AtomicBool,
    ) -> Result<String, String> {
        let setup = || -> anyhow::Result<(Service<PcapPort<P>>, UdpEcho, TcpEcho)> {
            let mut svc = svc?;
            let echo = UdpEcho::bind(&mut svc.host.stack, 7)?;
            let tcp = TcpEcho::listen(&mut svc.host.stack, 7, 1024)?;
            Ok((svc, echo, tcp))
        };
        let (mut svc, mut echo, mut tcp) = match setup() {
            Ok(v) => {
                let _ = ready_tx.send(Ok(()));
                v
            }
            Err(e) => {
                let _ = ready_tx.send(Err(format!("{e:#}")));
                return Err(format!("{e:#}"));
            }
        };
        let mut apps: Vec<App> = Vec::new();
        svc.run(stop, |stack, now| {
            echo.poll(stack, now);
            tcp.poll(stack, now);
            while let Ok(msg) = rx.try_recv() {
                match msg {
                    Msg::Job(job) => job(stack, now),
                    Msg::App(app) => apps.push(app),
                }
            }
            apps.retain_mut(|app| app(stack, now));
        })
        .map_err(|e| format!("{e:#}"))?;
        tcp.release(&mut svc.host.stack);
        let report = cnet_apps::service::report(&svc.host);
        let mut host = svc.shutdown();
        let _ = host.port.flush();
        host.port.xdp_mut().reclaim(host.stack.pool_mut());
        let p = host.stack.pool().stats();
        let held = host.port.frames_held();
        if p.free + held != p.capacity || p.double_frees != 0 {
            return Err(format!(
                "UMEM frame accounting: {} free + {held} in the port != {} ({} double frees)\n{report}",
                p.free, p.capacity, p.double_frees
            ));
        }
        Ok(report)
    }

    impl XdpStack {
        /// Starts cnet on the lab's stack side with `xdp` settings (interface defaults to the
        /// lab's), UDP and TCP echo services on port 7, learning its address from netlink.
        pub fn start(lab: &Lab, xdp: XdpConfig) -> XdpStack {
            Self::start_with(lab, xdp, None)
        }

        /// Like [`XdpStack::start`], with the port's traffic passed through seeded impairments
        /// (both directions) when `impair` is given.
        pub fn start_with(lab: &Lab, mut xdp: XdpConfig, impair: Option<ImpairConfig>) -> XdpStack {
            xdp.ifname = STACK_DEV.into();
            let ns = lab.stack_ns_path();
            let dir = std::env::temp_dir().join("cnet-pcap");
            std::fs::create_dir_all(&dir).expect("temp dir is writable");
            let test = std::thread::current()
                .name()
                .unwrap_or("xdp")
                .replace("::", "-");
            let capture = dir.join(format!("{test}-{}.pcap", lab.stack_ns));
            let path = capture.clone();
            let stop = Arc::new(AtomicBool::new(false));
            let (jobs, rx) = mpsc::channel::<Msg>();
            let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
            let st = stop.clone();
            let thread = std::thread::spawn(move || -> Result<String, String> {
                let opened = cnet_netlink::enter_netns(&ns)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| {
                        Service::open(ServiceConfig {
                            xdp,
                            queue: 0,
                            extra_addrs: Vec::new(),
                            netlink: true,
                            seed: 7,
                        })
                    });
                let svc = match opened {
                    Ok(svc) => svc,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return Err(format!("{e:#}"));
                    }
                };
                match impair {
                    None => serve(svc.record(&path), ready_tx, rx, &st),
                    Some(cfg) => match svc.impair(cfg) {
                        Ok(svc) => serve(svc.record(&path), ready_tx, rx, &st),
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("{e:#}")));
                            Err(format!("{e:#}"))
                        }
                    },
                }
            });
            match ready_rx.recv_timeout(std::time::Duration::from_secs(20)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("stack did not start: {e}"),
                Err(_) => panic!("stack did not start within 20 s"),
            }
            XdpStack {
                jobs,
                stop,
                thread: Some(thread),
                capture,
            }
        }

        /// Runs `f` on the stack's thread between bursts and returns its result.
        pub fn with<T: Send + 'static>(
            &self,
            f: impl FnOnce(&mut Stack, Instant) -> T + Send + 'static,
        ) -> T {
            let (tx, rx) = mpsc::channel();
            self.jobs
                .send(Msg::Job(Box::new(move |s, now| {
                    let _ = tx.send(f(s, now));
                })))
                .expect("stack thread is running");
            rx.recv_timeout(std::time::Duration::from_secs(10))
                .expect("stack thread answered")
        }

        /// Runs `app` on the stack's thread after every receive step until it returns `false`.
        pub fn spawn_app(&self, app: impl FnMut(&mut Stack, Instant) -> bool + Send + 'static) {
            self.jobs
                .send(Msg::App(Box::new(app)))
                .expect("stack thread is running");
        }

        /// Stops the stack like [`XdpStack::stop`] and keeps its capture; returns the report and
        /// the capture's path (the caller deletes it).
        pub fn stop_keep_capture(mut self) -> (String, std::path::PathBuf) {
            let path = std::mem::take(&mut self.capture);
            (self.stop(), path)
        }

        /// Stops the stack; checks every UMEM frame is accounted for and returns its report.
        pub fn stop(mut self) -> String {
            self.stop.store(true, Ordering::Relaxed);
            let t = self.thread.take().expect("running");
            match t.join() {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => panic!("stack thread failed: {e}"),
                Err(_) => panic!("stack thread panicked"),
            }
        }
    }

    impl Drop for XdpStack {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
            if std::thread::panicking() || std::env::var_os("CNET_KEEP_PCAP").is_some() {
                eprintln!("capture of the stack's port: {}", self.capture.display());
            } else if !self.capture.as_os_str().is_empty() {
                let _ = std::fs::remove_file(&self.capture);
            }
        }
    }
}
