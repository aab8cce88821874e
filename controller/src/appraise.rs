//! Appraisal: verified evidence against reference values and the signed policy, producing an
//! attestation result shaped like an EAR (EAT Attestation Result, draft-ietf-rats-ear) in RATS
//! vocabulary: one sub-result (`submods`) per component, each `affirming`, `warning` or
//! `contraindicated` with reasons, and the overall status the worst of them.
//!
//! Order (stopping at the first cryptographic failure, see [`crypto_failure`]): signature →
//! nonce → PCR digest → counters forward → event-log replay (all in `vtpm::verify`), then
//! reference values and policy (here).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use vtpm::{Digest, Event, MonitorKind, QuoteBody, VerifyError};

use gw_proto::{component, manifest::ReferenceManifest, wire::PolicyDocument};

/// The EAR profile this controller emits.
pub const EAR_PROFILE: &str = "tag:github.com,2023:veraison/ear";

/// Trustworthiness tier (EAR `ear.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// No claim could be made (no evidence).
    None,
    /// Evidence matches reference values.
    Affirming,
    /// Acceptable with caveats (e.g. an insecure software monitor, an update in flight).
    Warning,
    /// Evidence contradicts reference values or failed verification.
    Contraindicated,
}

impl Tier {
    /// The lowercase name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::None => "none",
            Tier::Affirming => "affirming",
            Tier::Warning => "warning",
            Tier::Contraindicated => "contraindicated",
        }
    }
}

/// One component's appraisal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submod {
    /// Tier.
    #[serde(rename = "ear.status")]
    pub status: Tier,
    /// AR4SI trustworthiness vector claims (e.g. `executables: 2`).
    #[serde(rename = "ear.trustworthiness-vector")]
    pub vector: BTreeMap<String, i8>,
    /// Which reference values were used.
    #[serde(
        rename = "ear.appraisal-policy-id",
        skip_serializing_if = "Option::is_none"
    )]
    pub policy_id: Option<String>,
    /// Why, in words an operator can act on (absent when there is nothing to say).
    #[serde(rename = "gw.reasons", default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// An attestation result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ear {
    /// [`EAR_PROFILE`].
    pub eat_profile: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Verifier identity.
    #[serde(rename = "ear.verifier-id")]
    pub verifier: BTreeMap<String, String>,
    /// Worst tier of the submods.
    #[serde(rename = "ear.status")]
    pub status: Tier,
    /// The challenge nonce (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eat_nonce: Option<String>,
    /// Per-component results.
    pub submods: BTreeMap<String, Submod>,
    /// Quote counters `(boot, quote)` when the quote verified.
    #[serde(rename = "gw.counters", skip_serializing_if = "Option::is_none")]
    pub counters: Option<(u64, u64)>,
}

impl Ear {
    fn new(nonce: Option<&[u8; 32]>, now_s: i64) -> Self {
        let mut verifier = BTreeMap::new();
        verifier.insert("developer".into(), "gatewarden".into());
        verifier.insert(
            "build".into(),
            concat!("gw-controller ", env!("CARGO_PKG_VERSION")).into(),
        );
        Self {
            eat_profile: EAR_PROFILE.into(),
            iat: now_s,
            verifier,
            status: Tier::None,
            eat_nonce: nonce.map(hex::encode),
            submods: BTreeMap::new(),
            counters: None,
        }
    }

    fn put(&mut self, name: &str, sub: Submod) {
        self.status = self.status.max(sub.status);
        match self.submods.get_mut(name) {
            // A component measured several times: keep the worst finding, all reasons.
            Some(old) => {
                if sub.status > old.status {
                    old.status = sub.status;
                    old.vector = sub.vector;
                    old.policy_id = sub.policy_id;
                }
                for r in sub.reasons {
                    if !old.reasons.contains(&r) {
                        old.reasons.push(r);
                    }
                }
            }
            None => {
                self.submods.insert(name.into(), sub);
            }
        }
    }

    /// All reasons of non-affirming submods, `component: reason`.
    pub fn problems(&self) -> Vec<String> {
        self.submods
            .iter()
            .filter(|(_, s)| s.status > Tier::Affirming)
            .flat_map(|(n, s)| s.reasons.iter().map(move |r| format!("{n}: {r}")))
            .collect()
    }
}

