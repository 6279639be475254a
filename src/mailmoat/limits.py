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
#: SMTP client (net.smtp_client): TCP connect timeout. RFC 5321 sets none; Postfix's
#: smtp_connect_timeout default is 30 s.
SMTP_CLIENT_CONNECT_TIMEOUT: Final = 30.0
#: SMTP client: wait for replies to EHLO/HELO, STARTTLS and AUTH. RFC 5321 §4.5.3.2 names
#: none; Postfix's smtp_helo_timeout and smtp_starttls_timeout are 300 s (as MAIL's 5 min).
SMTP_CLIENT_COMMAND_TIMEOUT: Final = 300.0
#: SMTP client: the TLS handshake (implicit TLS or after STARTTLS); Postfix
#: smtp_starttls_timeout = 300 s.
SMTP_CLIENT_TLS_TIMEOUT: Final = 300.0
#: SMTP client: wait for 221 to QUIT. The message is already accepted; waiting longer only
#: delays the caller (Postfix smtp_quit_timeout is 300 s; smtplib waits forever).
SMTP_CLIENT_QUIT_TIMEOUT: Final = 30.0
#: SMTP client: octets per write of message content; RFC 5321 §4.5.3.2.5 times each "TCP
#: SEND" of a data block (3 min), so we write and drain in blocks this size.
SMTP_CLIENT_DATA_BLOCK: Final = 64 * 1024
#: SMTP client: octets per BDAT chunk (RFC 3030 sets no size; 1 MiB keeps the server's
#: per-chunk buffer modest).
SMTP_CLIENT_BDAT_CHUNK: Final = 1024 * 1024
#: SMTP client: MX hosts tried per delivery (RFC 5321 §5.1 asks to try more than one; Postfix
#: smtp_mx_address_limit default 5).
SMTP_CLIENT_MX_TRIES: Final = 5
#: RFC 5321 §4.5.3.1.1-3: local-part 64 octets, domain 255 octets, path 256 octets.
SMTP_LOCAL_PART_MAX: Final = 64
SMTP_DOMAIN_MAX: Final = 255
SMTP_PATH_MAX: Final = 256
#: RFC 3461 §4.4: ENVID is at most 100 characters; §4.2 ORCPT at most 500.
DSN_ENVID_MAX: Final = 100
DSN_ORCPT_MAX: Final = 500
#: RFC 1870 §3: size-value ::= 1*20DIGIT; RFC 3030 chunk-size = 1*DIGIT, bounded the same way.
SMTP_SIZE_DIGITS_MAX: Final = 20
#: Longest server reply line the SMTP client accepts, CRLF included. RFC 5321 §4.5.3.1.5 sets
#: 512 octets as the minimum to support and §4.5.3.1 asks to accept longer objects; Postfix's
#: client reads lines up to line_length_limit = 2048.
SMTP_REPLY_LINE_MAX: Final = 2048
#: Lines in one multi-line reply the client accepts. RFC 5321 §4.2.1 sets no bound; an EHLO
#: reply has ~15-25 lines in practice. Bounds the memory a hostile server can make us hold.
SMTP_REPLY_MAX_LINES: Final = 100

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
#: RFC 7208 §4.6.4: "MTAs or other processors SHOULD impose a limit on the maximum amount of
#: elapsed time to evaluate check_host(). Such a limit SHOULD allow at least 20 seconds."
SPF_EVALUATION_TIMEOUT: Final = 20.0
#: Longest expanded exp= explanation we return (RFC 7208 §6.2 sets none; it ends up in an SMTP
#: reply, RFC 5321 §4.5.3.1.5 reply lines are 512 octets, a few lines at most).
SPF_EXPLANATION_MAX: Final = 1024

