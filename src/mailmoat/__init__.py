"""mailmoat: a secure, verifiable mail gateway.

SMTPS listeners, refusal of SMTP command/header injection and smuggling, proof of sender
(SPF, DKIM, DMARC, ARC), per-hop transport evidence, and domain posture checks.
The layers are described in ``ARCHITECTURE.md`` (kept beside the project as shared/ARCHITECTURE.md).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