/// The problems in a stored (JSON) result, `component: reason`, as [`Ear::problems`] gives
/// them for a typed one.
pub fn problems_in(ear: &serde_json::Value) -> Vec<String> {
    ear["submods"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, s)| s["ear.status"] != "affirming")
        .flat_map(|(n, s)| {
            s["gw.reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str())
                .map(move |r| format!("{n}: {r}"))
        })
        .collect()
}

fn sub(status: Tier, claim: &str, value: i8, reason: Option<String>) -> Submod {
    let mut vector = BTreeMap::new();
    vector.insert(claim.into(), value);
    Submod {
        status,
        vector,
        policy_id: None,
        reasons: reason.into_iter().collect(),
    }
}

/// Why a cryptographic check failed, named as an operator reads it. The nonce failure is
/// told apart using what the controller remembers of this gateway: an answer to an earlier
/// challenge with the counters of an already accepted quote is a **replayed quote**; a fresh
/// quote over an earlier nonce is a **reused nonce** (a precomputed or withheld answer).
pub fn crypto_failure(
    e: &VerifyError,
    quoted: Option<&QuoteBody>,
    earlier_nonces: &[[u8; 32]],
    last: Option<(u64, u64)>,
    nonce: &[u8; 32],
    now_s: i64,
) -> Ear {
    let mut ear = Ear::new(Some(nonce), now_s);
    let reason = match (e, quoted) {
        (VerifyError::NonceMismatch, Some(body)) if earlier_nonces.contains(&body.nonce) => {
            let c = (body.counters.boot, body.counters.quote);
            if last.is_some_and(|l| c <= l) {
                format!("replayed quote: answers an earlier challenge with counters {c:?}")
            } else {
                "reused nonce: quote made for an earlier challenge".into()
            }
        }
        (VerifyError::NonceMismatch, _) => "nonce mismatch: quote answers no challenge sent".into(),
        (VerifyError::BadSignature, _) => {
            "forged signature: quote not signed by the enrolled attestation key".into()
        }
        (VerifyError::CounterRollback { last, quoted }, _) => format!(
            "counter rollback: boot/quote counters {}/{} after {}/{}",
            quoted.boot, quoted.quote, last.boot, last.quote
        ),
        (other, _) => other.to_string(),
    };
    ear.put(
        "evidence",
        sub(Tier::Contraindicated, "instance-identity", 96, Some(reason)),
    );
    ear
}

/// A reference manifest prepared for appraisal: digests parsed once, looked up by component.
#[derive(Debug, Clone)]
pub struct Reference {
    /// Manifest id in the store.
    pub id: i64,
    /// `manifest:<id> <name> <version>`, the appraisal policy id it gives.
    pub label: String,
    allowed: HashMap<String, std::collections::HashSet<Digest>>,
    /// PCRs a quote from this image must cover (`ReferenceManifest::quoted_pcrs`).
    pub quoted_pcrs: Vec<u16>,
    /// Whether format-1 quotes are accepted from this image (migration).
    pub accept_format1: bool,
}

impl Reference {
    /// Prepare manifest `id`.
    pub fn new(id: i64, m: &ReferenceManifest) -> Self {
        let allowed = m
            .components
            .iter()
            .map(|(c, list)| {
                (
                    c.clone(),
                    list.iter().filter_map(|d| gw_proto::hex32(d)).collect(),
                )
            })
            .collect();
        Self {
            id,
            label: format!("manifest:{id} {} {}", m.name, m.version),
            allowed,
            quoted_pcrs: m.quoted_pcrs.clone(),
            accept_format1: m.accept_quote_format_1,
        }
    }

    fn allows(&self, component: &str, digest: &Digest) -> bool {
        self.allowed
            .get(component)
            .is_some_and(|set| set.contains(digest))
    }

    fn covers(&self, component: &str) -> bool {
        self.allowed.contains_key(component)
    }
}

/// Reference values a gateway may match.
pub type References<'a> = &'a [Reference];