# --- DKIM / DMARC / ARC -------------------------------------------------------------------
#: Signatures verified per message (RFC 6376 §6.1: verifiers MAY limit; OpenDKIM
#: MaximumSignaturesToVerify default 3 is strict; we allow 10).
DKIM_MAX_SIGNATURES: Final = 10
#: RFC 8301 §3.2: RSA keys < 1024 bits MUST NOT be accepted; < 2048 SHOULD be avoided.
DKIM_RSA_MIN_BITS: Final = 1024
DKIM_RSA_WEAK_BITS: Final = 2048
#: Largest RSA key we spend CPU on: verification cost grows with the modulus, and a 16384-bit
#: key in DNS is a cheap way to make a verifier work (OpenSSL caps RSA moduli at 16384,
#: OPENSSL_RSA_MAX_MODULUS_BITS; no real DKIM key exceeds 4096). Larger keys: permerror.
DKIM_RSA_MAX_BITS: Final = 8192
#: Signed header names per signature (the h= list). RFC 6376 sets no bound; real signers list
#: 10-40 names (over-signing doubles some). OpenDKIM MaximumHeaders bounds the header block;
#: we bound h= so one signature cannot make us canonicalise a field thousands of times.
DKIM_MAX_SIGNED_HEADERS: Final = 128
#: One DKIM-Signature header field, in octets (RFC 5322 §2.1.1 lines are <= 998; a folded
#: signature with a 4096-bit b= and 40 names is about 2 KB). Longer fields: permerror.
DKIM_SIGNATURE_FIELD_MAX: Final = 16 * 1024
#: One DKIM key record (all strings of the TXT record joined, RFC 6376 §3.6.2.2). An RSA-8192
#: key is about 1.5 KB of base64.
DKIM_KEY_RECORD_MAX: Final = 8 * 1024
#: TXT records tried for one key name (RFC 6376 §3.6.2.2: a verifier "can choose one of the
#: key records or may cycle through" them; we cycle through a few).
DKIM_MAX_KEY_RECORDS: Final = 5
#: Tolerated clock difference for t= (future timestamps) and x= (expiry), seconds (RFC 6376
#: §3.5 t=: "Implementations MAY ignore signatures with a timestamp in the future"; allow 5 min
#: of skew, as for Kerberos and TOTP).
DKIM_CLOCK_SKEW: Final = 300
#: Octets of one unterminated body line held by the streaming canonicaliser before it emits
#: the safe part (ARCHITECTURE.md rule 14: the body is never held; RFC 5322 §2.1.1 lines are
#: <= 998 octets, so this only bites on broken or hostile input).
DKIM_CANON_PENDING_MAX: Final = 64 * 1024
#: RFC 8617 §5.1.1.1: at most 50 ARC sets.
ARC_MAX_INSTANCES: Final = 50
#: Distinct AMS body hashes (c=, a=, l= combinations) computed for one ARC chain. Each is a
#: full pass over the body; real sealers all use relaxed/rsa-sha256 without l= (one pass). The
#: newest AMS is always checked (RFC 8617 §5.2 step 4); older AMSs beyond this bound are left
#: unchecked for oldest-pass (an optional step, §5.2 step 5), so 50 crafted sets cannot make
#: us hash a 50 MB body 50 times.
ARC_MAX_BODY_HASHES: Final = 4
#: Longest DMARC policy record we parse (all strings of the TXT record joined, RFC 7489 §6.1 /
#: RFC 9989 §4.5). Real records are under 300 octets; a long rua/ruf list stays under 2 KiB.
#: Longer records are treated as not parseable (no DMARC record).
DMARC_RECORD_MAX: Final = 4096
#: Reporting URIs read from one rua= or ruf= list (RFC 7489 §6.2 sets none; receivers MAY
#: limit: RFC 7489 §6.2 "A Mail Receiver MUST implement support for ... mailto:" and OpenDMARC
#: caps the list; two or three are usual). Extra URIs are ignored with a warning.
DMARC_MAX_REPORT_URIS: Final = 10
#: TXT records examined at one _dmarc name: RFC 7489 §6.6.3 step 5 / RFC 9989 §4.10 step 2
#: discard the set when several DMARC records remain; bounding what we read first.
DMARC_MAX_TXT_RECORDS: Final = 20
#: RFC 9989 §4.10: "Author Domains with more than eight labels do not result in more than
#: eight DNS queries" (one DNS Tree Walk).
DMARC_TREE_WALK_MAX_QUERIES: Final = 8
#: Distinct Authenticated Identifiers (SPF domain, DKIM d=) whose Organizational Domain we
#: discover by a Tree Walk for relaxed alignment (RFC 9989 §4.10.2). DKIM_MAX_SIGNATURES plus
#: SPF bounds it already; this keeps one message to at most 1 + 11 walks of 8 queries.
DMARC_MAX_ALIGNMENT_WALKS: Final = 11
#: One Authentication-Results field we parse, in octets (RFC 8601 sets no limit; a field with
#: spf, several dkim, dmarc and arc results is under 2 KiB; same bound as other structured
#: fields, ANALYSIS_FIELD_MAX). Longer fields are refused with a ParseError.
AUTHRES_FIELD_MAX: Final = 16 * 1024
#: resinfo clauses read from one field (one per method and DKIM signature; DKIM_MAX_SIGNATURES
#: plus a handful of methods fits far under 64). More is a parse error.
AUTHRES_MAX_RESULTS: Final = 64
#: propspec entries read per resinfo (RFC 8601 registers at most four per method; 32 leaves
#: room for vendor properties). More is a parse error.
AUTHRES_MAX_PROPERTIES: Final = 32
#: Line width we fold generated Authentication-Results at (RFC 5322 §2.1.1: lines "SHOULD be no
#: more than 78 characters, excluding the CRLF").
AUTHRES_FOLD_WIDTH: Final = 78

