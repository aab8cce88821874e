//! Property tests of the hop tags: every alteration, replay and misrouting fails.

use gw_hoptag::{HopError, HopKey, HopReceiver, HopSender, TRAILER_LEN, Trailer, WINDOW};
use proptest::prelude::*;
use zerocopy::IntoBytes;

fn pair(chain: u32, hop: u8) -> (HopSender, HopReceiver) {
    let key = HopKey::new([0x5a; 32]);
    (
        HopSender::new(&key, chain, hop),
        HopReceiver::new(&key, chain, hop),
    )
}

fn frame(packet: &[u8], t: &Trailer) -> Vec<u8> {
    let mut f = packet.to_vec();
    f.extend_from_slice(t.as_bytes());
    f
}

proptest! {
    #[test]
    fn round_trip(packet in prop::collection::vec(any::<u8>(), 0..1600), chain: u32, hop: u8) {
        let (mut s, mut r) = pair(chain, hop);
        let t = s.tag(&packet).unwrap();
        let f = frame(&packet, &t);
        prop_assert_eq!(f.len(), packet.len() + TRAILER_LEN);
        prop_assert_eq!(r.check_frame(&f).unwrap(), &packet[..]);
    }

    #[test]
    fn any_flipped_bit_fails(packet in prop::collection::vec(any::<u8>(), 1..1600), bit in any::<prop::sample::Index>()) {
        let (mut s, mut r) = pair(7, 1);
        let t = s.tag(&packet).unwrap();
        let mut f = frame(&packet, &t);
        let i = bit.index(f.len() * 8);
        f[i / 8] ^= 1 << (i % 8);
        prop_assert!(r.check_frame(&f).is_err(), "flip of bit {} accepted", i);
    }

    #[test]
    fn replay_fails(packet in prop::collection::vec(any::<u8>(), 0..256), n in 1usize..20) {
        let (mut s, mut r) = pair(1, 0);
        let frames: Vec<_> = (0..n).map(|_| frame(&packet, &s.tag(&packet).unwrap())).collect();
        for f in &frames {
            prop_assert!(r.check_frame(f).is_ok());
        }
        for f in &frames {
            prop_assert_eq!(r.check_frame(f), Err(HopError::Replay));
        }
    }

    #[test]
    fn wrong_hop_or_chain_fails(packet in prop::collection::vec(any::<u8>(), 0..256), hop in 0u8..8, other in 0u8..8, chain: u32) {
        prop_assume!(hop != other);
        let key = HopKey::new([1; 32]);
        let mut s = HopSender::new(&key, chain, hop);
        // Same key even: the hop index in the trailer is checked and authenticated.
        let mut r_other_hop = HopReceiver::new(&key, chain, other);
        let mut r_other_chain = HopReceiver::new(&key, chain.wrapping_add(1), hop);
        let f = frame(&packet, &s.tag(&packet).unwrap());
        prop_assert_eq!(r_other_hop.check_frame(&f), Err(HopError::WrongHop));
        prop_assert_eq!(r_other_chain.check_frame(&f), Err(HopError::WrongChain));
        // Rewriting the hop index to match the receiver breaks the tag.
        let mut g = f.clone();
        let hop_at = packet.len() + 3;
        g[hop_at] = other;
        prop_assert_eq!(r_other_hop.check_frame(&g), Err(HopError::BadTag));
    }

    #[test]
    fn reordering_inside_window_passes(perm in Just((0..WINDOW as usize).collect::<Vec<_>>()).prop_shuffle()) {
        let (mut s, mut r) = pair(3, 2);
        let frames: Vec<_> = (0..WINDOW).map(|i| {
            let p = i.to_le_bytes();
            frame(&p, &s.tag(&p).unwrap())
        }).collect();
        for i in perm {
            prop_assert!(r.check_frame(&frames[i]).is_ok(), "in-window frame {} refused", i);
        }
    }
}

#[test]
fn packets_older_than_the_window_fail() {
    let (mut s, mut r) = pair(3, 2);
    let old = frame(b"old", &s.tag(b"old").unwrap());
    for _ in 0..WINDOW {
        let f = frame(b"x", &s.tag(b"x").unwrap());
        r.check_frame(&f).unwrap();
    }
    assert_eq!(r.check_frame(&old), Err(HopError::TooOld));
}

#[test]
fn forged_packets_do_not_move_the_window() {
    let (mut s, mut r) = pair(3, 2);
    let good = frame(b"p", &s.tag(b"p").unwrap());
    // Forge a trailer far ahead with a garbage tag.
    let mut forged = frame(b"p", &s.tag(b"p").unwrap());
    let n = forged.len();
    forged[n - TRAILER_LEN + 8..n - TRAILER_LEN + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert_eq!(r.check_frame(&forged), Err(HopError::BadTag));
    assert!(
        r.check_frame(&good).is_ok(),
        "window moved by a forged packet"
    );
}

#[test]
fn other_key_fails_and_short_frames_are_malformed() {
    let mut s = HopSender::new(&HopKey::new([1; 32]), 1, 1);
    let mut r = HopReceiver::new(&HopKey::new([2; 32]), 1, 1);
    let f = frame(b"hello", &s.tag(b"hello").unwrap());
    assert_eq!(r.check_frame(&f), Err(HopError::BadTag));
    assert_eq!(
        r.check_frame(&f[..TRAILER_LEN - 1]),
        Err(HopError::Malformed)
    );
}

#[test]
fn known_answer() {
    // Independent computation (Python hmac): key 0x5a*32, header GW 01 00 | chain 7 | seq 1, packet "abc".
    let (mut s, _) = pair(7, 0);
    let t = s.tag(b"abc").unwrap();
    assert_eq!(
        t.header.as_bytes(),
        &[b'G', b'W', 1, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(hex(&t.tag), KAT);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const KAT: &str = "287e1395da2fb54946e6ae6644bf0f48e5b4614304abcb117c846a4f25dc966f";
