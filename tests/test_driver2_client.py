"""The Driver2 client against the Driver2 sandbox over HTTP on loopback: paging, retries, errors."""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from driver2_sync.driver2_client import (
    Driver2AuthError,
    Driver2Client,
    Driver2ConfigError,
    Driver2Error,
    Driver2ProtocolError,
    Driver2RequestError,
    Driver2UnavailableError,
    RetryPolicy,
    parse_retry_after,
    scrub_secrets,
)

CLIENT_LOGGER = "driver2_sync.driver2_client"
FAST_RETRIES = RetryPolicy(
    max_attempts=4, max_total_seconds=10.0, backoff_first_seconds=0.01, backoff_max_seconds=0.05
)
CONNECTION_ENV = "AIRFLOW_CONN_DRIVER2_API"
CONNECTION_PASSWORD = "pw-Zq8!never-shown"
SCRIPTED_TOKEN = "scripted-token-0042"


@pytest.fixture
def sandbox(driver2_sandbox):
    """The shared sandbox, with no faults, changes or request counts left by another test."""
    driver2_sandbox.reset()
    yield driver2_sandbox
    driver2_sandbox.reset()


@pytest.fixture
def client(sandbox) -> Iterator[Driver2Client]:
    with Driver2Client(sandbox.base_url, sandbox.token, retry_policy=FAST_RETRIES) as made:
        yield made


def count_api_requests(sandbox) -> dict[str, dict[str, int]]:
    """Return the public API requests the sandbox saw, per path and answer."""
    counts = sandbox.stats()["requests"]
    return {path: answers for path, answers in counts.items() if path.startswith("/api/")}


def assert_api_requests(sandbox, expected: dict[str, dict[str, int]]) -> None:
    """Assert the sandbox's counts of public API requests, per path and answer.

    The sandbox counts an answer just after writing it, so its count may trail the client's
    return by a moment; the client is done by then, so waiting cannot let extra requests in.
    """
    if not expected:
        # Nothing to wait for: give a request that should not exist the moment to be counted.
        time.sleep(0.05)
    deadline = time.monotonic() + 2.0
    while (seen := count_api_requests(sandbox)) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen == expected


def read_updated_at(document: dict) -> datetime:
    return datetime.fromisoformat(document["updated_at"])


def find_first_tie(documents: list[dict]) -> int:
    """Return the position of the first document whose updated_at the next one shares."""
    instants = [read_updated_at(document) for document in documents]
    return next(i for i in range(len(instants) - 1) if instants[i] == instants[i + 1])


def collect_request_times(caplog, path: str) -> list[float]:
    """Return when the client sent each request for `path`, from its DEBUG lines."""
    return [
        record.created
        for record in caplog.records
        if record.name == CLIENT_LOGGER
        and record.getMessage().startswith(f"Driver2 GET {path} ")
        and "params=" in record.getMessage()
    ]


def collect_retry_warnings(caplog) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == CLIENT_LOGGER and record.levelno == logging.WARNING
    ]


def contains_float(value: object) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(contains_float(item) for item in value.values())
    if isinstance(value, list):
        return any(contains_float(item) for item in value)
    return False


# -- paging ---------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [1, 7, 100, 500])
def test_every_page_size_returns_each_invoice_once_in_update_order(sandbox, client, page_size):
    count = sandbox.dataset.invoice_count

    pages = list(client.iter_invoice_pages(page_size=page_size))
    documents = [document for page in pages for document in page.items]
    numbers = [document["number"] for document in documents]

    assert numbers == sandbox.dataset.numbers()
    assert len(set(numbers)) == len(numbers) == count
    keys = [(read_updated_at(document), document["number"]) for document in documents]
    assert keys == sorted(keys)
    assert len(pages) == math.ceil(count / page_size)
    assert [len(page.items) for page in pages[:-1]] == [page_size] * (len(pages) - 1)
    assert [page.next_cursor is None for page in pages] == [False] * (len(pages) - 1) + [True]


