//! The agent listener: enrollment, one session per connected gateway, epoch challenges,
//! batched verification, and the sweeper that tells "unreachable" from "failed".

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use ed25519_dalek::VerifyingKey;
use rand::Rng;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
    time::{Instant, sleep_until, timeout},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use vtpm::{
    Counters, Digest, Event, MonitorKind, PcrSelection, SignedQuote, Verified, VerifyError,
};

use gw_proto::wire::{
    AgentMsg, ControllerMsg, EnrollRequest, EvidenceMsg, PROTOCOL_VERSION, SignedPolicy,
    enroll_binding, read_msg, write_msg,
};

use crate::{
    Controller, ResultEvent,
    appraise::{self, Ear, PolicyExpectation, Tier},
    pki,
    store::{GatewayRow, NewResult, StoreError, now_ms},
};

/// How long a peer may take for a handshake or its first message.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Nonces remembered per session to name replays.
const RECENT_NONCES: usize = 32;

/// Commands to a connected gateway's session.
#[derive(Debug)]
pub enum SessionCmd {
    /// The gateway's record changed, here or on another replica (manifest pins, a new
    /// policy): reload it, and send the latest policy if it is unconfirmed and not sent yet.
    Reload,
}

// ---------------------------------------------------------------------------------------------
// Batched verification.

struct VerifyJob {
    quote: Vec<u8>,
    pcrs: Vec<Digest>,
    log: Vec<Event>,
    key: VerifyingKey,
    nonce: [u8; 32],
    selection: PcrSelection,
    last: Option<Counters>,
    accept_format1: bool,
    reply: oneshot::Sender<Result<Verified, VerifyError>>,
}

/// Handle of the verifier task, which checks the quotes of all sessions in ed25519 batches.
#[derive(Clone)]
pub(crate) struct VerifierHandle(mpsc::Sender<VerifyJob>);

/// Start the verifier: whatever quotes are waiting (up to 64) are verified as one batch on a
/// blocking thread.
pub(crate) fn spawn_verifier() -> VerifierHandle {
    let (tx, mut rx) = mpsc::channel::<VerifyJob>(4096);
    tokio::spawn(async move {
        let mut jobs = Vec::with_capacity(64);
        while rx.recv_many(&mut jobs, 64).await > 0 {
            let batch = std::mem::take(&mut jobs);
            let done = tokio::task::spawn_blocking(move || {
                let items: Vec<_> = batch
                    .iter()
                    .map(|j| {
                        (
                            vtpm::Evidence {
                                quote: &j.quote,
                                pcrs: &j.pcrs,
                                log: &j.log,
                            },
                            vtpm::Expectation {
                                key: &j.key,
                                nonce: &j.nonce,
                                selection: &j.selection,
                                last: j.last,
                                accept_format1: j.accept_format1,
                            },
                        )
                    })
                    .collect();
                let results = vtpm::verify_batch(&items);
                drop(items);
                batch.into_iter().zip(results).collect::<Vec<_>>()
            })
            .await;
            match done {
                Ok(pairs) => {
                    for (job, r) in pairs {
                        let _ = job.reply.send(r);
                    }
                }
                Err(e) => tracing::error!("verifier thread failed: {e}"),
            }
        }
    });
    VerifierHandle(tx)
}

impl VerifierHandle {
    async fn verify(&self, job: VerifyJob) -> Option<Result<Verified, VerifyError>> {
        let (reply, rx) = oneshot::channel();
        self.0.send(VerifyJob { reply, ..job }).await.ok()?;
        rx.await.ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Listener.

/// Serve gateway agents on `listener` until the process ends.
pub async fn serve(ctl: Arc<Controller>, listener: TcpListener) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(ctl.pki.agent_tls()?);
    tokio::spawn(sweeper(ctl.clone()));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let ctl = ctl.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(ctl, acceptor, tcp).await {
                tracing::debug!("{peer}: {e:#}");
            }
        });
    }
}

