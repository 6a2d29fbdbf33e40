"""The Driver2 sandbox: a local HTTP server that answers the Driver2 API from a generated
dataset, with faults (errors, rate limits, dropped, slow or cut-off answers, invoices changed
while a client pages) to order."""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import logging
import random
import re
import socket
import sys
import threading
import time
from collections import Counter, deque
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from driver2_sandbox.data import CASES, Driver2Dataset, load_stored_json, parse_instant

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}
INVOICE_PATH = re.compile(r"^/api/v1/invoices/([^/]+)$")
CUSTOMER_PATH = re.compile(r"^/api/v1/customers/([^/]+)$")
CUSTOMER_NO = re.compile(r"^[A-Za-z0-9-]{1,20}$")
TOUCH_PATH = re.compile(r"^/_sandbox/invoices/([^/]+)/touch$")
STORE_PATH = re.compile(r"^/_sandbox/invoices/([^/]+)$")
FAULT_KEYS = {"status", "retry_after", "retry_after_date", "drop", "slow", "truncate", "message"}


class FaultPlan:
    """The faults the public API answers with: a script set by a test, then random faults at
    the rates given on the command line.

    The 5xx share is the statuses driver2-api.yaml calls transient (502, 503, 504); a scripted
    fault can send any other. Rate limits alternate Retry-After in seconds and as a date, and
    cut-off answers alternate a dropped connection mid-body and a complete answer whose JSON
    stops half-way. Touches (an invoice changed while a client pages) are drawn apart, so that
    turning them on leaves the other faults where they were.
    """

    def __init__(
        self,
        rate_5xx: float = 0.0,
        rate_429: float = 0.0,
        rate_drop: float = 0.0,
        rate_slow: float = 0.0,
        slow_seconds: float = 2.0,
        rate_truncate: float = 0.0,
        seed: int = 0,
        rate_touch: float = 0.0,
    ) -> None:
        self.rate_5xx = rate_5xx
        self.rate_429 = rate_429
        self.rate_drop = rate_drop
        self.rate_slow = rate_slow
        self.slow_seconds = slow_seconds
        self.rate_truncate = rate_truncate
        self.rate_touch = rate_touch
        self._rng = random.Random(seed)
        self._touch_rng = random.Random(f"{seed}:touch")
        self._lock = threading.Lock()
        self._script: deque[dict] = deque()
        self._rate_limits_sent = 0
        self._truncations_sent = 0

    def set_script(self, script: list[dict]) -> None:
        """Make the next public requests answer with these faults, in order."""
        with self._lock:
            self._script = deque(script)

    def clear_script(self) -> None:
        with self._lock:
            self._script.clear()

    def count_pending(self) -> int:
        with self._lock:
            return len(self._script)

    def next_fault(self) -> dict | None:
        """Return the fault for the next public request, or None for a normal answer."""
        with self._lock:
            if self._script:
                return self._script.popleft()
            draw = self._rng.random()
            threshold = 0.0
            for rate, fault in (
                (self.rate_drop, {"drop": True}),
                (self.rate_5xx, {"status": self._rng.choice((502, 503, 504))}),
                (self.rate_429, "429"),
                (self.rate_slow, {"slow": self.slow_seconds}),
                (self.rate_truncate, "truncate"),
            ):
                threshold += rate
                if draw < threshold:
                    if fault == "429":
                        # Retry-After comes both ways HTTP allows: seconds, then a date.
                        self._rate_limits_sent += 1
                        if self._rate_limits_sent % 2:
                            return {"status": 429, "retry_after": "1"}
                        return {"status": 429, "retry_after_date": True}
                    if fault == "truncate":
                        self._truncations_sent += 1
                        return {"truncate": True if self._truncations_sent % 2 else "json"}
                    return fault
            return None

    def draw_touch(self) -> bool:
        """Return whether to change an invoice before answering this continued listing."""
        if not self.rate_touch:
            return False
        with self._lock:
            return self._touch_rng.random() < self.rate_touch


def validate_script(script: object) -> list[dict]:
    """Return the fault script when it is a list of known fault entries; raise ValueError."""
    if not isinstance(script, list):
        raise ValueError("script must be a list")
    for entry in script:
        if not isinstance(entry, dict) or not entry or set(entry) - FAULT_KEYS:
            raise ValueError(f"unknown fault entry: {entry!r}")
        status = entry.get("status")
        if status is not None and (not isinstance(status, int) or not 200 <= status <= 599):
            raise ValueError(f"bad status in fault entry: {entry!r}")
        slow = entry.get("slow")
        if slow is not None and (not isinstance(slow, int | float) or slow < 0):
            raise ValueError(f"bad slow seconds in fault entry: {entry!r}")
    return script