# --- Messages -----------------------------------------------------------------------------
#: Header section size we parse (Postfix header_size_limit 102400).
MESSAGE_HEADER_MAX: Final = 1024 * 1024
#: Number of header fields parsed (Postfix: 1000 header fields by hop_count_limit / header
#: limits). Beyond it the message is refused as malformed.
MESSAGE_MAX_HEADER_FIELDS: Final = 10_000
#: RFC 5321 §6.3: loop detection; Postfix hopcount_limit 50 Received fields.
MESSAGE_MAX_RECEIVED: Final = 100
#: RFC 5322 §2.1.1: "Each line of characters MUST be no more than 998 characters ... excluding
#: the CRLF." Longer header lines are flagged as a defect (not refused: the section bound holds).
MESSAGE_LINE_MAX: Final = 998
#: RFC 5322 §3.2.2 comments nest without a stated limit; real MTAs nest at most 2 deep (Postfix
#: "(using ... (256/256 bits))"). Deeper nesting is flagged and the rest is read as comment text.
MESSAGE_COMMENT_DEPTH_MAX: Final = 32

# --- Header analysis (analysis/: Received chain, Authentication-Results summary) ------------
#: Longest single structured field (Received, Authentication-Results, DKIM-Signature, ARC-*)
#: we tokenise. Real stamps are under 1 KiB and DKIM-Signature with a 4096-bit b= under 2 KiB;
#: Postfix header_size_limit (102400) bounds a whole header. Longer fields are reported as
#: "not parsed" instead of being tokenised.
ANALYSIS_FIELD_MAX: Final = 16 * 1024
#: Received fields analysed, from the top (the trustworthy end) down; RFC 5321 §6.3 loop
#: detection counts Received fields, and MESSAGE_MAX_RECEIVED is where we call it a loop.
ANALYSIS_MAX_HOPS: Final = MESSAGE_MAX_RECEIVED
#: Longest date-time text after the ";" of a stamp (RFC 5322 §3.3: "Thu, 13 Feb 1969 23:32:54
#: -0330" is 31 octets; obsolete forms and comments stay far under 256).
ANALYSIS_DATE_MAX: Final = 256
#: Clock difference between two hops tolerated before a reversed order is called out (seconds).
#: NTP-synchronised servers agree within a second; 5 minutes is Kerberos' default skew.
ANALYSIS_CLOCK_SKEW: Final = 300
#: A hop delay worth flagging (seconds): a day (Postfix maximal_queue_lifetime is 5 days; a
#: message held for more than a day is unusual, or its older stamps were replayed).
ANALYSIS_LONG_DELAY: Final = 86_400
#: Authentication-Results fields summarised (RFC 8601 §5: one per ADMD that checked) and
#: results read per field (spf, dkim per signature, dmarc, arc, iprev, auth ...).
ANALYSIS_MAX_AUTHRES_FIELDS: Final = 50
ANALYSIS_MAX_AUTHRES_RESULTS: Final = 50
#: Tags read from one DKIM-Signature/ARC tag-list (RFC 6376 §3.5 defines 15; ARC adds cv/i).
ANALYSIS_MAX_TAGS: Final = 64