async fn connection(
    ctl: Arc<Controller>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
) -> anyhow::Result<()> {
    let tls: TlsStream<TcpStream> = timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await??;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec());
    let (mut r, mut w) = tokio::io::split(tls);
    match cert {
        None => enroll(&ctl, &mut r, &mut w).await,
        Some(cert) => session(ctl, &cert, r, w).await,
    }
}

async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, reason: String) -> anyhow::Result<()> {
    let _ = write_msg(
        w,
        &ControllerMsg::Refused {
            reason: reason.clone(),
        },
    )
    .await;
    anyhow::bail!("refused: {reason}")
}

// ---------------------------------------------------------------------------------------------
// Enrollment.

/// What an enrollment request proves, once checked.
struct Proven {
    ak: VerifyingKey,
    gk: VerifyingKey,
    monitor: MonitorKind,
}

fn check_proofs(req: &EnrollRequest) -> Result<Proven, String> {
    let e = &req.endorsement;
    gw_proto::endorse::check_id(&e.gateway_id).map_err(|x| x.to_string())?;
    let (ak, gk) = e.keys().map_err(|x| x.to_string())?;
    let binding = enroll_binding(&e.gateway_id, &req.csr);
    let quote = SignedQuote::decode(&req.quote).map_err(|_| "enrollment quote is malformed")?;
    if !quote.verify_signature(&ak) {
        return Err("enrollment quote is not signed by the attestation key".into());
    }
    let body = quote
        .body()
        .map_err(|_| "enrollment quote body is malformed")?;
    if body.nonce != binding {
        return Err("enrollment quote does not bind this request".into());
    }
    gk.verify_strict(
        &gw_abi::report_signing_input(&binding),
        &req.agent_signature,
    )
    .map_err(|_| "enrollment is not signed by the agent key")?;
    Ok(Proven {
        ak,
        gk,
        monitor: body.identity.kind,
    })
}

fn monitor_name(kind: MonitorKind) -> &'static str {
    match kind {
        MonitorKind::Hypervisor => "hypervisor",
        MonitorKind::InsecureSoftwareMonitor => "insecure-software-monitor",
    }
}

async fn enroll<R, W>(ctl: &Controller, r: &mut R, w: &mut W) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let msg: AgentMsg = timeout(HANDSHAKE_TIMEOUT, read_msg(r)).await??;
    let AgentMsg::Enroll(req) = msg else {
        return refuse(
            w,
            "a connection without a client certificate may only enroll".into(),
        )
        .await;
    };
    let id = req.endorsement.gateway_id.clone();
    let proven = match check_proofs(&req) {
        Ok(p) => p,
        Err(reason) => {
            ctl.metrics.enrollment("refused");
            return refuse(w, format!("enrollment of {id:?}: {reason}")).await;
        }
    };

    let existing = ctl.store.gateway(&id).await?;
    if let Some(why) = existing.as_ref().and_then(revoked) {
        ctl.metrics.enrollment("refused");
        return refuse(w, why).await;
    }
    let row = match existing {
        Some(row) => {
            if row.attestation_key != hex::encode(proven.ak.as_bytes())
                || row.agent_key != hex::encode(proven.gk.as_bytes())
            {
                ctl.metrics.enrollment("refused");
                let reason = format!(
                    "gateway key swap: {id} is enrolled with attestation key {}…, this request has {}…",
                    &row.attestation_key[..16],
                    &hex::encode(proven.ak.as_bytes())[..16]
                );
                let mut ear = empty_ear();
                put_reason(&mut ear, "identity", Tier::Contraindicated, &reason);
                record(ctl, &id, ear, None).await?;
                return refuse(w, reason).await;
            }
            row
        }
        None => {
            // The vendor key whose signature the endorsement carries, if it verifies.
            let vendor = req.endorsement.verify().ok().map(|v| *v.as_bytes());
            if let Some(v) = &vendor
                && let Some(why) = ctl.store.vendor_revoked(v).await?
            {
                ctl.metrics.enrollment("refused");
                let reason = format!(
                    "enrollment of {id}: endorsed by a vendor key whose endorsements were revoked ({why})"
                );
                return refuse(w, reason).await;
            }
            let vendors = ctl.store.vendors().await?;
            let endorsed = vendor.filter(|v| vendors.iter().any(|(k, _)| k == v));
            let inserted = ctl
                .store
                .insert_gateway(
                    &id,
                    proven.ak.as_bytes(),
                    proven.gk.as_bytes(),
                    endorsed.as_ref(),
                    monitor_name(proven.monitor),
                )
                .await;
            if let Err(e) = inserted {
                ctl.metrics.enrollment("refused");
                tracing::warn!("enrollment of {id}: {e}");
                return refuse(
                    w,
                    format!(
                        "enrollment of {id}: attestation key already enrolled under another id"
                    ),
                )
                .await;
            }
            tracing::info!(
                "gateway {id} enrolled ({}, {})",
                monitor_name(proven.monitor),
                if endorsed.is_some() {
                    "endorsed by a trusted vendor"
                } else {
                    "pending operator approval"
                }
            );
            ctl.store
                .gateway(&id)
                .await?
                .ok_or(StoreError::WriterGone)?
        }
    };

    if row.enrollment != "accepted" {
        ctl.metrics.enrollment("pending");
        let retry_after_s = ctl.settings.epoch.as_secs().clamp(1, 30) as u32;
        write_msg(w, &ControllerMsg::EnrollPending { retry_after_s }).await?;
        return Ok(());
    }
    let cert = ctl.pki.issue_client_cert(&id, &req.csr)?;
    ctl.store.set_cert(&id, &pki::fingerprint(&cert)).await?;
    ctl.metrics.enrollment("accepted");
    write_msg(w, &ControllerMsg::Enrolled { certificate: cert }).await?;
    Ok(())
}

