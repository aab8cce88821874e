//! The per-device ring of captured frames and its export as classic pcap.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, SystemTime};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use crate::MonitorError;

/// A captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Capture time since the Unix epoch, truncated to whole microseconds (the resolution of the
    /// pcap file) and clamped to what a pcap record holds (0 ..= `u32::MAX` seconds).
    pub timestamp: Duration,
    /// Length of the frame on the wire.
    pub orig_len: u32,
    /// The frame's first bytes, at most the snap length.
    pub data: Box<[u8]>,
}

/// Capture timestamp of `at`: microseconds since the epoch, clamped to pcap's 32-bit seconds.
pub(crate) fn pcap_timestamp(at: SystemTime) -> Duration {
    let d = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    if d.as_secs() > u64::from(u32::MAX) {
        return Duration::new(u64::from(u32::MAX), 999_999_000);
    }
    Duration::new(d.as_secs(), d.subsec_micros() * 1000)
}

/// Bounds of one device's capture ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingLimits {
    pub max_packets: usize,
    pub max_bytes: usize,
    pub snaplen: u32,
}

/// A bounded ring of frames: the oldest frames are dropped to make room for new ones.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    frames: VecDeque<Captured>,
    bytes: usize,
    /// Frames dropped from the ring to make room.
    pub evicted: u64,
}

impl Ring {
    pub fn push(&mut self, frame: &[u8], at: SystemTime, limits: &RingLimits) {
        if limits.max_packets == 0 || limits.max_bytes == 0 {
            return;
        }
        let snap = usize::try_from(limits.snaplen).unwrap_or(usize::MAX);
        let caplen = frame.len().min(snap).min(limits.max_bytes);
        while !self.frames.is_empty()
            && (self.frames.len() >= limits.max_packets || self.bytes + caplen > limits.max_bytes)
        {
            if let Some(old) = self.frames.pop_front() {
                self.bytes -= old.data.len();
                self.evicted += 1;
            }
        }
        self.bytes += caplen;
        self.frames.push_back(Captured {
            timestamp: pcap_timestamp(at),
            orig_len: u32::try_from(frame.len()).unwrap_or(u32::MAX),
            data: frame[..caplen].into(),
        });
    }

    pub fn frames(&self) -> impl ExactSizeIterator<Item = &Captured> {
        self.frames.iter()
    }

    /// Bytes of frame data held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Write the ring as a classic pcap file (LINKTYPE_ETHERNET, microsecond timestamps,
    /// little-endian). Returns the number of frames written.
    pub fn write(&self, out: impl Write, snaplen: u32) -> Result<usize, MonitorError> {
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::Little,
        };
        let mut w = PcapWriter::with_header(out, header).map_err(pcap_error)?;
        for f in &self.frames {
            w.write_packet(&PcapPacket::new(f.timestamp, f.orig_len, &f.data))
                .map_err(pcap_error)?;
        }
        Ok(self.frames.len())
    }
}

fn pcap_error(e: PcapError) -> MonitorError {
    match e {
        PcapError::IoError(io) => MonitorError::Io(io),
        other => MonitorError::Pcap(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_bounds_by_packets_and_bytes() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let mut r = Ring::default();
        let lim = RingLimits {
            max_packets: 3,
            max_bytes: 100,
            snaplen: 50,
        };
        for i in 0..5u8 {
            r.push(&[i; 30], t, &lim);
        }
        assert_eq!(r.frames().len(), 3);
        assert_eq!(r.evicted, 2);
        assert_eq!(r.frames().next().unwrap().data[0], 2);
        // A 60-byte frame is cut to the 50-byte snap length and pushes out two 30-byte frames.
        r.push(&[9; 60], t, &lim);
        assert_eq!(r.bytes(), 80);
        assert_eq!(r.frames().len(), 2);
        let all: Vec<&Captured> = r.frames().collect();
        let last = all[all.len() - 1];
        assert_eq!((last.data.len(), last.orig_len), (50, 60));
        assert_eq!(last.timestamp, Duration::new(1_700_000_000, 123_456_000));
        let disabled = RingLimits {
            max_packets: 0,
            ..lim
        };
        let mut r = Ring::default();
        r.push(&[1; 10], t, &disabled);
        assert_eq!(r.frames().len(), 0);
    }

    #[test]
    fn timestamps_clamp() {
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(pcap_timestamp(before), Duration::ZERO);
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40);
        assert_eq!(pcap_timestamp(far).as_secs(), u64::from(u32::MAX));
    }
}
