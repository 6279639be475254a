"""A private Postfix instance receiving on a loopback port, for tests of our SMTP client.

``PostfixSMTPD.start()`` writes its own ``main.cf``/``master.cf`` into a fresh directory (with
its own queue, data directory and log file), runs ``postfix -c DIR start`` and waits for the
greeting. Mail for ``example.net`` is delivered by Postfix's ``virtual`` agent into one
Maildir (``messages()`` reads it). STARTTLS uses a certificate the caller passes (trustme);
``smtpd_tls_received_header = yes`` makes Postfix write the TLS version and cipher it saw
into the Received field - the peer's own record of the hop. ``stop()`` signals the master
process by the PID in its pid file (only the instance we started); the life cycle is
:class:`postfix_instance.PostfixInstance`.

Needs root (Postfix's master runs as root and drops to ``mail_owner``) and the ``postfix``
package; tests call ``require_peer("postfix")`` first.
"""

from __future__ import annotations

import grp
import os
import pwd
import time

import postfix_instance
from postfix_instance import PostfixInstance

#: The common services plus local and virtual delivery (this instance delivers mail).
MASTER_CF = postfix_instance.MASTER_CF + """\
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
"""

MAIN_CF = """\
compatibility_level = 3.6
mail_owner = postfix
setgid_group = postdrop
queue_directory = {base}/queue
data_directory = {base}/data
maillog_file_prefixes = {base}
maillog_file = {base}/maillog
myhostname = postfix.test
mydomain = postfix.test
myorigin = postfix.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 192.0.2.0/24
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
virtual_mailbox_domains = example.net
virtual_mailbox_base = {base}/mail
virtual_mailbox_maps = static:box/
virtual_minimum_uid = 100
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
smtputf8_enable = yes
message_size_limit = {size_limit}
virtual_mailbox_limit = 0
smtpd_tls_security_level = may
smtpd_tls_cert_file = {base}/tls/cert.pem
smtpd_tls_key_file = {base}/tls/key.pem
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
biff = no
alias_maps =
alias_database =
local_recipient_maps =
smtpd_banner = $myhostname ESMTP Postfix
"""


class PostfixSMTPD(PostfixInstance):
    """One private Postfix instance (see the module docstring)."""

    SUBDIRS = ("etc", "queue", "data", "mail", "tls")

    def __init__(self, postfix: str, *, cert_pem: bytes, key_pem: bytes,
                 size_limit: int = 10_240_000) -> None:
        super().__init__(postfix, prefix="mailmoat-postfix-")
        self.cert_pem = cert_pem
        self.key_pem = key_pem
        self.size_limit = size_limit
        self.maildir = self.base / "mail" / "box"

    def write_config(self, user: pwd.struct_passwd) -> None:
        grp.getgrnam("postdrop")  # the setgid_group must exist
        os.chown(self.base / "mail", user.pw_uid, user.pw_gid)
        (self.base / "tls" / "cert.pem").write_bytes(self.cert_pem)
        key = self.base / "tls" / "key.pem"
        key.write_bytes(self.key_pem)
        key.chmod(0o600)
        # the module's templates, read at start (tests patch them, see test_outbound_peers.py)
        (self.config / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        (self.config / "main.cf").write_text(MAIN_CF.format(
            base=self.base, uid=user.pw_uid, gid=user.pw_gid, size_limit=self.size_limit,
        ))

    def messages(self, count: int = 1, timeout: float = 20.0) -> list[bytes]:
        """The delivered messages (Maildir ``new/``), oldest first, once ``count`` are there."""
        new = self.maildir / "new"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns) if new.exists() else []
            if len(files) >= count:
                return [f.read_bytes() for f in files]
            time.sleep(0.1)
        raise AssertionError(f"{count} message(s) not delivered in {timeout} s:\n{self.log()[-3000:]}")