fn put_reason(ear: &mut Ear, component: &str, tier: Tier, reason: &str) {
    ear.status = ear.status.max(tier);
    ear.submods.insert(
        component.into(),
        appraise::Submod {
            status: tier,
            vector: Default::default(),
            policy_id: None,
            reasons: vec![reason.into()],
        },
    );
}

/// Persist a result, count it and announce it.
async fn record(
    ctl: &Controller,
    id: &str,
    ear: Ear,
    counters: Option<(u64, u64)>,
) -> Result<bool, StoreError> {
    let status = ear.status.as_str().to_owned();
    let reasons = ear.problems();
    let at = now_ms();
    let changed = ctl
        .store
        .record(NewResult::new(id, at, &status, &ear, counters))
        .await?;
    announce(ctl, id, &status, changed, reasons, at);
    Ok(changed)
}

fn announce(
    ctl: &Controller,
    id: &str,
    status: &str,
    changed: bool,
    reasons: Vec<String>,
    at: i64,
) {
    ctl.metrics.result(status);
    let _ = ctl.results.send(ResultEvent {
        gateway_id: id.into(),
        status: status.into(),
        changed,
        reasons,
        at,
    });
}

// ---------------------------------------------------------------------------------------------
// Sessions.

struct SessionState {
    id: String,
    key: VerifyingKey,
    /// The trusted agent's key: reports must be signed with it.
    agent_key: VerifyingKey,
    last: Option<(u64, u64)>,
    recent: VecDeque<[u8; 32]>,
    /// What the gateway should be running; reloaded when a policy is sent or answered.
    policy: Option<PolicyExpectation>,
    /// Manifests the operator pinned this gateway to (`None`: any); reloaded on
    /// [`SessionCmd::Reload`].
    pins: Option<Vec<i64>>,
    /// The newest policy version sent in this session (0: none).
    sent_policy: u64,
}