# --- Server connections, TLS, AUTH, spool (net/tls, gateway, spool) -----------------------
#: Concurrent connections per worker process (Postfix default_process_limit is 100 smtpd
#: processes; one asyncio worker holds far more cheaply). Beyond it new clients get 421.
SERVER_MAX_CONNECTIONS: Final = 1000
#: Concurrent connections from one client IP (Postfix smtpd_client_connection_count_limit
#: default 50, half the process limit).
SERVER_MAX_CONNECTIONS_PER_IP: Final = 50
#: Idle time (no byte received) before a client is dropped: RFC 5321 §4.5.3.2.7 server timeout
#: "of at least 5 minutes"; also the slowloris bound together with the per-command timeouts.
SERVER_IDLE_TIMEOUT: Final = 300.0
#: Largest certificate/key PEM file read (a long chain is a few KiB; 1 MiB is generous).
TLS_PEM_FILE_MAX: Final = 1024 * 1024
#: Seconds between two checks of the certificate files for a change (one stat per file).
TLS_RELOAD_POLL_INTERVAL: Final = 30.0
#: Validity of the generated self-signed certificate: 825 days, the CA/Browser Forum cap that
#: Apple platforms still enforce for server certificates (BR 6.3.2, 2018-2020).
TLS_SELF_SIGNED_DAYS: Final = 825
#: Failed AUTH attempts per client IP (IPv6: per /64) before refusal: a token bucket of this
#: burst, refilled at AUTH_FAILURE_IP_REFILL tokens/s (fail2ban's default is 5 failures in
#: 10 min; one per minute sustained). RFC 4954 §4 lets a server limit failed attempts.
AUTH_FAILURE_IP_BURST: Final = 10
AUTH_FAILURE_IP_REFILL: Final = 1.0 / 60.0
#: Failed AUTH attempts per user name (any IP): burst, then one per 30 s; the per-user bucket
#: slows distributed guessing without locking a user out for long.
AUTH_FAILURE_USER_BURST: Final = 10
AUTH_FAILURE_USER_REFILL: Final = 1.0 / 30.0
#: Failure buckets remembered (IPs + users); the fullest buckets are forgotten first.
AUTH_FAILURE_TRACKED_MAX: Final = 100_000
#: Longest user name / password accepted for AUTH (RFC 4616 §2: authcid and passwd "up to
#: 255 octets"; we use the same bound for both).
AUTH_NAME_MAX: Final = 255
AUTH_PASSWORD_MAX: Final = 255
#: scrypt cost (RFC 7914; N=2^14, r=8, p=1 is the interactive-login setting of the scrypt
#: paper and Python's hashlib docs example, ≈16 MiB and ≈50 ms per hash).
AUTH_SCRYPT_LOG2_N: Final = 14
AUTH_SCRYPT_R: Final = 8
AUTH_SCRYPT_P: Final = 1
AUTH_SCRYPT_SALT_BYTES: Final = 16
#: Largest spooled envelope record (JSON): 1000 recipients of 256-octet paths plus DSN
#: ORCPT (500) each, with room to spare.
SPOOL_ENVELOPE_MAX: Final = 2 * 1024 * 1024
#: Users file size read (one line per user; 16 MiB is many thousands of users).
USERS_FILE_MAX: Final = 16 * 1024 * 1024

