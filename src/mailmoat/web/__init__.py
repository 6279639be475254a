"""web layer (L5, see ARCHITECTURE.md): HTTP glue only, nothing imports it.

* :mod:`mailmoat.web.submit` — the safe submission endpoint for web forms
  (``POST /v1/messages``, bearer token, rate limits, JSON errors naming the field); the
  logic lives in :mod:`mailmoat.gateway.submit_api`.
"""