async fn session(
    ctl: Arc<Controller>,
    cert: &[u8],
    mut r: ReadHalf<TlsStream<TcpStream>>,
    mut w: WriteHalf<TlsStream<TcpStream>>,
) -> anyhow::Result<()> {
    let fp = pki::fingerprint(cert);
    let Some(row) = ctl.store.gateway_by_cert(&fp).await? else {
        return refuse(
            &mut w,
            "client certificate is not (or no longer) valid".into(),
        )
        .await;
    };
    if row.enrollment != "accepted" {
        return refuse(&mut w, format!("{} is not approved", row.id)).await;
    }
    let hello: AgentMsg = timeout(HANDSHAKE_TIMEOUT, read_msg(&mut r)).await??;
    match hello {
        AgentMsg::Hello {
            protocol,
            agent_version,
        } if protocol == PROTOCOL_VERSION => {
            ctl.store.set_agent_version(&row.id, &agent_version).await?;
        }
        AgentMsg::Hello { protocol, .. } => {
            return refuse(
                &mut w,
                format!("protocol {protocol} not supported (controller speaks {PROTOCOL_VERSION})"),
            )
            .await;
        }
        _ => return refuse(&mut w, "expected Hello".into()).await,
    }

    // Reading in its own task keeps the loop below free to wait on timers and commands.
    let (inbox_tx, mut inbox) = mpsc::channel::<AgentMsg>(16);
    let reader = tokio::spawn(async move {
        while let Ok(m) = read_msg::<_, AgentMsg>(&mut r).await {
            if inbox_tx.send(m).await.is_err() {
                break;
            }
        }
    });
    let (cmd_tx, mut cmds) = mpsc::channel(8);
    ctl.sessions
        .lock()
        .await
        .insert(row.id.clone(), cmd_tx.clone());
    ctl.metrics.connected.inc();
    tracing::info!("gateway {} connected", row.id);

    let result = run_session(&ctl, &row, &mut w, &mut inbox, &mut cmds).await;

    reader.abort();
    ctl.metrics.connected.dec();
    let mut sessions = ctl.sessions.lock().await;
    if sessions
        .get(&row.id)
        .is_some_and(|s| s.same_channel(&cmd_tx))
    {
        sessions.remove(&row.id);
    }
    tracing::info!("gateway {} disconnected", row.id);
    result
}

fn jittered(ctl: &Controller) -> Duration {
    let epoch = ctl.settings.epoch.as_secs_f64();
    let j = ctl.settings.jitter.clamp(0.0, 0.9);
    let f = 1.0 + rand::rng().random_range(-j..=j);
    Duration::from_secs_f64(epoch * f)
}