# --- MTA-STS / TLS-RPT / BIMI / HTTPS fetch / posture (auth.mtasts, net.fetch, gateway.posture)
#: RFC 8461 §3.2 max_age: "maximum value of 31557600" (one year); larger values are refused.
MTASTS_MAX_AGE_MAX: Final = 31_557_600
#: Largest MTA-STS policy body we read: RFC 8461 §3.3 lets senders bound the body; 64 KiB as
#: Mail::STS (max_policy_size 65536) and mox; real policies are under 1 KiB.
MTASTS_POLICY_MAX: Final = 64 * 1024
#: "mx" lines kept from one policy (RFC 8461 §3.2 sets no bound; large providers list < 20).
MTASTS_MAX_MX_PATTERNS: Final = 100
#: TXT records read at one ``_mta-sts`` / ``_smtp._tls`` / ``_bimi`` name before selection
#: (RFC 8461 §3.1, RFC 8460 §3, BIMI: exactly one must remain; reading more is waste).
MAIL_POLICY_MAX_TXT_RECORDS: Final = 20
#: One MTA-STS, TLS-RPT or BIMI TXT record (strings joined). RFC 8461 §3.1 ids are 32
#: characters; RFC 8460 rua lists are short; 4 KiB matches DMARC_RECORD_MAX.
MAIL_POLICY_RECORD_MAX: Final = 4096
#: RFC 8460 §3: rua URIs read from one TLS-RPT record (the RFC sets none; reporters send to
#: each, so a long list multiplies reports; same bound as DMARC_MAX_REPORT_URIS).
TLSRPT_MAX_REPORT_URIS: Final = 10
#: HTTPS fetch (MTA-STS policy, BIMI evidence): whole-request timeout in seconds (RFC 8461 §3.3
#: asks senders to bound the fetch; Mail::STS agent_timeout 60 s, "a timeout of one minute").
HTTP_FETCH_TIMEOUT: Final = 60.0
#: Default byte cap of one HTTPS fetch when the caller gives none (a BIMI SVG is capped at
#: 32 KiB by the BIMI group's SVG profile; a VMC PEM is a few KiB). MTA-STS uses its own cap.
HTTP_FETCH_MAX_BYTES: Final = 256 * 1024
#: MTA-STS policies remembered by the on-disk cache (one entry per recipient domain).
MTASTS_CACHE_MAX_ENTRIES: Final = 100_000
#: Largest MTA-STS cache file read at start-up (100k entries of ~1 KiB).
MTASTS_CACHE_FILE_MAX: Final = 128 * 1024 * 1024
#: Posture check: DKIM selectors tried per domain (given + common ones); each is one query.
POSTURE_MAX_DKIM_SELECTORS: Final = 50
#: Posture check: SPF records walked through include/redirect (RFC 7208 §4.6.4 stops an
#: evaluation at 10 DNS terms; the linter walks a little further to say by how much).
POSTURE_SPF_MAX_RECORDS: Final = 40
#: Posture check: MX hosts examined per domain (TLSA, STARTTLS, MTA-STS match).
POSTURE_MAX_MX: Final = 10
#: Posture check: domains checked at the same time.
POSTURE_CONCURRENCY: Final = 8
#: Posture check: seconds for one MX STARTTLS probe (connect + greeting + EHLO + TLS).
POSTURE_SMTP_TIMEOUT: Final = 20.0
#: DANE (auth.dane): TLSA records considered per name. RFC 6698 sets none; a TLSA RRset holds
#: a few records (current + next key, RFC 7671 §8.1); 100 is far above any real RRset.
DANE_MAX_TLSA: Final = 100
#: DANE (auth.dane): certificates of a presented chain examined (OpenSSL's default
#: verify depth is 100; real SMTP chains have 2-4).
DANE_MAX_CHAIN: Final = 16
#: TLS (net.tls.peer_chain): certificates kept of the chain a peer presents. Real chains have
#: 2-4; OpenSSL's default verify depth is 100; the DANE matcher examines DANE_MAX_CHAIN, so
#: keeping more serves no check.
TLS_PEER_CHAIN_MAX: Final = DANE_MAX_CHAIN
#: TLS probe (net.probe): default seconds per step (connect, greeting, each reply, handshake)
#: of ``mailmoat probe``; posttls-finger's default timeouts are 30 s (connect) and 300 s
#: (replies), too long for an interactive probe.
PROBE_TIMEOUT: Final = 30.0
#: store/: seconds a SQLite call waits for another process's write lock before failing
#: (sqlite3 ``timeout``; Postfix's queue manager waits on its locks in the same seconds range).
STORE_BUSY_TIMEOUT: Final = 30.0
#: store/: due rows scanned per claimed row, so per-destination limits can skip a busy
#: destination's rows and still fill a batch (a bound on one claim's work).
STORE_CLAIM_SCAN_FACTOR: Final = 8
#: store/: DKIM selectors returned per domain by ``Store.dkim_selectors_seen`` (most recent
#: first). Each becomes one DNS query in ``mailmoat check``, hence the same bound as
#: POSTURE_MAX_DKIM_SELECTORS.
STORE_SELECTORS_SEEN_MAX: Final = POSTURE_MAX_DKIM_SELECTORS
#: Delivery queue: first retry after a temporary failure, in seconds (Postfix
#: ``minimal_backoff_time`` 300 s), doubled per attempt up to QUEUE_MAX_BACKOFF.
QUEUE_MIN_BACKOFF: Final = 300.0
#: Delivery queue: longest wait between attempts (Postfix ``maximal_backoff_time`` 4000 s).
QUEUE_MAX_BACKOFF: Final = 4000.0
#: Delivery queue: a message still undelivered this long after it was queued is bounced
#: (Postfix ``maximal_queue_lifetime`` 5 d; RFC 5321 §4.5.4.1: "at least 4-5 days").
QUEUE_MAX_AGE: Final = 5 * 24 * 3600.0
#: Delivery queue: seconds a claim is leased to a worker; a claim that outlives it (the
#: worker died or hung) returns to the queue. Longer than a whole SMTP attempt's timeouts
#: would be 30+ min; the worker renews its lease while it works (see gateway.queue).
QUEUE_LEASE: Final = 300.0
#: Delivery queue: deliveries in flight to one destination at once (Postfix
#: ``default_destination_concurrency_limit`` 20).
QUEUE_DESTINATION_CONCURRENCY: Final = 20
#: Delivery queue: rows claimed per poll by one worker loop.
QUEUE_CLAIM_BATCH: Final = 50
#: LMTP (RFC 2033) client: seconds to wait for each reply (RFC 5321 §4.5.3.2 DATA
#: termination 10 min; local delivery is faster, Postfix ``lmtp_data_done_timeout`` 600 s).
LMTP_REPLY_TIMEOUT: Final = 600.0
#: LMTP client: seconds to connect (Postfix ``lmtp_connect_timeout`` 0 = none; we bound it).
LMTP_CONNECT_TIMEOUT: Final = 30.0

