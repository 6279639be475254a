"""A private Postfix instance configured as a *relay* that hands every message to our gateway.

``PostfixRelay(postfix, relayhost_port=P).start()`` writes its own ``main.cf``/``master.cf`` into
a fresh directory (own queue, data directory and log file), runs ``postfix -c DIR start`` and
waits for its greeting on a free loopback port. Postfix accepts mail from 127.0.0.0/8
(``mynetworks``) and relays all of it to ``relayhost = [127.0.0.1]:P`` with
``smtp_tls_security_level = encrypt`` (RFC 3207 STARTTLS mandatory: no TLS, no delivery), logging
the TLS parameters it negotiated (``smtp_tls_loglevel = 1``) into its own maillog -- the peer's
independent record of the hop. With ``milters=("inet:127.0.0.1:PORT", ...)`` its smtpd hands
every message received over SMTP to those milters in order (``smtpd_milters``, e.g. the OpenDKIM
signer of :mod:`opendkim_milter_fixture`) with ``milter_default_action = tempfail``: when a milter
cannot be reached the mail is refused with a 4xx reply, never relayed unsigned.
``stop()`` signals the master process by the PID in its pid file (only the instance we
started); the life cycle is :class:`postfix_instance.PostfixInstance`.

Needs root (Postfix's master runs as root and drops to ``mail_owner``) and the ``postfix``
package; tests call ``require_peer("postfix")`` first.
"""

from __future__ import annotations

import pwd
import re
from collections.abc import Sequence

import postfix_instance
from postfix_instance import PostfixInstance

MASTER_CF = postfix_instance.MASTER_CF

MAIN_CF = """\
compatibility_level = 3.6
mail_owner = postfix
setgid_group = postdrop
queue_directory = {base}/queue
data_directory = {base}/data
maillog_file_prefixes = {base}
maillog_file = {base}/maillog
myhostname = relay.test
mydomain = relay.test
myorigin = relay.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
relayhost = [127.0.0.1]:{relay_port}
smtp_tls_security_level = encrypt
smtp_tls_loglevel = 1
smtp_helo_name = relay.test
smtputf8_enable = yes
biff = no
alias_maps =
alias_database =
local_recipient_maps =
smtpd_banner = $myhostname ESMTP Postfix
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""

#: Appended to MAIN_CF when the relay has milters (Postfix MILTER_README).
MILTER_CF = """\
smtpd_milters = {milters}
non_smtpd_milters =
milter_protocol = 6
milter_default_action = tempfail
milter_connect_timeout = 10s
"""

#: Postfix smtp(8) with smtp_tls_loglevel = 1: "Trusted/Untrusted/Anonymous TLS connection
#: established to HOST[IP]:PORT: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)".
TLS_LOG_RE = re.compile(
    r"TLS connection established to [^:]+:(\d+): (TLSv[0-9.]+) with cipher (\S+) \((\d+)/"
)


class PostfixRelay(PostfixInstance):
    """One private Postfix instance relaying to ``[127.0.0.1]:relayhost_port``."""

    def __init__(self, postfix: str, *, relayhost_port: int,
                 milters: Sequence[str] = ()) -> None:
        super().__init__(postfix, prefix="mailmoat-postfix-relay-")
        self.relayhost_port = relayhost_port
        self.milters = tuple(milters)

    def write_config(self, user: pwd.struct_passwd) -> None:
        (self.config / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        main = MAIN_CF.format(base=self.base, relay_port=self.relayhost_port)
        if self.milters:
            main += MILTER_CF.format(milters=", ".join(self.milters))
        (self.config / "main.cf").write_text(main)

    def tls_log(self) -> list[tuple[int, str, str, int]]:
        """(port, version, cipher, bits) of every TLS connection Postfix's client made."""
        return [(int(m[1]), m[2], m[3], int(m[4])) for m in TLS_LOG_RE.finditer(self.log())]