async fn run_session<W: AsyncWrite + Unpin>(
    ctl: &Controller,
    row: &GatewayRow,
    w: &mut W,
    inbox: &mut mpsc::Receiver<AgentMsg>,
    cmds: &mut mpsc::Receiver<SessionCmd>,
) -> anyhow::Result<()> {
    let key_bytes = gw_proto::hex32(&row.attestation_key).ok_or(StoreError::Corrupt("key"))?;
    let agent_bytes = gw_proto::hex32(&row.agent_key).ok_or(StoreError::Corrupt("key"))?;
    let mut st = SessionState {
        id: row.id.clone(),
        key: VerifyingKey::from_bytes(&key_bytes)?,
        agent_key: VerifyingKey::from_bytes(&agent_bytes)?,
        last: row.last_counters,
        recent: VecDeque::new(),
        policy: None,
        pins: row.manifests.clone(),
        sent_policy: 0,
    };
    // A policy the gateway has not confirmed yet goes out first.
    send_unconfirmed_policy(ctl, &mut st, w).await?;

    // The first challenge comes soon after connecting, spread over a tenth of an epoch.
    let first = ctl
        .settings
        .epoch
        .mul_f64(rand::rng().random_range(0.0..0.1));
    let mut next = Instant::now() + first;
    let mut pending: Option<([u8; 32], Instant)> = None;
    let mut missed = 0u32;
    loop {
        let deadline = pending.map(|(_, d)| d).unwrap_or(next);
        tokio::select! {
            _ = sleep_until(deadline) => {
                if pending.take().is_some() {
                    missed += 1;
                    ctl.metrics.missed.inc();
                    if missed >= ctl.settings.unreachable_after {
                        unreachable(ctl, &st.id, missed).await?;
                    }
                    next = Instant::now();
                } else {
                    let mut nonce = [0u8; 32];
                    getrandom::fill(&mut nonce)?;
                    write_msg(w, &ControllerMsg::Challenge { nonce }).await?;
                    ctl.metrics.challenges.inc();
                    st.recent.push_back(nonce);
                    if st.recent.len() > RECENT_NONCES {
                        st.recent.pop_front();
                    }
                    // The next challenge is due an epoch after this one, however long this
                    // one takes to answer and verify: the schedule does not drift with load.
                    let sent = Instant::now();
                    pending = Some((nonce, sent + ctl.settings.epoch));
                    next = sent + jittered(ctl);
                }
            }
            msg = inbox.recv() => {
                let Some(msg) = msg else { return Ok(()) };
                match msg {
                    AgentMsg::Evidence(ev) => {
                        // Evidence is checked against the outstanding challenge; without one it
                        // is checked against the last nonce sent (and so fails as a replay).
                        let nonce = pending.take().map(|(n, _)| n)
                            .or_else(|| st.recent.back().copied())
                            .unwrap_or([0; 32]);
                        let started = std::time::Instant::now();
                        evidence(ctl, &mut st, *ev, nonce).await?;
                        ctl.metrics.verify_seconds.observe(started.elapsed().as_secs_f64());
                        missed = 0;
                    }
                    AgentMsg::PolicyResult { version, error } => {
                        if let Some(e) = &error {
                            tracing::warn!("gateway {} refused policy v{version}: {e}", st.id);
                        }
                        ctl.store.policy_outcome(&st.id, version, error.as_deref()).await?;
                        st.policy = None;
                    }
                    AgentMsg::Report(signed) => match signed.open(&st.agent_key) {
                        Some(report) => ctl.store.put_report(&st.id, &report).await?,
                        None => {
                            ctl.metrics.reports_rejected.inc();
                            tracing::warn!(
                                "gateway {}: report not signed by its trusted agent, ignored",
                                st.id
                            );
                        }
                    },
                    AgentMsg::Enroll(_) | AgentMsg::Hello { .. } => {
                        return refuse(w, "unexpected message in a session".into()).await;
                    }
                }
            }
            cmd = cmds.recv() => match cmd {
                Some(SessionCmd::Reload) => {
                    let g = ctl.store.gateway(&st.id).await?;
                    if let Some(why) = g.as_ref().and_then(revoked) {
                        return refuse(w, why).await;
                    }
                    st.pins = g.and_then(|g| g.manifests);
                    st.policy = None;
                    send_unconfirmed_policy(ctl, &mut st, w).await?;
                }
                None => return Ok(()),
            }
        }
    }
}

/// Send the gateway's latest policy if it has neither applied nor refused it and this session
/// has not sent it or a newer one (a second copy would be refused as stale and recorded over
/// the first one's success). Every policy reaches its gateway this way: published here or on
/// another replica.
async fn send_unconfirmed_policy<W: AsyncWrite + Unpin>(
    ctl: &Controller,
    st: &mut SessionState,
    w: &mut W,
) -> anyhow::Result<()> {
    if let Some(p) = ctl.store.latest_policy(&st.id).await?
        && p.applied_at.is_none()
        && p.error.is_none()
        && p.version > st.sent_policy
    {
        st.sent_policy = p.version;
        st.policy = None;
        write_msg(w, &ControllerMsg::Policy(signed(&p))).await?;
    }
    Ok(())
}

