"""The message pipelines the SMTP session calls (layer L4), built from the configuration.

* role ``mx``: :class:`~mailmoat.gateway.inbound.InboundPipeline` (:mod:`.inbound`): SPF,
  streaming DKIM and ARC, DMARC, the local policy, the header edits, the verdict row;
* role ``submission``: :class:`~mailmoat.gateway.outbound_sign.SubmissionSigner`
  (:mod:`.outbound_sign`): repair, From check, DKIM (dual) signing, optional ARC seal.

How a session uses them (see the modules for details)::

    # mx, per transaction
    spf_task = inbound.start_spf(ip=ip, helo=helo, mail_from=sender)        # MAIL FROM
    msg = inbound.start(ip=ip, helo=helo, mail_from=sender, tls=tls, spf=spf_task)  # DATA
    msg.feed(chunk)                                                          # each chunk
    verdict = await msg.finish()                                             # end of data
    if verdict.action is Action.REJECT: answer verdict.reply, abort the spool writer
    else: commit with envelope.header_edits = verdict.edits.to_json() (and quarantined /
          quarantine_folder from the verdict); then, before the 250,
          await ctx.accept(spool_id, envelope, verdict.record(spool_id=..., envelope=...))
          (queues the delivery rows and stores the verdict); delivery applies the edits
          (HeaderEditor / apply_edits)
    msg.abort()                                                              # RSET / error

    # submission, at the end of data (the message as received)
    outcome = await signer.prepare(message, user=user)
    outcome.reply (refuse) or outcome.message (spool these bytes)

SECURITY: see :mod:`.inbound` and :mod:`.outbound_sign`; this module only reads trusted
configuration (key files: a key that cannot be read is a :class:`~mailmoat.errors.ConfigError`
naming the setting).
"""

from __future__ import annotations

from pathlib import Path

from mailmoat.auth.dkim import load_private_key
from mailmoat.clock import Clock
from mailmoat.errors import ConfigError, MailmoatError
from mailmoat.gateway.config import Config, SubmissionDKIMConfig
from mailmoat.gateway.inbound import (
    QUARANTINE_FIELD,
    Action,
    HeaderEditor,
    HeaderEdits,
    InboundMessage,
    InboundPipeline,
    InboundPolicy,
    InboundVerdict,
    SealKey,
    apply_edits,
    decide,
)
from mailmoat.gateway.outbound_sign import (
    FROM_NOT_ALLOWED,
    SubmissionOutcome,
    SubmissionSigner,
    keys_for,
    load_keys_dir,
    repair,
)
from mailmoat.gateway.submit_api import DKIMKey
from mailmoat.resolver import Resolver

__all__ = [
    "FROM_NOT_ALLOWED",
    "QUARANTINE_FIELD",
    "Action",
    "DKIMKey",
    "HeaderEditor",
    "HeaderEdits",
    "InboundMessage",
    "InboundPipeline",
    "InboundPolicy",
    "InboundVerdict",
    "SealKey",
    "SubmissionOutcome",
    "SubmissionSigner",
    "apply_edits",
    "decide",
    "inbound_from_config",
    "inbound_policy_from_config",
    "keys_for",
    "load_keys_dir",
    "repair",
    "signing_keys_from_config",
    "submission_from_config",
]


def _load(item: SubmissionDKIMConfig, where: str) -> DKIMKey:
    try:
        data = Path(item.key).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {item.key}: {exc.strerror}", key=where) from None
    try:
        return DKIMKey(domain=item.domain, selector=item.selector, key=load_private_key(data))
    except MailmoatError as exc:
        raise ConfigError(str(exc), key=where) from None


def signing_keys_from_config(config: Config) -> tuple[DKIMKey, ...]:
    """``[dkim_signing] keys`` + ``keys_dir``; when both are empty, the ``[submission_api]
    dkim`` keys (one key list for both ways of submitting)."""
    signing = config.dkim_signing
    keys = [_load(item, f"dkim_signing.keys[{i}].key") for i, item in enumerate(signing.keys)]
    if signing.keys_dir is not None:
        keys.extend(load_keys_dir(signing.keys_dir))
    if not keys:
        keys = [_load(item, f"submission_api.dkim[{i}].key")
                for i, item in enumerate(config.submission_api.dkim)]
    return tuple(keys)


def _arc_key(config: Config) -> SealKey | None:
    item = config.dkim_signing.arc
    if item is None:
        return None
    key = _load(item, "dkim_signing.arc.key")
    return SealKey(domain=key.domain, selector=key.selector, key=key.key)


def inbound_policy_from_config(config: Config) -> InboundPolicy:
    """The :class:`InboundPolicy` of ``[policy]`` (and ``[dkim_signing] arc`` for sealing)."""
    policy = config.policy
    return InboundPolicy(
        authserv_id=policy.authserv_id or config.server.hostname,
        trusted_forwarders=policy.trusted_forwarders,
        trusted_arc_sealers=policy.trusted_arc_sealers,
        allow_domains=policy.allow_domains,
        deny_domains=policy.deny_domains,
        allow_networks=policy.allow_networks,
        deny_networks=policy.deny_networks,
        quarantine_folder=policy.quarantine_folder or None,
        arc_seal=_arc_key(config),
    )


def inbound_from_config(config: Config, *, resolver: Resolver, clock: Clock) -> InboundPipeline:
    """The inbound pipeline for ``mx`` listeners."""
    return InboundPipeline(inbound_policy_from_config(config), resolver=resolver, clock=clock)


def submission_from_config(
    config: Config, *, clock: Clock, resolver: Resolver | None = None
) -> SubmissionSigner:
    """The submission pipeline for ``submission`` listeners (ARC sealing needs ``resolver``)."""
    return SubmissionSigner(keys=signing_keys_from_config(config),
                            hostname=config.server.hostname, clock=clock,
                            arc_seal=_arc_key(config), resolver=resolver)