def test_updated_at_tie_split_by_a_page_boundary_returns_each_tied_invoice_once(sandbox, client):
    documents = list(sandbox.dataset.invoices())
    tie = find_first_tie(documents)

    # The first page ends on the first invoice of the tie; the next begins inside it.
    pages = list(client.iter_invoice_pages(page_size=tie + 1))
    numbers = [document["number"] for page in pages for document in page.items]

    assert pages[0].items[-1]["number"] == documents[tie]["number"]
    assert pages[1].items[0]["number"] == documents[tie + 1]["number"]
    assert read_updated_at(pages[0].items[-1]) == read_updated_at(pages[1].items[0])
    assert numbers == [document["number"] for document in documents]


def test_invoice_touched_while_paging_comes_again_at_the_end(sandbox, client):
    before = sandbox.dataset.numbers()
    pages = client.iter_invoice_pages(page_size=100)

    first = next(pages)
    touched_number = first.items[0]["number"]
    touched = sandbox.touch(touched_number)
    rest = [document for page in pages for document in page.items]
    numbers = [document["number"] for document in first.items + rest]

    assert len(numbers) == len(before) + 1
    assert numbers[:-1] == before
    assert numbers.count(touched_number) == 2
    assert rest[-1]["number"] == touched_number
    assert rest[-1]["updated_at"] == touched["updated_at"]
    assert read_updated_at(rest[-1]) > read_updated_at(first.items[0])


def test_updated_since_is_inclusive_of_invoices_changed_at_that_instant(sandbox, client):
    documents = list(sandbox.dataset.invoices())
    tie = find_first_tie(documents)
    since = read_updated_at(documents[tie])
    tied = [d["number"] for d in documents if read_updated_at(d) == since]
    expected = [d["number"] for d in documents if read_updated_at(d) >= since]
    # The tie must not open the listing, or an exclusive bound would go unnoticed.
    assert tie > 0
    assert len(tied) >= 2

    for moment in (since, since.astimezone(UTC)):
        numbers = [d["number"] for d in client.iter_changed_invoices(moment, page_size=50)]
        assert numbers == expected
    later = [
        d["number"]
        for d in client.iter_changed_invoices(since + timedelta(microseconds=1), page_size=50)
    ]

    assert expected[: len(tied)] == tied
    assert later == expected[len(tied) :]


@pytest.mark.parametrize("page_size", [0, 501])
def test_page_size_outside_the_api_limits_is_refused_before_any_request(sandbox, client, page_size):
    with pytest.raises(ValueError, match="page_size must be between 1 and 500"):
        client.iter_invoice_pages(page_size=page_size)

    assert_api_requests(sandbox, {})


def test_naive_updated_since_is_refused_before_any_request(sandbox, client):
    with pytest.raises(ValueError, match="timezone-aware"):
        client.iter_changed_invoices(datetime(2026, 1, 1, 12, 0))

    assert_api_requests(sandbox, {})


def test_truncated_page_in_the_middle_of_a_pass_is_fetched_again(sandbox, client, caplog):
    caplog.set_level(logging.WARNING, logger=CLIENT_LOGGER)
    pages = client.iter_invoice_pages(page_size=100)

    first = next(pages)
    sandbox.script_faults([{"truncate": "json"}])
    numbers = [d["number"] for d in first.items] + [d["number"] for p in pages for d in p.items]

    assert numbers == sandbox.dataset.numbers()
    assert_api_requests(sandbox, {"/api/v1/invoices": {"200": 3, "truncated": 1}})
    assert len(collect_retry_warnings(caplog)) == 1


# -- transient failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", [{"status": 429, "retry_after": "1"}, {"status": 503, "retry_after": "1"}]
)
def test_retry_after_in_seconds_is_waited_out_before_the_retry(sandbox, client, caplog, fault):
    caplog.set_level(logging.DEBUG, logger=CLIENT_LOGGER)
    number = sandbox.dataset.numbers()[0]
    path = f"/api/v1/invoices/{number}"
    sandbox.script_faults([fault])

    started = time.monotonic()
    document = client.get_invoice(number)
    elapsed = time.monotonic() - started
    sent = collect_request_times(caplog, path)

    assert document == sandbox.dataset.invoice(number)
    assert elapsed >= 1.0
    assert len(sent) == 2
    assert sent[1] - sent[0] >= 1.0
    assert_api_requests(sandbox, {path: {str(fault["status"]): 1, "200": 1}})


