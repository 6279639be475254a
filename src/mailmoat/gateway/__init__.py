"""gateway layer (L4, see ARCHITECTURE.md): orchestration and policy.

Public modules (imported one by one, so that importing one does not pull in the others'
dependencies, e.g. pydantic for the CLI's fast paths):

* :mod:`mailmoat.gateway.config` — TOML + pydantic configuration, first-run defaults;
* :mod:`mailmoat.gateway.users` — submission users, scrypt hashes, AUTH rate limits;
* :mod:`mailmoat.gateway.relay` — the no-open-relay decision;
* :mod:`mailmoat.gateway.received` — the Received header field proving the transport;
* :mod:`mailmoat.gateway.session` — the policy of one SMTP session (AUTH, MAIL, RCPT, spool);
* :mod:`mailmoat.gateway.server` — listeners, worker processes and signals (``mailmoat serve``).
"""
