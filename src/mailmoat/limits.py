"""Every limit mailmoat enforces, as a named constant with its reason (layer L0).

ARCHITECTURE.md rule 7: a bound on untrusted input lives here, with the RFC section or the
precedent that justifies it. Configuration may lower (sometimes raise) a limit; the constant is
the default. Add new limits in the section of their layer; keep the citation.
"""

from __future__ import annotations

from typing import Final

# --- SMTP (RFC 5321 §4.5.3.1 "Size Limits and Minimums") ---------------------------------
#: RFC 5321 §4.5.3.1.4: "The maximum total length of a command line including the command
#: word and the <CRLF> is 512 octets."
SMTP_COMMAND_LINE_MAX: Final = 512
#: Extra octets allowed on MAIL/RCPT for ESMTP parameters (RFC 1869 §4.1.2, RFC 5321
#: §4.5.3.1.4 "...may be increased by service extensions"). SIZE+BODY+SMTPUTF8+RET+ENVID
#: (RFC 3461: ENVID up to 100 chars, ORCPT up to 500) fit in 512 + 500.
SMTP_COMMAND_PARAMS_EXTRA: Final = 500
#: RFC 5321 §4.5.3.1.6: "The maximum total length of a text line including the <CRLF> is
#: 1000 octets (not counting the leading dot duplicated for transparency)."
SMTP_TEXT_LINE_MAX: Final = 1000
#: RFC 5321 §4.5.3.1.8: at least 100 recipients must be accepted; Postfix
#: smtpd_recipient_limit defaults to 1000. We default to the RFC minimum's order.
SMTP_MAX_RECIPIENTS: Final = 1000
#: Default maximum message size advertised with SIZE (RFC 1870). Postfix message_size_limit
#: default is 10,240,000; we allow 50 MiB, the size large providers accept.
SMTP_MAX_MESSAGE_SIZE: Final = 50 * 1024 * 1024
#: Protocol errors before we disconnect (Postfix smtpd_hard_error_limit default 20;
#: RFC 5321 §4.5.4.1 lets a server close after repeated errors). We are stricter.
SMTP_MAX_ERRORS: Final = 10
#: Failed AUTH attempts per connection before disconnect (RFC 4954 §4 lets a server limit;
#: Postfix/anvil precedent: small numbers). 3 as in common submission servers.
SMTP_MAX_AUTH_ATTEMPTS: Final = 3
#: RFC 4954 §4: an AUTH exchange line may be up to 12288 octets for the initial response.
SMTP_AUTH_LINE_MAX: Final = 12288
#: Number of pipelined commands buffered before we stop reading (RFC 2920 §3.1 "client
#: SHOULD NOT... buffer overflow"; bounded to protect memory).
SMTP_MAX_PIPELINED_COMMANDS: Final = 100
#: RFC 3030 BDAT chunk size cap per command (we bound each chunk; total is SIZE-bounded).
SMTP_MAX_BDAT_CHUNK: Final = SMTP_MAX_MESSAGE_SIZE
#: RFC 5321 §4.5.3.2 timeouts (seconds): initial 220 wait 5 min, MAIL 5 min, RCPT 5 min,
#: DATA initiation 2 min, data block 3 min, DATA termination 10 min; server timeout 5 min.
SMTP_TIMEOUT_GREETING: Final = 300.0
SMTP_TIMEOUT_MAIL: Final = 300.0
SMTP_TIMEOUT_RCPT: Final = 300.0
SMTP_TIMEOUT_DATA_INIT: Final = 120.0
SMTP_TIMEOUT_DATA_BLOCK: Final = 180.0
SMTP_TIMEOUT_DATA_TERM: Final = 600.0
SMTP_TIMEOUT_SERVER: Final = 300.0
#: RFC 5321 §4.5.3.1.1-3: local-part 64 octets, domain 255 octets, path 256 octets.
SMTP_LOCAL_PART_MAX: Final = 64
SMTP_DOMAIN_MAX: Final = 255
SMTP_PATH_MAX: Final = 256
#: RFC 3461 §4.4: ENVID is at most 100 characters; §4.2 ORCPT at most 500.
DSN_ENVID_MAX: Final = 100
DSN_ORCPT_MAX: Final = 500

# --- DNS ----------------------------------------------------------------------------------
#: RFC 1035 §2.3.4: names are at most 255 octets, labels 63.
DNS_NAME_MAX: Final = 255
DNS_LABEL_MAX: Final = 63
#: CNAME chain length followed before giving up (BIND follows 16 per query; RFC 1034 §3.6.2
#: warns of loops). 8 is plenty for mail records.
DNS_MAX_CNAME_CHAIN: Final = 8
#: Default per-query timeout (seconds) and total per-lookup lifetime.
DNS_QUERY_TIMEOUT: Final = 3.0
DNS_LIFETIME: Final = 10.0
#: Cache bounds: entries, and the TTL ceiling (RFC 2181 §8 caps TTL at 2^31-1; resolvers cap
#: at a day, unbound cache-max-ttl default 86400) and negative TTL cap (RFC 2308 §5: 3 hours).
DNS_CACHE_MAX_ENTRIES: Final = 100_000
DNS_CACHE_MAX_TTL: Final = 86_400
DNS_NEGATIVE_TTL_MAX: Final = 10_800

# --- SPF (RFC 7208) -----------------------------------------------------------------------
#: RFC 7208 §4.6.4: at most 10 DNS-querying terms per check_host() evaluation.
SPF_MAX_DNS_MECHANISMS: Final = 10
#: RFC 7208 §4.6.4: SHOULD limit "void lookups" to 2.
SPF_MAX_VOID_LOOKUPS: Final = 2
#: RFC 7208 §4.6.4: "the evaluation of each "MX" record MUST NOT result in querying more than
#: 10 address records"; same for PTR (§5.5).
SPF_MAX_MX_ADDRESSES: Final = 10
SPF_MAX_PTR_NAMES: Final = 10
#: Longest SPF record we parse (RFC 7208 §3.3 allows concatenated strings; 10 * 450 octets
#: is far above every real record; longer is refused as permerror).
SPF_RECORD_MAX: Final = 4096
#: RFC 7208 §7.3: macro expansion result bounded (253-octet domain rule in §7.3).
SPF_MACRO_EXPANSION_MAX: Final = 253

# --- DKIM / DMARC / ARC -------------------------------------------------------------------
#: Signatures verified per message (RFC 6376 §6.1: verifiers MAY limit; OpenDKIM
#: MaximumSignaturesToVerify default 3 is strict; we allow 10).
DKIM_MAX_SIGNATURES: Final = 10
#: RFC 8301 §3.2: RSA keys < 1024 bits MUST NOT be accepted; < 2048 SHOULD be avoided.
DKIM_RSA_MIN_BITS: Final = 1024
DKIM_RSA_WEAK_BITS: Final = 2048
#: RFC 8617 §5.1.1.1: at most 50 ARC sets.
ARC_MAX_INSTANCES: Final = 50

# --- Messages -----------------------------------------------------------------------------
#: Header section size we parse (Postfix header_size_limit 102400).
MESSAGE_HEADER_MAX: Final = 1024 * 1024
#: Number of header fields parsed (Postfix: 1000 header fields by hop_count_limit / header
#: limits). Beyond it the message is refused as malformed.
MESSAGE_MAX_HEADER_FIELDS: Final = 10_000
#: RFC 5321 §6.3: loop detection; Postfix hopcount_limit 50 Received fields.
MESSAGE_MAX_RECEIVED: Final = 100
