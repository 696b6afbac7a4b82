//! Recording frames to classic libpcap files: [`PcapWriter`] on its own (a failing test dumps what it
//! saw) and [`PcapPort`], a wrapper that records everything any [`Port`] receives and transmits.
//!
//! Format (the "classic" format of `pcap-savefile(5)`): a 24-byte global header (magic
//! `0xa1b2c3d4` for microsecond or `0xa1b23c4d` for nanosecond timestamps, version 2.4, snap
//! length, link type 1 = Ethernet), then per packet a 16-byte record header (seconds, fraction,
//! captured length, original length) and the captured bytes. Every field is written
//! little-endian; readers detect the byte order from the magic. Timestamps are the `now` handed to
//! the port (virtual time in tests) plus [`PcapOptions::time_offset`], so a capture of a simulated
//! run starts near 1970; seconds past `u32::MAX` saturate.
//!
//! Costs and invariants:
//! - writes go through a [`BufWriter`]: one system call per 8 KiB or so, none per frame;
//! - recording allocates nothing per frame; a chained frame is written segment by segment;
//! - [`PcapPort`] records a transmitted frame only once the inner port has taken it, so a frame the
//!   inner port refused (ring full) is recorded when it is finally sent, once;
//! - the first I/O error stops the recording; [`PcapPort`] returns it from its next call, before
//!   moving any frame, and then passes traffic through unrecorded. The call that hit the error
//!   moved its frames normally, so no frame is lost or double-counted because of the capture.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use cnet_stack::{Batch, Duration, Frame, Instant, Pool};

use crate::{Port, PortError, PortInfo};

/// Magic of a file with microsecond timestamps.
pub const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// Magic of a file with nanosecond timestamps.
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// `LINKTYPE_ETHERNET`: frames start with an Ethernet II header.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Default snap length: every frame is recorded whole.
pub const DEFAULT_SNAPLEN: u32 = 65535;
/// Length of the global header.
pub const GLOBAL_HEADER_LEN: usize = 24;
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 16;

/// Resolution of the timestamps in a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TsResolution {
    /// Microseconds (magic `0xa1b2c3d4`), read by every tool.
    #[default]
    Micros,
    /// Nanoseconds (magic `0xa1b23c4d`); our clock has microseconds, so the last three digits are 0.
    Nanos,
}

/// How a [`PcapWriter`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcapOptions {
    /// Timestamp resolution.
    pub resolution: TsResolution,
    /// Most bytes recorded per frame (the rest is cut; the record keeps the original length).
    /// 0 means [`DEFAULT_SNAPLEN`].
    pub snaplen: u32,
    /// Added to every timestamp, e.g. the Unix time of the caller's clock epoch.
    pub time_offset: Duration,
}

impl Default for PcapOptions {
    fn default() -> Self {
        PcapOptions {
            resolution: TsResolution::Micros,
            snaplen: DEFAULT_SNAPLEN,
            time_offset: Duration::ZERO,
        }
    }
}

/// Writes a classic pcap stream of Ethernet frames to `W`, buffered.
///
/// Buffered bytes are written when the buffer fills, on [`PcapWriter::flush`], on
/// [`PcapWriter::into_inner`], and (ignoring errors) when the writer is dropped.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: BufWriter<W>,
    options: PcapOptions,
    records: u64,
}

impl PcapWriter<File> {
    /// Creates (or truncates) the file at `path` and writes the global header.
    pub fn create(path: impl AsRef<Path>, options: PcapOptions) -> io::Result<Self> {
        PcapWriter::with_options(File::create(path)?, options)
    }
}

impl<W: Write> PcapWriter<W> {
    /// A writer with default options (microseconds, whole frames); writes the global header.
    pub fn new(inner: W) -> io::Result<Self> {
        PcapWriter::with_options(inner, PcapOptions::default())
    }