def test_retry_after_as_http_date_is_waited_out_until_that_moment(sandbox, client, caplog):
    caplog.set_level(logging.DEBUG, logger=CLIENT_LOGGER)
    number = sandbox.dataset.numbers()[0]
    path = f"/api/v1/invoices/{number}"
    sandbox.script_faults([{"status": 429, "retry_after_date": True}])

    started = time.monotonic()
    document = client.get_invoice(number)
    elapsed = time.monotonic() - started
    sent = collect_request_times(caplog, path)
    (warning,) = collect_retry_warnings(caplog)
    header = re.search(r"Retry-After: ([^)]+ GMT)", warning.getMessage()).group(1)

    assert document == sandbox.dataset.invoice(number)
    assert len(sent) == 2
    assert sent[1] >= parsedate_to_datetime(header).timestamp()
    assert elapsed >= 1.0
    assert_api_requests(sandbox, {path: {"429": 1, "200": 1}})


def test_503_answers_are_retried_and_each_retry_is_logged(sandbox, client, caplog):
    caplog.set_level(logging.DEBUG)
    number = sandbox.dataset.numbers()[5]
    path = f"/api/v1/invoices/{number}"
    sandbox.script_faults([{"status": 503}, {"status": 503}])

    document = client.get_invoice(number)
    warnings = collect_retry_warnings(caplog)

    assert document == sandbox.dataset.invoice(number)
    assert_api_requests(sandbox, {path: {"503": 2, "200": 1}})
    assert [record.args[2] for record in warnings] == [1, 2]
    for record in warnings:
        message = record.getMessage()
        assert message.startswith(f"Driver2 GET {path} failed (HTTP 503) on attempt ")
        assert re.search(r"retrying in \d+\.\d\d s$", message)
    assert sandbox.token not in caplog.text


@pytest.mark.parametrize(
    ("fault", "answer"),
    [
        ({"drop": True}, "dropped"),
        ({"truncate": True}, "truncated"),
        ({"truncate": "json"}, "truncated"),
        ({"status": 502}, "502"),
        ({"status": 504}, "504"),
    ],
    ids=["dropped-connection", "cut-off-body", "cut-off-json", "502", "504"],
)
def test_transient_failure_is_retried_until_driver2_answers(sandbox, client, fault, answer):
    number = sandbox.dataset.numbers()[-1]
    path = f"/api/v1/invoices/{number}"
    sandbox.script_faults([fault])

    document = client.get_invoice(number)

    assert document == sandbox.dataset.invoice(number)
    assert_api_requests(sandbox, {path: {answer: 1, "200": 1}})


def test_answer_slower_than_the_read_timeout_is_abandoned_and_retried(
    start_driver2_sandbox, caplog
):
    caplog.set_level(logging.WARNING, logger=CLIENT_LOGGER)
    own = start_driver2_sandbox(invoices=12)
    number = own.dataset.numbers()[0]
    own.script_faults([{"slow": 2.0}])
    client = Driver2Client(own.base_url, own.token, timeout=(1.0, 0.3), retry_policy=FAST_RETRIES)

    started = time.monotonic()
    document = client.get_invoice(number)
    elapsed = time.monotonic() - started
    (warning,) = collect_retry_warnings(caplog)

    assert document == own.dataset.invoice(number)
    assert 0.3 <= elapsed < 2.0
    assert "ReadTimeout" in warning.getMessage()