def encode_cursor(key: tuple[int, str]) -> str:
    """Return the opaque cursor that continues after the item with this key."""
    raw = json.dumps([key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """Return the key a cursor stands for; raise ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        instant, number = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as error:
        raise ValueError("malformed cursor") from error
    if not isinstance(instant, int) or not isinstance(number, str):
        raise ValueError("malformed cursor")
    return instant, number


class SandboxServer(ThreadingHTTPServer):
    """The HTTP server with the dataset, the token, the fault plan and the request counts."""

    daemon_threads = True
    # The default of 5 refuses connections when a client opens many at once.
    request_queue_size = 64

    def __init__(
        self, address: tuple[str, int], dataset: Driver2Dataset, token: str, faults: FaultPlan
    ) -> None:
        super().__init__(address, SandboxHandler)
        self.dataset = dataset
        self.token = token
        self.faults = faults
        self.stats_lock = threading.Lock()
        self.stats: dict[str, Counter] = {}
        self.touched: list[dict] = []

    def count(self, path: str, status: str) -> None:
        with self.stats_lock:
            self.stats.setdefault(path, Counter())[status] += 1

    def touch_while_paging(self, number: str) -> None:
        """Change the invoice as a Driver2 user would while a client pages, and remember it."""
        try:
            document = self.dataset.touch(number)
        except KeyError:
            return
        with self.stats_lock:
            self.touched.append({"number": number, "updated_at": document.get("updated_at")})

    def describe_stats(self) -> dict:
        """Return the answers per path and status, the invoices touched while a client paged
        (in order, with their new updated_at) and how many scripted faults are left."""
        with self.stats_lock:
            requests = {path: dict(counts) for path, counts in sorted(self.stats.items())}
            touched = list(self.touched)
        total = sum(sum(counts.values()) for counts in requests.values())
        return {
            "requests": requests,
            "total": total,
            "faults_pending": self.faults.count_pending(),
            "touched": touched,
        }

    def reset_stats(self) -> None:
        with self.stats_lock:
            self.stats.clear()
            self.touched.clear()

    def handle_error(self, request, client_address) -> None:
        # Clients that time out on a slow answer leave broken pipes behind; that is expected.
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class SandboxHandler(BaseHTTPRequestHandler):
    """One connection: routes the three Driver2 endpoints and the /_sandbox/ control API."""

    protocol_version = "HTTP/1.1"
    server_version = "Driver2Sandbox/1.0"
    server: SandboxServer

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes; without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every answer on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def log_message(self, format: str, *args) -> None:
        # The request line holds no secret: the token travels in a header only.
        logger.debug("%s " + format, self.address_string(), *args)

    def _dispatch(self, method: str) -> None:
        self._started = time.monotonic()
        parts = urlsplit(self.path)
        self._route = parts.path
        body = self._read_body()
        if self._route.startswith("/_sandbox/"):
            if self._authorised():
                self._control(method, parts.path, body)
            return
        if not self._route.startswith("/api/"):
            self._send_error(404, "No such endpoint.")
            return

        fault = self.server.faults.next_fault()
        self._touch_while_paging(parts.path, parts.query)
        if fault is not None and self._answer_fault(fault):
            return
        if not self._authorised():
            return
        if method != "GET":
            self._send_error(405, "Only GET is allowed here.")
            return
        self._public(parts.path, parse_qs(parts.query, keep_blank_values=True), fault)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _authorised(self) -> bool:
        if self._has_token():
            return True
        self._send_error(401, "Missing or wrong bearer token.")
        return False

    def _has_token(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.server.token.encode()
        )

    # -- faults ------------------------------------------------------------------------------

    def _answer_fault(self, fault: dict) -> bool:
        """Answer with the fault and return True, or return False when the request goes on
        (after a delay, or to be cut off once the answer is ready)."""
        if fault.get("drop"):
            self.server.count(self._route, "dropped")
            self._close_abruptly()
            return True
        if "slow" in fault:
            time.sleep(float(fault["slow"]))
        status = fault.get("status")
        if status is None or status == 200:
            return False
        headers = {}
        if "retry_after" in fault:
            headers["Retry-After"] = str(fault["retry_after"])
        elif fault.get("retry_after_date"):
            # An HTTP date has whole seconds: two seconds ahead never reads as the past.
            headers["Retry-After"] = formatdate(time.time() + 2, usegmt=True)
        elif status == 429:
            headers["Retry-After"] = "1"
        self._send_error(status, fault.get("message", "Injected by the sandbox."), headers)
        return True

    def _touch_while_paging(self, path: str, query: str) -> None:
        # A client that sends a cursor holds the page that ended with it: change that invoice
        # as the request arrives (not after a slow answer's delay), so that it comes again
        # later in the same pass.
        if path != "/api/v1/invoices" or not self._has_token():
            return
        if not self.server.faults.draw_touch():
            return
        cursors = parse_qs(query).get("cursor")
        try:
            after = decode_cursor(cursors[0]) if cursors else None
        except ValueError:
            after = None
        if after is not None:
            self.server.touch_while_paging(after[1])

    def _close_abruptly(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- answers -----------------------------------------------------------------------------

    def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
        # Counted before the answer leaves: a client may ask for the counts the moment it has
        # read it.
        self.server.count(self._route, str(status))
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(self, status: int, document: object) -> None:
        self._send(status, json.dumps(document, ensure_ascii=False).encode())

    def _send_error(self, status: int, message: str, headers: dict | None = None) -> None:
        error = ERROR_CODES.get(status, "error")
        self._send(status, json.dumps({"error": error, "message": message}).encode(), headers)

    def _send_truncated(self, payload: bytes, mode: object) -> None:
        cut = payload[: max(1, len(payload) // 2)]
        self.server.count(self._route, "truncated")
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        if mode == "json":
            # A complete HTTP answer whose JSON stops half-way, as a broken proxy sends it.
            self.send_header("Content-Length", str(len(cut)))
            self.end_headers()
            self.wfile.write(cut)
            return
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(cut)
        self.wfile.flush()
        self._close_abruptly()

    def _public(self, path: str, query: dict[str, list[str]], fault: dict | None) -> None:
        if path == "/api/v1/invoices":
            status, payload = self._list_invoices(query)
        elif match := INVOICE_PATH.match(path):
            text = self.server.dataset.invoice_json(unquote(match.group(1)))
            if text is None:
                status, payload = 404, _encode_error(404, "No such invoice or credit note.")
            else:
                status, payload = 200, text.encode()
        elif match := CUSTOMER_PATH.match(path):
            status, payload = self._get_customer(unquote(match.group(1)))
        else:
            status, payload = 404, _encode_error(404, "No such endpoint.")

        if fault is not None and fault.get("truncate") and status == 200:
            self._send_truncated(payload, fault["truncate"])
            return
        self._send(status, payload)

    def _list_invoices(self, query: dict[str, list[str]]) -> tuple[int, bytes]:
        limit_text = query.get("limit", [str(DEFAULT_LIMIT)])[0]
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
            return 400, _encode_error(400, f"limit must be an integer from 1 to {MAX_LIMIT}.")
        since = None
        if "updated_since" in query:
            since = parse_instant(query["updated_since"][0])
            if since is None:
                message = "updated_since must be an RFC 3339 timestamp with an offset."
                return 400, _encode_error(400, message)
        after = None
        if "cursor" in query:
            try:
                after = decode_cursor(query["cursor"][0])
            except ValueError:
                return 400, _encode_error(400, "cursor is not one this server gave out.")

        items, last_key, more = self.server.dataset.read_page(since, after, int(limit_text))
        next_cursor = json.dumps(encode_cursor(last_key)) if more and last_key else "null"
        payload = '{"items": [' + ", ".join(items) + '], "next_cursor": ' + next_cursor + "}"
        return 200, payload.encode()

    def _get_customer(self, customer_no: str) -> tuple[int, bytes]:
        if not CUSTOMER_NO.match(customer_no):
            return 404, _encode_error(404, "No such customer.")
        try:
            customer = self.server.dataset.customer(customer_no)
        except KeyError:
            return 404, _encode_error(404, "No such customer.")
        return 200, json.dumps(customer, ensure_ascii=False).encode()

    # -- control API -------------------------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> None:
        dataset = self.server.dataset
        if method == "POST" and path == "/_sandbox/faults":
            try:
                script = validate_script(json.loads(body or b"{}").get("script"))
            except (ValueError, AttributeError) as error:
                self._send_error(400, str(error))
                return
            self.server.faults.set_script(script)
            self._send_json(200, {"scripted": len(script)})
        elif method == "POST" and path == "/_sandbox/reset":
            self.server.faults.clear_script()
            dataset.reset()
            self.server.reset_stats()
            self._send_json(200, {"reset": True})
        elif method == "GET" and path == "/_sandbox/stats":
            self._send_json(200, self.server.describe_stats())
        elif method == "POST" and (match := TOUCH_PATH.match(path)):
            # An optional {"updated_at": ...} replays a change seen elsewhere at its instant.
            try:
                options = json.loads(body or b"{}")
                now_us = parse_instant(options.get("updated_at")) if options else None
            except (ValueError, AttributeError):
                self._send_error(400, "The body must be a JSON object.")
                return
            if options and options.get("updated_at") is not None and now_us is None:
                self._send_error(400, "updated_at must be an RFC 3339 timestamp with an offset.")
                return
            try:
                document = dataset.touch(unquote(match.group(1)), now_us=now_us)
            except KeyError:
                self._send_error(404, "No such invoice or credit note.")
                return
            self._send_json(200, document)
        elif method == "PUT" and (match := STORE_PATH.match(path)):
            try:
                text = body.decode("utf-8")
                load_stored_json(text)
            except ValueError:
                self._send_error(400, "The body must be JSON.")
                return
            dataset.store_document(unquote(match.group(1)), text)
            self._send_json(200, {"stored": unquote(match.group(1))})
        else:
            self._send_error(404, "No such control endpoint.")


def _encode_error(status: int, message: str) -> bytes:
    return json.dumps({"error": ERROR_CODES.get(status, "error"), "message": message}).encode()


def parse_shares(entries: list[str]) -> dict[str, float] | None:
    """Return case shares from 'case=fraction' entries, or None for the defaults."""
    if not entries:
        return None
    shares = {}
    for entry in entries:
        case, _, fraction = entry.partition("=")
        if case not in CASES:
            raise argparse.ArgumentTypeError(f"unknown case {case!r}; known: {', '.join(CASES)}")
        shares[case] = float(fraction)
    return shares


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--invoices", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--share",
        action="append",
        default=[],
        metavar="CASE=FRACTION",
        help="share of one case (repeatable); unnamed cases get none once any is given",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--token", default="sandbox-token")
    fault_rates = {
        "5xx": "share of answers that are 502, 503 or 504",
        "429": "share of 429 answers, Retry-After in seconds and as an HTTP date by turns",
        "drop": "share of connections closed without an answer",
        "slow": "share of answers sent only after --fault-slow-seconds",
    }
    for name, help_text in fault_rates.items():
        parser.add_argument(f"--fault-{name}-rate", type=float, default=0.0, help=help_text)
    parser.add_argument("--fault-slow-seconds", type=float, default=2.0)
    parser.add_argument(
        "--fault-truncate-rate",
        type=float,
        default=0.0,
        help="share of answers cut off half-way: a dropped connection and a JSON body that"
        " stops short, by turns",
    )
    parser.add_argument(
        "--fault-touch-rate",
        type=float,
        default=0.0,
        help="share of continued listings before which the last invoice served is changed",
    )
    parser.add_argument("--fault-seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument("--log-level", default="WARNING")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(
        level=arguments.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    dataset = Driver2Dataset(arguments.invoices, arguments.seed, parse_shares(arguments.share))
    faults = FaultPlan(
        rate_5xx=arguments.fault_5xx_rate,
        rate_429=arguments.fault_429_rate,
        rate_drop=arguments.fault_drop_rate,
        rate_slow=arguments.fault_slow_rate,
        slow_seconds=arguments.fault_slow_seconds,
        rate_truncate=arguments.fault_truncate_rate,
        seed=arguments.fault_seed,
        rate_touch=arguments.fault_touch_rate,
    )
    server = SandboxServer((arguments.host, arguments.port), dataset, arguments.token, faults)
    host, port = server.server_address[:2]
    print(
        f"driver2 sandbox listening on http://{host}:{port} "
        f"({arguments.invoices} invoices, seed {arguments.seed})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
