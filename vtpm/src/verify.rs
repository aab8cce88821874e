//! The quote verifier (controller side).
//!
//! Checks run in a fixed order and stop at the first failure, each with its own error:
//! decode the signed quote; signature; nonce; PCR selection and composite digest; counters
//! moving forward; then the event log: its length, its running digest (format 2; a format-1
//! quote only where accepted), no reset of a PCR that cannot be reset, and its replay to the
//! quoted PCR values.

use alloc::{collections::BTreeMap, vec::Vec};

use ed25519_dalek::VerifyingKey;

use crate::{
    Digest,
    log::{ComponentKind, Event},
    pcr::{PcrIndex, PcrSelection, composite_digest, extend_value},
    quote::{
        BODY_MAX, Counters, MonitorKind, NONCE_LEN, QUOTE_CONTEXT, QuoteBody, SignedQuote,
        signed_message,
    },
};

/// Why a quote was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The quote bytes are not a valid encoding.
    #[error("quote is malformed")]
    Malformed,
    /// The signature does not verify with the gateway's enrolled attestation key.
    #[error("quote signature is invalid")]
    BadSignature,
    /// The quote answers a different challenge (stale or replayed quote).
    #[error("quote nonce does not match the challenge")]
    NonceMismatch,
    /// The quote covers other PCRs than requested.
    #[error("quote PCR selection differs from the requested selection")]
    SelectionMismatch,
    /// The reported PCR values do not hash to the quoted composite digest.
    #[error("reported PCR values do not match the quoted digest")]
    PcrDigestMismatch,
    /// Counters did not move forward (rollback or replay of an older quote).
    #[error("counters went backwards: last {last:?}, quoted {quoted:?}")]
    CounterRollback {
        /// Last counters accepted from this gateway.
        last: Counters,
        /// Counters in this quote.
        quoted: Counters,
    },
    /// The event log does not replay to the quoted value of this PCR.
    #[error("event log does not replay to PCR {0}")]
    EventLogMismatch(u16),
    /// The event log is not the one the quote signed (format 2: an entry was added, dropped,
    /// reordered, relabelled or changed).
    #[error("event log does not match the quoted log digest")]
    EventLogDigestMismatch,
    /// The log resets a PCR that cannot be reset (a measurement hidden behind a Reset).
    #[error("event log resets PCR {0}, which cannot be reset")]
    ResetOfNonResettablePcr(u16),
    /// A format-1 quote (no log digest), and the verifier was not told to accept that format.
    #[error("quote format 1 does not bind the event log and is not accepted here")]
    Format1NotAccepted,
    /// The event log has a different number of entries than the quote says.
    #[error("event log has {got} entries, quote says {quoted}")]
    EventLogLength {
        /// Entries received.
        got: usize,
        /// Entries the quote commits to.
        quoted: u32,
    },
}

use crate::quote::NO_BOOT_COUNTER;

/// What the verifier expects from this gateway for this challenge.
#[derive(Debug, Clone, Copy)]
pub struct Expectation<'a> {
    /// The gateway's enrolled attestation key.
    pub key: &'a VerifyingKey,
    /// The nonce sent in this challenge.
    pub nonce: &'a [u8; NONCE_LEN],
    /// The PCRs requested.
    pub selection: &'a PcrSelection,
    /// Counters of the last accepted quote, if any.
    pub last: Option<Counters>,
    /// Whether a format-1 quote (which does not bind the event log) is acceptable: only for
    /// gateways whose reference manifest says so, during migration (`docs/quote-format.md`).
    pub accept_format1: bool,
}

/// What the gateway sent back.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// The encoded [`SignedQuote`].
    pub quote: &'a [u8],
    /// Claimed values of the selected PCRs, in ascending index order.
    pub pcrs: &'a [Digest],
    /// The event log.
    pub log: &'a [Event],
}

/// A quote that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed quote body.
    pub body: QuoteBody,
    /// Selected PCRs with their (replayed and quoted) values.
    pub pcrs: Vec<(PcrIndex, Digest)>,
}

impl Verified {
    /// True when the quote came from the host software monitor: never a trustworthy gateway.
    pub fn is_insecure_software_monitor(&self) -> bool {
        self.body.identity.kind == MonitorKind::InsecureSoftwareMonitor
    }
}

/// Verify one quote. See the module documentation for the order of checks.
pub fn verify(evidence: &Evidence<'_>, expect: &Expectation<'_>) -> Result<Verified, VerifyError> {
    let quote = SignedQuote::decode(evidence.quote).map_err(|_| VerifyError::Malformed)?;
    if !quote.verify_signature(expect.key) {
        return Err(VerifyError::BadSignature);
    }
    after_signature(&quote, evidence, expect)
}