def test_retries_exhausted_raise_unavailable_within_the_budget(sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    policy = RetryPolicy(
        max_attempts=3, max_total_seconds=2.0, backoff_first_seconds=0.05, backoff_max_seconds=0.1
    )
    client = Driver2Client(sandbox.base_url, sandbox.token, retry_policy=policy)
    number = sandbox.dataset.numbers()[0]
    path = f"/api/v1/invoices/{number}"
    sandbox.script_faults([{"status": 503}] * 4)

    started = time.monotonic()
    with pytest.raises(Driver2UnavailableError) as raised:
        client.get_invoice(number)
    elapsed = time.monotonic() - started
    errors = [r for r in caplog.records if r.name == CLIENT_LOGGER and r.levelno == logging.ERROR]

    assert elapsed < 2.0
    assert raised.value.attempts == 3
    assert raised.value.last_cause == "HTTP 503"
    assert re.fullmatch(
        rf"Driver2 at {re.escape(sandbox.base_url)} did not answer GET {path} after 3 attempts "
        r"over \d+\.\d s; last cause: HTTP 503",
        str(raised.value),
    )
    assert [record.getMessage() for record in errors] == [str(raised.value)]
    assert len(collect_retry_warnings(caplog)) == 2
    assert_api_requests(sandbox, {path: {"503": 3}})
    assert sandbox.stats()["faults_pending"] == 1
    assert sandbox.token not in caplog.text


def test_retry_after_beyond_the_time_budget_fails_at_once_without_waiting(sandbox):
    policy = RetryPolicy(max_attempts=5, max_total_seconds=1.0, backoff_first_seconds=0.01)
    client = Driver2Client(sandbox.base_url, sandbox.token, retry_policy=policy)
    number = sandbox.dataset.numbers()[0]
    sandbox.script_faults([{"status": 429, "retry_after": "30"}])

    started = time.monotonic()
    with pytest.raises(Driver2UnavailableError, match="would pass the time budget") as raised:
        client.get_invoice(number)

    assert time.monotonic() - started < 1.0
    assert raised.value.attempts == 1
    assert_api_requests(sandbox, {f"/api/v1/invoices/{number}": {"429": 1}})


# -- final failures -------------------------------------------------------------------------


def test_wrong_token_raises_auth_error_after_one_request_naming_neither_token(sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-4711"
    client = Driver2Client(sandbox.base_url, wrong, retry_policy=FAST_RETRIES)

    with pytest.raises(Driver2AuthError) as raised:
        list(client.iter_changed_invoices())
    message = str(raised.value)

    assert raised.value.status == 401
    assert_api_requests(sandbox, {"/api/v1/invoices": {"401": 1}})
    assert sandbox.base_url in message
    assert "unauthorized" in message
    assert wrong not in message
    assert sandbox.token not in message
    assert wrong not in caplog.text


def test_token_echoed_by_driver2_in_a_403_is_masked(sandbox, client):
    echo = f"token {sandbox.token} may not read invoices"
    sandbox.script_faults([{"status": 403, "message": echo}])

    with pytest.raises(Driver2AuthError) as raised:
        client.get_invoice(sandbox.dataset.numbers()[0])

    assert raised.value.status == 403
    assert sandbox.token not in str(raised.value)
    assert "token *** may not read invoices" in str(raised.value)


@pytest.mark.parametrize(
    ("status", "error"), [(400, "bad_request"), (409, "error"), (500, "internal_error")]
)
def test_other_error_status_raises_request_error_without_retrying(sandbox, client, status, error):
    number = sandbox.dataset.numbers()[0]
    path = f"/api/v1/invoices/{number}"
    sandbox.script_faults([{"status": status, "message": "Nope."}])

    with pytest.raises(Driver2RequestError) as raised:
        client.get_invoice(number)

    assert (raised.value.status, raised.value.error, raised.value.detail) == (
        status,
        error,
        "Nope.",
    )
    assert str(raised.value) == (
        f"Driver2 at {sandbox.base_url} rejected GET {path}: HTTP {status} ({error}: Nope.)"
    )
    assert_api_requests(sandbox, {path: {str(status): 1}})


# -- single documents -----------------------------------------------------------------------


def test_get_invoice_returns_the_document_and_none_for_an_unknown_number(sandbox, client):
    number = sandbox.dataset.numbers()[10]

    assert client.get_invoice(number) == sandbox.dataset.invoice(number)
    assert client.get_invoice("F99-999999") is None
    assert_api_requests(
        sandbox,
        {
            f"/api/v1/invoices/{number}": {"200": 1},
            "/api/v1/invoices/F99-999999": {"404": 1},
        },
    )


def test_get_customer_returns_the_customer_and_none_for_an_unknown_number(sandbox, client):
    customer_no = sandbox.dataset.invoice(sandbox.dataset.numbers()[0])["customer"]["customer_no"]

    assert client.get_customer(customer_no) == sandbox.dataset.customer(customer_no)
    assert client.get_customer("C999999") is None


@pytest.mark.parametrize(
    "number",
    ["", "f26-000001", "-F26", "F26 000001", "F26/../x", "F26-000001\n", "F" * 33, "F26%2F1", None],
)
def test_malformed_invoice_number_is_refused_before_any_request(sandbox, client, number):
    with pytest.raises(ValueError, match="not a Driver2 document number"):
        client.get_invoice(number)

    assert_api_requests(sandbox, {})


def test_json_numbers_reach_the_caller_as_decimal_never_float(sandbox, client):
    number = "F26-990001"
    sandbox.put_invoice(
        number,
        '{"number": "F26-990001", "updated_at": "2026-04-01T10:00:00+02:00", '
        '"totals": {"net": 100.10, "vat": 21.021, "gross": 1e2}, "lines": [{"line_no": 1}]}',
    )

    document = client.get_invoice(number)

    assert document["totals"] == {
        "net": Decimal("100.10"),
        "vat": Decimal("21.021"),
        "gross": Decimal("1E+2"),
    }
    assert str(document["totals"]["net"]) == "100.10"
    assert type(document["lines"][0]["line_no"]) is int
    assert not contains_float(document)


# -- the Airflow connection -----------------------------------------------------------------


def set_connection(monkeypatch, **fields) -> None:
    monkeypatch.setenv(CONNECTION_ENV, json.dumps({"conn_type": "http", **fields}))


def test_from_connection_builds_the_client_from_the_airflow_connection(sandbox, monkeypatch):
    set_connection(
        monkeypatch, host="127.0.0.1", port=sandbox.port, schema="http", password=sandbox.token
    )
    number = sandbox.dataset.numbers()[0]

    with Driver2Client.from_connection(retry_policy=FAST_RETRIES) as client:
        assert client.base_url == sandbox.base_url
        assert client.conn_id == "driver2_api"
        assert client.get_invoice(number) == sandbox.dataset.invoice(number)


def test_from_connection_with_a_wrong_password_names_the_connection_not_the_password(
    sandbox, monkeypatch
):
    set_connection(
        monkeypatch,
        host="127.0.0.1",
        port=sandbox.port,
        schema="http",
        password=CONNECTION_PASSWORD,
    )
    client = Driver2Client.from_connection(retry_policy=FAST_RETRIES)

    with pytest.raises(Driver2AuthError) as raised:
        client.get_invoice(sandbox.dataset.numbers()[0])

    assert f"connection 'driver2_api' ({sandbox.base_url})" in str(raised.value)
    assert CONNECTION_PASSWORD not in str(raised.value)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"host": "127.0.0.1", "schema": "http"}, "'driver2_api' has no password"),
        (
            {"host": "127.0.0.1", "schema": "ftp", "password": CONNECTION_PASSWORD},
            "'driver2_api' has schema 'ftp'; use http or https",
        ),
        (
            {"host": "http://127.0.0.1", "schema": "http", "password": CONNECTION_PASSWORD},
            "'driver2_api' needs a bare host name",
        ),
        (
            {"host": f"u:{CONNECTION_PASSWORD}@127.0.0.1", "password": CONNECTION_PASSWORD},
            "'driver2_api' needs a bare host name",
        ),
        (None, "cannot read Airflow connection 'driver2_api'"),
    ],
    ids=["no-password", "bad-schema", "host-with-scheme", "host-with-credentials", "undefined"],
)
def test_from_connection_config_errors_name_the_connection_never_the_password(
    monkeypatch, fields, expected
):
    if fields is None:
        monkeypatch.delenv(CONNECTION_ENV, raising=False)
    else:
        set_connection(monkeypatch, **fields)

    with pytest.raises(Driver2ConfigError) as raised:
        Driver2Client.from_connection()

    assert expected in str(raised.value)
    assert CONNECTION_PASSWORD not in str(raised.value)
    assert raised.value.__cause__ is None