/// What the controller sent as policy, for checking the policy and config measurements.
#[derive(Debug, Clone, Default)]
pub struct PolicyExpectation {
    /// The newest policy: version, SHA-256 of its body, and its document.
    pub latest: Option<(u64, Digest, PolicyDocument)>,
    /// Digests of every earlier version sent to this gateway → version.
    pub earlier: HashMap<Digest, u64>,
    /// The newest policy was sent less than an epoch or two ago: not yet measured is a warning.
    pub latest_in_flight: bool,
}

/// Appraise a quote that passed `vtpm::verify`.
pub fn appraise(
    body: &QuoteBody,
    log: &[Event],
    references: References<'_>,
    policy: &PolicyExpectation,
    now_s: i64,
) -> Ear {
    let mut ear = Ear::new(Some(&body.nonce), now_s);
    ear.counters = Some((body.counters.boot, body.counters.quote));

    // The monitor that holds the keys.
    ear.put(
        "monitor",
        match body.identity.kind {
            MonitorKind::Hypervisor => sub(Tier::Affirming, "hardware", 2, None),
            MonitorKind::InsecureSoftwareMonitor => sub(
                Tier::Warning,
                "hardware",
                32,
                Some(
                    "insecure software monitor: keys and PCRs are not isolated from the guest"
                        .into(),
                ),
            ),
        },
    );
    if body.log_overflowed {
        ear.put(
            "evidence",
            sub(
                Tier::Contraindicated,
                "instance-identity",
                96,
                Some("event log overflowed: measurements are missing".into()),
            ),
        );
    }

    // The last measurement of each controller-made config decides; binaries are checked
    // every time they were measured (a swapped binary stays visible after a restart).
    let mut last_config: BTreeMap<String, (Digest, &str)> = BTreeMap::new();
    for event in log {
        let Some(name) = component::name(event) else {
            continue;
        };
        if component::is_controller_config(&name) {
            last_config.insert(name, (event.digest, event.version.as_str()));
            continue;
        }
        ear.put(&name, appraise_binary(&name, &event.digest, references));
    }

    appraise_quoted_pcrs(&mut ear, body, log, references);
    appraise_stages(&mut ear, log, policy);
    appraise_policy(&mut ear, &last_config, policy);
    ear
}

/// Each data-path program must hold the stage the policy's chains give it: HOP_KEY_REGISTER
/// records `(chain, stage, hops)` in the event (`gw_abi::stage_assignment`), and the policy's
/// `datapath` entry lists every chain's middleboxes in order after the vSwitch at stage 0. A
/// genuine firewall registered at the IDS's stage (so packets skip one of them) is named.
/// Events without an assignment (images before 2026-12-02) are not judged here.
fn appraise_stages(ear: &mut Ear, log: &[Event], policy: &PolicyExpectation) {
    let Some((_, _, doc)) = &policy.latest else {
        return;
    };
    let dp = doc
        .configs
        .get("datapath")
        .and_then(|t| serde_json::from_str::<gw_proto::wire::DatapathConfig>(t).ok())
        .unwrap_or_default();
    let hops = dp.middleboxes.len() + 1;
    for e in log {
        let holder = match e.kind {
            vtpm::ComponentKind::VSwitch => "vswitch",
            vtpm::ComponentKind::MiddleboxBinary => e.name.as_str(),
            _ => continue,
        };
        let Some((chain, stage, h)) = gw_abi::parse_stage_assignment(&e.version) else {
            continue;
        };
        let expected = match stage {
            0 => Some("vswitch"),
            s => dp.middleboxes.get(s as usize - 1).map(String::as_str),
        };
        let key = format!("stage:c{chain:08x}s{stage}");
        if usize::from(h) != hops {
            // No unregister: a chain of an earlier layout stays in the log until reboot, so a
            // hop count the policy does not use is a warning, never affirmed.
            ear.put(
                &key,
                sub(
                    Tier::Warning,
                    "executables",
                    32,
                    Some(format!(
                        "{holder} holds stage {stage}/{h} of chain {chain:08x}, but the policy's chains have {hops} hops: an earlier layout, or a chain that skips middleboxes"
                    )),
                ),
            );
        } else if expected != Some(holder) {
            ear.put(
                &key,
                sub(
                    Tier::Contraindicated,
                    "executables",
                    96,
                    Some(format!(
                        "{holder} holds stage {stage} of chain {chain:08x}; the policy puts {} there",
                        expected.unwrap_or("nothing")
                    )),
                ),
            );
        }
    }
}

