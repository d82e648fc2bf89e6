"""A real SMTP server for the notifications tests, on aiosmtpd.

    python smtp_server.py DIR

Listens on a free loopback port and prints `READY <port>` once it accepts.
Every accepted message is written to DIR as `<n>.eml` (the raw message) and
then `<n>.json` (envelope, headers and MIME tree, decoded by Python's email
package), so a test reads what a mail client would see. Controls, as files
in DIR that the test creates and removes:

- `refuse`: while it exists, MAIL FROM and DATA answer
  `451 4.3.0` (a transient failure: the client should retry later);
- `reject`: addresses, one per line, that RCPT TO refuses with
  `550 5.1.1` (a permanent failure).

Exits when its standard input closes, so it never outlives the test that
started it.
"""

import asyncio
import email
import email.policy
import itertools
import json
import os
import sys
import threading
import time

from aiosmtpd.smtp import SMTP


class Handler:
    def __init__(self, directory):
        self.directory = directory
        self.counter = itertools.count(1)

    def refusing(self):
        return os.path.exists(os.path.join(self.directory, "refuse"))

    def rejected(self):
        try:
            with open(os.path.join(self.directory, "reject"), encoding="utf-8") as f:
                return {line.strip().lower() for line in f if line.strip()}
        except FileNotFoundError:
            return set()

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.refusing():
            return "451 4.3.0 Mail refused for now; try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.rejected():
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.refusing():
            return "451 4.3.0 Mail refused for now; try again later"
        n = next(self.counter)
        raw = envelope.original_content or envelope.content
        base = os.path.join(self.directory, "%06d" % n)
        write_atomically(base + ".eml", raw)
        summary = {
            "n": n,
            "received_at": time.time(),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            **describe(raw),
        }
        write_atomically(base + ".json", json.dumps(summary).encode("utf-8"))
        return "250 Message accepted for delivery"


def describe(raw):
    message = email.message_from_bytes(raw, policy=email.policy.default)
    headers = {}
    for name in ("Message-ID", "Subject", "From", "To", "Date", "Auto-Submitted", "MIME-Version"):
        value = message.get(name)
        if value is not None:
            headers[name] = str(value)
    return {"headers": headers, "tree": tree(message)}


def tree(part):
    node = {
        "content_type": part.get_content_type(),
        "params": {k.lower(): v for k, v in (part.get_params() or [])[1:]},
        "filename": part.get_filename(),
        "disposition": part.get_content_disposition(),
        "text": None,
        "parts": [],
    }
    if part.is_multipart():
        node["parts"] = [tree(child) for child in part.iter_parts()]
    else:
        payload = part.get_payload(decode=True) or b""
        charset = part.get_content_charset() or "utf-8"
        node["text"] = payload.decode(charset, "replace")
    return node


def write_atomically(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def exit_with_parent():
    # Standard input is a pipe from the test: EOF means the test is gone.
    sys.stdin.buffer.read()
    os._exit(0)


async def main(directory):
    loop = asyncio.get_running_loop()
    handler = Handler(directory)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="smtp.test", data_size_limit=10 * 1024 * 1024),
        host="127.0.0.1",
        port=0,
    )
    port = server.sockets[0].getsockname()[1]
    print("READY %d" % port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    threading.Thread(target=exit_with_parent, daemon=True).start()
    asyncio.run(main(sys.argv[1]))
