"""A real SMTP server on aiosmtpd: the notifications tests start one per
test, and deploy/local/run.sh runs one as the development mail catcher.

    python smtp_server.py DIR                            # a test's
    python smtp_server.py DIR --listen 127.0.0.1:1025 --detached --pid-file F   # run.sh's

Listens on loopback (a free port unless --listen says which) and prints
`READY <port>` once it accepts. Every accepted message is written to DIR as
`<n>.eml` (the raw message: open it with a mail client) and then `<n>.json`
(envelope, headers and MIME tree, decoded by Python's email package), so a
test reads what a mail client would see; numbering goes on after the
messages already in DIR. Controls, as files in DIR that the test creates and
removes:

- `refuse`: while it exists, MAIL FROM and DATA answer
  `451 4.3.0` (a transient failure: the client should retry later);
- `reject`: addresses, one per line, that RCPT TO refuses with
  `550 5.1.1` (a permanent failure);
- `delay`: a number of seconds: while it exists, DATA answers `250` that
  long after the message was stored (a slow server; the reliability suite
  breaks the database connection in that window).

Without --detached it exits when its standard input closes, so it never
outlives the test that started it.
"""

import argparse
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
        self.counter = itertools.count(next_number(directory))

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
        delay = self.delay()
        if delay > 0:
            await asyncio.sleep(delay)
        return "250 Message accepted for delivery"

    def delay(self):
        try:
            with open(os.path.join(self.directory, "delay"), encoding="utf-8") as f:
                return float(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0


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


def next_number(directory):
    """One past the highest `<n>.eml` already in DIR (a restarted catcher
    keeps the mails it caught)."""
    numbers = [int(name[:-4]) for name in os.listdir(directory)
               if name.endswith(".eml") and name[:-4].isdigit()]
    return max(numbers, default=0) + 1


def write_atomically(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def exit_with_parent():
    # Standard input is a pipe from the test: EOF means the test is gone.
    sys.stdin.buffer.read()
    os._exit(0)


async def main(directory, host, port):
    loop = asyncio.get_running_loop()
    handler = Handler(directory)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="smtp.test", data_size_limit=10 * 1024 * 1024),
        host=host,
        port=port,
    )
    port = server.sockets[0].getsockname()[1]
    print("READY %d" % port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="An SMTP server that keeps every mail as a file.")
    parser.add_argument("directory", help="where each mail goes, as <n>.eml and <n>.json")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default: a free loopback port)")
    parser.add_argument("--detached", action="store_true", help="run until killed, not until stdin closes")
    parser.add_argument("--pid-file", help="write this process's pid there")
    args = parser.parse_args()
    if args.pid_file:
        write_atomically(args.pid_file, b"%d\n" % os.getpid())
    host, _, port = args.listen.rpartition(":")
    os.makedirs(args.directory, exist_ok=True)
    if not args.detached:
        threading.Thread(target=exit_with_parent, daemon=True).start()
    asyncio.run(main(args.directory, host or "127.0.0.1", int(port)))