# -- a server that breaks the protocol ------------------------------------------------------


class ScriptedHandler(BaseHTTPRequestHandler):
    """Answers each GET with the next canned JSON body, as no honest Driver2 would."""

    protocol_version = "HTTP/1.1"
    bodies: list[str] = []

    def do_GET(self) -> None:
        payload = self.bodies.pop(0).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture
def scripted_driver2() -> Iterator[tuple[str, list[str]]]:
    """A loopback server answering GETs with the bodies of the returned list, in order."""
    bodies: list[str] = []
    handler = type("Handler", (ScriptedHandler,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()
    thread.join()


def test_cursor_given_twice_stops_paging_with_a_protocol_error(scripted_driver2):
    base_url, bodies = scripted_driver2
    item = {"number": "F26-000001"}
    bodies += [
        json.dumps({"items": [item], "next_cursor": "abc"}),
        json.dumps({"items": [item], "next_cursor": "def"}),
        json.dumps({"items": [item], "next_cursor": "abc"}),
        json.dumps({"items": [], "next_cursor": None}),
    ]
    client = Driver2Client(base_url, SCRIPTED_TOKEN, retry_policy=FAST_RETRIES)
    seen = []

    with pytest.raises(Driver2ProtocolError, match="cursor 'abc' a second time after 3 pages"):
        for page in client.iter_invoice_pages(page_size=1):
            seen.append(page.next_cursor)

    assert seen == ["abc", "def"]
    assert len(bodies) == 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"next_cursor": null}', "no 'items' list"),
        ('{"items": {}, "next_cursor": null}', "no 'items' list"),
        ('{"items": []}', "no 'next_cursor' key"),
        ('{"items": [], "next_cursor": 7}', "'next_cursor' that is not a string or null"),
        ("[]", "JSON list, not an object"),
    ],
)
def test_malformed_page_raises_a_protocol_error(scripted_driver2, body, expected):
    base_url, bodies = scripted_driver2
    bodies.append(body)
    client = Driver2Client(base_url, SCRIPTED_TOKEN, retry_policy=FAST_RETRIES)

    with pytest.raises(Driver2ProtocolError, match=expected):
        list(client.iter_invoice_pages())