    /// A writer with `options`; writes the global header.
    pub fn with_options(inner: W, mut options: PcapOptions) -> io::Result<Self> {
        if options.snaplen == 0 {
            options.snaplen = DEFAULT_SNAPLEN;
        }
        let magic = match options.resolution {
            TsResolution::Micros => MAGIC_MICROS,
            TsResolution::Nanos => MAGIC_NANOS,
        };
        let mut header = [0u8; GLOBAL_HEADER_LEN];
        header[0..4].copy_from_slice(&magic.to_le_bytes());
        header[4..6].copy_from_slice(&2u16.to_le_bytes()); // version major
        header[6..8].copy_from_slice(&4u16.to_le_bytes()); // version minor
                                                           // 8..12: thiszone (GMT offset) = 0; 12..16: sigfigs = 0.
        header[16..20].copy_from_slice(&options.snaplen.to_le_bytes());
        header[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        let mut out = BufWriter::new(inner);
        out.write_all(&header)?;
        Ok(PcapWriter {
            out,
            options,
            records: 0,
        })
    }

    /// The options in use (a zero snap length replaced by the default).
    pub fn options(&self) -> PcapOptions {
        self.options
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    fn record_header(&mut self, ts: Instant, len: usize) -> io::Result<usize> {
        let micros = (ts + self.options.time_offset).total_micros();
        let secs = u32::try_from(micros / 1_000_000).unwrap_or(u32::MAX);
        let sub = (micros % 1_000_000) as u32;
        let frac = match self.options.resolution {
            TsResolution::Micros => sub,
            TsResolution::Nanos => sub * 1000,
        };
        let orig = u32::try_from(len).unwrap_or(u32::MAX);
        let incl = orig.min(self.options.snaplen);
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[0..4].copy_from_slice(&secs.to_le_bytes());
        header[4..8].copy_from_slice(&frac.to_le_bytes());
        header[8..12].copy_from_slice(&incl.to_le_bytes());
        header[12..16].copy_from_slice(&orig.to_le_bytes());
        self.out.write_all(&header)?;
        self.records += 1;
        Ok(incl as usize)
    }

    /// Records one frame given as bytes, stamped `ts`.
    pub fn write_packet(&mut self, ts: Instant, data: &[u8]) -> io::Result<()> {
        let incl = self.record_header(ts, data.len())?;
        self.out.write_all(&data[..incl])
    }

    /// Records the frame (its whole chain, as one packet) of `pool`, stamped `ts`.
    pub fn write_frame(&mut self, ts: Instant, pool: &Pool, frame: &Frame) -> io::Result<()> {
        let mut left = self.record_header(ts, pool.chain_len(frame))?;
        for seg in pool.chain_iter(frame) {
            if left == 0 {
                break;
            }
            let take = seg.len().min(left);
            self.out.write_all(&seg[..take])?;
            left -= take;
        }
        Ok(())
    }

    /// Writes buffered bytes and flushes `W`.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer (bytes still buffered are not in it yet).
    pub fn get_ref(&self) -> &W {
        self.out.get_ref()
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(self) -> io::Result<W> {
        self.out
            .into_inner()
            .map_err(io::IntoInnerError::into_error)
    }
}

/// A [`Port`] wrapper recording every frame `P` receives or transmits to a [`PcapWriter`].
///
/// Received frames are stamped with the `now` of the `rx_burst` that returned them, transmitted ones
/// with the `now` of the `tx_burst` that took them. See the module docs for errors.
#[derive(Debug)]
pub struct PcapPort<P: Port, W: Write = File> {
    inner: P,
    writer: PcapWriter<W>,
    /// False once a write failed: traffic then passes through unrecorded.
    recording: bool,
    /// The error that stopped the recording, until a call returns it.
    pending: Option<io::Error>,
}

impl<P: Port> PcapPort<P, File> {
    /// Wraps `inner`, recording to a new file at `path` with default options.
    pub fn create(inner: P, path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(PcapPort::new(
            inner,
            PcapWriter::create(path, PcapOptions::default())?,
        ))
    }
}

impl<P: Port, W: Write> PcapPort<P, W> {
    /// Wraps `inner`, recording to `writer`.
    pub fn new(inner: P, writer: PcapWriter<W>) -> Self {
        PcapPort {
            inner,
            writer,
            recording: true,
            pending: None,
        }
    }

    /// The wrapped port.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The wrapped port, mutably.
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    /// The capture writer.
    pub fn writer(&self) -> &PcapWriter<W> {
        &self.writer
    }

    /// False once an I/O error stopped the recording.
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// Writes buffered records out (a no-op success once recording stopped).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.recording {
            self.writer.flush()
        } else {
            Ok(())
        }
    }

    /// Takes the wrapper apart without flushing (the writer flushes when dropped or on
    /// [`PcapWriter::into_inner`]).
    pub fn into_parts(self) -> (P, PcapWriter<W>) {
        (self.inner, self.writer)
    }

    /// Records a frame; the first failure stops recording and is kept for the next call.
    fn record(&mut self, pool: &Pool, frame: &Frame, now: Instant) {
        if !self.recording {
            return;
        }
        if let Err(e) = self.writer.write_frame(now, pool, frame) {
            tracing::warn!(port = %self.inner.info().name, error = %e, "pcap recording stopped");
            self.recording = false;
            self.pending = Some(e);
        }
    }

    fn take_pending(&mut self) -> Result<(), PortError> {
        match self.pending.take() {
            Some(e) => Err(PortError::Io(e)),
            None => Ok(()),
        }
    }
}

impl<P: Port, W: Write> Port for PcapPort<P, W> {
    fn rx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        now: Instant,
    ) -> Result<usize, PortError> {
        self.take_pending()?;
        let before = batch.len();
        let n = self.inner.rx_burst(pool, batch, now)?;
        if self.recording {
            for frame in batch.iter().skip(before) {
                self.record(pool, frame, now);
            }
        }
        Ok(n)
    }