/// The manifests whose hypervisor the log names decide which PCRs the quote must cover: a log
/// (and so a quote selection) without one of them hides a measurement the image always makes.
fn appraise_quoted_pcrs(
    ear: &mut Ear,
    body: &QuoteBody,
    log: &[Event],
    references: References<'_>,
) {
    let hv: Vec<&Digest> = log
        .iter()
        .filter(|e| e.kind == vtpm::ComponentKind::Hypervisor)
        .map(|e| &e.digest)
        .collect();
    let mut required: Vec<u16> = references
        .iter()
        .filter(|r| hv.iter().any(|d| r.allows("hypervisor", d)))
        .flat_map(|r| r.quoted_pcrs.iter().copied())
        .collect();
    // No hypervisor measurement at all: every manifest's boot chain is missing.
    if hv.is_empty() {
        required.extend(
            references
                .iter()
                .flat_map(|r| r.quoted_pcrs.iter().copied()),
        );
    }
    required.sort_unstable();
    required.dedup();
    for pcr in required {
        let quoted = vtpm::PcrIndex::new(pcr).is_some_and(|i| body.selection.contains(i));
        if !quoted {
            ear.put(
                &format!("pcr:{pcr}"),
                sub(
                    Tier::Contraindicated,
                    "instance-identity",
                    96,
                    Some(format!(
                        "PCR {pcr} is not quoted: the reference manifest requires it, so the log hides a measurement"
                    )),
                ),
            );
        }
    }
}

fn appraise_binary(name: &str, digest: &Digest, references: References<'_>) -> Submod {
    let mut matched = references.iter().filter(|r| r.allows(name, digest));
    if let Some(first) = matched.next() {
        let mut s = sub(Tier::Affirming, "executables", 2, None);
        let mut id = first.label.clone();
        for r in matched {
            id.push_str(", ");
            id.push_str(&r.label);
        }
        s.policy_id = Some(id);
        return s;
    }
    let short = &hex::encode(digest)[..16];
    // A middlebox names itself when it registers; a name no manifest lists is no excuse on a
    // gateway whose manifests describe its data path.
    let data_path_described = references
        .iter()
        .any(|r| r.allowed.keys().any(|c| c.starts_with("middlebox:")));
    if name.starts_with("middlebox:")
        && data_path_described
        && !references.iter().any(|r| r.covers(name))
    {
        return sub(
            Tier::Contraindicated,
            "executables",
            96,
            Some(format!(
                "unknown middlebox: no allowed reference manifest lists a middlebox of this name (digest {short}…)"
            )),
        );
    }
    if references.iter().any(|r| r.covers(name)) {
        sub(
            Tier::Contraindicated,
            "executables",
            96,
            Some(format!(
                "modified: digest {short}… is not in any allowed reference manifest"
            )),
        )
    } else {
        sub(
            Tier::Warning,
            "executables",
            33,
            Some(format!(
                "no reference value for this component (digest {short}…)"
            )),
        )
    }
}