def test_empty_page_before_the_last_is_followed_to_the_end(scripted_driver2):
    base_url, bodies = scripted_driver2
    bodies += [
        '{"items": [], "next_cursor": "a"}',
        '{"items": [{"number": "F26-000001"}], "next_cursor": null}',
    ]
    client = Driver2Client(base_url, SCRIPTED_TOKEN, retry_policy=FAST_RETRIES)

    assert list(client.iter_changed_invoices()) == [{"number": "F26-000001"}]


def write_self_signed_certificate(folder) -> tuple[str, str]:
    """Write a certificate for 127.0.0.1 that no trust store knows; return (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_certificate_failing_verification_is_final_and_never_waved_through(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=CLIENT_LOGGER)
    handler = type("Handler", (ScriptedHandler,), {"bodies": ['{"number": "F26-000001"}']})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*write_self_signed_certificate(tmp_path))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    client = Driver2Client(
        f"https://127.0.0.1:{server.server_address[1]}", SCRIPTED_TOKEN, retry_policy=FAST_RETRIES
    )

    try:
        with pytest.raises(Driver2Error, match="verification stays on") as raised:
            client.get_invoice("F26-000001")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

    assert type(raised.value) is Driver2Error
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
    assert collect_retry_warnings(caplog) == []
    assert handler.bodies == ['{"number": "F26-000001"}']


# -- pure helpers ---------------------------------------------------------------------------


def test_retry_after_is_read_in_seconds_and_as_an_http_date():
    now = datetime(2026, 3, 29, 1, 0, 0, 250_000, tzinfo=UTC)

    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("Sun, 29 Mar 2026 01:00:03 GMT", now) == 3.0
    assert parse_retry_after("Sun, 29 Mar 2026 00:59:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after(None, now) is None


def test_scrub_secrets_masks_tokens_credentials_and_given_secrets():
    text = (
        "Authorization: Bearer abc.def failed for https://user:pw@example.be/x?token=t1&a=1 "
        '{"password": "p2"} s3cr/t s3cr%2Ft'
    )

    assert scrub_secrets(text, ["s3cr/t", None, ""]) == (
        "Authorization: Bearer *** failed for https://***@example.be/x?token=***&a=1 "
        '{"password": "***"} *** ***'
    )


def test_retry_policy_waits_grow_exponentially_within_the_cap():
    policy = RetryPolicy(backoff_first_seconds=1.0, backoff_max_seconds=5.0, jitter=0.0)

    assert [policy.compute_backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = RetryPolicy(backoff_first_seconds=1.0, backoff_max_seconds=5.0, jitter=0.5)
    assert all(1.0 < jittered.compute_backoff(2) <= 2.0 for _ in range(200))