/// Follow the other replicas' changes (PostgreSQL): every announced gateway whose session is
/// held here reloads its record. After a lost listener connection every local session reloads,
/// since announcements may have been missed meanwhile.
pub async fn follow_replicas(ctl: Arc<Controller>) {
    let mut listener = loop {
        match ctl.store.listen().await {
            Ok(Some(l)) => {
                tracing::debug!("following other replicas' changes");
                break l;
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("listening for other replicas' changes: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    loop {
        let ids: Vec<String> = match listener.try_recv().await {
            Ok(Some(n)) => vec![n.payload().to_owned()],
            Ok(None) => {
                tracing::warn!("lost the database listener connection; reloading every session");
                ctl.sessions.lock().await.keys().cloned().collect()
            }
            Err(e) => {
                // The listener reconnects on the next call; what was announced meanwhile is
                // lost, so every local session reloads once it is back.
                tracing::warn!("database listener: {e}; retrying, then reloading every session");
                tokio::time::sleep(Duration::from_secs(1)).await;
                ctl.sessions.lock().await.keys().cloned().collect()
            }
        };
        for id in ids {
            let tx = ctl.sessions.lock().await.get(&id).cloned();
            tracing::debug!("gateway {id} changed (session here: {})", tx.is_some());
            // Never wait on one session: a full queue already holds work that reloads it.
            if let Some(tx) = tx {
                let _ = tx.try_send(SessionCmd::Reload);
            }
        }
    }
}

fn signed(p: &crate::store::PolicyRow) -> SignedPolicy {
    SignedPolicy {
        version: p.version,
        body: p.body.clone(),
        signature: ed25519_dalek::Signature::from_bytes(&p.signature),
    }
}

async fn unreachable(ctl: &Controller, id: &str, missed: u32) -> Result<(), StoreError> {
    let gw = ctl.store.gateway(id).await?;
    if gw.is_some_and(|g| g.status == "unreachable") {
        return Ok(());
    }
    let reason = format!("no answer to {missed} consecutive challenges");
    tracing::warn!("gateway {id} unreachable: {reason}");
    let mut ear = empty_ear();
    put_reason(&mut ear, "evidence", Tier::None, &reason);
    let at = now_ms();
    let changed = ctl
        .store
        .record(NewResult::new(id, at, "unreachable", &ear, None))
        .await?;
    announce(ctl, id, "unreachable", changed, vec![reason], at);
    Ok(())
}

/// Why a gateway may not be served, if the operator revoked it.
fn revoked(g: &crate::store::GatewayRow) -> Option<String> {
    (g.enrollment == "revoked").then(|| {
        format!(
            "{} was revoked by the operator: {}",
            g.id,
            g.revoked_reason.as_deref().unwrap_or("no reason given")
        )
    })
}

fn empty_ear() -> Ear {
    let mut ear = appraise::crypto_failure(
        &VerifyError::Malformed,
        None,
        &[],
        None,
        &[0; 32],
        now_ms() / 1000,
    );
    ear.submods.clear();
    ear.status = Tier::None;
    ear.eat_nonce = None;
    ear
}

/// Verify, appraise and record one piece of evidence.
async fn evidence(
    ctl: &Controller,
    st: &mut SessionState,
    ev: EvidenceMsg,
    nonce: [u8; 32],
) -> anyhow::Result<()> {
    // The quote must cover every PCR its log touches, so no logged event goes unverified.
    let selection = PcrSelection::from_indices(ev.log.iter().map(|e| e.pcr.get()))
        .unwrap_or_else(PcrSelection::none);
    let quote = ev.quote.clone();
    // Format-1 quotes (which do not bind the log) only where a manifest still allows them.
    let refs = ctl.references(st.pins.as_deref()).await?;
    let accept_format1 = refs.iter().any(|r| r.accept_format1);
    let outcome = ctl
        .verifier
        .verify(VerifyJob {
            quote: ev.quote,
            pcrs: ev.pcrs,
            log: ev.log.clone(),
            key: st.key,
            nonce,
            selection,
            last: st.last.map(|(boot, quote)| Counters { boot, quote }),
            accept_format1,
            reply: oneshot::channel().0,
        })
        .await
        .ok_or(StoreError::WriterGone)?;
    let now_s = now_ms() / 1000;
    let (ear, counters) = match outcome {
        Ok(verified) => {
            if st.policy.is_none() {
                st.policy = Some(ctl.policy_expectation(&st.id).await?);
            }
            let policy = st.policy.as_ref().expect("just loaded");
            let ear = appraise::appraise(&verified.body, &ev.log, &refs, policy, now_s);
            let c = (verified.body.counters.boot, verified.body.counters.quote);
            (ear, Some(c))
        }
        Err(e) => {
            // Only used to name the failure: after a nonce mismatch the signature has
            // already been checked, so the body is the gateway's own.
            let body = SignedQuote::decode(&quote)
                .ok()
                .filter(|q| q.verify_signature(&st.key))
                .and_then(|q| q.body().ok());
            let recent: Vec<[u8; 32]> = st.recent.iter().copied().collect();
            (
                appraise::crypto_failure(&e, body.as_ref(), &recent, st.last, &nonce, now_s),
                None,
            )
        }
    };
    if let Some(c) = counters {
        st.last = Some(c);
    }
    let status = ear.status;
    record(ctl, &st.id, ear, counters).await?;
    tracing::debug!("gateway {}: {}", st.id, status.as_str());
    Ok(())
}

/// Every epoch, mark gateways unreachable whose last result is older than the allowed number
/// of missed epochs (disconnected gateways have no session to notice).
async fn sweeper(ctl: Arc<Controller>) {
    let mut tick = tokio::time::interval(ctl.settings.epoch);
    loop {
        tick.tick().await;
        let limit =
            ctl.settings.epoch.as_millis() as i64 * i64::from(ctl.settings.unreachable_after);
        let now = now_ms();
        let gateways = match ctl.store.gateways().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("sweeper: {e}");
                continue;
            }
        };
        for g in gateways {
            let since = g.last_result_at.unwrap_or(g.status_since);
            if g.enrollment == "accepted" && g.status != "unreachable" && now - since > limit {
                let missed = ((now - since) / ctl.settings.epoch.as_millis().max(1) as i64) as u32;
                if let Err(e) = unreachable(&ctl, &g.id, missed).await {
                    tracing::error!("sweeper: {e}");
                }
            }
        }
    }
}

impl Controller {
    /// Revoke gateway `id` (its image may be compromised): it is never served or enrolled again
    /// under its keys, its session ends, and a contraindicated result records why. Returns
    /// false if there is no such gateway or it is already revoked.
    pub async fn revoke_gateway(&self, id: &str, reason: &str) -> Result<bool, StoreError> {
        if !self.store.revoke_gateway(id, reason).await? {
            return Ok(false);
        }
        self.revoked(id, reason).await?;
        Ok(true)
    }

    /// Revoke every endorsement by vendor `key`: the key is no longer trusted, enrollments it
    /// endorses are refused, and every gateway it endorsed is revoked. Returns those gateways,
    /// or `None` if the key is unknown.
    pub async fn revoke_vendor(
        &self,
        key: &[u8; 32],
        reason: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let Some(ids) = self.store.revoke_vendor(key, reason).await? else {
            return Ok(None);
        };
        tracing::warn!(
            "vendor key {}… revoked by the operator: {reason}",
            &hex::encode(key)[..16]
        );
        let why = format!("its vendor's endorsements were revoked: {reason}");
        for id in &ids {
            self.revoked(id, &why).await?;
        }
        Ok(Some(ids))
    }

    async fn revoked(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        tracing::warn!("gateway {id} revoked by the operator: {reason}");
        let mut ear = empty_ear();
        put_reason(
            &mut ear,
            "identity",
            Tier::Contraindicated,
            &format!("revoked by the operator: {reason}"),
        );
        record(self, id, ear, None).await?;
        // Its session, here or on another replica, reloads the record and ends.
        self.reload_session(id).await;
        Ok(())
    }

    /// The reference manifests a gateway pinned to `pins` (`None`: any allowed) may match.
    /// Parsed and signature-checked manifests are cached (dropped on import or retirement
    /// here, and after an epoch, so replicas sharing a database see each other's imports).
    pub async fn references(&self, pins: Option<&[i64]>) -> Result<crate::Manifests, StoreError> {
        let all = self.manifest_cache().await?;
        Ok(match pins {
            None => all,
            Some(p) => Arc::new(all.iter().filter(|r| p.contains(&r.id)).cloned().collect()),
        })
    }

    async fn manifest_cache(&self) -> Result<crate::Manifests, StoreError> {
        let max_age = self.settings.epoch.min(Duration::from_secs(30));
        if let Some((at, cached)) = self.manifests.lock().await.as_ref()
            && at.elapsed() < max_age
        {
            return Ok(cached.clone());
        }
        let mut out = Vec::new();
        for m in self.store.manifests().await? {
            if !m.allowed {
                continue;
            }
            let env = gw_proto::manifest::SignedManifest::from_json(&m.envelope)
                .map_err(|_| StoreError::Corrupt("manifest"))?;
            let (_, manifest) = env.open().map_err(|_| StoreError::Corrupt("manifest"))?;
            out.push(appraise::Reference::new(m.id, &manifest));
        }
        let out = Arc::new(out);
        *self.manifests.lock().await = Some((std::time::Instant::now(), out.clone()));
        Ok(out)
    }

    /// Forget cached manifests (after an import or a retirement).
    pub async fn manifests_changed(&self) {
        *self.manifests.lock().await = None;
    }

    /// What gateway `id` should be running as policy.
    pub async fn policy_expectation(&self, id: &str) -> Result<PolicyExpectation, StoreError> {
        let Some(latest) = self.store.latest_policy(id).await? else {
            return Ok(PolicyExpectation::default());
        };
        let doc: gw_proto::wire::PolicyDocument =
            serde_json::from_slice(&latest.body).map_err(|_| StoreError::Corrupt("policy"))?;
        let mut earlier = HashMap::new();
        for v in latest.version.saturating_sub(16)..latest.version {
            if let Some(p) = self.store.policy(id, v).await? {
                earlier.insert(vtpm::sha256(&p.body), v);
            }
        }
        let in_flight = latest.applied_at.is_none() && latest.error.is_none();
        Ok(PolicyExpectation {
            latest: Some((latest.version, vtpm::sha256(&latest.body), doc)),
            earlier,
            latest_in_flight: in_flight,
        })
    }

    /// Tell gateway `id`'s session that its record changed: directly if it is connected here,
    /// and through the database to the other replicas.
    pub async fn reload_session(&self, id: &str) {
        let tx = self.sessions.lock().await.get(id).cloned();
        if let Some(tx) = tx {
            let _ = tx.try_send(SessionCmd::Reload);
        }
        if let Err(e) = self.store.announce(id).await {
            tracing::warn!("announcing gateway {id}'s change to other replicas: {e}");
        }
    }

    /// Compile, sign and store a new policy for gateway `id` from its device policies, and
    /// send it if the gateway is connected. Returns the new version.
    pub async fn publish_policy(&self, id: &str) -> anyhow::Result<u64> {
        // Versions are per gateway and taken as latest + 1, so two publishes at once (two
        // operators, two replicas) can pick the same one; the database keeps one, and the other
        // compiles again from what is stored now (which includes the winner's changes).
        const ATTEMPTS: usize = 8;
        let mut attempt = 0;
        let version = loop {
            attempt += 1;
            let mut devices = std::collections::BTreeMap::new();
            for (mac, spec) in self.store.device_policies(id).await? {
                devices.insert(mac, serde_json::from_str(&spec)?);
            }
            let version = self
                .store
                .latest_policy(id)
                .await?
                .map_or(1, |p| p.version + 1);
            let datapath = match self.store.datapath_settings(id).await? {
                Some(json) => Some(serde_json::from_str(&json)?),
                None => None,
            };
            let doc = crate::policy::compile(id, version, &devices, datapath.as_ref());
            let signed = crate::policy::sign(&doc, self.pki.command_key())?;
            let stored = self
                .store
                .put_policy(id, version, &signed.body, &signed.signature.to_bytes())
                .await?;
            if stored {
                break version;
            }
            anyhow::ensure!(
                attempt < ATTEMPTS,
                "gateway {id}: policy v{version} was taken by another publish {ATTEMPTS} times in a row; try again"
            );
            tracing::info!(
                "gateway {id}: policy v{version} was published meanwhile; compiling again"
            );
        };
        // Its session, here or on another replica, sends the latest unconfirmed policy.
        self.reload_session(id).await;
        Ok(version)
    }
}