    /// Holds an extra reference ([`Pool::share`]) to each frame while the inner port transmits, so
    /// that the frames it took can be recorded after it freed or queued them.
    fn tx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        now: Instant,
    ) -> Result<usize, PortError> {
        self.take_pending()?;
        if !self.recording {
            return self.inner.tx_burst(pool, batch, now);
        }
        let mut shares = Batch::new();
        for frame in batch.iter() {
            let share = pool.share(frame);
            // Both batches hold at most BURST frames, so this push cannot fail; if it did, the
            // frame would just go unrecorded.
            if let Err(share) = shares.push(share) {
                pool.free(share);
            }
        }
        let taken = match self.inner.tx_burst(pool, batch, now) {
            Ok(n) => n,
            Err(e) => {
                shares.free_all(pool);
                return Err(e);
            }
        };
        for (i, share) in shares.drain().enumerate() {
            if i < taken {
                self.record(pool, &share, now);
            }
            pool.free(share);
        }
        Ok(taken)
    }

    fn info(&self) -> PortInfo {
        self.inner.info()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner().wait_fd()
    }

    fn frames_held(&self) -> usize {
        self.inner.frames_held()
    }
    fn local_addrs_changed(&mut self, addrs: &[cnet_stack::IfAddr]) {
        self.inner.local_addrs_changed(addrs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::{LinkConfig, MemLink, MemPort};
    use cnet_stack::MacAddr;

    /// A record parsed back.
    #[derive(Debug, PartialEq)]
    struct Record {
        secs: u32,
        frac: u32,
        orig_len: u32,
        data: Vec<u8>,
    }

    /// Parses a little-endian classic pcap file; returns (magic, snaplen, records).
    fn parse(bytes: &[u8]) -> (u32, u32, Vec<Record>) {
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        assert!(bytes.len() >= GLOBAL_HEADER_LEN, "short global header");
        let magic = u32_at(bytes, 0);
        assert!(
            magic == MAGIC_MICROS || magic == MAGIC_NANOS,
            "magic {magic:#x}"
        );
        assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), 2);
        assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), 4);
        assert_eq!(u32_at(bytes, 8), 0);
        assert_eq!(u32_at(bytes, 12), 0);
        let snaplen = u32_at(bytes, 16);
        assert_eq!(u32_at(bytes, 20), LINKTYPE_ETHERNET);
        let mut records = Vec::new();
        let mut at = GLOBAL_HEADER_LEN;
        while at < bytes.len() {
            assert!(at + RECORD_HEADER_LEN <= bytes.len(), "short record header");
            let incl = u32_at(bytes, at + 8) as usize;
            let orig_len = u32_at(bytes, at + 12);
            assert!(incl as u32 <= orig_len && incl as u32 <= snaplen);
            let start = at + RECORD_HEADER_LEN;
            assert!(start + incl <= bytes.len(), "short record");
            records.push(Record {
                secs: u32_at(bytes, at),
                frac: u32_at(bytes, at + 4),
                orig_len,
                data: bytes[start..start + incl].to_vec(),
            });
            at = start + incl;
        }
        (magic, snaplen, records)
    }

    fn pool() -> Pool {
        Pool::new(64, Pool::DEFAULT_FRAME_SIZE, Pool::DEFAULT_HEADROOM).unwrap()
    }

    fn link() -> (MemPort, MemPort) {
        MemLink::pair(LinkConfig::new(
            1,
            MacAddr([2, 0, 0, 0, 0, 1]),
            MacAddr([2, 0, 0, 0, 0, 2]),
        ))
        .unwrap()
    }

    fn tx(port: &mut impl Port, pool: &mut Pool, frames: &[&[u8]], now: Instant) -> usize {
        let mut batch = Batch::new();
        for f in frames {
            batch.push(pool.alloc_from(f).unwrap()).unwrap();
        }
        let n = port.tx_burst(pool, &mut batch, now).unwrap();
        batch.free_all(pool);
        n
    }

    fn rx_all(port: &mut impl Port, pool: &mut Pool, now: Instant) -> usize {
        let mut batch = Batch::new();
        let n = port.rx_burst(pool, &mut batch, now).unwrap();
        batch.free_all(pool);
        n
    }

    #[test]
    fn writer_round_trips_header_and_records() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write_packet(Instant::from_micros(1_500_000), b"first frame")
            .unwrap();
        w.write_packet(Instant::from_micros(2_000_007), &[0xee; 1514])
            .unwrap();
        w.write_packet(Instant::ZERO, &[]).unwrap();
        assert_eq!(w.records(), 3);
        let bytes = w.into_inner().unwrap();
        assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        let (magic, snaplen, records) = parse(&bytes);
        assert_eq!((magic, snaplen), (MAGIC_MICROS, DEFAULT_SNAPLEN));
        assert_eq!(
            records,
            vec![
                Record {
                    secs: 1,
                    frac: 500_000,
                    orig_len: 11,
                    data: b"first frame".to_vec()
                },
                Record {
                    secs: 2,
                    frac: 7,
                    orig_len: 1514,
                    data: vec![0xee; 1514]
                },
                Record {
                    secs: 0,
                    frac: 0,
                    orig_len: 0,
                    data: vec![]
                },
            ]
        );
    }

    #[test]
    fn nanoseconds_offset_and_snaplen() {
        let options = PcapOptions {
            resolution: TsResolution::Nanos,
            snaplen: 100,
            time_offset: Duration::from_secs(1_700_000_000),
        };
        let mut w = PcapWriter::with_options(Vec::new(), options).unwrap();
        w.write_packet(Instant::from_micros(3_000_042), &[7; 300])
            .unwrap();
        let (magic, snaplen, records) = parse(&w.into_inner().unwrap());
        assert_eq!((magic, snaplen), (MAGIC_NANOS, 100));
        assert_eq!(records[0].secs, 1_700_000_003);
        assert_eq!(records[0].frac, 42_000);
        assert_eq!(records[0].orig_len, 300);
        assert_eq!(records[0].data, vec![7; 100]);
    }

    #[test]
    fn a_chain_is_one_packet() {
        let mut p = pool();
        let head = p.alloc_from(b"head-").unwrap();
        let tail = p.alloc_from(b"tail").unwrap();
        p.chain_append(&head, tail);
        let mut w = PcapWriter::with_options(
            Vec::new(),
            PcapOptions {
                snaplen: 7,
                ..PcapOptions::default()
            },
        )
        .unwrap();
        w.write_frame(Instant::ZERO, &p, &head).unwrap();
        let (_, _, records) = parse(&w.into_inner().unwrap());
        assert_eq!(records[0].orig_len, 9);
        assert_eq!(records[0].data, b"head-ta");
        p.free(head);
        assert_eq!(p.available(), p.capacity());
    }

    #[test]
    fn port_records_both_directions_in_call_order() {
        let (a, mut b) = link();
        let mut a = PcapPort::new(a, PcapWriter::new(Vec::new()).unwrap());
        let (mut pa, mut pb) = (pool(), pool());
        assert_eq!(a.info().name, "mem0");
        let t1 = Instant::from_millis(10);
        assert_eq!(tx(&mut a, &mut pa, &[b"out-1", b"out-2"], t1), 2);
        assert_eq!(rx_all(&mut b, &mut pb, t1), 2);
        let t2 = Instant::from_millis(20);
        tx(&mut b, &mut pb, &[b"back-1"], t2);
        assert_eq!(a.poll_timeout(), Some(t2));
        assert_eq!(rx_all(&mut a, &mut pa, t2), 1);
        assert_eq!(a.frames_held(), 0);
        assert_eq!(pa.available(), pa.capacity(), "shares were given back");
        assert!(a.is_recording());

        let (_, writer) = a.into_parts();
        let (_, _, records) = parse(&writer.into_inner().unwrap());
        let got: Vec<(u64, &[u8])> = records
            .iter()
            .map(|r| {
                (
                    u64::from(r.secs) * 1000 + u64::from(r.frac) / 1000,
                    &r.data[..],
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (10, &b"out-1"[..]),
                (10, &b"out-2"[..]),
                (20, &b"back-1"[..])
            ]
        );
    }

    /// A port that transmits at most one frame per call (a full ring), freeing it.
    struct OneAtATime;

    impl Port for OneAtATime {
        fn rx_burst(
            &mut self,
            _: &mut Pool,
            _: &mut Batch,
            _: Instant,
        ) -> Result<usize, PortError> {
            Ok(0)
        }
        fn tx_burst(
            &mut self,
            pool: &mut Pool,
            batch: &mut Batch,
            _: Instant,
        ) -> Result<usize, PortError> {
            let mut n = 0;
            for f in batch.drain_front(1) {
                pool.free(f);
                n += 1;
            }
            Ok(n)
        }
        fn info(&self) -> PortInfo {
            PortInfo {
                name: "one".into(),
                mac: MacAddr([2, 0, 0, 0, 0, 9]),
                mtu: 1500,
            }
        }
    }

    #[test]
    fn refused_frames_are_recorded_when_sent_and_once() {
        let mut port = PcapPort::new(OneAtATime, PcapWriter::new(Vec::new()).unwrap());
        let mut p = pool();
        let mut batch = Batch::new();
        for f in [&b"x1"[..], b"x2", b"x3"] {
            batch.push(p.alloc_from(f).unwrap()).unwrap();
        }
        let mut calls = 0;
        while !batch.is_empty() {
            calls += 1;
            let now = Instant::from_millis(calls * 1000);
            assert_eq!(port.tx_burst(&mut p, &mut batch, now).unwrap(), 1);
        }
        assert_eq!(p.available(), p.capacity());
        let (_, w) = port.into_parts();
        let (_, _, records) = parse(&w.into_inner().unwrap());
        let got: Vec<(u32, &[u8])> = records.iter().map(|r| (r.secs, &r.data[..])).collect();
        assert_eq!(got, vec![(1, &b"x1"[..]), (2, b"x2"), (3, b"x3")]);
    }

    /// A writer whose every write fails.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::other("disk on fire"))
        }
    }

    #[test]
    fn an_io_error_is_returned_by_the_next_call_and_traffic_keeps_moving() {
        let (a, mut b) = link();
        let mut a = PcapPort::new(a, PcapWriter::new(Broken).unwrap());
        let (mut pa, mut pb) = (pool(), pool());
        let big: &[u8] = &[0u8; 1500];
        // Enough bytes to overflow the 8 KiB buffer: the failure shows during this call...
        assert_eq!(tx(&mut a, &mut pa, &[big; 8], Instant::ZERO), 8);
        assert!(!a.is_recording());
        // ...and is returned by the next one, which moves nothing.
        let mut batch = Batch::new();
        batch.push(pa.alloc_from(b"later").unwrap()).unwrap();
        match a.tx_burst(&mut pa, &mut batch, Instant::ZERO) {
            Err(PortError::Io(e)) => assert_eq!(e.to_string(), "disk on fire"),
            other => panic!("expected the capture's error, got {other:?}"),
        }
        assert_eq!(batch.len(), 1);
        // Then traffic passes through unrecorded.
        assert_eq!(a.tx_burst(&mut pa, &mut batch, Instant::ZERO).unwrap(), 1);
        assert_eq!(rx_all(&mut b, &mut pb, Instant::ZERO), 9);
        assert!(a.flush().is_ok());
        assert_eq!(pa.available(), pa.capacity());
    }

    /// Writes a capture file and, when a reader is installed, has it read the file.
    #[test]
    fn capture_file_opens_in_tcpdump_or_tshark() {
        let path = std::env::temp_dir().join(format!("cnet-pcap-test-{}.pcap", std::process::id()));
        let (a, mut b) = link();
        let mut a = PcapPort::create(a, &path).unwrap();
        let (mut pa, mut pb) = (pool(), pool());
        // A broadcast ARP request from 02:00:00:00:00:01 (10.0.0.1) for 10.0.0.2.
        let mut arp = Vec::new();
        arp.extend_from_slice(&[0xff; 6]);
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 10, 0, 0, 1]);
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&[10, 0, 0, 2]);
        tx(&mut a, &mut pa, &[&arp, &arp], Instant::from_millis(1));
        tx(&mut b, &mut pb, &[&arp], Instant::from_millis(2));
        rx_all(&mut a, &mut pa, Instant::from_millis(2));
        rx_all(&mut b, &mut pb, Instant::from_millis(2));
        drop(a);

        let bytes = std::fs::read(&path).unwrap();
        let (_, _, records) = parse(&bytes);
        assert_eq!(records.len(), 3);
        assert!(records.iter().all(|r| r.data == arp));

        read_with_tools(&path, 3, "10.0.0.2");
        let _ = std::fs::remove_file(&path);

        // The nanosecond variant too, written by a standalone writer.
        let path = path.with_extension("ns.pcap");
        let options = PcapOptions {
            resolution: TsResolution::Nanos,
            ..PcapOptions::default()
        };
        let mut w = PcapWriter::create(&path, options).unwrap();
        w.write_packet(Instant::from_micros(1_000_001), &arp)
            .unwrap();
        w.flush().unwrap();
        read_with_tools(&path, 1, "10.0.0.2");
        let _ = std::fs::remove_file(&path);
    }

    /// Has tcpdump and tshark, where installed, read `path`: they must succeed and print `lines`
    /// packets mentioning `needle`.
    fn read_with_tools(path: &Path, lines: usize, needle: &str) {
        let mut checked = false;
        for tool in ["tcpdump", "tshark"] {
            match std::process::Command::new(tool)
                .args(["-n", "-r"])
                .arg(path)
                .output()
            {
                Ok(out) => {
                    let text = String::from_utf8_lossy(&out.stdout);
                    assert!(
                        out.status.success(),
                        "{tool} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    assert_eq!(text.lines().count(), lines, "{tool} output:\n{text}");
                    assert!(text.contains(needle), "{tool} output:\n{text}");
                    println!("{tool} read {}:\n{text}", path.display());
                    checked = true;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => panic!("running {tool}: {e}"),
            }
        }
        if !checked {
            println!("tcpdump and tshark are not installed: skipped reading the capture with them");
        }
    }
}