/// Verify many quotes, checking all signatures in one ed25519 batch. Results are in input
/// order; if the batch fails, signatures are re-checked one by one (strictly) to find the bad
/// ones. Batch acceptance is the cofactored ed25519 equation, which unlike
/// `verify_strict` does not reject small-order keys: verifiers must refuse weak keys
/// (`VerifyingKey::is_weak`) at enrollment, which is where Gatewarden checks them.
pub fn verify_batch(
    items: &[(Evidence<'_>, Expectation<'_>)],
) -> Vec<Result<Verified, VerifyError>> {
    let decoded: Vec<Result<SignedQuote, VerifyError>> = items
        .iter()
        .map(|(ev, _)| SignedQuote::decode(ev.quote).map_err(|_| VerifyError::Malformed))
        .collect();
    let mut messages: Vec<[u8; QUOTE_CONTEXT.len() + BODY_MAX]> = Vec::new();
    let mut lens = Vec::new();
    let mut sigs = Vec::new();
    let mut keys = Vec::new();
    for (q, (_, ex)) in decoded.iter().zip(items) {
        if let Ok(q) = q {
            let mut m = [0u8; QUOTE_CONTEXT.len() + BODY_MAX];
            lens.push(signed_message(&q.body, &mut m));
            messages.push(m);
            sigs.push(q.signature);
            keys.push(*ex.key);
        }
    }
    let msg_refs: Vec<&[u8]> = messages.iter().zip(&lens).map(|(m, n)| &m[..*n]).collect();
    let batch_ok =
        !msg_refs.is_empty() && ed25519_dalek::verify_batch(&msg_refs, &sigs, &keys).is_ok();

    decoded
        .into_iter()
        .zip(items)
        .map(|(q, (ev, ex))| {
            let q = q?;
            if !batch_ok && !q.verify_signature(ex.key) {
                return Err(VerifyError::BadSignature);
            }
            after_signature(&q, ev, ex)
        })
        .collect()
}

fn after_signature(
    quote: &SignedQuote,
    evidence: &Evidence<'_>,
    expect: &Expectation<'_>,
) -> Result<Verified, VerifyError> {
    let body = quote.body().map_err(|_| VerifyError::Malformed)?;

    // Constant time is not needed for a public nonce, but it costs nothing.
    use subtle::ConstantTimeEq;
    if !bool::from(body.nonce.ct_eq(expect.nonce)) {
        return Err(VerifyError::NonceMismatch);
    }

    if body.selection != *expect.selection || evidence.pcrs.len() != body.selection.len() {
        return Err(VerifyError::SelectionMismatch);
    }
    if composite_digest(evidence.pcrs) != body.pcr_digest {
        return Err(VerifyError::PcrDigestMismatch);
    }

    // A board without a persistent boot counter quotes boot counter 0 on every boot
    // ([`NO_BOOT_COUNTER`]): there a quote counter that starts over is a reboot, not a
    // rollback (the nonce, checked above, still binds every quote to its own challenge). A
    // board that had a counter and now quotes 0 is still a rollback.
    let counterless = |c: Counters| c.boot == NO_BOOT_COUNTER;
    if let Some(last) = expect.last
        && body.counters <= last
        && !(counterless(last) && counterless(body.counters))
    {
        return Err(VerifyError::CounterRollback {
            last,
            quoted: body.counters,
        });
    }

    if evidence.log.len() != body.event_count as usize {
        return Err(VerifyError::EventLogLength {
            got: evidence.log.len(),
            quoted: body.event_count,
        });
    }
    match body.log_digest {
        Some(d) if d == crate::log::log_digest(evidence.log) => {}
        Some(_) => return Err(VerifyError::EventLogDigestMismatch),
        None if expect.accept_format1 => {}
        None => return Err(VerifyError::Format1NotAccepted),
    }
    if let Some(e) = evidence
        .log
        .iter()
        .find(|e| e.kind == ComponentKind::Reset && !e.pcr.is_resettable())
    {
        return Err(VerifyError::ResetOfNonResettablePcr(e.pcr.get()));
    }
    let replayed = replay_all(evidence.log);
    let mut pcrs = Vec::with_capacity(evidence.pcrs.len());
    for (index, claimed) in body.selection.iter().zip(evidence.pcrs) {
        let value = replayed.get(&index).copied().unwrap_or([0; 32]);
        if value != *claimed {
            return Err(VerifyError::EventLogMismatch(index.get()));
        }
        pcrs.push((index, value));
    }
    Ok(Verified { body, pcrs })
}

/// Replay a whole event log from all-zero PCRs in one pass.
pub fn replay_all(log: &[Event]) -> BTreeMap<PcrIndex, Digest> {
    let mut values: BTreeMap<PcrIndex, Digest> = BTreeMap::new();
    for e in log {
        let v = values.entry(e.pcr).or_insert([0; 32]);
        *v = match e.kind {
            ComponentKind::Reset => [0; 32],
            _ => extend_value(v, &e.digest),
        };
    }
    values
}
