//! # cnet-socket: the application API of cnet
//!
//! The runtime that owns the per-queue stack threads, and the sockets applications use from any
//! thread: zero copy both ways, blocking or async, with a readiness registry for many sockets and
//! a tokio adapter.
//!
//! ## Layering
//! `cnet-stack` (sans-IO) ← `cnet-drivers` (ports) ← `cnet-netlink` ← **`cnet-socket`** ← apps.
//! This crate is where threads, clocks and wake-ups live: the stack stays sans-IO, and the apps
//! (the `cnet` binary) only pick ports and configuration. The runtime takes any
//! [`cnet_drivers::Port`] (AF_XDP, the in-memory link, TAP), so every test runs it in memory.
//!
//! ## Threads and what each path costs
//! - **In the loop** ([`LoopApp`]): an app runs on the owner thread with `&mut Stack`, as CNDP's
//!   chnl callbacks do: a direct call per operation, no queue, no atomic, no wake-up.
//! - **From any other thread** (every socket type here): an operation is a push on the queue's
//!   lock-free command queue (one `SegQueue` push, a few atomics) plus, only when the owner
//!   sleeps, one `eventfd` write to wake it. Received data comes back on the socket's own
//!   lock-free queue and a readiness bit; a waiting thread or task is woken through an
//!   `AtomicWaker` (an unpark for a blocked thread). There is no lock on the data path and no
//!   global lock around the stack: each stack is touched by its owner thread only.
//! - **Zero copy both ways**: [`RecvBuf`] derefs to the payload in its pool (UMEM) frame and
//!   returns it when dropped, from any thread; [`SendBuf`] is a frame lent for sending, filled in
//!   place, with headroom for every header. `read`/`write` and `send_to`/`recv_from_slice` copy
//!   for `&[u8]` callers.
//! - **Control operations** (bind, connect, listen, options, `TCP_INFO`) are closures run on the
//!   owner thread, with a lock-free one-shot reply: an allocation each, off the data path.
//!
//! ## Readiness
//! [`Poller`] is an edge-triggered registry (like `epoll` with `EPOLLET`): the owner thread pushes
//! an event when a socket's bit goes from 0 to 1. Nothing is scanned, so an event costs the same
//! with 100 000 registered sockets as with 10; the owner, too, serves only the sockets the stack
//! reports as moved (`Stack::tcp_take_ready`, `Stack::udp_take_ready`).
//!
//! ## Failures
//! A panic or a port error on an owner thread marks its queue failed; every socket of it reports
//! [`Error::RuntimeDown`] with the reason and every waiter is woken: no call hangs. A runtime
//! dropped with live sockets stops its threads; the sockets then report the same error, and the
//! pool memory stays mapped until the last buffer pointing into it is dropped.

#![deny(missing_docs)]

mod block;
mod buf;
mod error;
mod owner;
mod queue;
#[cfg(feature = "quinn")]
pub mod quinn;
mod ready;
mod runtime;
mod tcp;
#[cfg(feature = "tokio")]
pub mod tokio;
mod udp;

pub use buf::{Datagram, RecvBuf, SendBuf};
pub use cnet_stack::UdpOptions;
pub use error::{Error, Result};
pub use owner::Owner;
pub use queue::RuntimeCounters;
pub use ready::{Event, Interest, Poller, Readiness, Source, Token};
pub use runtime::{
    apply_config, counter_lines, run_inline, Clock, ConfigSource, Idle, Limits, LoopApp,
    NetlinkSource, PortStat, QueueReport, QueueSetup, QueueStatus, Runtime, PORT_STATS_EVERY,
};
pub use tcp::{ConnectOptions, ReadHalf, Shutdown, TcpListener, TcpStream, WriteHalf};
pub use udp::UdpSocket;