# --- Submission API for web forms (message.compose, gateway.submit_api, web.submit) ---------
#: Characters of a Subject (or an unstructured extra header value). RFC 5322 sets no bound
#: beyond 998-octet lines (folding makes longer fields legal); Outlook keeps 255 characters,
#: Gmail shows about 250. 1000 leaves room for long subjects and stops a form from being used
#: to send megabyte-long header fields.
SUBMIT_SUBJECT_MAX: Final = 1000
#: Characters of one address field as given ("Display Name <local@domain>"): the display name
#: (SUBMIT_DISPLAY_NAME_MAX) plus an RFC 5321 §4.5.3.1.3 path (256 octets) and punctuation.
SUBMIT_ADDRESS_FIELD_MAX: Final = 600
#: Characters of a display name. RFC 5322 sets none; 256 keeps a quoted (escaped) name plus
#: its address on one line under the 998-octet limit (RFC 5322 §2.1.1).
SUBMIT_DISPLAY_NAME_MAX: Final = 256
#: Recipients (To + Cc + Bcc) of one submitted message. RFC 5321 §4.5.3.1.8 asks servers to
#: accept 100 RCPTs; a web form needs few; Gmail's SMTP limit is 100 per message.
SUBMIT_MAX_RECIPIENTS: Final = 100
#: Attachments per message and characters of one file name (NAME_MAX of ext4/NTFS is 255).
SUBMIT_MAX_ATTACHMENTS: Final = 20
SUBMIT_FILENAME_MAX: Final = 255
#: Extra header fields per message, and characters of one extra header field name (RFC 5322
#: sets none; registered names are under 40 characters, the 998-octet line bounds the rest).
SUBMIT_MAX_EXTRA_HEADERS: Final = 20
SUBMIT_HEADER_NAME_MAX: Final = 76
#: Largest composed message (headers, encoded body and attachments). Gmail and Outlook.com
#: cap messages at 25 MB; base64 makes attachments 4/3 larger, so 25 MiB here is about 18 MiB
#: of attached files.
SUBMIT_MAX_MESSAGE_SIZE: Final = 25 * 1024 * 1024
#: Largest HTTP request body of the submission endpoint: the message cap inflated by base64
#: (4/3) for attachments in JSON, plus 1 MiB for the other fields and JSON syntax.
SUBMIT_HTTP_BODY_MAX: Final = SUBMIT_MAX_MESSAGE_SIZE * 4 // 3 + 1024 * 1024
#: Requests per API token: a bucket of this burst refilled at this rate (tokens per second).
#: One message per second sustained (60/min), bursts of 60: above any contact form's traffic,
#: well below what a leaked token would need to spam. (AWS SES sandbox: 1 msg/s.)
SUBMIT_TOKEN_BURST: Final = 60
SUBMIT_TOKEN_REFILL: Final = 1.0
#: Requests per client IP (IPv6: per /64; behind a trusted proxy, the X-Forwarded-For client),
#: counted before the token check so that guessing tokens is limited too: bursts of 20, then
#: one every 6 s (10/min).
SUBMIT_IP_BURST: Final = 20
SUBMIT_IP_REFILL: Final = 1.0 / 6.0
#: Seconds a client may take to send the request body (slowloris bound; RFC 5321 §4.5.3.2.5
#: gives an SMTP data block 3 minutes, a form post of at most ~35 MiB needs far less than 60 s
#: on any link a web server would use).
SUBMIT_HTTP_BODY_TIMEOUT: Final = 60.0
#: Concurrent connections to the submission endpoint (uvicorn limit_concurrency; beyond it
#: new requests get 503). A form backend needs a handful; each may hold a 35 MiB body.
SUBMIT_HTTP_MAX_CONNECTIONS: Final = 64
#: DSN (RFC 3464): largest original message returned whole in a bounce; larger ones are
#: returned as headers only (Postfix ``bounce_size_limit`` 50000).
DSN_RETURN_MAX: Final = 50_000
#: Delivery queue: a "delayed" DSN is sent once a message has waited this long, to senders
#: who asked for NOTIFY=DELAY (RFC 3461 §4.1; sendmail's Timeout.queuewarn 4h).
QUEUE_DELAY_WARNING: Final = 4 * 3600.0

# --- Message pipelines (gateway.inbound, gateway.outbound_sign) ---------------------------
#: Largest body kept in memory to ARC-seal an inbound message at the end of DATA: the AMS
#: body hash of :func:`mailmoat.auth.arc.seal` needs the body bytes (it takes no precomputed
#: hash). Larger messages are delivered unsealed, with the reason logged. 10 MB: Postfix
#: ``message_size_limit`` default (10,240,000).
PIPELINE_ARC_SEAL_BODY_MAX: Final = 10_240_000