fn appraise_policy(
    ear: &mut Ear,
    measured: &BTreeMap<String, (Digest, &str)>,
    policy: &PolicyExpectation,
) {
    let Some((version, digest, doc)) = &policy.latest else {
        // No policy sent: nothing controller-made may be running.
        for name in measured.keys() {
            ear.put(
                name,
                sub(
                    Tier::Contraindicated,
                    "configuration",
                    96,
                    Some("measured, but this controller sent no policy".into()),
                ),
            );
        }
        return;
    };
    let policy_id = format!("policy:v{version}");
    let with_id = |mut s: Submod| {
        s.policy_id = Some(policy_id.clone());
        s
    };

    // The policy itself (POLICY_SET measures the body it verified).
    let p = match measured.get("policy") {
        Some((d, _)) if d == digest => sub(Tier::Affirming, "configuration", 2, None),
        Some((d, _)) => match policy.earlier.get(d) {
            Some(old) if policy.latest_in_flight => sub(
                Tier::Warning,
                "configuration",
                32,
                Some(format!("policy v{old} running, v{version} in flight")),
            ),
            Some(old) => sub(
                Tier::Contraindicated,
                "configuration",
                96,
                Some(format!("stale policy: v{old} running, v{version} was sent")),
            ),
            None => sub(
                Tier::Contraindicated,
                "configuration",
                96,
                Some("running policy was never sent by this controller".into()),
            ),
        },
        None if policy.latest_in_flight => sub(
            Tier::Warning,
            "configuration",
            32,
            Some(format!("policy v{version} not applied yet")),
        ),
        None => sub(
            Tier::Contraindicated,
            "configuration",
            96,
            Some(format!("policy v{version} was sent but is not running")),
        ),
    };
    ear.put("policy", with_id(p));

    // Each middlebox config compiled from the policy.
    let policy_current = measured.get("policy").is_some_and(|(d, _)| d == digest);
    for (mb, text) in &doc.configs {
        let name = format!("config:{mb}");
        let want = vtpm::sha256(text.as_bytes());
        // Hop signing off is allowed (overhead measurements) but never affirmed: P_comm2 is
        // not enforced while it lasts.
        let signing_off = mb == "datapath"
            && serde_json::from_str::<gw_proto::wire::DatapathConfig>(text)
                .is_ok_and(|dp| !dp.signing);
        let s = match measured.get(&name) {
            Some((d, _)) if *d == want && signing_off => sub(
                Tier::Warning,
                "configuration",
                32,
                Some("data-path hop signing is off: packets are not tagged or checked".into()),
            ),
            Some((d, _)) if *d == want => sub(Tier::Affirming, "configuration", 2, None),
            Some(_) if !policy_current && policy.latest_in_flight => sub(
                Tier::Warning,
                "configuration",
                32,
                Some(format!("config from before policy v{version} still loaded")),
            ),
            Some((d, _)) => sub(
                Tier::Contraindicated,
                "configuration",
                96,
                Some(format!(
                    "modified: digest {}… differs from the config compiled for policy v{version}",
                    &hex::encode(d)[..16]
                )),
            ),
            None if policy.latest_in_flight => sub(
                Tier::Warning,
                "configuration",
                32,
                Some("not loaded yet".into()),
            ),
            None => sub(
                Tier::Contraindicated,
                "configuration",
                96,
                Some(format!("policy v{version} config is not loaded")),
            ),
        };
        ear.put(&name, with_id(s));
    }
    for name in measured.keys() {
        let known = name == "policy"
            || name
                .strip_prefix("config:")
                .is_some_and(|mb| doc.configs.contains_key(mb));
        if !known {
            ear.put(
                name,
                with_id(sub(
                    Tier::Contraindicated,
                    "configuration",
                    96,
                    Some("config the policy does not contain".into()),
                )),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vtpm::{ComponentKind, Counters, MonitorIdentity, PcrIndex, PcrSelection};

    fn body(kind: MonitorKind) -> QuoteBody {
        QuoteBody {
            format: vtpm::quote::QUOTE_FORMAT_VERSION,
            identity: MonitorIdentity::new(kind, "test", [0; 32]),
            nonce: [7; 32],
            selection: PcrSelection::none(),
            pcr_digest: [0; 32],
            counters: Counters { boot: 1, quote: 5 },
            event_count: 0,
            log_overflowed: false,
            log_digest: Some([0; 32]),
        }
    }

    fn ev(pcr: u16, kind: ComponentKind, name: &str, digest: [u8; 32]) -> Event {
        Event::new(PcrIndex::new(pcr).unwrap(), digest, kind, name, "1")
    }

    fn refs() -> Vec<Reference> {
        let mut m = ReferenceManifest::new("img", "1", "qemu-virt");
        m.allow("hypervisor", &[1; 32]).allow("kernel", &[2; 32]);
        vec![Reference::new(1, &m)]
    }

    fn doc(version: u64, firewall: &str) -> PolicyDocument {
        let mut configs = BTreeMap::new();
        configs.insert("firewall".to_string(), firewall.to_string());
        PolicyDocument {
            gateway_id: "gw".into(),
            version,
            configs,
        }
    }

    #[test]
    fn stage_assignments_must_follow_the_policys_chains() {
        let mut configs = BTreeMap::new();
        configs.insert(
            "datapath".to_string(),
            r#"{"signing":true,"middleboxes":["firewall","ids"]}"#.to_string(),
        );
        let policy = PolicyExpectation {
            latest: Some((
                1,
                [0; 32],
                PolicyDocument {
                    gateway_id: "gw".into(),
                    version: 1,
                    configs,
                },
            )),
            ..Default::default()
        };
        let at = |kind, name: &str, chain, stage, hops| {
            let mut e = ev(32, kind, name, [4; 32]);
            e.version =
                vtpm::EventVersion::try_from(gw_abi::stage_assignment(chain, stage, hops).as_str())
                    .unwrap();
            e
        };
        let honest = [
            at(ComponentKind::VSwitch, "vswitch", 7, 0, 3),
            at(ComponentKind::MiddleboxBinary, "firewall", 7, 1, 3),
            at(ComponentKind::MiddleboxBinary, "ids", 7, 2, 3),
        ];
        let ear = appraise(&body(MonitorKind::Hypervisor), &honest, &[], &policy, 0);
        assert!(
            !ear.submods.keys().any(|k| k.starts_with("stage:")),
            "{:?}",
            ear.submods
        );
        // The firewall at the IDS's stage: packets would skip the IDS.
        let swapped = [
            at(ComponentKind::VSwitch, "vswitch", 7, 0, 3),
            at(ComponentKind::MiddleboxBinary, "firewall", 7, 2, 3),
        ];
        let ear = appraise(&body(MonitorKind::Hypervisor), &swapped, &[], &policy, 0);
        assert_eq!(
            ear.submods["stage:c00000007s2"].status,
            Tier::Contraindicated
        );
        // A chain of another layout (an earlier policy's, or one that skips a middlebox).
        let short = [at(ComponentKind::MiddleboxBinary, "firewall", 7, 1, 2)];
        let ear = appraise(&body(MonitorKind::Hypervisor), &short, &[], &policy, 0);
        assert_eq!(ear.submods["stage:c00000007s1"].status, Tier::Warning);
    }

    #[test]
    fn the_manifest_not_the_log_decides_which_pcrs_are_quoted() {
        let mut m = ReferenceManifest::new("img", "1", "qemu-virt");
        m.allow("hypervisor", &[1; 32]).allow("kernel", &[2; 32]);
        m.quoted_pcrs = vec![1, 3];
        let refs = vec![Reference::new(1, &m)];
        let log = [
            ev(1, ComponentKind::Hypervisor, "hv", [1; 32]),
            ev(3, ComponentKind::GuestKernel, "k", [2; 32]),
        ];
        let with = |pcrs: &[u16]| {
            let mut b = body(MonitorKind::Hypervisor);
            b.selection = PcrSelection::from_indices(pcrs.iter().copied()).unwrap();
            b
        };
        // The benign twin: both required PCRs quoted, nothing named.
        let ear = appraise(
            &with(&[1, 3]),
            &log,
            &refs,
            &PolicyExpectation::default(),
            0,
        );
        assert!(
            !ear.submods.keys().any(|k| k.starts_with("pcr:")),
            "{:?}",
            ear.submods
        );
        assert_eq!(ear.status, Tier::Affirming);
        // A log (and so a selection) without the kernel's PCR hides a measurement.
        let ear = appraise(
            &with(&[1]),
            &log[..1],
            &refs,
            &PolicyExpectation::default(),
            0,
        );
        assert_eq!(ear.submods["pcr:3"].status, Tier::Contraindicated);
        assert_eq!(ear.status, Tier::Contraindicated);
        // No hypervisor measurement at all: every manifest's boot chain is required.
        let ear = appraise(
            &with(&[3]),
            &log[1..],
            &refs,
            &PolicyExpectation::default(),
            0,
        );
        assert_eq!(ear.submods["pcr:1"].status, Tier::Contraindicated);
    }

    #[test]
    fn binaries_are_affirmed_modified_or_unknown() {
        let log = [
            ev(1, ComponentKind::Hypervisor, "hv", [1; 32]),
            ev(3, ComponentKind::GuestKernel, "k", [9; 32]),
            ev(5, ComponentKind::GuestDtb, "dtb", [3; 32]),
        ];
        let ear = appraise(
            &body(MonitorKind::Hypervisor),
            &log,
            &refs(),
            &PolicyExpectation::default(),
            0,
        );
        assert_eq!(ear.submods["monitor"].status, Tier::Affirming);
        assert_eq!(ear.submods["hypervisor"].status, Tier::Affirming);
        assert_eq!(
            ear.submods["hypervisor"].policy_id.as_deref(),
            Some("manifest:1 img 1")
        );
        assert_eq!(ear.submods["kernel"].status, Tier::Contraindicated);
        assert!(ear.submods["kernel"].reasons[0].starts_with("modified"));
        assert_eq!(ear.submods["dtb"].status, Tier::Warning);
        assert_eq!(ear.status, Tier::Contraindicated);
        assert_eq!(ear.counters, Some((1, 5)));
    }

    #[test]
    fn a_middlebox_no_manifest_names_is_contraindicated_when_the_data_path_is_described() {
        let log = [ev(40, ComponentKind::MiddleboxBinary, "evil", [6; 32])];
        let body = body(MonitorKind::Hypervisor);
        // No manifest describes a data path: only a warning (nothing to compare with).
        let ear = appraise(&body, &log, &refs(), &PolicyExpectation::default(), 0);
        assert_eq!(ear.submods["middlebox:evil"].status, Tier::Warning);
        // One does: a middlebox it does not list is contraindicated.
        let mut m = ReferenceManifest::new("img", "2", "qemu-virt");
        m.allow("middlebox:firewall", &[5; 32]);
        let mut with_dp = refs();
        with_dp.push(Reference::new(7, &m));
        let ear = appraise(&body, &log, &with_dp, &PolicyExpectation::default(), 0);
        assert_eq!(ear.submods["middlebox:evil"].status, Tier::Contraindicated);
        assert!(
            ear.submods["middlebox:evil"].reasons[0].starts_with("unknown middlebox"),
            "{:?}",
            ear.submods["middlebox:evil"]
        );
    }

    #[test]
    fn software_monitor_and_overflow_are_reported() {
        let mut b = body(MonitorKind::InsecureSoftwareMonitor);
        let ear = appraise(&b, &[], &refs(), &PolicyExpectation::default(), 0);
        assert_eq!(ear.status, Tier::Warning);
        assert_eq!(ear.submods["monitor"].vector["hardware"], 32);
        b.log_overflowed = true;
        let ear = appraise(&b, &[], &refs(), &PolicyExpectation::default(), 0);
        assert_eq!(ear.submods["evidence"].status, Tier::Contraindicated);
    }

    #[test]
    fn policy_and_configs_must_be_the_ones_sent() {
        let d = doc(2, "fw-v2");
        let body_bytes = serde_json::to_vec(&d).unwrap();
        let old = serde_json::to_vec(&doc(1, "fw-v1")).unwrap();
        let expectation = |in_flight| PolicyExpectation {
            latest: Some((2, vtpm::sha256(&body_bytes), d.clone())),
            earlier: [(vtpm::sha256(&old), 1)].into_iter().collect(),
            latest_in_flight: in_flight,
        };
        let b = body(MonitorKind::Hypervisor);
        let policy_ev = |bytes: &[u8]| ev(11, ComponentKind::Policy, "policy", vtpm::sha256(bytes));
        let cfg_ev = |text: &str| {
            ev(
                512,
                ComponentKind::MiddleboxConfig,
                "firewall",
                vtpm::sha256(text.as_bytes()),
            )
        };

        // Running what was sent.
        let ear = appraise(
            &b,
            &[policy_ev(&body_bytes), cfg_ev("fw-v2")],
            &[],
            &expectation(false),
            0,
        );
        assert_eq!(ear.submods["policy"].status, Tier::Affirming);
        assert_eq!(ear.submods["config:firewall"].status, Tier::Affirming);
        // The old version while the new one is in flight: a warning; after: contraindicated.
        let log = [policy_ev(&old), cfg_ev("fw-v1")];
        let ear = appraise(&b, &log, &[], &expectation(true), 0);
        assert_eq!(ear.status, Tier::Warning);
        let ear = appraise(&b, &log, &[], &expectation(false), 0);
        assert_eq!(ear.submods["policy"].status, Tier::Contraindicated);
        assert!(ear.submods["policy"].reasons[0].starts_with("stale policy"));
        // A config that was never compiled, and one the policy does not contain.
        let log = [
            policy_ev(&body_bytes),
            cfg_ev("allow all"),
            ev(513, ComponentKind::MiddleboxConfig, "rogue", [4; 32]),
        ];
        let ear = appraise(&b, &log, &[], &expectation(false), 0);
        assert!(ear.submods["config:firewall"].reasons[0].starts_with("modified"));
        assert_eq!(ear.submods["config:rogue"].status, Tier::Contraindicated);
        // A policy no controller sent.
        let ear = appraise(&b, &[policy_ev(b"forged")], &[], &expectation(false), 0);
        assert!(ear.submods["policy"].reasons[0].contains("never sent"));
        // Configs without any policy sent.
        let ear = appraise(&b, &[cfg_ev("x")], &[], &PolicyExpectation::default(), 0);
        assert_eq!(ear.submods["config:firewall"].status, Tier::Contraindicated);
    }

    #[test]
    fn signing_off_is_a_warning_never_affirmed() {
        let b = body(MonitorKind::Hypervisor);
        for (signing, tier) in [(true, Tier::Affirming), (false, Tier::Warning)] {
            let dp = serde_json::to_string(&gw_proto::wire::DatapathConfig {
                signing,
                ..Default::default()
            })
            .unwrap();
            let mut d = doc(3, "fw");
            d.configs.insert("datapath".into(), dp.clone());
            let bytes = serde_json::to_vec(&d).unwrap();
            let exp = PolicyExpectation {
                latest: Some((3, vtpm::sha256(&bytes), d.clone())),
                ..Default::default()
            };
            let log = [
                ev(11, ComponentKind::Policy, "policy", vtpm::sha256(&bytes)),
                ev(
                    512,
                    ComponentKind::MiddleboxConfig,
                    "firewall",
                    vtpm::sha256(b"fw"),
                ),
                ev(
                    513,
                    ComponentKind::MiddleboxConfig,
                    "datapath",
                    vtpm::sha256(dp.as_bytes()),
                ),
            ];
            let ear = appraise(&b, &log, &[], &exp, 0);
            assert_eq!(
                ear.submods["config:datapath"].status, tier,
                "signing {signing}"
            );
            if !signing {
                assert!(ear.submods["config:datapath"].reasons[0].contains("signing is off"));
            }
        }
    }

    #[test]
    fn nonce_failures_are_told_apart() {
        let b = body(MonitorKind::Hypervisor);
        let reason = |earlier: &[[u8; 32]], last| {
            crypto_failure(
                &VerifyError::NonceMismatch,
                Some(&b),
                earlier,
                last,
                &[8; 32],
                0,
            )
            .submods["evidence"]
                .reasons[0]
                .clone()
        };
        assert!(reason(&[[7; 32]], Some((1, 5))).starts_with("replayed quote"));
        assert!(reason(&[[7; 32]], Some((1, 4))).starts_with("reused nonce"));
        assert!(reason(&[[6; 32]], Some((1, 4))).starts_with("nonce mismatch"));
        let e = crypto_failure(&VerifyError::BadSignature, None, &[], None, &[8; 32], 0);
        assert_eq!(e.status, Tier::Contraindicated);
        assert!(e.problems()[0].starts_with("evidence: forged signature"));
    }
}
